//! The owner's agent restarted on the lab LAN while long-lived connections run and a
//! client keeps requesting: a plain restart, a restart that doubles the flow table, and
//! a rolling downgrade and upgrade between the previous release and this build. Not one
//! request may fail and no connection may be reset.
//!
//! Needs root; run with `cargo test -p testbed --test privileged restarts:: --
//! --test-threads=1 --nocapture` to see the measured figures. The release test is
//! `#[ignore]`d: `cargo xtask test --upgrade` builds the previous release and runs it.

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;
use testbed::lab::{App, CLIENT_ADDR, Cluster, FaultReport, Pace, WEB_VIP, requests_during};

use crate::failover::{
    CONNECTIONS, echo_across, echo_service_on_the_owner, hosted_on, judge_echoes, on_cluster,
};

/// The owner's agent restarts (SIGTERM, then start): its pinned data path and pods keep
/// serving, so peers must keep its pods in their rings while it hands over, and no
/// connection to a pod on that node may be re-steered and reset.
#[test]
fn connections_to_the_owners_pods_survive_its_agent_restarting() -> anyhow::Result<()> {
    on_cluster(
        "connections_to_the_owners_pods_survive_its_agent_restarting",
        Some(echo_service_on_the_owner()),
        agent_restart_echo_scenario,
    )
}

fn agent_restart_echo_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let (restarted, reports) = echo_across(cluster, || {
        cluster.stop_agent(&owner, Signal::SIGTERM)?;
        cluster.start_agent(&owner)?;
        cluster.wait_settled()?;
        Ok(Instant::now())
    })?;
    let on_owner = reports
        .iter()
        .filter(|report| {
            report
                .pod
                .is_some_and(|pod| hosted_on(cluster, pod, &owner))
        })
        .count();
    eprintln!("{on_owner} of {CONNECTIONS} connections to pods on the owner {owner}");
    ensure!(
        on_owner > 0,
        "precondition: some connections must reach a pod on the owner {owner}"
    );
    judge_echoes(&reports, "owner's agent restarted", restarted)
}

/// An operator doubles the owner's flow table (`capacities.flows`) and restarts its
/// agent while long-lived connections run and a client keeps requesting: the pinned
/// flow table's entries move into the new one, so no connection is reset or stalls
/// and not one request fails.
#[test]
fn doubling_the_owners_flow_table_by_a_restart_keeps_every_connection_and_request()
-> anyhow::Result<()> {
    on_cluster(
        "doubling_the_owners_flow_table_by_a_restart_keeps_every_connection_and_request",
        Some(echo_service_on_the_owner()),
        capacity_change_scenario,
    )
}

fn capacity_change_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    cluster.wait_client_settled(WEB_VIP)?;
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    let (restarted, reports) = echo_across(cluster, || {
        let (restarted, requests) =
            requests_during(&cluster.lab().client, target, Pace::RESTART, || {
                thread::sleep(Duration::from_millis(500));
                cluster.stop_agent(&owner, Signal::SIGTERM)?;
                cluster.append_config(&owner, "capacities:\n  flows: 131072\n")?;
                cluster.start_agent(&owner)?;
                cluster.wait_settled()?;
                let restarted = Instant::now();
                thread::sleep(Duration::from_secs(1));
                Ok(restarted)
            })?;
        let failures = requests.failures();
        eprintln!(
            "FIGURE flow table doubled by a restart: {} requests, {} failed, slowest {} ms",
            requests.0.len(),
            failures.len(),
            requests.slowest().as_millis()
        );
        ensure!(failures.is_empty(), "requests failed: {failures:?}");
        ensure!(
            cluster.agent_logged(&owner, "carried the pinned map's entries")?,
            "{owner}'s agent did not carry its flow table over"
        );
        Ok(restarted)
    })?;
    judge_echoes(
        &reports,
        "owner's flow table doubled by a restart",
        restarted,
    )
}

/// An operator restarts the owner's agent (SIGTERM, then start it again) while a client
/// keeps requesting: not one request may fail.
#[test]
fn restarting_the_owners_agent_fails_no_request() -> anyhow::Result<()> {
    on_cluster(
        "restarting_the_owners_agent_fails_no_request",
        None,
        restart_scenario,
    )
}

fn restart_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    cluster.wait_client_settled(WEB_VIP)?;
    let pace = Pace::RESTART;
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    // Every reset the client receives, to tell which side broke a failed request.
    let resets = cluster.lab().capture_client_port(
        &format!("tcp[tcpflags] & tcp-rst != 0 and dst host {CLIENT_ADDR}"),
        cluster.scratch(),
    )?;
    let ((sigterm, exited, during_restart, restarted, back), requests) =
        requests_during(&cluster.lab().client, target, pace, || {
            thread::sleep(Duration::from_millis(500));
            let sigterm = Instant::now();
            cluster.stop_agent(&owner, Signal::SIGTERM)?;
            let exited = Instant::now();
            let during_restart = cluster.agreed_owners()?;
            cluster.start_agent(&owner)?;
            let restarted = Instant::now();
            let owners = cluster.wait_settled()?;
            ensure!(
                owners[&WEB_VIP] == owner,
                "{owner} did not take {WEB_VIP} back: {owners:?}"
            );
            let back = Instant::now();
            thread::sleep(Duration::from_secs(1));
            Ok((sigterm, exited, during_restart, restarted, back))
        })?;
    let resets = resets.stop()?;
    let since = |at: Instant| at.saturating_duration_since(sigterm).as_millis();
    let failures = requests.failures();
    eprintln!(
        "{owner}'s agent exited {} ms after SIGTERM; owners while it was away: \
         {during_restart:?}; the new agent was ready at {} ms and {owner} owner again at {} ms",
        since(exited),
        since(restarted),
        since(back)
    );
    eprintln!(
        "FIGURE agent restart under load: {} requests, {} failed, slowest {} ms, answered by {:?}",
        requests.0.len(),
        failures.len(),
        requests.slowest().as_millis(),
        requests.per_pod()
    );
    FaultReport::new("agent-restart", &requests, back - sigterm).print();
    let described: Vec<String> = failures
        .iter()
        .map(|attempt| {
            format!(
                "started {} ms after SIGTERM, failed {} ms later: {:?}",
                attempt
                    .started
                    .saturating_duration_since(sigterm)
                    .as_millis(),
                (attempt.finished - attempt.started).as_millis(),
                attempt.result
            )
        })
        .collect();
    let reset_lines: Vec<&str> = resets.iter().map(|packet| packet.line.as_str()).collect();
    ensure!(
        failures.is_empty() && resets.is_empty(),
        "{} of {} requests failed across the restart: {described:#?}\nresets the client \
         received: {reset_lines:#?}",
        failures.len(),
        requests.0.len()
    );
    let pins = cluster.bpffs().pins()?;
    let own_pins = cluster.pin_dir(&owner);
    ensure!(
        pins.iter().any(|pin| pin.starts_with(&own_pins)),
        "no pins under {} after the restart: {pins:?}",
        own_pins.display()
    );
    Ok(())
}

/// Where `cargo xtask test --upgrade` puts the previous release's `lb-agent`.
const PREVIOUS_AGENT: &str = "XDPLB_PREVIOUS_AGENT";

/// The release guarantee, both ways: node by node every agent goes back to the previous
/// release (SIGTERM, that release's binary started on the same pins), then forward to
/// this build, while long-lived connections run and a client keeps requesting. After
/// every step the mixed cluster agrees on every VIP's owner.
#[test]
#[ignore = "needs the previous release's agent: run by `cargo xtask test --upgrade`"]
fn a_rolling_downgrade_and_upgrade_between_releases_keeps_every_connection_and_request()
-> anyhow::Result<()> {
    let previous = std::env::var_os(PREVIOUS_AGENT)
        .map(PathBuf::from)
        .with_context(|| format!("{PREVIOUS_AGENT} names no previous release's lb-agent"))?;
    on_cluster(
        "a_rolling_downgrade_and_upgrade_between_releases_keeps_every_connection_and_request",
        Some(echo_service_on_the_owner()),
        |cluster| rolling_scenario(cluster, &previous),
    )
}

fn rolling_scenario(cluster: &Cluster, previous: &Path) -> anyhow::Result<()> {
    let nodes = cluster.node_names();
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    cluster.wait_client_settled(WEB_VIP)?;
    let (rolled, reports) = echo_across(cluster, || {
        let (rolled, requests) =
            requests_during(&cluster.lab().client, target, Pace::RESTART, || {
                for (release, binary) in [
                    ("the previous release", Some(previous)),
                    ("this build", None),
                ] {
                    for node in &nodes {
                        cluster.stop_agent(node, Signal::SIGTERM)?;
                        cluster.set_agent_binary(node, binary.map(Path::to_owned))?;
                        cluster.start_agent(node)?;
                        let running = cluster.agent_executable(node)?;
                        ensure!(
                            (running == previous.canonicalize()?) == binary.is_some(),
                            "{node} runs {} for {release}",
                            running.display()
                        );
                        let owners = cluster
                            .wait_settled()
                            .with_context(|| format!("{node} on {release}"))?;
                        eprintln!("{node} runs {release}; owners {owners:?}");
                    }
                }
                Ok(Instant::now())
            })?;
        let failures = requests.failures();
        eprintln!(
            "FIGURE rolling downgrade and upgrade: {} requests, {} failed, slowest {} ms",
            requests.0.len(),
            failures.len(),
            requests.slowest().as_millis()
        );
        ensure!(failures.is_empty(), "requests failed: {failures:?}");
        Ok(rolled)
    })?;
    judge_echoes(&reports, "rolling downgrade and upgrade", rolled)
}
