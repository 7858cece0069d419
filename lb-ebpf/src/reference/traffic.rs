//! The owner-capacity bench's traffic ends: a generator run with BPF_PROG_TEST_RUN in
//! live-frames mode on the generator's veth, whose `XDP_TX` hands `xdp_frame`s to the
//! owner's native XDP program as a NIC would (no skb), and a sink that counts what
//! reaches an interface. Built only into the bench's object.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::maps::{BENCH_FRAME_LEN, BENCH_GEN_PORT_BASE, BENCH_GEN_PORTS, BENCH_SINK_SLOTS};

use crate::parse::{self, ETH_HLEN, IPV4_HLEN, Ipv4Hdr};

#[map]
static BENCH_GEN_FRAME: Array<[u8; BENCH_FRAME_LEN]> = Array::with_max_entries(1, 0);

#[map]
static BENCH_GEN_FLOWS: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static BENCH_GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_SINK_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(BENCH_SINK_SLOTS, 0);

/// Writes the template and the next flow's client into the frame and sends it out.
#[xdp]
pub fn bench_generate(ctx: XdpContext) -> u32 {
    if generate(&ctx).is_some() {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// The whole template every run: live-frames mode recycles its pages without restoring
/// them, and whatever the path downstream rewrote (MACs, encapsulation, NAT) would
/// otherwise come back as the next frame.
#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<()> {
    let template = BENCH_GEN_FRAME.get(0)?;
    let frame = parse::ptr_at::<[u8; BENCH_FRAME_LEN]>(ctx, 0)?;
    // SAFETY: `ptr_at` checked that all BENCH_FRAME_LEN bytes lie inside the frame.
    unsafe { *frame = *template };
    let flow = next_flow()?;
    let mut ip: Ipv4Hdr = parse::read(ctx, ETH_HLEN)?;
    let client = u32::from_be(ip.saddr).wrapping_add(flow / BENCH_GEN_PORTS);
    ip.saddr = client.to_be();
    ip.check = ip.computed_check();
    // Truncation intended: the remainder is below BENCH_GEN_PORTS (16384).
    let port = BENCH_GEN_PORT_BASE + (flow % BENCH_GEN_PORTS) as u16;
    (parse::write(ctx, ETH_HLEN, ip) && parse::write(ctx, ETH_HLEN + IPV4_HLEN, port.to_be()))
        .then_some(())
}

/// This CPU's next sequence number, folded into the configured flow count (none: every
/// frame a flow of its own until the sequence wraps after 2^32 frames).
#[inline(always)]
fn next_flow() -> Option<u32> {
    let seq = BENCH_GEN_SEQ.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot is only touched by this CPU, and not re-entered while
    // this program runs on it.
    let n = unsafe {
        let n = *seq;
        *seq = n.wrapping_add(1);
        n
    };
    let flows = *BENCH_GEN_FLOWS.get(0)?;
    Some(if flows == 0 { n } else { n % flows })
}

/// Counts the frame under its ingress interface and drops it.
#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the kernel's `xdp_md` for this run, valid while it lasts.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if let Some(count) = BENCH_SINK_COUNTS.get_ptr_mut(ifindex) {
        // SAFETY: a per-CPU slot, only touched by this CPU while the program runs.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}
