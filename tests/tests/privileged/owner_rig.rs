//! The owner bench's machinery, untimed: the namespaces, links and programs come up and
//! every owner program attaches in turn; then, where the kernel runs live-frames mode,
//! the generator's frames reach the owner's XDP program as XDP frames, the sink counts
//! every one that arrives where the owner sent it, and `xdp_lb` as owner encapsulates
//! each towards the backend node. Where live frames are refused it says so and stops.

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
    // Every owner program attaches natively to the owner's port, in turn.
    for owner in [
        OwnerProgram::Sink,
        OwnerProgram::Reflector,
        OwnerProgram::XdpLb,
        OwnerProgram::Pass,
    ] {
        rig.attach_owner(owner)?;
    }
    if rig.live_frames_refused()? {
        eprintln!("skipping: this kernel refuses BPF_PROG_TEST_RUN's live-frames mode (EPERM)");
        return Ok(());
    }
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
