//! The owner-capacity bench's generator, attached to the generator's veth. Frames
//! circulate between it and the owner's XDP program: the owner's `XDP_TX` or redirect
//! hands each to the generator as an `xdp_frame`, and the generator's `XDP_TX` hands it
//! back to the owner the same way, with no skb on either side, as a NIC driver would
//! (unless the owner's kernel forwards it, as kube-proxy's path does). Each frame that
//! comes back is counted by what the owner made of it, rewritten into a fresh client
//! request, and sent again while the budget lasts. Built only into the bench's object.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    maps::{
        BENCH_ARRIVAL_KINDS, BENCH_ARRIVED_AS_SENT, BENCH_ARRIVED_ENCAPSULATED,
        BENCH_ARRIVED_OTHER, BENCH_ARRIVED_TRANSLATED, BENCH_FRAME_LEN, BENCH_GEN_PORT_BASE,
        BENCH_GEN_PORTS,
    },
    types::{BenchGenSettings, PROTO_UDP},
};

use crate::parse::{self, ETH_HLEN, ETH_P_IP, EthHdr, IPV4_HLEN, Ipv4Hdr};

const IPPROTO_IPIP: u8 = 4;

#[map]
static BENCH_GEN_FRAME: Array<[u8; BENCH_FRAME_LEN]> = Array::with_max_entries(1, 0);

#[map]
static BENCH_GEN_SETTINGS: Array<BenchGenSettings> = Array::with_max_entries(1, 0);

#[map]
static BENCH_GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_GEN_BUDGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_GEN_ARRIVALS: PerCpuArray<u64> = PerCpuArray::with_max_entries(BENCH_ARRIVAL_KINDS, 0);

/// Counts what arrived, then sends it on as the settings say, or drops it once the
/// budget is spent.
#[xdp]
pub fn bench_generate(ctx: XdpContext) -> u32 {
    let (Some(template), Some(settings)) = (BENCH_GEN_FRAME.get(0), BENCH_GEN_SETTINGS.get(0))
    else {
        return xdp_action::XDP_ABORTED;
    };
    let kind = arrival_kind(&ctx, template);
    increment(&BENCH_GEN_ARRIVALS, kind);
    if kind == BENCH_ARRIVED_OTHER || !take_from_budget() {
        return xdp_action::XDP_DROP;
    }
    let sent = if settings.reflect != 0 {
        swap_macs(&ctx)
    } else {
        regenerate(&ctx, template, settings.flows)
    };
    if sent.is_some() {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Which `BENCH_ARRIVED_*` the frame is, judged against the template's destination.
#[inline(always)]
fn arrival_kind(ctx: &XdpContext, template: &[u8; BENCH_FRAME_LEN]) -> u32 {
    let Some(eth) = parse::read::<EthHdr>(ctx, 0) else {
        return BENCH_ARRIVED_OTHER;
    };
    let Some(ip) = parse::read::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return BENCH_ARRIVED_OTHER;
    };
    if eth.proto != ETH_P_IP {
        return BENCH_ARRIVED_OTHER;
    }
    // Offset 16 of the IPv4 header: the destination, as the template holds it.
    let sent_to = u32::from_ne_bytes([
        template[ETH_HLEN + 16],
        template[ETH_HLEN + 17],
        template[ETH_HLEN + 18],
        template[ETH_HLEN + 19],
    ]);
    match ip.proto {
        IPPROTO_IPIP => BENCH_ARRIVED_ENCAPSULATED,
        PROTO_UDP if ip.daddr == sent_to => BENCH_ARRIVED_AS_SENT,
        PROTO_UDP => BENCH_ARRIVED_TRANSLATED,
        _ => BENCH_ARRIVED_OTHER,
    }
}

/// Spends one frame of this CPU's budget; false when none is left.
#[inline(always)]
fn take_from_budget() -> bool {
    let Some(budget) = BENCH_GEN_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, only touched by this CPU while the program runs on it.
    unsafe {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
    }
    true
}

#[inline(always)]
fn increment(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(count) = counters.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only touched by this CPU while the program runs on it.
        unsafe { *count += 1 };
    }
}

#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let mut eth: EthHdr = parse::read(ctx, 0)?;
    core::mem::swap(&mut eth.src, &mut eth.dst);
    parse::write(ctx, 0, eth).then_some(())
}

/// Makes the frame [`BENCH_FRAME_LEN`] bytes again (the owner may have encapsulated it)
/// and writes the whole template with the next flow's client: whatever the owner
/// rewrote (MACs, encapsulation, NAT) must not come back as the next request.
#[inline(always)]
fn regenerate(ctx: &XdpContext, template: &[u8; BENCH_FRAME_LEN], flows: u32) -> Option<()> {
    let surplus = parse::frame_len(ctx) as i32 - BENCH_FRAME_LEN as i32;
    // SAFETY: the helper moves `data` within the frame's buffer and fails (non-zero)
    // rather than leave it outside; every access below re-checks the bounds.
    if surplus != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, surplus) } != 0 {
        return None;
    }
    let frame = parse::ptr_at::<[u8; BENCH_FRAME_LEN]>(ctx, 0)?;
    // SAFETY: `ptr_at` checked that all BENCH_FRAME_LEN bytes lie inside the frame.
    unsafe { *frame = *template };
    let flow = next_flow(flows)?;
    let mut ip: Ipv4Hdr = parse::read(ctx, ETH_HLEN)?;
    let client = u32::from_be(ip.saddr).wrapping_add(flow / BENCH_GEN_PORTS);
    ip.saddr = client.to_be();
    ip.check = ip.computed_check();
    // Truncation intended: the remainder is below BENCH_GEN_PORTS (16384).
    let port = BENCH_GEN_PORT_BASE + (flow % BENCH_GEN_PORTS) as u16;
    (parse::write(ctx, ETH_HLEN, ip) && parse::write(ctx, ETH_HLEN + IPV4_HLEN, port.to_be()))
        .then_some(())
}

/// This CPU's next sequence number, folded into `flows` (0: every frame a flow of its
/// own until the sequence wraps after 2^32 frames).
#[inline(always)]
fn next_flow(flows: u32) -> Option<u32> {
    let seq = BENCH_GEN_SEQ.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot is only touched by this CPU, and not re-entered while
    // this program runs on it.
    let n = unsafe {
        let n = *seq;
        *seq = n.wrapping_add(1);
        n
    };
    Some(if flows == 0 { n } else { n % flows })
}
