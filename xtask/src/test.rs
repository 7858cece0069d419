//! `cargo xtask test`: setup, then the test tiers in order, stopping at the first failure
//! and always ending with one summary line per tier.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::bail;
use nix::unistd::Uid;

use crate::{cmd, setup};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Skip the privileged tier (network namespaces, BPF), which needs root.
    #[arg(long)]
    host_only: bool,
}

type TierFn = fn(&Path) -> anyhow::Result<()>;

const TIERS: [(&str, TierFn); 4] = [
    ("setup", |_| setup::run()),
    ("lint", lint),
    ("host", host),
    ("privileged", privileged),
];

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !options.host_only && !Uid::effective().is_root() {
        bail!(
            "the privileged tier needs root (network namespaces, BPF programs); \
             run as root, or pass --host-only to run only setup, lint and host tests"
        );
    }
    let root = workspace_root();
    let started = Instant::now();
    let mut summary = Vec::new();
    let mut failure = None;
    for (name, tier) in TIERS {
        if failure.is_some() {
            summary.push(format!("{name:<10} not run"));
            continue;
        }
        if name == "privileged" && options.host_only {
            summary.push(format!("{name:<10} skipped (--host-only)"));
            continue;
        }
        eprintln!("== tier {name}");
        let tier_started = Instant::now();
        let result = tier(&root);
        let seconds = tier_started.elapsed().as_secs_f64();
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        summary.push(format!("{name:<10} {verdict} in {seconds:.1}s"));
        failure = result
            .err()
            .map(|error| error.context(format!("tier {name}")));
    }
    println!("== summary");
    for line in summary {
        println!("{line}");
    }
    println!("total      {:.1}s", started.elapsed().as_secs_f64());
    failure.map_or(Ok(()), Err)
}

fn lint(root: &Path) -> anyhow::Result<()> {
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// lb-ebpf is a `no_main` BPF binary that cannot link for the host; its code is
/// exercised through BPF_PROG_TEST_RUN in the privileged tier.
fn host(root: &Path) -> anyhow::Result<()> {
    cargo(
        root,
        &[
            "test",
            "--workspace",
            "--exclude",
            "tests",
            "--exclude",
            "lb-ebpf",
        ],
    )
}

/// The end-to-end tests run the agent binary, so the binaries are built first.
fn privileged(root: &Path) -> anyhow::Result<()> {
    cargo(root, &["build", "--bins"])?;
    cargo(root, &["test", "-p", "tests", "--", "--test-threads=1"])
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new("cargo").args(args).current_dir(root))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
