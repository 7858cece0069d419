//! The owner floors: what any owner doing what `xdp_lb` does with a flow-table hit
//! (wrap the packet in IPIP towards its backend node and send it back out) must spend
//! at least. Each parses as the reflector does, so a floor's cost over the reflector's
//! is the encapsulation's, and the flow lookup's. Built only into the bench's object.
//!
//! A lookup that misses sends the frame back as it came (`XDP_TX`, not encapsulated):
//! the bench fills the tables with every flow the generator sends, so such a frame
//! means a broken path, and the generator's arrival counts show it.

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, xdp_action},
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, LruHashMap},
    programs::XdpContext,
};
use lb_common::{
    maps::{
        BENCH_BACKEND_ADDR, BENCH_FLOOR_CACHE_SLOTS, BENCH_GEN_MAC, BENCH_OWNER_ADDR,
        BENCH_OWNER_MAC, MAX_FLOWS_DEFAULT,
    },
    types::{BenchCacheSlot, FlowKey, FlowValue, PROTO_IPIP},
};

use super::parse_ipv4;
use crate::{
    express::same_flow,
    parse::{self, ETH_HLEN, ETH_P_IP, IPV4_HLEN, Ipv4Hdr, Ports, flow_key},
};

/// `xdp_lb`'s outer TTL.
const OUTER_TTL: u8 = 64;

/// The outer Ethernet header (to the backend node, from the owner) as seven 16-bit
/// words of its bytes in memory order, to be stored as immediates: an `EthHdr` of
/// constant arrays compiles to a byte-by-byte copy from `.rodata` through the stack.
const OUTER_ETH: [u16; ETH_HLEN / 2] = {
    let (dst, src) = (BENCH_GEN_MAC, BENCH_OWNER_MAC);
    [
        word(dst, 0),
        word(dst, 2),
        word(dst, 4),
        word(src, 0),
        word(src, 2),
        word(src, 4),
        ETH_P_IP,
    ]
};

/// Bytes `i` and `i + 1` of `mac` as the 16-bit word they make in memory.
const fn word(mac: [u8; 6], i: usize) -> u16 {
    u16::from_ne_bytes([mac[i], mac[i + 1]])
}

#[map]
static BENCH_FLOOR_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_FLOWS_DEFAULT, BPF_F_NO_COMMON_LRU);

#[map]
static BENCH_FLOOR_CACHE: Array<BenchCacheSlot> =
    Array::with_max_entries(BENCH_FLOOR_CACHE_SLOTS, 0);

/// Encapsulates every IPv4 frame towards the one backend node.
#[xdp]
pub fn bench_floor_encap(ctx: XdpContext) -> u32 {
    let Some((_, ip)) = parse_ipv4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    encapsulate(&ctx, ip.total_len(), u32::from_ne_bytes(BENCH_BACKEND_ADDR))
}

/// Encapsulates towards the backend node the flow's `BENCH_FLOOR_FLOWS` entry names.
#[xdp]
pub fn bench_floor_flow(ctx: XdpContext) -> u32 {
    let Some((len, key)) = parse_flow(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the value is copied out at once.
    match unsafe { BENCH_FLOOR_FLOWS.get(key) } {
        Some(flow) => encapsulate(&ctx, len, flow.node),
        None => xdp_action::XDP_TX,
    }
}

/// Encapsulates towards the backend node the flow's slot in `BENCH_FLOOR_CACHE` names,
/// if the slot holds this flow.
#[xdp]
pub fn bench_floor_cache(ctx: XdpContext) -> u32 {
    let Some((len, key)) = parse_flow(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match BENCH_FLOOR_CACHE.get(BenchCacheSlot::index(&key)) {
        Some(slot) if same_flow(&slot.key, &key) => encapsulate(&ctx, len, slot.node),
        _ => xdp_action::XDP_TX,
    }
}

/// The IPv4 total length and the flow key (as `xdp_lb` builds it) of a frame whose
/// ports follow an optionless header. Only the length is kept of the header: LLVM
/// would otherwise keep its bytes apart across the lookup and put them together again.
#[inline(always)]
fn parse_flow(ctx: &XdpContext) -> Option<(u16, FlowKey)> {
    let (_, ip) = parse_ipv4(ctx)?;
    if ip.version_ihl != 0x45 {
        return None;
    }
    let ports: Ports = parse::read(ctx, ETH_HLEN + IPV4_HLEN)?;
    Some((ip.total_len(), flow_key(&ip, &ports)))
}

/// Wraps the IPv4 packet (`inner_len` bytes) in an outer IPv4 header from the owner to
/// `node` behind a fresh Ethernet header, and sends it back out. Everything but the
/// total length and `node` is a constant, so the checksum folds to a constant plus
/// those two.
#[inline(always)]
fn encapsulate(ctx: &XdpContext, inner_len: u16, node: u32) -> u32 {
    // SAFETY: the helper only moves `data` within the frame's buffer (it fails rather
    // than leave it outside); every access below re-checks the bounds.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV4_HLEN as i32)) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    let mut outer = Ipv4Hdr {
        version_ihl: 0x45,
        tos: 0,
        tot_len: inner_len.wrapping_add(IPV4_HLEN as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: OUTER_TTL,
        proto: PROTO_IPIP,
        check: 0,
        saddr: u32::from_ne_bytes(BENCH_OWNER_ADDR),
        daddr: node,
    };
    outer.check = outer.computed_check();
    let Some(eth) = parse::ptr_at::<[u16; ETH_HLEN / 2]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    for (i, word) in OUTER_ETH.iter().enumerate() {
        // SAFETY: `ptr_at` checked that the whole header lies inside the frame. Volatile,
        // so the words stay immediates instead of becoming a copy from `.rodata`.
        unsafe { eth.cast::<u16>().add(i).write_volatile(*word) };
    }
    if parse::write(ctx, ETH_HLEN, outer) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}
