//! `lab`: the xdplb lab, run by `cargo xtask lab`. Builds a homelab LAN in network
//! namespaces (a client and three nodes with pods), runs `lb-agent` on every node with
//! gossip, shows the VIP owners, `lbctl status`, the spread of requests over pods,
//! then takes the web VIP's owner away and measures how long the client goes without
//! an answer. Everything it built is removed at the end, also after an error or Ctrl-C.
//!
//! Needs root and the workspace binaries (`cargo build --bins`) next to it.

use std::{collections::BTreeMap, net::Ipv4Addr, process::ExitCode, time::Instant};

use anyhow::{Context as _, ensure};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use testbed::lab::{
    self, App, CLIENT_ADDR, Cluster, DNS_NAME, DNS_VIP, FailoverReport, Failure, Pace, Service,
    VIP_CIDR, WEB_VIP,
};

const NODES: usize = 3;
const REQUESTS: usize = 50;

fn main() -> ExitCode {
    if let Err(error) = catch_interrupts() {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "error: the lab needs root (network namespaces, BPF programs); \
             run `cargo xtask lab`, which uses sudo when needed"
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let outcome = run();
    // Every guard has dropped by now: namespaces, processes and pins are gone.
    section("Cleaning up");
    println!("removed     namespaces, agents, servers, pinned BPF objects, scratch files");
    match outcome {
        Ok(()) => {
            println!("done in     {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(_) if lab::interrupted() => {
            println!("interrupted after {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C (and SIGTERM) only raise a flag: the step under way fails at its next wait,
/// and the lab is torn down by its guards as after any other error.
fn catch_interrupts() -> anyhow::Result<()> {
    extern "C" fn on_signal(_: libc::c_int) {
        lab::interrupt();
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.context("installing a signal handler")?;
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    section("The lab");
    let services = Service::homelab();
    describe(&services);
    let started = Instant::now();
    let cluster = Cluster::start(NODES, services)?;
    println!(
        "ready       after {:.1} s: the agents on node1..node{NODES} agree on every VIP's owner",
        started.elapsed().as_secs_f64()
    );
    let outcome = demonstrate(&cluster);
    if outcome.is_err() && !lab::interrupted() {
        cluster.dump_logs();
    }
    outcome
}

fn describe(services: &[Service]) {
    println!("LAN         10.0.0.0/24: one bridge, network namespaces only, no route out");
    println!("client      {CLIENT_ADDR}, sends {VIP_CIDR} onto the LAN and resolves VIPs by ARP");
    for index in 1..=NODES {
        let node = format!("node{index}");
        let pods: Vec<String> = services
            .iter()
            .flat_map(|service| {
                service
                    .pods
                    .iter()
                    .filter(|pod| usize::from(pod.octets()[2]) + 1 == index)
                    .map(|pod| format!("{pod} ({})", service.name))
            })
            .collect();
        println!(
            "{node:<11} {}, lb-agent, pods {}",
            lab::node_addr(index),
            pods.join(", ")
        );
    }
    for service in services {
        let ports = match service.app {
            App::Web => format!("{}/TCP -> pods :{}", App::WEB_PORT, App::WEB_TARGET),
            App::Dns => format!("{}/UDP+TCP -> pods :{}", App::DNS_PORT, App::DNS_TARGET),
            App::Echo => format!("{}/TCP", App::ECHO_PORT),
        };
        println!(
            "service     {} {}:{ports}, {} pod(s)",
            service.name,
            service.vip,
            service.pods.len()
        );
    }
    println!("gossip      SWIM over UDP 7947, every datagram signed with a shared HMAC key");
    println!("owners      elected by the agents (rendezvous hash); none is configured");
}

fn demonstrate(cluster: &Cluster) -> anyhow::Result<()> {
    section("Owners");
    let owners = cluster.wait_settled()?;
    for (vip, owner) in &owners {
        println!(
            "{vip:<15} {:<4} owned by {owner} ({})",
            service_of(cluster, *vip),
            cluster.node(owner)?.mac()?
        );
    }

    section("lbctl status (on node1)");
    print!("{}", cluster.lbctl("node1", &["status"])?);

    spread(cluster, &owners)?;
    dns(cluster)?;

    let report = failover(cluster)?;
    let survivor = cluster
        .reachable()
        .first()
        .map(|node| node.name.clone())
        .context("no node left")?;
    section(&format!("lbctl status (on {survivor})"));
    print!("{}", cluster.lbctl(&survivor, &["status"])?);
    ensure!(
        report.new_owner != report.old_owner,
        "the owner did not change"
    );
    Ok(())
}

fn service_of(cluster: &Cluster, vip: Ipv4Addr) -> &'static str {
    cluster
        .services()
        .iter()
        .find(|service| service.vip == vip)
        .map_or("?", |service| service.name)
}

/// Requests through the web VIP, one `curl` each: which pods answered.
fn spread(cluster: &Cluster, owners: &BTreeMap<Ipv4Addr, String>) -> anyhow::Result<()> {
    section(&format!(
        "{REQUESTS} requests: curl http://{WEB_VIP}/ from the client"
    ));
    let mut answers: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        match cluster.curl(WEB_VIP, None) {
            Ok(pod) => *answers.entry(pod).or_default() += 1,
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    for (pod, count) in &answers {
        let node = cluster.lab().node_of(*pod)?;
        println!(
            "{pod:<15} on {}  {count:>3} answers {}",
            node.name,
            "#".repeat(*count)
        );
    }
    let owner = &owners[&WEB_VIP];
    println!(
        "answered    {} of {REQUESTS}; every request entered at {owner}, pods on other nodes \
         were reached through IPIP and replied directly (DSR)",
        REQUESTS - failures.len()
    );
    client_arp(cluster)?;
    ensure!(failures.is_empty(), "requests failed: {failures:?}");
    Ok(())
}

fn dns(cluster: &Cluster) -> anyhow::Result<()> {
    section(&format!("DNS: dig @{DNS_VIP} {DNS_NAME}"));
    for (transport, flag) in [("udp", "+notcp"), ("tcp", "+tcp")] {
        let answer = cluster.lab().client.run(&format!(
            "dig @{DNS_VIP} {DNS_NAME} +short {flag} +tries=1 +time=2"
        ))?;
        println!("{transport:<11} {DNS_NAME} -> {}", answer.trim());
    }
    Ok(())
}

fn failover(cluster: &Cluster) -> anyhow::Result<FailoverReport> {
    let owner = cluster.owner(WEB_VIP)?;
    section(&format!("Failover: {owner}, owner of {WEB_VIP}, goes away"));
    println!("how         SIGKILL to its agent, then its LAN link down (the node is gone)");
    println!(
        "requests    a new one every {} ms from the client, each given {} ms",
        Pace::OUTAGE.every.as_millis(),
        Pace::OUTAGE.timeout.as_millis()
    );
    let report = cluster.measure_failover(WEB_VIP, Failure::NodeGone, Pace::OUTAGE)?;
    println!(
        "outage      {} ms from the kill to the first answer",
        report.outage.as_millis()
    );
    println!(
        "new owner   {} (every surviving agent said so {} ms after the kill)",
        report.new_owner,
        report.reelected.as_millis()
    );
    println!(
        "requests    {} sent, {} failed during the outage",
        report.requests.0.len(),
        report.requests.failures().len()
    );
    client_arp(cluster)?;
    Ok(report)
}

/// What the client's ARP cache says about the web VIP, and whose MAC that is.
fn client_arp(cluster: &Cluster) -> anyhow::Result<()> {
    let Some(mac) = cluster.client_neighbour(WEB_VIP)? else {
        println!("client ARP  no entry for {WEB_VIP}");
        return Ok(());
    };
    let mut holder = "no node".to_owned();
    for node in &cluster.lab().nodes {
        if node.mac()? == mac {
            holder = format!("{}'s eth0", node.name);
        }
    }
    println!("client ARP  {WEB_VIP} is-at {mac} ({holder})");
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title}");
}
