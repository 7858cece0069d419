//! `lbctl` against the lab: every command's JSON output is parsed and compared with
//! what the lab shows independently (which pod answered each request, whose MAC the
//! client resolved, the configuration), and `explain` must predict where a connection
//! not made yet will land. Every subcommand's `--help` says what it does.
//!
//! Needs root (except the help test); run with `cargo test -p testbed --test privileged
//! lbctl_lab:: -- --test-threads=1`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    process::Command,
};

use anyhow::{Context as _, ensure};
use lb_agent::{
    explain::{CacheLookup, Explanation, Outcome},
    model::Protocol,
    status::{AgentStatus, FlowList, MemberState, MemberStatus, PortStatus, VipStatus},
};
use testbed::lab::{App, Binaries, CLIENT_ADDR, Cluster, DNS_VIP, Service, WEB_VIP};

const NODES: usize = 3;
const GOSSIP_PORT: u16 = 7947;
/// Requests made from fixed client ports, so every flow can be found again.
const FIRST_PORT: u16 = 45000;
const REQUESTS: u16 = 12;
/// Client ports `explain` is asked about before any connection uses them.
const PREDICTED: [u16; 4] = [46001, 46002, 46003, 46004];
const DNS_CLIENT_PORT: u16 = 47000;
/// Node-level consistent-hash table size (`lb_common::maglev`).
const NODE_RING: u32 = 16381;

#[test]
fn every_lbctl_command_reports_the_lab_as_it_is() -> anyhow::Result<()> {
    Cluster::test(
        "every_lbctl_command_reports_the_lab_as_it_is",
        NODES,
        Service::homelab(),
        scenario,
    )
}

fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let owners = cluster.wait_settled()?;
    cluster.wait_client_settled(WEB_VIP)?;
    let web = web_service(cluster)?;
    let logged_before = requests_logged(cluster, &web)?;
    let mut served = BTreeMap::new();
    for port in FIRST_PORT..FIRST_PORT + REQUESTS {
        served.insert(port, cluster.curl(WEB_VIP, Some(port))?);
    }
    check_pod_logs(cluster, &web, &logged_before, &served)?;
    eprintln!("owners {owners:?}; requests by client port: {served:?}");

    check_status(cluster, &owners, &web, &served)?;
    check_vip(cluster, &owners, &web)?;
    check_flows(cluster, &owners, &served)?;
    check_explain(cluster, &owners, &served)?;
    check_members(cluster)
}

fn web_service(cluster: &Cluster) -> anyhow::Result<Service> {
    cluster
        .services()
        .iter()
        .find(|service| service.vip == WEB_VIP)
        .cloned()
        .context("no web service")
}

/// Requests from the client each web pod has logged so far.
fn requests_logged(cluster: &Cluster, web: &Service) -> anyhow::Result<BTreeMap<Ipv4Addr, usize>> {
    web.pods
        .iter()
        .map(|&pod| {
            let log = fs::read_to_string(cluster.web_log(pod))?;
            let from_client = format!("{CLIENT_ADDR} - - ");
            let count = log
                .lines()
                .filter(|line| line.starts_with(&from_client) && line.contains("\"GET / "))
                .count();
            Ok((pod, count))
        })
        .collect()
}

/// Each pod's own log has exactly the requests whose answer named it.
fn check_pod_logs(
    cluster: &Cluster,
    web: &Service,
    before: &BTreeMap<Ipv4Addr, usize>,
    served: &BTreeMap<u16, Ipv4Addr>,
) -> anyhow::Result<()> {
    let after = requests_logged(cluster, web)?;
    for &pod in &web.pods {
        let answered = served.values().filter(|&&by| by == pod).count();
        let logged = after[&pod] - before[&pod];
        ensure!(
            logged == answered,
            "{pod} answered {answered} requests but logged {logged}"
        );
    }
    Ok(())
}

fn check_status(
    cluster: &Cluster,
    owners: &BTreeMap<Ipv4Addr, String>,
    web: &Service,
    served: &BTreeMap<u16, Ipv4Addr>,
) -> anyhow::Result<()> {
    let names = node_names(cluster);
    for node in &cluster.lab().nodes {
        let status: AgentStatus = cluster.lbctl_json(&node.name, &["status"])?;
        ensure!(
            status.node == node.name
                && status.address == node.addr
                && status.interface == "eth0"
                && status.ready
                && status.xdp_mode.is_some(),
            "{}: status describes another node or an unready one: {} {} {} ready={} xdp={:?}",
            node.name,
            status.node,
            status.address,
            status.interface,
            status.ready,
            status.xdp_mode
        );
        let reported: BTreeMap<Ipv4Addr, String> = status
            .vips
            .iter()
            .map(|vip| (vip.vip, vip.owner.clone().unwrap_or_default()))
            .collect();
        ensure!(
            reported == *owners,
            "{}: owners {reported:?}, the cluster agreed on {owners:?}",
            node.name
        );
        for vip in &status.vips {
            ensure!(
                vip.owned_here == (vip.owner.as_deref() == Some(node.name.as_str())),
                "{}: owned_here is wrong for {}",
                node.name,
                vip.vip
            );
            let candidates: BTreeSet<String> =
                vip.candidates.iter().map(|c| c.node.clone()).collect();
            ensure!(
                candidates == names && vip.candidates.iter().all(|c| c.eligible),
                "{}: candidates for {}: {:?}",
                node.name,
                vip.vip,
                vip.candidates
            );
        }
        ensure!(status.gossip.is_some(), "{}: no gossip status", node.name);
        ensure!(
            status.arp.is_some(),
            "{}: no ARP announcer status",
            node.name
        );
        check_counters(cluster, &node.name, &status, owners, web, served)?;
    }
    let table = cluster.lbctl("node1", &["status"])?;
    for (vip, owner) in owners {
        ensure!(
            table
                .lines()
                .any(|line| line.contains(&vip.to_string()) && line.contains(owner)),
            "the status table has no line with {vip} and its owner {owner}:\n{table}"
        );
    }
    Ok(())
}

/// The owner counts every client packet to the web VIP and tunnels what other nodes
/// serve; each node delivers its pods' share. A request is at least three packets from
/// the client (SYN, request, FIN).
fn check_counters(
    cluster: &Cluster,
    node: &str,
    status: &AgentStatus,
    owners: &BTreeMap<Ipv4Addr, String>,
    web: &Service,
    served: &BTreeMap<u16, Ipv4Addr>,
) -> anyhow::Result<()> {
    let counters = status
        .vips
        .iter()
        .find(|vip| vip.vip == WEB_VIP)
        .and_then(|vip| vip.counters)
        .with_context(|| format!("{node}: no counters for {WEB_VIP}"))?;
    let served_here = served
        .values()
        .filter(|pod| cluster.lab().node_of(**pod).is_ok_and(|n| n.name == node))
        .count() as u64;
    let served_elsewhere = served.len() as u64 - served_here;
    if owners[&WEB_VIP] == node {
        ensure!(
            counters.packets >= 3 * u64::from(REQUESTS)
                && counters.encapsulated >= 3 * served_elsewhere,
            "{node} owns {WEB_VIP} but counted {counters:?} for {REQUESTS} requests, \
             {served_elsewhere} of them served elsewhere"
        );
    }
    ensure!(
        counters.delivered_local >= 3 * served_here,
        "{node} served {served_here} requests but delivered only {} packets",
        counters.delivered_local
    );
    if !web
        .pods
        .iter()
        .any(|pod| cluster.lab().node_of(*pod).is_ok_and(|n| n.name == node))
    {
        ensure!(
            counters.delivered_local == 0,
            "{node} has no web pod but delivered {} packets",
            counters.delivered_local
        );
    }
    Ok(())
}

fn check_vip(
    cluster: &Cluster,
    owners: &BTreeMap<Ipv4Addr, String>,
    web: &Service,
) -> anyhow::Result<()> {
    let owner = &owners[&WEB_VIP];
    let vip: VipStatus = cluster.lbctl_json(owner, &["vip", &WEB_VIP.to_string()])?;
    let expected_ports = vec![PortStatus {
        port: App::WEB_PORT,
        protocol: Protocol::Tcp,
        target_port: App::WEB_TARGET,
        service: "web".to_owned(),
    }];
    ensure!(
        vip.vip == WEB_VIP
            && vip.owner.as_ref() == Some(owner)
            && vip.owned_here
            && vip.ports == expected_ports
            && vip.backends_ready == web.pods.len() as u32
            && vip.backends_total == web.pods.len() as u32,
        "lbctl vip {WEB_VIP} on {owner}: {vip:?}"
    );
    let service = vip
        .services
        .iter()
        .find(|service| service.name == "web")
        .context("no web service in lbctl vip")?;
    let endpoints: BTreeMap<Ipv4Addr, String> = service
        .endpoints
        .iter()
        .map(|endpoint| (endpoint.address, endpoint.node.clone()))
        .collect();
    let configured: BTreeMap<Ipv4Addr, String> = web
        .pods
        .iter()
        .map(|&pod| Ok((pod, cluster.lab().node_of(pod)?.name.clone())))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        endpoints == configured,
        "endpoints {endpoints:?}, configured {configured:?}"
    );
    let slots: u32 = service.nodes.iter().filter_map(|node| node.slots).sum();
    ensure!(
        slots == NODE_RING && service.nodes.len() == configured.len(),
        "the node table has {slots} slots over {:?}",
        service.nodes
    );
    let unknown = cluster.lbctl_output(owner, &["vip", "172.16.200.99"])?;
    ensure!(
        unknown.status.code() == Some(1),
        "lbctl vip for an unknown VIP exited with {}",
        unknown.status
    );
    Ok(())
}

/// The owner's flow cache holds every request's flow, pinned to the node whose pod
/// answered; that node's cache holds the pod.
fn check_flows(
    cluster: &Cluster,
    owners: &BTreeMap<Ipv4Addr, String>,
    served: &BTreeMap<u16, Ipv4Addr>,
) -> anyhow::Result<()> {
    let owner = &owners[&WEB_VIP];
    let mut caches = BTreeMap::new();
    for node in &cluster.lab().nodes {
        let flows: FlowList = cluster.lbctl_json(&node.name, &["flows", "--limit", "10000"])?;
        caches.insert(node.name.clone(), flows);
    }
    for (&port, &pod) in served {
        let client = SocketAddrV4::new(CLIENT_ADDR, port);
        let backend = cluster.lab().node_of(pod)?;
        let entry = caches[owner]
            .flows
            .iter()
            .find(|flow| flow.client == client)
            .with_context(|| format!("{owner}'s flow cache has no entry for {client}"))?;
        ensure!(
            entry.vip == SocketAddrV4::new(WEB_VIP, App::WEB_PORT)
                && entry.protocol == Protocol::Tcp
                && entry.service.as_deref() == Some("web")
                && entry.node == Some(backend.addr),
            "{owner}'s entry for {client}, answered by {pod} on {}: {entry:?}",
            backend.name
        );
        let delivered = caches[&backend.name]
            .flows
            .iter()
            .find(|flow| flow.client == client && flow.pod.is_some())
            .with_context(|| format!("{}'s flow cache has no pod for {client}", backend.name))?;
        ensure!(
            delivered.pod == Some(pod),
            "{} pinned {client} to {:?}, but {pod} answered",
            backend.name,
            delivered.pod
        );
    }
    let page: FlowList = cluster.lbctl_json(owner, &["flows", "--limit", "2"])?;
    ensure!(
        page.flows.len() == 2 && page.total >= usize::from(REQUESTS),
        "flows --limit 2 returned {} of {}",
        page.flows.len(),
        page.total
    );
    Ok(())
}

/// For flows that happened, `explain` names the pod that answered, on every node; for
/// flows that have not happened yet, it predicts the pod that then answers.
fn check_explain(
    cluster: &Cluster,
    owners: &BTreeMap<Ipv4Addr, String>,
    served: &BTreeMap<u16, Ipv4Addr>,
) -> anyhow::Result<()> {
    let owner = &owners[&WEB_VIP];
    for (&port, &pod) in served {
        for node in &cluster.lab().nodes {
            let explanation = explain(cluster, &node.name, port, WEB_VIP, App::WEB_PORT, "tcp")?;
            expect_destination(cluster, &explanation, owner, pod, App::WEB_TARGET)?;
            if node.name == *owner {
                ensure!(
                    matches!(explanation.cache, CacheLookup::Hit { node: Some(addr), .. }
                        if addr == cluster.lab().node_of(pod)?.addr),
                    "{owner}'s explanation of port {port} does not show its cache entry: {:?}",
                    explanation.cache
                );
            }
        }
    }
    for port in PREDICTED {
        let predicted = explain(cluster, "node2", port, WEB_VIP, App::WEB_PORT, "tcp")?;
        let destination = predicted
            .destination
            .with_context(|| format!("no destination predicted for port {port}"))?;
        let answered = cluster.curl(WEB_VIP, Some(port))?;
        ensure!(
            *destination.ip() == answered,
            "explain predicted {destination} for client port {port}, {answered} answered"
        );
    }
    let dns_owner = &owners[&DNS_VIP];
    let dns = explain(
        cluster,
        dns_owner,
        DNS_CLIENT_PORT,
        DNS_VIP,
        App::DNS_PORT,
        "udp",
    )?;
    let dns_pod = cluster
        .services()
        .iter()
        .find(|service| service.vip == DNS_VIP)
        .and_then(|service| service.pods.first().copied())
        .context("no DNS pod")?;
    expect_destination(cluster, &dns, dns_owner, dns_pod, App::DNS_TARGET)?;
    let answer = cluster.lab().client.run(&format!(
        "dig @{DNS_VIP} web.lab +short +notcp +tries=1 +time=2 -b {CLIENT_ADDR}#{DNS_CLIENT_PORT}"
    ))?;
    ensure!(
        answer.trim() == WEB_VIP.to_string(),
        "the DNS query explain described answered {answer:?}"
    );
    Ok(())
}

fn explain(
    cluster: &Cluster,
    node: &str,
    client_port: u16,
    vip: Ipv4Addr,
    port: u16,
    protocol: &str,
) -> anyhow::Result<Explanation> {
    cluster.lbctl_json(
        node,
        &[
            "explain",
            &format!("{CLIENT_ADDR}:{client_port}"),
            &format!("{vip}:{port}/{protocol}"),
        ],
    )
}

fn expect_destination(
    cluster: &Cluster,
    explanation: &Explanation,
    owner: &str,
    pod: Ipv4Addr,
    target: u16,
) -> anyhow::Result<()> {
    let backend = cluster.lab().node_of(pod)?;
    ensure!(
        explanation.outcome == Outcome::Forwarded
            && explanation.destination == Some(SocketAddrV4::new(pod, target))
            && explanation.node.as_ref().map(|node| node.name.as_str()) == Some(&backend.name)
            && explanation.receiver.as_ref().map(|node| node.name.as_str()) == Some(owner),
        "{pod} on {} answered {:?} (owner {owner}), explain said: {explanation:?}",
        backend.name,
        explanation.query
    );
    Ok(())
}

fn check_members(cluster: &Cluster) -> anyhow::Result<()> {
    let expected: BTreeMap<String, SocketAddrV4> = cluster
        .lab()
        .nodes
        .iter()
        .map(|node| (node.name.clone(), SocketAddrV4::new(node.addr, GOSSIP_PORT)))
        .collect();
    for node in &cluster.lab().nodes {
        let members: Vec<MemberStatus> = cluster.lbctl_json(&node.name, &["members"])?;
        let seen: BTreeMap<String, SocketAddrV4> = members
            .iter()
            .map(|member| (member.name.clone(), member.address))
            .collect();
        ensure!(
            seen == expected && members.iter().all(|m| m.state == MemberState::Alive),
            "{}: lbctl members says {members:?}",
            node.name
        );
    }
    Ok(())
}

fn node_names(cluster: &Cluster) -> BTreeSet<String> {
    cluster
        .lab()
        .nodes
        .iter()
        .map(|node| node.name.clone())
        .collect()
}

/// `lbctl --help` lists every command, and each command's help says what it does and
/// names its arguments. Needs no agent and no root.
#[test]
fn every_lbctl_subcommand_explains_itself() -> anyhow::Result<()> {
    let lbctl = Binaries::locate()?.lbctl;
    let commands: [(&str, &[&str]); 5] = [
        ("status", &[]),
        ("vip", &["<VIP>"]),
        ("flows", &["--limit"]),
        ("explain", &["<CLIENT_IP:PORT>", "<VIP:PORT[/PROTO]>"]),
        ("members", &[]),
    ];
    let top = help(&lbctl, &[])?;
    for (command, arguments) in commands {
        ensure!(
            top.lines()
                .any(|line| line.trim_start().starts_with(command)
                    && line.split_whitespace().count() > 3),
            "lbctl --help does not describe {command}:\n{top}"
        );
        let text = help(&lbctl, &[command])?;
        let description = text
            .split("Usage:")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .count();
        ensure!(
            description >= 8 && text.contains(&format!("Usage: lbctl {command}")),
            "lbctl {command} --help has no description:\n{text}"
        );
        for argument in arguments.iter().chain(&["--socket", "--output"]) {
            ensure!(
                text.contains(argument),
                "lbctl {command} --help does not mention {argument}:\n{text}"
            );
        }
    }
    Ok(())
}

fn help(lbctl: &std::path::Path, command: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(lbctl).args(command).arg("--help").output()?;
    ensure!(
        output.status.success(),
        "lbctl {} --help exited with {}",
        command.join(" "),
        output.status
    );
    Ok(String::from_utf8(output.stdout)?)
}
