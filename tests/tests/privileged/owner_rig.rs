//! The owner bench's machinery, untimed: the namespaces, link and programs come up,
//! every owner program attaches in turn, and frames injected once circulate between
//! the generator and the owner as XDP frames: reflected by the reflector, encapsulated
//! towards the backend node by `xdp_lb`, and nothing else comes back. Every run dies
//! out by itself once the generator's budget is withdrawn.

use std::time::Duration;

use anyhow::{Result, ensure};
use lb_common::{reasons, types::BenchGenSettings};
use testbed::{
    bench::owner::rig::{Arrivals, OwnerProgram, Rig},
    cpu::OnOneCpu,
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
    let before = rig.owner.maps.reason_totals()?;
    let forwarded = circulate(&mut rig, OwnerProgram::XdpLb)?;
    let after = rig.owner.maps.reason_totals()?;
    ensure!(
        forwarded.encapsulated >= AT_LEAST
            && forwarded.total() - forwarded.other == forwarded.encapsulated,
        "with xdp_lb as owner: {forwarded:?}"
    );
    let moved = |reason: u32| after[reason as usize] - before[reason as usize];
    ensure!(
        moved(reasons::TX_ENCAP) >= forwarded.encapsulated
            && moved(reasons::FLOW_CACHE_MISS) <= u64::from(FLOWS),
        "xdp_lb encapsulated {} frames with {} flow-table misses",
        moved(reasons::TX_ENCAP),
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
