//! `cargo xtask setup`: installs only the prerequisites that are missing, so a second run
//! takes seconds. Targets Debian 12 as root (the CI machine kind).

use std::{env, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

const APT_PACKAGES: &[&str] = &[
    // C toolchain: the linker driver for host builds and for `cargo install bpf-linker`.
    "build-essential",
    // bpf-linker links against Debian's LLVM 22 (the crate's default wants LLVM 23).
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Privileged tests and the lab: namespaces, veth/bridge, offload switches, clients,
    // packet capture, the DNS server and the HTTP server run in pods.
    "iproute2",
    "iputils-ping",
    "ethtool",
    "curl",
    "dnsutils",
    "tcpdump",
    "dnsmasq-base",
    "python3",
    // The forwarding benchmark's kube-proxy reference path (iptables DNAT + MASQUERADE).
    "iptables",
    // The alerting rules' unit tests (`promtool check rules`, `promtool test rules`) and
    // the lab's Prometheus, which scrapes the agents and evaluates those rules.
    "prometheus",
    // `cargo xtask bench` draws its chart's text with DejaVu Sans.
    "fonts-dejavu-core",
    // `cargo xtask image`: the root filesystem from Debian's packages, the OCI image.
    "mmdebstrap",
    "buildah",
    // The container tier runs the image as a node's runtime would (containerd with
    // runc), and checks that podman loads the archive too.
    "containerd",
    "runc",
    "podman",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Any 0.13.x linker speaks the same object format as the pinned aya train.
const BPF_LINKER_SERIES: &str = "bpf-linker 0.13.";
/// Runs the fuzz tier's targets (fuzz/) with the nightly toolchain installed above.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> anyhow::Result<()> {
    let actions: Vec<String> = [
        apt_packages()?,
        rust_components()?,
        bpf_linker()?,
        cargo_fuzz()?,
        crate::helm::install()?,
    ]
    .into_iter()
    .flatten()
    .collect();
    if actions.is_empty() {
        println!(
            "setup: everything present (apt packages, nightly rust-src, clippy, rustfmt, {BPF_LINKER_SERIES}x, cargo-fuzz, helm)"
        );
    }
    for action in actions {
        println!("setup: {action}");
    }
    Ok(())
}

fn apt_packages() -> anyhow::Result<Option<String>> {
    let missing = missing_apt_packages()?;
    if missing.is_empty() {
        return Ok(None);
    }
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(Some(format!(
        "installed apt packages: {}",
        missing.join(" ")
    )))
}

fn missing_apt_packages() -> anyhow::Result<Vec<&'static str>> {
    // dpkg-query exits non-zero when any package is unknown but still lists the others.
    let output = cmd::probe(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
            .args(APT_PACKAGES),
    )
    .context("dpkg-query not found: setup supports Debian-based machines only")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(package, _)| package)
        .collect();
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect())
}

/// Nightly + rust-src builds the BPF target; clippy and rustfmt serve the lint tier.
fn rust_components() -> anyhow::Result<Option<String>> {
    let mut actions = Vec::new();
    match installed_components(Some("nightly")) {
        None => {
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            actions.push("installed the nightly toolchain with rust-src");
        }
        Some(components) if !has_component(&components, "rust-src") => {
            cmd::run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
            actions.push("added rust-src to nightly");
        }
        Some(_) => {}
    }
    let stable = installed_components(None)
        .context("rustup cannot list the components of the active toolchain")?;
    let missing: Vec<&str> = ["clippy", "rustfmt"]
        .into_iter()
        .filter(|component| !has_component(&stable, component))
        .collect();
    if !missing.is_empty() {
        cmd::run(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&missing),
        )?;
        actions.push("added clippy/rustfmt to the active toolchain");
    }
    Ok((!actions.is_empty()).then(|| actions.join(", ")))
}

/// Installed component names of `toolchain` (the active one when `None`), or `None` when
/// the toolchain is not installed.
fn installed_components(toolchain: Option<&str>) -> Option<Vec<String>> {
    let mut command = Command::new("rustup");
    command.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        command.args(["--toolchain", toolchain]);
    }
    let output = cmd::probe(&mut command).filter(|output| output.status.success())?;
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Components are listed with their target triple (`clippy-x86_64-…`) except
/// target-independent ones (`rust-src`).
fn has_component(installed: &[String], component: &str) -> bool {
    let with_target = format!("{component}-");
    installed
        .iter()
        .any(|name| name == component || name.starts_with(&with_target))
}

fn bpf_linker() -> anyhow::Result<Option<String>> {
    if let Some(version) = bpf_linker_version()
        && version.starts_with(BPF_LINKER_SERIES)
    {
        return Ok(None);
    }
    // llvm-sys finds LLVM through the first llvm-config on PATH; without LLVM 22's in
    // front the link fails with `unable to find library -lLLVM`.
    let path = env::var_os("PATH").unwrap_or_default();
    let mut search = vec![format!("{LLVM_PREFIX}/bin").into()];
    search.extend(env::split_paths(&path));
    cmd::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version"])
            .arg(format!("={BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22", "--locked"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", env::join_paths(search)?),
    )?;
    match bpf_linker_version() {
        Some(version) if version.starts_with(BPF_LINKER_SERIES) => {
            Ok(Some(format!("installed {}", version.trim())))
        }
        other => bail!(
            "bpf-linker still not {BPF_LINKER_SERIES}x after install (found {other:?}); is ~/.cargo/bin on PATH?"
        ),
    }
}

fn bpf_linker_version() -> Option<String> {
    cmd::probe(Command::new("bpf-linker").arg("--version"))
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Any cargo-fuzz will do (the tier only uses `build` and `run`); installed when missing.
fn cargo_fuzz() -> anyhow::Result<Option<String>> {
    if cargo_fuzz_version().is_some() {
        return Ok(None);
    }
    cmd::run(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(format!("={CARGO_FUZZ_VERSION}")),
    )?;
    match cargo_fuzz_version() {
        Some(version) => Ok(Some(format!("installed {}", version.trim()))),
        None => bail!("cargo-fuzz still missing after install; is ~/.cargo/bin on PATH?"),
    }
}

fn cargo_fuzz_version() -> Option<String> {
    cmd::probe(Command::new("cargo-fuzz").arg("--version"))
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
}
