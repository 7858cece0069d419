//! Benchmark references: the least any XDP program on the LAN interface must do.
//! `cargo xtask bench` runs them beside `xdp_lb` with BPF_PROG_TEST_RUN, so the data
//! path's cost is reported as a ratio to what parsing alone (and parsing plus bouncing
//! the frame) costs on the same machine, in the same run. Built only with the
//! `bench-reference` feature, into the bench's own object: the agent's object has none.
//! [`traffic`] holds the two ends of the owner-capacity bench, [`floor`] the owner floors
//! it measures beside the reflector and `xdp_lb`.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::parse::{self, ETH_HLEN, ETH_P_IP, EthHdr, Ipv4Hdr};

mod floor;
mod traffic;

/// Reads the Ethernet header and, when it announces IPv4, the IPv4 header: the parsing
/// every classifier does before its first decision.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext) -> Option<(EthHdr, Ipv4Hdr)> {
    let eth: EthHdr = parse::read(ctx, 0)?;
    if eth.proto != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = parse::read(ctx, ETH_HLEN)?;
    (ip.version() == 4).then_some((eth, ip))
}

/// Parses Ethernet and IPv4, then passes the frame on.
#[xdp]
pub fn bench_parse_pass(ctx: XdpContext) -> u32 {
    // The destination decides nothing here; black_box keeps the compiler from dropping
    // the reads (and their bounds checks) a real classifier depends on.
    if let Some((_, ip)) = parse_ipv4(&ctx) {
        core::hint::black_box(ip.daddr);
    }
    xdp_action::XDP_PASS
}

/// Parses Ethernet and IPv4, swaps the MAC addresses and sends the frame back out.
#[xdp]
pub fn bench_parse_tx(ctx: XdpContext) -> u32 {
    let Some((mut eth, _)) = parse_ipv4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    core::mem::swap(&mut eth.src, &mut eth.dst);
    if parse::write(&ctx, 0, eth) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}
