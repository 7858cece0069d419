//! IPv4-in-IPv4 between nodes: encapsulation towards the backend node with the next hop
//! from the kernel FIB (cached per node and CPU for a few jiffies), and removal of the
//! outer header on the backend node.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams},
    helpers::{bpf_fib_lookup, bpf_jiffies64, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{
    maps::NEXT_HOP_TTL_JIFFIES,
    reasons,
    types::{NextHop, PROTO_IPIP},
};

use crate::{
    maps::NEXT_HOPS,
    parse::{self, EthHdr, IP_DF, IPV4_HLEN, Ipv4Hdr},
    select::Backend,
    verdict::{Outcome, Verdict},
};

const AF_INET: u8 = 2;
const OUTER_TTL: u8 = 64;

/// Grows (negative `delta`) or shrinks the frame at its head.
#[inline(always)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), Verdict> {
    // SAFETY: the helper only moves `data`; every packet pointer is re-derived afterwards.
    match unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } {
        0 => Ok(()),
        // No headroom or a frame too short: nothing sane can be sent.
        _ => Err(Verdict::drop(reasons::DROP_MAP_ERROR)),
    }
}

/// Wraps the IPv4 packet at `l3` in an outer header from `own_addr` to `node` and picks
/// the way out. The L2 header (with its VLAN tag) moves to the new front. `on_tx` gets
/// the next hop when the frame leaves by the interface it came in on (`XDP_TX`).
#[inline(always)]
pub fn encapsulate(
    ctx: &XdpContext,
    l3: usize,
    own_addr: u32,
    node: &Backend,
    on_tx: impl FnOnce(&NextHop),
) -> Outcome {
    let malformed = Verdict::drop(reasons::DROP_MALFORMED);
    let inner: Ipv4Hdr = parse::read(ctx, l3).ok_or(malformed)?;
    adjust_head(ctx, -(IPV4_HLEN as i32))?;
    if !parse::copy_l2(ctx, l3, IPV4_HLEN, 0, false) {
        return Err(malformed);
    }
    let outer = outer_header(&inner, own_addr, node.addr);
    if !parse::write(ctx, l3, outer) {
        return Err(malformed);
    }
    Ok(route(ctx, &outer, node.slot, on_tx))
}

/// The IPIP header that carries `inner` from `own_addr` to `node_addr`.
#[inline(always)]
pub fn outer_header(inner: &Ipv4Hdr, own_addr: u32, node_addr: u32) -> Ipv4Hdr {
    let mut outer = Ipv4Hdr {
        version_ihl: 0x45,
        tos: inner.tos,
        tot_len: (inner.total_len() + IPV4_HLEN as u16).to_be(),
        id: 0,
        // DF travels outwards so path MTU discovery keeps working through the tunnel.
        frag_off: (inner.frag_bits() & IP_DF).to_be(),
        ttl: OUTER_TTL,
        proto: PROTO_IPIP,
        check: 0,
        saddr: own_addr,
        daddr: node_addr,
    };
    outer.check = outer.computed_check();
    outer
}

/// True while a next hop the FIB gave at `looked_up` (jiffies) may still be used `now`.
#[inline(always)]
pub fn fresh(looked_up: u64, now: u64) -> bool {
    looked_up != 0 && now.wrapping_sub(looked_up) < NEXT_HOP_TTL_JIFFIES
}

/// Now, in jiffies.
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: reads a kernel clock, no arguments.
    unsafe { bpf_jiffies64() }
}

/// Sends the encapsulated frame to its next hop: the cached one of backend `slot` while
/// it is fresh, else the FIB's. Without a usable FIB answer (e.g. no neighbour entry
/// yet) the packet goes to the kernel, which forwards it and resolves the neighbour. Both
/// need `forwarding=1` on the LAN interface, and that fallback also `accept_local=1`: the
/// outer source is this node's own address, a martian to the input path otherwise.
#[inline(always)]
fn route(ctx: &XdpContext, outer: &Ipv4Hdr, slot: u32, on_tx: impl FnOnce(&NextHop)) -> Verdict {
    let ingress = ctx.ingress_ifindex() as u32;
    let now = jiffies();
    let hop = match cached_hop(slot, ingress, now) {
        Some(hop) => hop,
        None => match fib(ctx, outer, ingress, now) {
            Some(hop) => {
                if let Some(cache) = NEXT_HOPS.get_ptr_mut(slot) {
                    // SAFETY: a per-CPU array slot belongs to this CPU for the whole run.
                    unsafe { *cache = hop };
                }
                hop
            }
            None => return Verdict::pass(reasons::PASS_FIB_FALLBACK),
        },
    };
    let Some(eth) = parse::ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::pass(reasons::PASS_FIB_FALLBACK);
    };
    // SAFETY: `ptr_at` checked the Ethernet header lies inside the frame.
    unsafe {
        (*eth).dst = hop.dst_mac;
        (*eth).src = hop.src_mac;
    }
    if hop.ifindex == ingress {
        on_tx(&hop);
        return Verdict::tx(reasons::TX_ENCAP);
    }
    // SAFETY: bpf_redirect only records the target interface for after the program.
    let action = unsafe { bpf_redirect(hop.ifindex, 0) };
    Verdict {
        action: action as u32,
        reason: reasons::TX_ENCAP,
    }
}

/// This CPU's answer for backend `slot`, if the FIB gave it for this ingress interface
/// less than [`NEXT_HOP_TTL_JIFFIES`] ago.
#[inline(always)]
fn cached_hop(slot: u32, ingress: u32, now: u64) -> Option<NextHop> {
    let hop = *NEXT_HOPS.get(slot)?;
    (fresh(hop.looked_up, now) && hop.ingress == ingress).then_some(hop)
}

/// The FIB's next hop for `outer`, stamped `now`.
#[inline(always)]
fn fib(ctx: &XdpContext, outer: &Ipv4Hdr, ingress: u32, now: u64) -> Option<NextHop> {
    // SAFETY: `bpf_fib_lookup` params are plain integers; all-zero is a valid value.
    let mut params: FibParams = unsafe { zeroed() };
    params.family = AF_INET;
    params.l4_protocol = PROTO_IPIP;
    params.__bindgen_anon_1.tot_len = u16::from_be(outer.tot_len);
    params.__bindgen_anon_2.tos = outer.tos;
    params.__bindgen_anon_3.ipv4_src = outer.saddr;
    params.__bindgen_anon_4.ipv4_dst = outer.daddr;
    params.ifindex = ingress;
    // SAFETY: `params` is a live, correctly sized `bpf_fib_lookup` on the stack.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut params, size_of::<FibParams>() as i32, 0) };
    (rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS)).then_some(NextHop {
        dst_mac: params.dmac,
        src_mac: params.smac,
        ifindex: params.ifindex,
        ingress,
        _pad: 0,
        looked_up: now,
    })
}

/// Removes the outer IPv4 header behind the L2 header at `l3`.
#[inline(always)]
pub fn decapsulate(ctx: &XdpContext, l3: usize) -> Result<(), Verdict> {
    if !parse::copy_l2(ctx, l3, 0, IPV4_HLEN, false) {
        return Err(Verdict::drop(reasons::DROP_MALFORMED));
    }
    adjust_head(ctx, IPV4_HLEN as i32)
}
