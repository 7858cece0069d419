//! The owner bench's machinery, untimed: the namespaces, link and programs come up,
//! every owner program attaches in turn, and frames injected once circulate between
//! the generator and the owner as XDP frames: reflected by the reflector, encapsulated
//! towards the backend node by `xdp_lb` and by each owner floor (whose lookups all hit,
//! or the frames would come back unencapsulated), and nothing else comes back. Every run dies
//! out by itself once the generator's budget is withdrawn.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header};
use lb_common::{
    maps::{BENCH_GEN_MAC, BENCH_OWNER_MAC},
    reasons,
    types::BenchGenSettings,
};
use testbed::{
    bench::owner::rig::{Arrivals, BACKEND_NODE, OwnerProgram, Rig, VIP},
    cpu::OnOneCpu,
    fixture::{NODE, XDP_TX},
};

const IN_FLIGHT: usize = 8;
const FLOWS: u32 = 8;
const WARM_UP: Duration = Duration::from_millis(50);
const WINDOW: Duration = Duration::from_millis(200);
/// Far fewer round trips than any path makes in the window, far more than injected.
const AT_LEAST: u64 = 1_000;

/// Circulates with `owner` on the owner's LAN port; returns what came back in the window.
fn circulate(rig: &mut Rig, owner: OwnerProgram) -> Result<Arrivals> {
    rig.attach_owner(owner)?;
    let _pinned = OnOneCpu::pin()?;
    Ok(rig.circulate(IN_FLIGHT, WARM_UP, WINDOW)?.arrivals)
}

#[test]
fn injected_frames_circulate_through_each_owner_program_and_die_out() -> Result<()> {
    let mut rig = Rig::new()?;
    rig.fill_floor_tables(FLOWS)?;
    rig.attach_owner(OwnerProgram::Pass)?;
    rig.set_generator(BenchGenSettings {
        flows: FLOWS,
        reflect: 0,
    })?;
    let reflected = circulate(&mut rig, OwnerProgram::Reflector)?;
    ensure!(
        reflected.as_sent >= AT_LEAST && reflected.total() - reflected.other == reflected.as_sent,
        "with the reflector as owner: {reflected:?}"
    );
    for floor in OwnerProgram::FLOORS {
        encapsulated_only(floor, circulate(&mut rig, floor)?)?;
    }
    let before = rig.owner.maps.reason_totals()?;
    let forwarded = circulate(&mut rig, OwnerProgram::XdpLb)?;
    let after = rig.owner.maps.reason_totals()?;
    encapsulated_only(OwnerProgram::XdpLb, forwarded)?;
    let moved = |reason: u32| after[reason as usize] - before[reason as usize];
    let sent = moved(reasons::TX_ENCAP) + moved(reasons::TX_EXPRESS);
    ensure!(
        sent >= forwarded.encapsulated && moved(reasons::FLOW_CACHE_MISS) <= u64::from(FLOWS),
        "xdp_lb encapsulated {sent} frames with {} flow-table misses",
        moved(reasons::FLOW_CACHE_MISS)
    );
    // `circulate` returned only once nothing arrived any more: the frames died out.
    let settled = rig.arrivals()?;
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        rig.arrivals()? == settled,
        "frames still circulate after the run"
    );
    Ok(())
}

#[test]
fn each_floor_sends_the_request_to_the_backend_node_in_valid_ipip() -> Result<()> {
    let mut rig = Rig::new()?;
    rig.fill_floor_tables(FLOWS)?;
    let request = rig.template(VIP)?;
    let inner = &request[Ethernet2Header::LEN..];
    for floor in OwnerProgram::FLOORS {
        let (action, sent) = rig.test_run(floor, &request)?;
        ensure!(action == XDP_TX, "{floor:?} returned {action}");
        let (eth, packet) = Ethernet2Header::from_slice(&sent).context("no Ethernet")?;
        let (outer, payload) = Ipv4Header::from_slice(packet).context("no outer IPv4")?;
        ensure!(
            eth.destination == BENCH_GEN_MAC
                && eth.source == BENCH_OWNER_MAC
                && eth.ether_type == EtherType::IPV4,
            "{floor:?} sent {eth:?}"
        );
        ensure!(
            outer.protocol == IpNumber::IPV4
                && outer.source == NODE.octets()
                && outer.destination == BACKEND_NODE.octets()
                && usize::from(outer.total_len) == packet.len()
                && outer.header_checksum == outer.calc_header_checksum(),
            "{floor:?} sent the outer header {outer:?}"
        );
        ensure!(payload == inner, "{floor:?} changed the inner packet");
    }
    Ok(())
}

/// Enough frames came back, all of them encapsulated.
fn encapsulated_only(owner: OwnerProgram, arrivals: Arrivals) -> Result<()> {
    ensure!(
        arrivals.encapsulated >= AT_LEAST
            && arrivals.total() - arrivals.other == arrivals.encapsulated,
        "with {owner:?} as owner: {arrivals:?}"
    );
    Ok(())
}
