//! `cargo xtask`: the project's build and test entry points.

mod bench;
mod cmd;
mod helm;
mod image;
mod lab;
mod layers;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "xdplb build and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the build and test prerequisites (apt packages, nightly rust-src,
    /// bpf-linker); only what is missing.
    Setup,
    /// Run setup, then every test tier: lint, host, privileged (root).
    Test(test::Options),
    /// Run setup, build, then the lab (as root, through sudo if needed): a homelab LAN
    /// in network namespaces with a client and three nodes running lb-agent; shows the
    /// VIP owners, `lbctl status`, requests spread over pods, and a measured failover
    /// when the web VIP's owner goes away. Everything is removed at the end.
    Lab,
    /// Run setup, a release build, then the benchmarks (as root, through sudo if
    /// needed): program cost, Maglev quality, control plane, forwarding and failover.
    /// Writes bench/results.json, bench/results.png, BENCHMARKS.md and the README's
    /// summary block, and prints the table. Takes several minutes.
    Bench(bench::Options),
    /// Run setup, a release build, then build the agent's container image (Debian 12
    /// packages, no Docker engine: mmdebstrap and buildah) and write it as an OCI
    /// archive under target/image/, ready for `ctr images import`, `k3s ctr images
    /// import` or `podman load` on a node.
    Image(image::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test(options) => test::run(&options),
        Task::Lab => lab::run(&test::workspace_root()),
        Task::Bench(options) => bench::run(&test::workspace_root(), &options),
        Task::Image(options) => image::run(&test::workspace_root(), &options).map(drop),
    }
}
