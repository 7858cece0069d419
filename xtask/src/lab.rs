//! `cargo xtask lab`: setup, build every binary, then run the lab program (the `lab`
//! binary of the `testbed` crate) as root. xtask itself does not depend on the agent, so
//! setup still works on a machine that cannot build BPF yet.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{SigHandler, Signal, signal},
    unistd::Uid,
};

use crate::{cmd, setup};

pub fn run(root: &Path) -> anyhow::Result<()> {
    setup::run()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--bins"])
            .current_dir(root),
    )?;
    let lab = target_dir(root).join("debug").join("lab");
    let mut command = as_root(&lab);
    // Ctrl-C reaches the lab program too; it then tears the lab down, which xtask must
    // wait for rather than return the terminal halfway through. The program installs
    // its own handler, so ignoring the signal here does not carry over.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }.context("ignoring SIGINT")?;
    let status = command
        .status()
        .with_context(|| format!("starting {}", lab.display()))?;
    if !status.success() {
        bail!("the lab failed ({status})");
    }
    Ok(())
}

/// A command that runs `program` as root: directly when we are root, else through sudo.
pub fn as_root(program: &Path) -> Command {
    if Uid::effective().is_root() {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(program);
        sudo
    }
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR` if set, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}
