//! The express path: the owner forwards a packet of an established flow from the flow's
//! `EXPRESS` entry, a per-CPU copy of everything the full path decided for the flow's
//! previous packet (backend node, next hop, outer header fields, counters' indices).
//! One array read and comparisons against the packet replace the flow-table lookup, the
//! service and backend checks and the next-hop cache.
//!
//! An entry stands only while nothing it was derived from can have changed:
//! * the tables: the agent advances `EPOCH` after every change it writes, and an entry
//!   carries the epoch read before its decision was made;
//! * the next hop: the entry lives no longer than the next-hop cache entry it copied;
//! * the packet: the same flow key, interface, destination MAC, an optionless unfragmented
//!   header, a length that fits the tunnel, and no connection opening (a SYN selects
//!   afresh, as on the full path).
//!
//! Anything else takes the full path, which writes the entry again when it ends in
//! `XDP_TX` towards a backend node. The full path still reads `FLOWS` for an express
//! flow at least once per next-hop lifetime, which keeps its LRU entry recent.

use core::ptr;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    express, reasons,
    types::{DataplaneConfig, ExpressEntry, FlowKey, NextHop, PROTO_TCP, PROTO_UDP},
};

use crate::{
    encap,
    maps::{EPOCH, EXPRESS},
    parse::{
        self, ETH_HLEN, ETH_P_IP, IP_MF_OFFSET, IPV4_HLEN, Ipv4Hdr, MacWords, Ports, TCP_HLEN,
        UDP_HLEN,
    },
    select::Backend,
    stats,
    verdict::Verdict,
};

/// A packet the express path sent.
pub struct Hit {
    pub verdict: Verdict,
    pub stats_index: u32,
    pub len: usize,
}

/// The data path's epoch. Read before any table the full path consults, so an entry it
/// writes is never newer than the epoch it carries (volatile: the read stays ahead of
/// the lookups; on a weakly ordered CPU the window narrows to the CPU's reordering, as
/// for `SERVICE_SLOTS`).
#[inline(always)]
pub fn epoch() -> u32 {
    match EPOCH.get_ptr(0) {
        // SAFETY: array values stay mapped for the program's lifetime and are aligned.
        Some(epoch) => unsafe { ptr::read_volatile(epoch) },
        None => 0,
    }
}

/// Forwards the packet from its flow's entry; `None` leaves it, untouched, to the full
/// path.
#[inline(always)]
pub fn forward(ctx: &XdpContext, l3: usize, ip: &Ipv4Hdr, epoch: u32) -> Option<Hit> {
    if epoch == 0 || l3 != ETH_HLEN || ip.version_ihl != 0x45 {
        return None;
    }
    let l4_len = match ip.proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        _ => return None,
    };
    let total = usize::from(ip.total_len());
    if ip.frag_bits() & IP_MF_OFFSET != 0 || total < IPV4_HLEN + l4_len {
        return None;
    }
    let len = parse::frame_len(ctx);
    if l3 + total > len || parse::opens_connection(ctx, l3, ip) {
        return None;
    }
    let ports: Ports = parse::read(ctx, l3 + IPV4_HLEN)?;
    let key = parse::flow_key(ip, &ports);
    let entry = EXPRESS.get_ptr(express::slot(&key))?;
    // SAFETY: a per-CPU array slot belongs to this CPU for the whole run, and stays
    // mapped for the program's lifetime.
    let entry = unsafe { &*entry };
    if !usable(ctx, entry, &key, epoch, ip.total_len()) {
        return None;
    }
    Some(Hit {
        verdict: send(ctx, ip, entry, len),
        stats_index: entry.stats_index,
        len,
    })
}

/// True when `entry` holds this packet's flow, decided in this epoch, for this interface,
/// with a next hop still fresh, and the frame is addressed to this node and fits.
#[inline(always)]
fn usable(ctx: &XdpContext, entry: &ExpressEntry, key: &FlowKey, epoch: u32, len: u16) -> bool {
    if !same_flow(&entry.key, key)
        || entry.epoch != epoch
        || entry.ifindex != ctx.ingress_ifindex() as u32
        || len > entry.max_len
        || !encap::fresh(entry.looked_up, encap::jiffies())
    {
        return false;
    }
    let own = entry.own_mac;
    if own == [0; 3] {
        return true;
    }
    parse::read::<MacWords>(ctx, 0).is_some_and(|dst| dst == own)
}

/// Compared as four words: a derived `==` may be merged into a `bcmp` call, which a BPF
/// program cannot make.
#[inline(always)]
pub fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: `FlowKey` is 16 bytes of integers with explicit padding (alignment 4), so
    // viewing it as four u32 words is sound.
    let (a, b): (&[u32; 4], &[u32; 4]) = unsafe {
        (
            &*(a as *const FlowKey).cast(),
            &*(b as *const FlowKey).cast(),
        )
    };
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Encapsulates the packet (`ip` is its header, `len` the frame's length) as the entry
/// says, counts it, and sends it back out.
#[inline(always)]
fn send(ctx: &XdpContext, ip: &Ipv4Hdr, entry: &ExpressEntry, len: usize) -> Verdict {
    if encap::adjust_head(ctx, -(IPV4_HLEN as i32)).is_err() {
        return Verdict::drop(reasons::DROP_MAP_ERROR);
    }
    let outer = encap::outer_header(ip, entry.node_addr, entry.backend);
    if !parse::write_eth(ctx, &entry.dst_mac, &entry.src_mac, ETH_P_IP)
        || !parse::write(ctx, ETH_HLEN, outer)
    {
        return Verdict::drop(reasons::DROP_MALFORMED);
    }
    stats::backend(entry.backend_slot, len as u64);
    Verdict::tx(reasons::TX_EXPRESS)
}

/// What the full path knew when it sent a flow's packet to `backend` by `XDP_TX` through
/// `hop`: everything [`remember`] needs besides them.
#[derive(Clone, Copy)]
pub struct Decision {
    pub key: FlowKey,
    /// The epoch read before the decision; 0: the flow must not be remembered.
    pub epoch: u32,
    pub stats_index: u32,
}

/// Writes this CPU's entry for the decision's flow, unless the slot serves another flow
/// still: of two flows sharing a slot, the one holding it keeps it until its entry ages
/// out, instead of both losing it on every packet.
#[inline(always)]
pub fn remember(decision: &Decision, config: &DataplaneConfig, backend: &Backend, hop: &NextHop) {
    if decision.epoch == 0 {
        return;
    }
    let Some(entry) = EXPRESS.get_ptr_mut(express::slot(&decision.key)) else {
        return;
    };
    // SAFETY: a per-CPU array slot belongs to this CPU for the whole run.
    let held = unsafe { &*entry };
    if held.epoch == decision.epoch
        && !same_flow(&held.key, &decision.key)
        && encap::fresh(held.looked_up, encap::jiffies())
    {
        return;
    }
    let max_len = match config.mtu {
        0 => u16::MAX,
        mtu => mtu
            .saturating_sub(IPV4_HLEN as u32)
            .min(u32::from(u16::MAX)) as u16,
    };
    // SAFETY: a per-CPU array slot belongs to this CPU for the whole run.
    unsafe {
        *entry = ExpressEntry {
            key: decision.key,
            epoch: decision.epoch,
            ifindex: hop.ingress,
            looked_up: hop.looked_up,
            dst_mac: parse::mac_to_words(&hop.dst_mac),
            src_mac: parse::mac_to_words(&hop.src_mac),
            own_mac: parse::mac_to_words(&config.mac),
            max_len,
            node_addr: config.node_addr,
            backend: backend.addr,
            stats_index: decision.stats_index,
            backend_slot: backend.slot,
            _pad: 0,
        };
    }
}
