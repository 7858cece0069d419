//! Wire headers and bounds-checked access to XDP packet memory.
//!
//! Multi-byte fields stay in network byte order, exactly as on the wire: map keys are
//! stored that way too, and the checksum helpers are byte-order independent.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::types::{FlowKey, PROTO_TCP};

pub const ETH_HLEN: usize = size_of::<EthHdr>();
pub const VLAN_HLEN: usize = size_of::<VlanHdr>();
/// Length of an IPv4 header without options: the only kind VIP traffic may carry.
pub const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
pub const ICMP_HLEN: usize = size_of::<IcmpHdr>();
pub const UDP_HLEN: usize = 8;
pub const TCP_HLEN: usize = 20;

pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_8021Q: u16 = 0x8100u16.to_be();

/// `frag_off` bits in host order.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF_OFFSET: u16 = 0x3fff;

/// Offsets inside the L4 header.
pub const L4_DPORT_OFF: usize = 2;
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;
pub const TCP_FLAGS_OFF: usize = 13;

/// TCP flag bits in the byte at [`TCP_FLAGS_OFF`].
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

impl Ipv4Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    #[inline(always)]
    pub fn ihl(&self) -> u8 {
        self.version_ihl & 0x0f
    }

    /// `tot_len` in host order.
    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        u16::from_be(self.tot_len)
    }

    /// `frag_off` (flags and offset) in host order.
    #[inline(always)]
    pub fn frag_bits(&self) -> u16 {
        u16::from_be(self.frag_off)
    }

    /// The header checksum this header should carry (its own `check` is ignored).
    #[inline(always)]
    pub fn computed_check(&self) -> u16 {
        // SAFETY: `Ipv4Hdr` is 20 bytes of plain integers with no padding, so viewing it
        // as ten u16 words is sound (alignment 4 >= 2).
        let words: &[u16; 10] = unsafe { &*(self as *const Self).cast() };
        let mut sum = 0u32;
        for (i, word) in words.iter().enumerate() {
            // Word 5 is the checksum field itself.
            if i != 5 {
                sum += u32::from(*word);
            }
        }
        !lb_common::checksum::fold(sum)
    }
}

/// ICMP header: `rest` is the id/sequence of echo messages or the unused/next-hop-MTU
/// words of destination-unreachable.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: [u16; 2],
}

/// Source and destination port, the first four bytes of both TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

/// The flow key of a TCP or UDP packet with the given ports (the owner floors of the
/// bench build theirs with it too).
#[inline(always)]
pub fn flow_key(ip: &Ipv4Hdr, ports: &Ports) -> FlowKey {
    FlowKey {
        client: ip.saddr,
        vip: ip.daddr,
        client_port: ports.src,
        vip_port: ports.dst,
        proto: ip.proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// True for a TCP segment with SYN set and ACK clear: the first of a connection, or a
/// retransmission of it. A header too short to hold the flags is judged later.
#[inline(always)]
pub fn opens_connection(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr) -> bool {
    ip.proto == PROTO_TCP
        && read::<u8>(ctx, l3 + IPV4_HLEN + TCP_FLAGS_OFF)
            .is_some_and(|flags| flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// MAC addresses compared as a 4-byte and a 2-byte word: `==` on byte arrays may lower
/// to a `bcmp` call, which a BPF program cannot make.
#[inline(always)]
pub fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    mac_words(a) == mac_words(b)
}

#[inline(always)]
pub fn is_zero_mac(mac: &[u8; 6]) -> bool {
    mac_words(mac) == (0, 0)
}

#[inline(always)]
fn mac_words(mac: &[u8; 6]) -> (u32, u16) {
    let [a, b, c, d, e, f] = *mac;
    (u32::from_ne_bytes([a, b, c, d]), u16::from_ne_bytes([e, f]))
}

/// A pointer to a `T` at `offset` from the start of the frame, if the frame is long
/// enough. The comparison against `data_end` is what lets the verifier accept the access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A copy of the `T` at `offset`.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame.
    ptr_at::<T>(ctx, offset).map(|ptr| unsafe { *ptr })
}

/// Writes `value` at `offset`; false when the frame is too short.
#[inline(always)]
pub fn write<T>(ctx: &XdpContext, offset: usize, value: T) -> bool {
    match ptr_at::<T>(ctx, offset) {
        // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame.
        Some(ptr) => unsafe {
            *ptr = value;
            true
        },
        None => false,
    }
}

/// Length of the frame. From the helper rather than `data_end - data`: LLVM reorders
/// that subtraction into pointer arithmetic the verifier rejects, and would use length
/// checks against `data_end` to drop later `ptr_at` checks the verifier needs.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: the helper only reads the context it is given.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// Offset of the IPv4 header: after Ethernet and at most one 802.1Q tag. `None` for
/// anything that is not IPv4 (or too short to tell).
#[inline(always)]
pub fn ipv4_offset(ctx: &XdpContext) -> Option<usize> {
    let eth: EthHdr = read(ctx, 0)?;
    if eth.proto == ETH_P_IP {
        return Some(ETH_HLEN);
    }
    if eth.proto != ETH_P_8021Q {
        return None;
    }
    let vlan: VlanHdr = read(ctx, ETH_HLEN)?;
    (vlan.proto == ETH_P_IP).then_some(ETH_HLEN + VLAN_HLEN)
}

/// A MAC address as three 16-bit words (its bytes in pairs, loaded in host order).
pub type MacWords = [u16; 3];

#[inline(always)]
pub fn mac_to_words(mac: &[u8; 6]) -> MacWords {
    let [a, b, c, d, e, f] = *mac;
    [
        u16::from_ne_bytes([a, b]),
        u16::from_ne_bytes([c, d]),
        u16::from_ne_bytes([e, f]),
    ]
}

/// Writes a whole Ethernet header at the front of the frame; false when it is too short.
#[inline(always)]
pub fn write_eth(ctx: &XdpContext, dst: &MacWords, src: &MacWords, proto: u16) -> bool {
    let Some(eth) = ptr_at::<EthWords>(ctx, 0) else {
        return false;
    };
    let words = [dst[0], dst[1], dst[2], src[0], src[1], src[2], proto];
    for (index, word) in words.into_iter().enumerate() {
        // SAFETY: `ptr_at` checked the header lies inside the frame. Volatile, so LLVM
        // cannot merge the words into a `memcpy` call.
        unsafe { eth.cast::<u16>().add(index).write_volatile(word) };
    }
    true
}

/// The Ethernet header as 16-bit words: copied through these, not as an [`EthHdr`],
/// because a 14-byte struct copy between two packet pointers compiles to a call of a
/// byte-at-a-time `memmove`.
type EthWords = [u16; ETH_HLEN / 2];

/// Copies the L2 header (Ethernet and the optional VLAN tag, `l3` bytes in all) from
/// `from` to `to` without overlap, optionally swapping the MAC addresses.
#[inline(always)]
pub fn copy_l2(ctx: &XdpContext, l3: usize, from: usize, to: usize, swap_macs: bool) -> bool {
    let (Some(src), Some(dst)) = (ptr_at::<EthWords>(ctx, from), ptr_at::<EthWords>(ctx, to))
    else {
        return false;
    };
    // SAFETY: `ptr_at` checked both headers lie inside the frame; each word is read
    // before it is written, and the caller's ranges do not overlap.
    unsafe { copy_eth(src.cast(), dst.cast(), swap_macs) };
    if l3 == ETH_HLEN {
        return true;
    }
    match read::<VlanHdr>(ctx, from + ETH_HLEN) {
        Some(vlan) => write(ctx, to + ETH_HLEN, vlan),
        None => false,
    }
}

/// Word-by-word copy of an Ethernet header; `swap_macs` exchanges the two addresses
/// (words 0-2 and 3-5). Volatile, so LLVM cannot merge the words back into a `memmove`.
///
/// # Safety
/// Both pointers must address seven readable and writable words that do not overlap.
#[inline(always)]
unsafe fn copy_eth(src: *const u16, dst: *mut u16, swap_macs: bool) {
    for i in 0..ETH_HLEN / 2 {
        let from = match (swap_macs, i) {
            (true, 0..=2) => i + 3,
            (true, 3..=5) => i - 3,
            _ => i,
        };
        // SAFETY: see the function's contract; both indices are below 7.
        unsafe { dst.add(i).write_volatile(src.add(from).read_volatile()) };
    }
}
