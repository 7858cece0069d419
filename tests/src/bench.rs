//! Benchmarks run by `cargo xtask bench` through the `bench` binary: every part returns
//! measurements, each with the target the project set for it (if any) and whether it
//! was met. Figures are ratios against references measured in the same run; absolute
//! values are reported, never asserted.

pub mod control_plane;
pub mod failover;
pub mod forwarding;
pub mod maglev_quality;
pub mod program;

use serde::{Deserialize, Serialize};

/// One reported figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The part of the report: `program`, `forwarding`, `failover`, `control-plane`,
    /// `maglev`.
    pub group: String,
    /// What was measured, e.g. `VIP flow hit (IPIP)` or `UDP pps: xdplb / kube-proxy`.
    pub name: String,
    pub value: f64,
    /// `ns`, `pps`, `req/s`, `ms`, `MiB`, `x` (a ratio), `%`, ...
    pub unit: String,
    /// How it was measured: repeat count, runs, trials, packet size.
    pub detail: String,
    pub target: Option<Target>,
}

/// A target from the benchmark issue and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Human form, e.g. `<= 1.3x minimal pass`.
    pub text: String,
    pub met: bool,
}

impl Measurement {
    pub fn new(group: &str, name: &str, value: f64, unit: &str, detail: &str) -> Self {
        Self {
            group: group.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            detail: detail.to_owned(),
            target: None,
        }
    }

    /// Sets a target of the form `value <= limit`.
    pub fn at_most(mut self, limit: f64, text: &str) -> Self {
        self.target = Some(Target {
            text: text.to_owned(),
            met: self.value <= limit,
        });
        self
    }

    /// Sets a target of the form `value >= limit`.
    pub fn at_least(mut self, limit: f64, text: &str) -> Self {
        self.target = Some(Target {
            text: text.to_owned(),
            met: self.value >= limit,
        });
        self
    }
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
