//! Benchmarks run by `cargo xtask bench` through the `bench` binary: every part returns
//! measurements, each with the target the project set for it (if any) and whether it
//! was met. Figures are ratios against references measured in the same run; absolute
//! values are reported, never asserted.

pub mod control_plane;
pub mod dsr;
pub mod failover;
pub mod forwarding;
pub mod maglev_quality;
pub mod owner;
mod paths_lab;
pub mod program;

pub use bench_measurement::Measurement;

/// The bench's own object: `lb-ebpf` built with the `bench-reference` feature by
/// build.rs, the only object holding the reference programs and the owner bench's
/// generator and sink.
pub(crate) static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The packets counted by the rules of iptables' `table`/`chain` in `netns` whose
/// listing line contains `marker`.
pub(crate) fn rule_packets(
    netns: &crate::netns::Netns,
    table: &str,
    chain: &str,
    marker: &str,
) -> anyhow::Result<u64> {
    let listing = netns.run(&format!("iptables -w -t {table} -L {chain} -n -v -x"))?;
    listing
        .lines()
        .filter(|line| line.contains(marker))
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|packets| packets.parse::<u64>().ok())
                .ok_or_else(|| anyhow::anyhow!("no packet count in {line:?}"))
        })
        .sum()
}

/// `values` as `[a, b, c]`, each with as many decimals as its size needs.
pub(crate) fn list(values: &[f64]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|value| match value.abs() {
            a if a >= 100.0 => format!("{value:.0}"),
            a if a >= 1.0 => format!("{value:.2}"),
            _ => format!("{value:.4}"),
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
