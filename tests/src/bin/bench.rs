//! `bench`: the measuring half of `cargo xtask bench`. Runs the named parts (all when
//! none is named) and prints their measurements as one JSON array on stdout; progress
//! goes to stderr. Needs root and the workspace binaries (`cargo build --release --bins`).

use std::process::ExitCode;

use testbed::bench::{self, Measurement};

type Part = fn() -> anyhow::Result<Vec<Measurement>>;

const PARTS: [(&str, Part); 7] = [
    ("program", bench::program::run),
    ("owner", bench::owner::run),
    ("maglev", bench::maglev_quality::run),
    ("control-plane", bench::control_plane::run),
    ("forwarding", bench::forwarding::run),
    ("dsr", bench::dsr::run),
    ("failover", bench::failover::run),
];

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let mut measurements = Vec::new();
    for (name, part) in PARTS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        eprintln!("== bench {name}");
        match part() {
            Ok(found) => measurements.extend(found),
            Err(error) => {
                eprintln!("error: bench {name}: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    match serde_json::to_string_pretty(&measurements) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
