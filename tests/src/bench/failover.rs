//! Failover as a client sees it: the owner of the web VIP on a three-node lab cluster
//! goes away (agent SIGKILLed, LAN link down) while the client opens a new connection
//! every 20 ms; the outage runs from the kill to the answer of the first request started
//! after it. Trials repeat with the old owner brought back in between.

use std::time::Duration;

use super::Measurement;
use crate::lab::{Cluster, Failure, Pace, Service, WEB_VIP};

const GROUP: &str = "failover";
const NODES: usize = 3;
const TRIALS: usize = 10;
const FAILURE: Failure = Failure::NodeGone;
const P50_TARGET: Duration = Duration::from_secs(1);
const MAX_TARGET: Duration = Duration::from_secs(2);

pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let cluster = Cluster::start(NODES, Service::homelab())?;
    let outcome = trials(&cluster);
    if outcome.is_err() {
        cluster.dump_logs();
    }
    let (mut outages, mut reelections) = outcome?;
    outages.sort();
    reelections.sort();
    let all: Vec<u128> = outages.iter().map(Duration::as_millis).collect();
    let detail = format!(
        "{TRIALS} trials on {NODES} nodes, owner {FAILURE}; a new connection every {} ms \
         (each given {} ms); all outages {all:?} ms",
        Pace::OUTAGE.every.as_millis(),
        Pace::OUTAGE.timeout.as_millis()
    );
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    Ok(vec![
        Measurement::new(
            GROUP,
            "failover p50 (kill to first answer)",
            ms(percentile_50(&outages)),
            "ms",
            &detail,
        )
        .at_most(ms(P50_TARGET), "<= 1 s"),
        Measurement::new(
            GROUP,
            "failover max (kill to first answer)",
            ms(outages[outages.len() - 1]),
            "ms",
            &detail,
        )
        .at_most(ms(MAX_TARGET), "<= 2 s"),
        Measurement::new(
            GROUP,
            "re-election p50 (kill to every survivor naming the new owner)",
            ms(percentile_50(&reelections)),
            "ms",
            &format!("{TRIALS} trials; polled every 100 ms, so up to ~100 ms late"),
        ),
    ])
}

/// The outage and the re-election time of every trial.
fn trials(cluster: &Cluster) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut outages = Vec::with_capacity(TRIALS);
    let mut reelections = Vec::with_capacity(TRIALS);
    for trial in 1..=TRIALS {
        let report = cluster.measure_failover(WEB_VIP, FAILURE, Pace::OUTAGE)?;
        eprintln!("failover trial {trial}: {report}");
        outages.push(report.outage);
        reelections.push(report.reelected);
        cluster.restore(&report.old_owner, WEB_VIP)?;
    }
    Ok((outages, reelections))
}

/// The median of `sorted` (mean of the middle two for an even count).
fn percentile_50(sorted: &[Duration]) -> Duration {
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2
    } else {
        sorted[middle]
    }
}
