//! The figures every fault test reports, one uniform line each, so they can be collected
//! into RELIABILITY.md: `FAULT <name>: requests=N failed=M recovery_ms=X`.

use std::{
    fmt,
    time::{Duration, Instant},
};

use super::probe::Requests;

/// What one fault cost the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReport {
    pub name: String,
    pub requests: usize,
    pub failed: usize,
    /// From the fault (or the heal) to the point the issue measures for it.
    pub recovery: Duration,
}

impl FaultReport {
    /// The figures of `requests`, with `recovery` measured by the caller.
    pub fn new(name: &str, requests: &Requests, recovery: Duration) -> Self {
        Self {
            name: name.to_owned(),
            requests: requests.0.len(),
            failed: requests.failures().len(),
            recovery,
        }
    }

    /// Prints the line (test output; run with `--nocapture` to see it).
    pub fn print(&self) {
        eprintln!("{self}");
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FAULT {}: requests={} failed={} recovery_ms={}",
            self.name,
            self.requests,
            self.failed,
            self.recovery.as_millis()
        )
    }
}

/// How long after `since` requests kept failing: up to the start of the first request
/// that succeeded after the last failure that started at or after `since` (zero when
/// none failed). For a fault that breaks only some requests (those hashed to a dead
/// backend), this is when the remaining ones stopped breaking.
pub fn failing_until(requests: &Requests, since: Instant) -> Duration {
    let Some(last_failure) = requests
        .failures()
        .iter()
        .map(|attempt| attempt.started)
        .filter(|&started| started >= since)
        .max()
    else {
        return Duration::ZERO;
    };
    let recovered = requests
        .0
        .iter()
        .filter(|attempt| attempt.started > last_failure && attempt.result.is_ok())
        .map(|attempt| attempt.started)
        .min()
        .unwrap_or(last_failure);
    recovered - since
}
