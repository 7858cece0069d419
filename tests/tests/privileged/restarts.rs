//! The owner's agent restarted on the lab LAN while long-lived connections run and a
//! client keeps requesting: a plain restart, a restart that doubles the flow table, and
//! a rolling upgrade from the previous release to this build with a refused downgrade.
//! Not one request may fail and no connection may be reset.
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
use lb_common::maps as names;
use nix::sys::signal::Signal;
use testbed::lab::{
    App, CLIENT_ADDR, Cluster, FaultReport, Pace, Service, WEB_VIP, requests_during,
};

use crate::failover::{
    CONNECTIONS, NODES, echo_across, echo_service_on_the_owner, hosted_on, judge_echoes, on_cluster,
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

/// The release guarantee: the cluster runs the previous release, and node by node every
/// agent is replaced by this build (SIGTERM, this build started on the same pins, which
/// migrates the maps whose layout changed) while long-lived connections run and a
/// client keeps requesting. After every step the mixed cluster agrees on every VIP's
/// owner. Then one node goes back to the previous release, which cannot read this
/// build's map layouts: it must refuse and exit, leaving the node's data path
/// forwarding, and the requests must not notice; the node then returns to this build.
#[test]
#[ignore = "needs the previous release's agent: run by `cargo xtask test --upgrade`"]
fn a_rolling_upgrade_from_the_previous_release_keeps_every_connection_and_request()
-> anyhow::Result<()> {
    let previous = std::env::var_os(PREVIOUS_AGENT)
        .map(PathBuf::from)
        .with_context(|| format!("{PREVIOUS_AGENT} names no previous release's lb-agent"))?;
    let mut services = Service::homelab();
    services.push(echo_service_on_the_owner());
    Cluster::test_on_binary(
        "a_rolling_upgrade_from_the_previous_release_keeps_every_connection_and_request",
        NODES,
        services,
        &previous,
        |cluster| rolling_scenario(cluster, &previous),
    )
}

fn rolling_scenario(cluster: &Cluster, previous: &Path) -> anyhow::Result<()> {
    let nodes = cluster.node_names();
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    cluster.wait_client_settled(WEB_VIP)?;
    for node in &nodes {
        ensure_runs(cluster, node, previous, true)?;
    }
    let (rolled, reports) = echo_across(cluster, || {
        let (rolled, requests) =
            requests_during(&cluster.lab().client, target, Pace::RESTART, || {
                for node in &nodes {
                    upgrade(cluster, node, previous)?;
                }
                refused_downgrade(cluster, &nodes[nodes.len() - 1], previous)?;
                Ok(Instant::now())
            })?;
        let failures = requests.failures();
        eprintln!(
            "FIGURE rolling upgrade and refused downgrade: {} requests, {} failed, slowest {} ms",
            requests.0.len(),
            failures.len(),
            requests.slowest().as_millis()
        );
        ensure!(failures.is_empty(), "requests failed: {failures:?}");
        Ok(rolled)
    })?;
    judge_echoes(&reports, "rolling upgrade and refused downgrade", rolled)
}

/// Fails unless `node`'s agent runs `previous` (or, when `on_previous` is false, this
/// build).
fn ensure_runs(
    cluster: &Cluster,
    node: &str,
    previous: &Path,
    on_previous: bool,
) -> anyhow::Result<()> {
    let running = cluster.agent_executable(node)?;
    ensure!(
        (running == previous.canonicalize()?) == on_previous,
        "{node} runs {}",
        running.display()
    );
    Ok(())
}

/// Replaces `node`'s agent of the previous release by this build's, which migrates the
/// pinned maps of the previous layout; waits until the cluster agrees on the owners.
fn upgrade(cluster: &Cluster, node: &str, previous: &Path) -> anyhow::Result<()> {
    cluster.stop_agent(node, Signal::SIGTERM)?;
    cluster.set_agent_binary(node, None)?;
    cluster.start_agent(node)?;
    ensure_runs(cluster, node, previous, false)?;
    ensure!(
        cluster.agent_logged(
            node,
            "migrated the pinned map's entries to this release's layout"
        )?,
        "{node}'s agent did not migrate the previous release's maps"
    );
    let owners = cluster
        .wait_settled()
        .with_context(|| format!("{node} upgraded"))?;
    eprintln!("{node} runs this build; owners {owners:?}");
    Ok(())
}

/// Starts the previous release on `node`'s pins, written by this build: it must refuse
/// and exit with the data path left running; then this build takes the node back.
fn refused_downgrade(cluster: &Cluster, node: &str, previous: &Path) -> anyhow::Result<()> {
    let program = cluster.xdp_program(node)?;
    cluster.stop_agent(node, Signal::SIGTERM)?;
    cluster.set_agent_binary(node, Some(previous.to_owned()))?;
    let log = cluster.start_agent_expecting_refusal(node)?;
    ensure!(
        log.contains(names::FLOWS) && log.contains("pinned"),
        "the previous release did not refuse this build's flow table:\n{log}"
    );
    ensure!(
        cluster.xdp_program(node)? == program,
        "the refused downgrade changed {node}'s XDP program"
    );
    let owners = cluster
        .wait_settled()
        .with_context(|| format!("{node}'s previous release refused"))?;
    eprintln!("{node}'s previous release refused; owners {owners:?}");
    cluster.set_agent_binary(node, None)?;
    cluster.start_agent(node)?;
    let owners = cluster
        .wait_settled()
        .with_context(|| format!("{node} back on this build"))?;
    eprintln!("{node} back on this build; owners {owners:?}");
    Ok(())
}
