//! Watching Prometheus's alerts through a fault: which alerts go pending, which fire,
//! how soon, and that they resolve once the fault is healed. Every wait is bounded by
//! a number of polls.

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::Prometheus;
use crate::lab::interrupted;

/// How often the alerts are read.
const POLL: Duration = Duration::from_millis(200);

/// An active alert, as `/api/v1/alerts` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub name: String,
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

impl Alert {
    pub(super) fn from_api(alert: &Value) -> anyhow::Result<Self> {
        let labels: BTreeMap<String, String> = serde_json::from_value(alert["labels"].clone())
            .with_context(|| format!("alert labels in {alert}"))?;
        Ok(Self {
            name: labels.get("alertname").cloned().unwrap_or_default(),
            labels,
            state: alert["state"].as_str().unwrap_or_default().to_owned(),
        })
    }

    fn firing(&self) -> bool {
        self.state == "firing"
    }
}

/// An alert a fault must fire, with labels (name, value) its firing instance carries.
pub type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// What a fault's alerts did, in time since the fault (resolved: since the heal).
#[derive(Debug, Default)]
pub struct AlertTimes {
    pub pending: BTreeMap<String, Duration>,
    pub firing: BTreeMap<String, Duration>,
    /// The label sets each alert fired with.
    pub fired_with: BTreeMap<String, BTreeSet<BTreeMap<String, String>>>,
    /// Alerts neither expected nor tolerated that went pending (and never fired).
    pub stray_pending: BTreeSet<String>,
    pub resolved: Option<Duration>,
}

impl AlertTimes {
    /// Whether `alert` fired with every (name, value) of `labels`.
    pub fn fired(&self, alert: &str, labels: &[(&str, &str)]) -> bool {
        self.fired_with.get(alert).is_some_and(|sets| {
            sets.iter().any(|set| {
                labels
                    .iter()
                    .all(|(name, value)| set.get(*name).map(String::as_str) == Some(*value))
            })
        })
    }
}

impl Prometheus {
    /// What the scrapes did over the last minute, for a failure's message.
    fn diagnosis(&self) -> String {
        [
            "min_over_time(up[1m])",
            "max_over_time(scrape_duration_seconds[1m])",
            "changes(xdplb_vip_owned[1m]) > 0",
            "max_over_time(xdplb_gossip_members{state!=\"alive\"}[1m]) > 0",
        ]
        .iter()
        .map(|expr| match self.query(expr) {
            Ok(samples) => format!("{expr}: {samples:?}"),
            Err(error) => format!("{expr}: {error:#}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// Polls the alerts for `duration`; fails at the first active one (pending or
    /// firing).
    pub fn expect_quiet(&self, duration: Duration) -> anyhow::Result<()> {
        for _ in 0..polls(duration) {
            let active = self.alerts()?;
            if !active.is_empty() {
                bail!("alerts in a healthy lab: {active:?}\n{}", self.diagnosis());
            }
            pause()?;
        }
        Ok(())
    }

    /// Right after a fault: waits, at most `within`, until every alert of `expected` has
    /// gone pending and then fired with its labels, failing as soon as an alert outside
    /// `expected` and `tolerated` fires; then heals the fault with `heal` and waits, at
    /// most `within` again, until no alert is active. `started` is when the fault began.
    pub fn expect_alerts(
        &self,
        started: Instant,
        expected: &[Expected<'_>],
        tolerated: &[&str],
        within: Duration,
        heal: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<AlertTimes> {
        let mut times = AlertTimes::default();
        let mut done = false;
        let names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        for _ in 0..polls(within) {
            for alert in self.alerts()? {
                let known = names.contains(&alert.name.as_str());
                if alert.firing() && !known && !tolerated.contains(&alert.name.as_str()) {
                    bail!(
                        "{} fired, which this fault should not cause: {alert:?}",
                        alert.name
                    );
                }
                if !known && !tolerated.contains(&alert.name.as_str()) {
                    times.stray_pending.insert(alert.name.clone());
                }
                let seen = if alert.firing() {
                    &mut times.firing
                } else {
                    &mut times.pending
                };
                seen.entry(alert.name.clone())
                    .or_insert_with(|| started.elapsed());
                if alert.firing() {
                    times
                        .fired_with
                        .entry(alert.name.clone())
                        .or_default()
                        .insert(alert.labels.clone());
                }
            }
            done = expected
                .iter()
                .all(|(name, labels)| times.fired(name, labels));
            if done {
                break;
            }
            pause()?;
        }
        if !done {
            bail!(
                "within {within:?}, of {expected:?} only {times:?} happened\n{}",
                self.diagnosis()
            );
        }
        for name in names {
            if !times.pending.contains_key(name) {
                bail!("{name} fired without being seen pending first: {times:?}");
            }
        }
        heal()?;
        let healed = Instant::now();
        for _ in 0..polls(within) {
            if self.alerts()?.is_empty() {
                times.resolved = Some(healed.elapsed());
                return Ok(times);
            }
            pause()?;
        }
        bail!(
            "alerts still active {within:?} after the heal: {:?}",
            self.alerts()?
        )
    }
}

fn polls(duration: Duration) -> u128 {
    duration.as_millis().div_ceil(POLL.as_millis()).max(1)
}

fn pause() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    thread::sleep(POLL);
    Ok(())
}
