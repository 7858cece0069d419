//! One figure of `cargo xtask bench`: the `bench` program of the testbed prints a JSON
//! array of [`Measurement`]s, and xtask reads it back into the same type to write the
//! results file, the tables and the chart.

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

#[cfg(test)]
mod tests {
    use super::Measurement;

    #[test]
    fn targets_are_met_on_their_side_of_the_limit() {
        let ratio = |value| Measurement::new("program", "ratio", value, "x", "runs");
        let met = |m: Measurement| m.target.map(|target| target.met);
        assert_eq!(met(ratio(1.3).at_most(1.3, "<= 1.3x")), Some(true));
        assert_eq!(met(ratio(1.31).at_most(1.3, "<= 1.3x")), Some(false));
        assert_eq!(met(ratio(2.0).at_least(2.0, ">= 2x")), Some(true));
        assert_eq!(met(ratio(1.9).at_least(2.0, ">= 2x")), Some(false));
        assert_eq!(met(ratio(1.0)), None);
    }
}
