use std::path::Path;

use anyhow::Context as _;
use aya_build::Toolchain;

/// Builds the bench's own BPF object: `lb-ebpf` with the `bench-reference` feature, so
/// it holds the reference programs beside the data path's. The agent's object (built by
/// `lb-agent/build.rs`, which the fixtures, the lab and the bench's `xdp_lb` use) has
/// none. aya-build leaves it in OUT_DIR, where `bench::program` embeds it.
fn main() -> anyhow::Result<()> {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf");
    let root_dir = root_dir.to_str().context("the lb-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            features: &["bench-reference"],
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
