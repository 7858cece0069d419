//! The owner bench's machinery, untimed: the live-frames generator's frames reach the
//! owner's XDP program as XDP frames, and the sink counts every one that arrives where
//! the owner sent it; `xdp_lb` as owner encapsulates each towards the backend node.

use anyhow::{Result, ensure};
use lb_common::reasons;
use testbed::{
    bench::owner::rig::{Arrivals, OwnerProgram, Rig},
    cpu::OnOneCpu,
};

const FRAMES: u64 = 20_000;
const PER_CALL: u32 = 5_000;
const FLOWS: u32 = 8;

/// Generates [`FRAMES`] frames with `owner` on the owner's LAN port; returns where they
/// arrived.
fn deliver(rig: &mut Rig, owner: OwnerProgram) -> Result<Arrivals> {
    rig.attach_owner(owner)?;
    let before = rig.arrivals()?;
    let _pinned = OnOneCpu::pin()?;
    let run = rig.generate(FRAMES, PER_CALL)?;
    ensure!(run.frames == FRAMES, "generated {} frames", run.frames);
    Ok(rig.arrivals()?.since(before))
}

#[test]
fn every_generated_frame_reaches_the_sink_the_owner_sends_it_to() -> Result<()> {
    let mut rig = Rig::new()?;
    rig.set_flows(FLOWS)?;
    let at_owner = deliver(&mut rig, OwnerProgram::Sink)?;
    ensure!(
        at_owner
            == Arrivals {
                owner: FRAMES,
                ..Arrivals::default()
            },
        "with the sink as owner: {at_owner:?}"
    );
    let reflected = deliver(&mut rig, OwnerProgram::Reflector)?;
    ensure!(
        reflected
            == Arrivals {
                generator: FRAMES,
                ..Arrivals::default()
            },
        "with the reflector as owner: {reflected:?}"
    );
    let before = rig.owner.maps.reason_totals()?;
    let forwarded = deliver(&mut rig, OwnerProgram::XdpLb)?;
    let after = rig.owner.maps.reason_totals()?;
    ensure!(
        forwarded
            == Arrivals {
                backend: FRAMES,
                ..Arrivals::default()
            },
        "with xdp_lb as owner: {forwarded:?}"
    );
    let moved = |reason: u32| after[reason as usize] - before[reason as usize];
    ensure!(
        moved(reasons::TX_ENCAP) == FRAMES && moved(reasons::FLOW_CACHE_MISS) == u64::from(FLOWS),
        "xdp_lb encapsulated {} frames with {} flow-table misses",
        moved(reasons::TX_ENCAP),
        moved(reasons::FLOW_CACHE_MISS)
    );
    Ok(())
}
