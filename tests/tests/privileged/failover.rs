//! VIP ownership on the lab LAN with three agents gossiping: ARP answered by the owner
//! alone, failover when the owner's node or link goes away, established connections
//! across a failover, and forged or replayed gossip (restarts: [`crate::restarts`]).
//!
//! Needs root; run with `cargo test -p testbed --test privileged failover:: --
//! --test-threads=1 --nocapture` to see the measured figures.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use etherparse::{SlicedPacket, TransportSlice};
use lb_agent::{
    membership::{
        GossipKey,
        auth::{MIN_DATAGRAM_LEN, Sealer},
        boot_epoch,
    },
    status::{AgentStatus, MemberState},
};
use testbed::lab::{
    App, ArpFrame, CLIENT_ADDR, Cluster, DNS_VIP, EchoReport, Failure, FaultReport, LAN_IFACE,
    Pace, Service, WEB_VIP, echo_during, mac_text, requests_during,
};

pub(crate) const NODES: usize = 3;
/// Failover trials per failure kind.
const TRIALS: usize = 5;
/// The bound the issue sets on a failover, as the client sees it.
const FAILOVER_LIMIT: Duration = Duration::from_secs(1);
/// Long-lived connections and how often each sends a line.
pub(crate) const CONNECTIONS: usize = 20;
const LINE_EVERY: Duration = Duration::from_millis(100);
/// The longest an established connection may wait for an echo across the failover.
const STALL_LIMIT: Duration = Duration::from_secs(2);
const GOSSIP_PORT: u16 = 7947;

/// Runs `scenario` as test `name` on [`NODES`] nodes serving the homelab services and
/// `extra`.
pub(crate) fn on_cluster(
    name: &str,
    extra: Option<Service>,
    scenario: impl FnOnce(&Cluster) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut services = Service::homelab();
    services.extend(extra);
    Cluster::test(name, NODES, services, scenario)
}

/// The echo service shares the web VIP (its owner is elected for both) and has pods on
/// node2 and node3 only.
fn echo_service() -> Service {
    Service {
        name: "echo",
        vip: WEB_VIP,
        app: App::Echo,
        pods: vec![Ipv4Addr::new(10, 42, 1, 8), Ipv4Addr::new(10, 42, 2, 8)],
    }
}

#[test]
fn vips_resolve_by_arp_to_their_owner_and_no_other_node_answers() -> anyhow::Result<()> {
    on_cluster(
        "vips_resolve_by_arp_to_their_owner_and_no_other_node_answers",
        None,
        arp_scenario,
    )
}

fn arp_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    const ROUNDS: usize = 5;
    let owners = cluster.wait_settled()?;
    let lab = cluster.lab();
    let before = arp_replies_counted(cluster)?;
    let dir = cluster.scratch();
    let ports = lab
        .nodes
        .iter()
        .map(|node| {
            Ok((
                node.name.clone(),
                lab.capture_switch_port(node, "arp", dir)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client_port = lab.capture_client_port("arp", dir)?;
    for _ in 0..ROUNDS {
        // Forget the VIPs so the client's kernel asks the LAN again.
        lab.client.run(&format!(
            "ip neigh flush to 172.16.200.0/24 dev {LAN_IFACE}"
        ))?;
        cluster.curl(WEB_VIP, None)?;
        let answer = lab.client.run(&format!(
            "dig @{DNS_VIP} web.lab +short +notcp +tries=1 +time=2"
        ))?;
        ensure!(
            answer.trim() == WEB_VIP.to_string(),
            "DNS answered {answer:?}"
        );
    }
    // Steady traffic for a while longer: the capture must span more than the lookups.
    let steady = Pace {
        every: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
    };
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    let ((), requests) = requests_during(&lab.client, target, steady, || {
        thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    ensure!(
        requests.failures().is_empty(),
        "requests failed in steady state: {:?}",
        requests.failures()
    );
    let seen_by_client = client_port.stop_arp()?;
    let mut seen_by_port = BTreeMap::new();
    for (name, capture) in ports {
        seen_by_port.insert(name, capture.stop_arp()?);
    }
    let after = arp_replies_counted(cluster)?;

    for (&vip, owner) in &owners {
        let owner_mac = cluster.node(owner)?.mac()?;
        let replies: Vec<&ArpFrame> = seen_by_client
            .iter()
            .filter(|frame| frame.reply && frame.sender_ip == vip && frame.target_ip == CLIENT_ADDR)
            .collect();
        eprintln!(
            "{vip}: owner {owner} ({owner_mac}); the client received {} ARP replies from {:?}",
            replies.len(),
            replies
                .iter()
                .map(|frame| frame.sender_mac_text())
                .collect::<Vec<_>>()
        );
        ensure!(
            replies.len() >= ROUNDS,
            "{vip}: {ROUNDS} resolutions but {} replies reached the client",
            replies.len()
        );
        // Every frame speaking for the VIP (replies and gratuitous ARP, which the bridge
        // floods to every port) was sent by the owner and names the owner's MAC.
        for (node, frames) in &seen_by_port {
            for frame in frames.iter().filter(|frame| frame.sender_ip == vip) {
                ensure!(
                    frame.sender_mac_text() == owner_mac && mac_text(frame.from) == owner_mac,
                    "{vip} is owned by {owner} ({owner_mac}) but {node}'s port carried {frame:?}"
                );
            }
        }
        let from_owner = seen_by_port[owner]
            .iter()
            .filter(|frame| frame.reply && frame.sender_ip == vip)
            .count();
        ensure!(
            from_owner >= ROUNDS,
            "{owner}'s port carried only {from_owner} ARP replies for {vip}"
        );
        ensure!(
            cluster.client_neighbour(vip)?.as_deref() == Some(owner_mac.as_str()),
            "the client's ARP cache holds {:?} for {vip}, not {owner}'s {owner_mac}",
            cluster.client_neighbour(vip)?
        );
    }
    // Each agent's own count agrees: only owners replied.
    for (node, replies) in &after {
        let answered = replies - before[node];
        let owns = owners.values().any(|owner| owner == node);
        eprintln!("{node}: lbctl counts {answered} ARP replies in the window");
        ensure!(
            owns == (answered > 0),
            "{node} {} VIPs but its ARP reply count grew by {answered}",
            if owns { "owns" } else { "owns no" }
        );
    }
    Ok(())
}

/// ARP replies each agent reports having sent (`lbctl status`).
fn arp_replies_counted(cluster: &Cluster) -> anyhow::Result<BTreeMap<String, u64>> {
    cluster
        .lab()
        .nodes
        .iter()
        .map(|node| {
            let arp = cluster
                .status(&node.name)?
                .arp
                .with_context(|| format!("{} runs no ARP announcer", node.name))?;
            Ok((node.name.clone(), arp.replies))
        })
        .collect()
}

#[test]
fn owner_node_gone_fails_over_within_a_second() -> anyhow::Result<()> {
    on_cluster(
        "owner_node_gone_fails_over_within_a_second",
        None,
        |cluster| failover_trials(cluster, Failure::NodeGone),
    )
}

#[test]
fn owner_link_down_fails_over_within_a_second() -> anyhow::Result<()> {
    on_cluster(
        "owner_link_down_fails_over_within_a_second",
        None,
        |cluster| failover_trials(cluster, Failure::LinkDown),
    )
}

/// Fails the web VIP's owner [`TRIALS`] times, bringing it back in between; every
/// outage must stay under [`FAILOVER_LIMIT`].
fn failover_trials(cluster: &Cluster, failure: Failure) -> anyhow::Result<()> {
    let mut outages = Vec::with_capacity(TRIALS);
    let (mut requests, mut failed) = (0, 0);
    for trial in 1..=TRIALS {
        let report = cluster.measure_failover(WEB_VIP, failure, Pace::OUTAGE)?;
        eprintln!("trial {trial}: {report}");
        outages.push(report.outage);
        requests += report.requests.0.len();
        failed += report.requests.failures().len();
        cluster.restore(&report.old_owner, WEB_VIP)?;
    }
    outages.sort();
    let median = outages[outages.len() / 2];
    let max = outages[outages.len() - 1];
    eprintln!(
        "FIGURE failover ({failure}), {TRIALS} trials: p50 {} ms, max {} ms, all {:?} ms",
        median.as_millis(),
        max.as_millis(),
        outages.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    FaultReport {
        name: format!("owner-{}", fault_name(failure)),
        requests,
        failed,
        recovery: max,
    }
    .print();
    ensure!(
        max < FAILOVER_LIMIT,
        "failover ({failure}) took up to {} ms (limit {} ms): {:?}",
        max.as_millis(),
        FAILOVER_LIMIT.as_millis(),
        outages
    );
    Ok(())
}

/// The name of a failure in `FAULT` lines.
fn fault_name(failure: Failure) -> &'static str {
    match failure {
        Failure::NodeGone => "node-gone",
        Failure::LinkDown => "link-down",
        Failure::AgentKilled => "agent-killed",
    }
}

/// The reading: the owner is killed (and gone), the connections' backend set is
/// unchanged because the killed node hosts none of the echo pods, and the new owner,
/// which never saw these connections, must steer them to the same pods from its own
/// identical tables. None may be reset or stall longer than [`STALL_LIMIT`].
#[test]
fn established_connections_survive_the_owner_node_going_away() -> anyhow::Result<()> {
    on_cluster(
        "established_connections_survive_the_owner_node_going_away",
        Some(echo_service()),
        |cluster| long_lived_scenario(cluster, Failure::NodeGone),
    )
}

/// Only the owner's agent is killed: its pinned data path keeps forwarding what still
/// arrives at the node until the client follows the new owner's gratuitous ARP.
#[test]
fn established_connections_survive_the_owners_agent_being_killed() -> anyhow::Result<()> {
    on_cluster(
        "established_connections_survive_the_owners_agent_being_killed",
        Some(echo_service()),
        |cluster| long_lived_scenario(cluster, Failure::AgentKilled),
    )
}

fn long_lived_scenario(cluster: &Cluster, failure: Failure) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let echo = echo_service();
    let owner_pods: Vec<Ipv4Addr> = echo
        .pods
        .iter()
        .copied()
        .filter(|&pod| hosted_on(cluster, pod, &owner))
        .collect();
    ensure!(
        owner_pods.is_empty(),
        "precondition: the owner {owner} must host no echo pod, but hosts {owner_pods:?}"
    );
    let ((failed_at, new_owner, reelected), reports) = echo_across(cluster, || {
        cluster.fail(&owner, failure)?;
        let failed_at = Instant::now();
        let new_owner = cluster.wait_new_owner(WEB_VIP, &owner)?;
        Ok((failed_at, new_owner, failed_at.elapsed()))
    })?;
    eprintln!(
        "{owner}: {failure}; {new_owner} owner after {} ms; runs ended {} ms after the failure",
        reelected.as_millis(),
        failed_at.elapsed().as_millis()
    );
    judge_echoes(&reports, &failure.to_string(), failed_at + reelected)
}

/// [`CONNECTIONS`] echo connections to the web VIP, once the client settled on its owner,
/// running for a second before `event`, through it and for 3 s after it.
pub(crate) fn echo_across<T>(
    cluster: &Cluster,
    event: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<EchoReport>)> {
    cluster.wait_client_settled(WEB_VIP)?;
    let target = SocketAddrV4::new(WEB_VIP, App::ECHO_PORT);
    echo_during(
        &cluster.lab().client,
        target,
        CONNECTIONS,
        LINE_EVERY,
        || {
            thread::sleep(Duration::from_secs(1));
            let outcome = event()?;
            thread::sleep(Duration::from_secs(3));
            Ok(outcome)
        },
    )
}

/// Whether `pod` runs on the node called `node`.
pub(crate) fn hosted_on(cluster: &Cluster, pod: Ipv4Addr, node: &str) -> bool {
    cluster
        .lab()
        .node_of(pod)
        .is_ok_and(|host| host.name == node)
}

/// Every connection reported, none broke or stalled past [`STALL_LIMIT`], and each kept
/// echoing after `recovered` (lines go on for 3 s after it, one per 100 ms).
pub(crate) fn judge_echoes(
    reports: &[EchoReport],
    what: &str,
    recovered: Instant,
) -> anyhow::Result<()> {
    let mut per_pod: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for report in reports {
        if let Some(pod) = report.pod {
            *per_pod.entry(pod).or_default() += 1;
        }
        if let Some(error) = &report.error {
            problems.push(format!("port {}: {error}", report.local_port));
        } else if report.max_wait >= STALL_LIMIT {
            problems.push(format!(
                "port {}: stalled {} ms",
                report.local_port,
                report.max_wait.as_millis()
            ));
        }
    }
    let worst = reports
        .iter()
        .map(|report| report.max_wait)
        .max()
        .unwrap_or_default();
    let fewest = reports
        .iter()
        .map(|report| report.echoed.iter().filter(|&&at| at > recovered).count())
        .min()
        .unwrap_or(0);
    eprintln!("{CONNECTIONS} connections over pods {per_pod:?}");
    eprintln!(
        "FIGURE long-lived connections across failover ({what}): worst echo wait {} ms, {} of \
         {CONNECTIONS} broken, fewest echoes after the re-election {fewest}",
        worst.as_millis(),
        problems.len()
    );
    ensure!(
        reports.len() == CONNECTIONS,
        "{} of {CONNECTIONS} connections reported",
        reports.len()
    );
    ensure!(problems.is_empty(), "connections broke: {problems:?}");
    ensure!(
        fewest >= 20,
        "a connection had only {fewest} lines echoed after the re-election: it did not keep \
         working"
    );
    Ok(())
}

/// The echo service with a pod on the owner's node (10.42.0.8, node1's pod network) and
/// one elsewhere.
pub(crate) fn echo_service_on_the_owner() -> Service {
    Service {
        pods: vec![Ipv4Addr::new(10, 42, 0, 8), Ipv4Addr::new(10, 42, 1, 8)],
        ..echo_service()
    }
}

/// Gossip datagrams crafted on the LAN, claiming to come from node1, are dropped by
/// node2 and counted by reason; members and owners do not move.
#[test]
fn forged_and_replayed_gossip_changes_nothing_and_is_counted() -> anyhow::Result<()> {
    on_cluster(
        "forged_and_replayed_gossip_changes_nothing_and_is_counted",
        None,
        gossip_scenario,
    )
}

fn gossip_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    const COPIES: usize = 3;
    let owners = cluster.wait_settled()?;
    let receiver = cluster.node("node2")?;
    let members_before = members(cluster)?;
    let dropped_before = dropped(&cluster.status(&receiver.name)?);
    let replayed = send_bad_gossip(cluster, "node1", &receiver.name, COPIES)?;
    thread::sleep(Duration::from_secs(1));

    let dropped_after = dropped(&cluster.status(&receiver.name)?);
    let delta = |reason: &str| {
        dropped_after.get(reason).copied().unwrap_or(0)
            - dropped_before.get(reason).copied().unwrap_or(0)
    };
    eprintln!(
        "sent {COPIES} wrong-key, {COPIES} forged and {replayed} replayed datagrams to {}; \
         dropped before {dropped_before:?}, after {dropped_after:?}",
        receiver.name
    );
    for (reason, sent) in [
        ("wrong_key", COPIES),
        ("forged", COPIES),
        ("replayed", replayed),
    ] {
        ensure!(
            delta(reason) == sent as u64,
            "{} counted {} `{reason}` drops for {sent} such datagrams",
            receiver.name,
            delta(reason)
        );
    }
    let metrics = cluster.metrics(&receiver.name)?;
    for reason in ["wrong_key", "forged", "replayed"] {
        let line = format!(
            "xdplb_gossip_dropped_total{{reason=\"{reason}\"}} {}",
            dropped_after.get(reason).copied().unwrap_or(0)
        );
        ensure!(
            metrics.lines().any(|metric| metric == line),
            "metrics of {} lack {line:?}",
            receiver.name
        );
    }
    ensure!(
        members(cluster)? == members_before,
        "members changed: before {members_before:?}, after {:?}",
        members(cluster)?
    );
    ensure!(
        cluster.wait_settled()? == owners,
        "owners changed: before {owners:?}"
    );
    Ok(())
}

/// Sends `receiver` gossip claiming to come from `sender`, all of which it must drop:
/// `copies` datagrams under a key of our own (wrong key), `copies` with the cluster's
/// key id copied in but still our key's tag (forged), and replays of genuine datagrams
/// captured on the way; returns how many were replayed. Accepted, the payload (a real
/// SWIM payload of `sender`'s, re-signed as a newer run of it) would replace `sender`'s
/// identity.
pub(crate) fn send_bad_gossip(
    cluster: &Cluster,
    sender: &str,
    receiver: &str,
    copies: usize,
) -> anyhow::Result<usize> {
    let (sender, receiver) = (cluster.node(sender)?, cluster.node(receiver)?);
    let genuine = capture_gossip(cluster, sender.addr, receiver.addr)?;
    let payload = gossip_payload(&genuine[0])?;
    let key_id = genuine[0][3..11].to_vec();
    let mut sealer = Sealer::new(
        GossipKey::new(b"an attacker's key, not the lab's".to_vec()).context("key")?,
        &sender.name,
        boot_epoch(),
    );
    let wrong_key: Vec<Vec<u8>> = (0..copies).map(|_| sealer.seal(payload)).collect();
    let forged: Vec<Vec<u8>> = (0..copies)
        .map(|_| {
            let mut datagram = sealer.seal(payload);
            datagram[3..11].copy_from_slice(&key_id);
            datagram
        })
        .collect();
    for datagrams in [&wrong_key, &forged, &genuine] {
        spoof_gossip(cluster, sender.addr, receiver.addr, datagrams)?;
    }
    Ok(genuine.len())
}

/// The first few gossip datagrams `from` sends `to`, as captured on `to`'s switch port:
/// genuine, authenticated, and already accepted by `to`.
fn capture_gossip(cluster: &Cluster, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<Vec<Vec<u8>>> {
    const WANTED: usize = 5;
    let lab = cluster.lab();
    let port = lab
        .nodes
        .iter()
        .find(|node| node.addr == to)
        .context("receiver")?;
    let capture = lab.capture_switch_port(
        port,
        &format!("udp and src host {from} and dst host {to} and dst port {GOSSIP_PORT}"),
        cluster.scratch(),
    )?;
    thread::sleep(Duration::from_millis(800));
    let datagrams: Vec<Vec<u8>> = capture
        .stop_frames()?
        .iter()
        .filter_map(|frame| udp_payload(frame))
        .filter(|payload| payload.len() >= MIN_DATAGRAM_LEN)
        .take(WANTED)
        .collect();
    ensure!(
        !datagrams.is_empty(),
        "no gossip from {from} to {to} in 800 ms"
    );
    Ok(datagrams)
}

fn udp_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    match packet.transport? {
        TransportSlice::Udp(udp) => Some(udp.payload().to_vec()),
        _ => None,
    }
}

/// The SWIM payload inside an authenticated datagram (layout in
/// `lb_agent::membership::auth`: 28 header bytes, the sender's name, the payload, a
/// 32-byte tag).
fn gossip_payload(datagram: &[u8]) -> anyhow::Result<&[u8]> {
    const FIXED_HEADER: usize = 28;
    const TAG: usize = 32;
    let name_len = usize::from(*datagram.get(FIXED_HEADER - 1).context("short datagram")?);
    datagram
        .get(FIXED_HEADER + name_len..datagram.len().saturating_sub(TAG))
        .context("short datagram")
}

/// Sends `datagrams` to `to`'s gossip port from the client's namespace, with `from`'s
/// address and gossip port as source: an attacker on the LAN spoofing a node.
fn spoof_gossip(
    cluster: &Cluster,
    from: Ipv4Addr,
    to: Ipv4Addr,
    datagrams: &[Vec<u8>],
) -> anyhow::Result<()> {
    // IP_TRANSPARENT (19) lets the socket use an address the namespace does not own.
    const SEND: &str = "import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 19, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
for datagram in sys.argv[5:]:
    s.sendto(bytes.fromhex(datagram), (sys.argv[3], int(sys.argv[4])))";
    let hex: Vec<String> = datagrams
        .iter()
        .map(|datagram| datagram.iter().map(|byte| format!("{byte:02x}")).collect())
        .collect();
    let output = cluster
        .lab()
        .client
        .command("python3")
        .args(["-c", SEND])
        .args([
            from.to_string(),
            GOSSIP_PORT.to_string(),
            to.to_string(),
            GOSSIP_PORT.to_string(),
        ])
        .args(&hex)
        .output()?;
    ensure!(
        output.status.success(),
        "sending spoofed gossip: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// (name, state, incarnation) of every member, as each node sees them.
type MemberViews = BTreeMap<String, Vec<(String, MemberState, u64)>>;

/// Every node's view of the members.
fn members(cluster: &Cluster) -> anyhow::Result<MemberViews> {
    cluster.per_node(|status| {
        status
            .members
            .iter()
            .map(|member| (member.name.clone(), member.state, member.incarnation))
            .collect()
    })
}

fn dropped(status: &AgentStatus) -> BTreeMap<String, u64> {
    status
        .gossip
        .as_ref()
        .map(|gossip| gossip.dropped.clone())
        .unwrap_or_default()
}
