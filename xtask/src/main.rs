//! `cargo xtask`: the project's build and test entry points.

mod cmd;
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test(options) => test::run(&options),
    }
}
