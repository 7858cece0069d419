//! The DSR bench's machinery, untimed: the shared lab comes up, 4 x 64 MiB downloads go
//! through xdplb and through kube-proxy with every path check of the bench, and the
//! xdplb owner's switch port carries at most the target's share of the bytes the
//! kube-proxy owner's carries (replies never cross it).

use anyhow::{Result, ensure};
use testbed::bench::dsr;

#[test]
fn replies_through_xdplb_bypass_the_owner() -> Result<()> {
    let carried = dsr::smoke()?;
    let share = carried.xdplb / carried.kube_proxy;
    ensure!(
        share <= dsr::OWNER_BYTES_TARGET,
        "the xdplb owner carried {:.0} B per MiB delivered, {share:.3}x the kube-proxy \
         owner's {:.0}",
        carried.xdplb,
        carried.kube_proxy
    );
    Ok(())
}
