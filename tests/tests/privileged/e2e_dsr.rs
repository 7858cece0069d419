//! End to end in network namespaces: a client on a LAN reaches the web and DNS VIPs owned
//! by node1; node1's XDP program spreads flows over pods on both nodes (IPIP to node2),
//! every pod sees the real client address, and replies leave each backend node directly
//! with the VIP as source (direct server return).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use testbed::{
    lab::{
        self, CLIENT_ADDR, DNS_NAME, DNS_VIP, LAN_IFACE, Lab, Node, Packet, VIP_CIDR, WEB_VIP,
        service_yaml,
    },
    netns::Process,
};

const NODE1_WEB: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 7);
const NODE2_WEB: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 42, 1, 5), Ipv4Addr::new(10, 42, 1, 6)];
const DNS_POD: Ipv4Addr = Ipv4Addr::new(10, 42, 1, 9);
const WEB_PODS: [Ipv4Addr; 3] = [NODE1_WEB, NODE2_WEB[0], NODE2_WEB[1]];
const DNS_TARGET_PORT: u16 = 5353;

/// Service port, target port, request count, first client port. Every request uses its
/// own client port, which is how captured packets are matched to the pod that served them.
const HTTP_RUNS: [(u16, u16, u16, u16); 2] = [(80, 8080, 200, 41000), (443, 8443, 30, 42000)];
/// Queries per transport (UDP, TCP) and first client port.
const DNS_QUERIES: u16 = 5;
const DNS_FIRST_PORT: u16 = 43000;
/// Stop a run early once this many requests failed: the verdict is clear by then and a
/// broken data path must not cost 200 timeouts.
const MAX_FAILURES: usize = 5;
const WARM_UP: Duration = Duration::from_secs(10);

/// The services of the standalone file (the same on both nodes), written from the
/// pods and ports the checks use: web on every web pod with the ports of [`HTTP_RUNS`],
/// DNS on its pod over UDP and TCP, both owned by node1.
fn services_yaml() -> String {
    let web_ports: Vec<(u16, &str, u16)> = HTTP_RUNS
        .iter()
        .map(|&(port, target, _, _)| (port, "TCP", target))
        .collect();
    let dns_ports = [(53, "UDP", DNS_TARGET_PORT), (53, "TCP", DNS_TARGET_PORT)];
    let owner = Some("node1");
    let web = service_yaml("web", WEB_VIP, owner, &web_ports, &WEB_PODS);
    let dns = service_yaml("dns", DNS_VIP, owner, &dns_ports, &[DNS_POD]);
    format!("services:\n{web}{dns}")
}

#[test]
fn dsr_spreads_flows_over_both_nodes_and_replies_bypass_the_owner() -> anyhow::Result<()> {
    let agent = lab::workspace_binary("lb-agent")?;
    let scratch = tempfile::tempdir()?;
    let result = dsr_scenario(&agent, scratch.path());
    if result.is_err() {
        // The scenario's agents, servers and captures.
        lab::dump_log_tails(scratch.path(), |_| 40);
    }
    result
}

/// The lab itself, without any agent: the client reaches pods on both nodes through
/// routes added only for this check, and pods see the client's address. When the DSR
/// test fails and this one passes, the fault is in the data path, not the plumbing.
#[test]
fn lab_routes_client_to_pods_on_both_nodes_without_agent() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let lab = Lab::new(&[&[NODE1_WEB], &[NODE2_WEB[0]]])?;
    for netns in namespaces(&lab) {
        let default = netns.run("ip route show default")?;
        ensure!(
            default.trim().is_empty(),
            "{} has a default route: {default}",
            netns.name()
        );
    }
    let _servers = [NODE1_WEB, NODE2_WEB[0]]
        .into_iter()
        .map(|pod| serve_web(&lab, pod, 8080, scratch.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (pod, node) in [(NODE1_WEB, "node1"), (NODE2_WEB[0], "node2")] {
        let node = lab.node(node)?;
        lab.client
            .run(&format!("ip route add {pod}/32 via {}", node.addr))?;
        let body = curl(&lab, &format!("http://{pod}:8080/"), None)?;
        ensure!(body == pod.to_string(), "{pod} answered {body:?}");
        let clients = http_clients(&fs::read_to_string(web_log(scratch.path(), pod, 8080))?)?;
        ensure!(clients == [CLIENT_ADDR], "{pod} logged clients {clients:?}");
    }
    Ok(())
}

fn dsr_scenario(agent: &Path, scratch: &Path) -> anyhow::Result<()> {
    let lab = Lab::new(&[&[NODE1_WEB], &[NODE2_WEB[0], NODE2_WEB[1], DNS_POD]])?;
    let mut servers: Vec<Process> = Vec::new();
    for pod in WEB_PODS {
        for (_, target, _, _) in HTTP_RUNS {
            servers.push(serve_web(&lab, pod, target, scratch)?);
        }
    }
    servers.push(lab.pod(DNS_POD)?.serve_dns(
        DNS_TARGET_PORT,
        &[(DNS_NAME, WEB_VIP)],
        &scratch.join("dns.log"),
    )?);
    let _agents = lab
        .nodes
        .iter()
        .map(|node| start_agent(&lab, node, agent, scratch))
        .collect::<anyhow::Result<Vec<_>>>()?;
    lab.route_vips(VIP_CIDR, &[WEB_VIP, DNS_VIP], lab.node("node1")?)?;
    let result = exercise_and_check(&lab, scratch);
    if result.is_err() {
        eprintln!("{}", diagnostics(&lab));
    }
    result
}

fn exercise_and_check(lab: &Lab, scratch: &Path) -> anyhow::Result<()> {
    warm_up(lab)?;
    let offsets = LogOffsets::now(scratch)?;
    let node1 = lab.node("node1")?;
    let node2 = lab.node("node2")?;
    let captures = [
        lab.capture_switch_port(node1, "ip", scratch)?,
        lab.capture_switch_port(node2, "ip", scratch)?,
    ];
    let mut flows = http_requests(lab)?;
    flows.extend(dns_queries(lab)?);
    let [node1_wire, node2_wire] = captures.map(lab::Capture::stop);
    let (node1_wire, node2_wire) = (node1_wire?, node2_wire?);

    check_spread(&flows)?;
    check_pods_saw_the_client(&flows, &offsets, scratch)?;
    check_direct_server_return(lab, &flows, &node1_wire, &node2_wire)
}

/// One answered request: which client port it used and which pod answered.
#[derive(Debug)]
struct Flow {
    service_port: u16,
    client_port: u16,
    vip: Ipv4Addr,
    pod: Ipv4Addr,
}

/// The agents attach XDP before their tables are necessarily complete; wait (bounded)
/// until the web VIP answers once before counting anything.
fn warm_up(lab: &Lab) -> anyhow::Result<()> {
    let mut attempts = 0;
    lab::wait_for("the first answer from the web VIP", WARM_UP, || {
        attempts += 1;
        Ok(curl(lab, &format!("http://{WEB_VIP}/"), None).ok())
    })?;
    eprintln!("warm-up: the web VIP answered after {attempts} attempt(s)");
    Ok(())
}

fn http_requests(lab: &Lab) -> anyhow::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    for (service_port, _, count, first_port) in HTTP_RUNS {
        let mut failures = Vec::new();
        for client_port in (first_port..).take(usize::from(count)) {
            let url = format!("http://{WEB_VIP}:{service_port}/");
            match curl(lab, &url, Some(client_port)).and_then(|body| served_by(&body)) {
                Ok(pod) => flows.push(Flow {
                    service_port,
                    client_port,
                    vip: WEB_VIP,
                    pod,
                }),
                Err(error) => failures.push(format!("client port {client_port}: {error:#}")),
            }
            if failures.len() >= MAX_FAILURES {
                break;
            }
        }
        ensure!(
            failures.is_empty(),
            "requests to {WEB_VIP}:{service_port} failed ({} of at most {count}, stopped at \
             {MAX_FAILURES}):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(flows)
}

fn dns_queries(lab: &Lab) -> anyhow::Result<Vec<Flow>> {
    let mut flows = Vec::new();
    let transports = [("udp", "+notcp"), ("tcp", "+tcp")];
    for (index, (transport, flag)) in transports.into_iter().enumerate() {
        for query in 0..DNS_QUERIES {
            let client_port = DNS_FIRST_PORT + DNS_QUERIES * index as u16 + query;
            let output = lab
                .client
                .run(&format!(
                    "dig @{DNS_VIP} {DNS_NAME} +short {flag} +tries=1 +time=2 \
                     -b {CLIENT_ADDR}#{client_port}"
                ))
                .with_context(|| format!("DNS over {transport} from port {client_port}"))?;
            ensure!(
                output.trim() == WEB_VIP.to_string(),
                "DNS over {transport} from port {client_port} answered {output:?}"
            );
            flows.push(Flow {
                service_port: 53,
                client_port,
                vip: DNS_VIP,
                pod: DNS_POD,
            });
        }
    }
    Ok(flows)
}

/// Port 80 flows reach all three web pods, hence both nodes; port 443 reaches web pods.
fn check_spread(flows: &[Flow]) -> anyhow::Result<()> {
    let mut hits: BTreeMap<(u16, Ipv4Addr), usize> = BTreeMap::new();
    for flow in flows {
        *hits.entry((flow.service_port, flow.pod)).or_default() += 1;
    }
    eprintln!("responses per (service port, pod): {hits:?}");
    for pod in WEB_PODS {
        ensure!(
            hits.contains_key(&(80, pod)),
            "no port-80 request reached {pod}: {hits:?}"
        );
    }
    Ok(())
}

/// Each server logged exactly the requests it answered, all from the client's own address
/// (no SNAT anywhere on the path).
fn check_pods_saw_the_client(
    flows: &[Flow],
    offsets: &LogOffsets,
    scratch: &Path,
) -> anyhow::Result<()> {
    for pod in WEB_PODS {
        for (service_port, target, _, _) in HTTP_RUNS {
            let log = web_log(scratch, pod, target);
            let clients = http_clients(&offsets.tail(&log)?)?;
            let answered = flows
                .iter()
                .filter(|flow| flow.pod == pod && flow.service_port == service_port)
                .count();
            ensure!(
                clients.len() == answered && clients.iter().all(|&client| client == CLIENT_ADDR),
                "{pod}:{target} answered {answered} requests but logged clients {clients:?}"
            );
        }
    }
    let dns_log = scratch.join("dns.log");
    let clients = dns_clients(&offsets.tail(&dns_log)?)?;
    let answered = flows.iter().filter(|flow| flow.pod == DNS_POD).count();
    ensure!(
        clients.len() == answered && clients.iter().all(|&client| client == CLIENT_ADDR),
        "{DNS_POD} answered {answered} queries but logged clients {clients:?}"
    );
    Ok(())
}

/// Seen from the switch: node1 receives every request (it owns the VIPs) and tunnels
/// node2's flows to node2 in IPIP; node2 sends the replies of its flows straight to the
/// client with the VIP as source; not one packet of a reply to a node2 flow crosses
/// node1's port, encapsulated or not.
fn check_direct_server_return(
    lab: &Lab,
    flows: &[Flow],
    node1_wire: &[Packet],
    node2_wire: &[Packet],
) -> anyhow::Result<()> {
    let node1 = lab.node("node1")?;
    let node2 = lab.node("node2")?;
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for flow in flows {
        if lab.node_of(flow.pod)?.name == node2.name {
            remote.push(flow);
        } else {
            local.push(flow);
        }
    }
    ensure!(
        !remote.is_empty() && !local.is_empty(),
        "flows did not reach both nodes"
    );

    let remote_ports: BTreeSet<u16> = remote.iter().map(|flow| flow.client_port).collect();
    let leaked: Vec<&str> = node1_wire
        .iter()
        .filter(|packet| is_reply_to(packet, &remote_ports))
        .map(|packet| packet.line.as_str())
        .collect();
    ensure!(
        leaked.is_empty(),
        "{} reply packets of node2's flows crossed node1's port, e.g. {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );

    for flow in &remote {
        let port = Some(flow.client_port);
        ensure!(
            node1_wire
                .iter()
                .any(|p| p.src == CLIENT_ADDR && p.src_port == port),
            "node1's port never saw the request of {flow:?}: the capture proves nothing"
        );
        ensure!(
            node2_wire.iter().any(|p| p.src_port == port
                && p.tunnel == Some((node1.addr, node2.addr))
                && p.dst == flow.vip),
            "{flow:?} did not reach node2 in IPIP from node1"
        );
        ensure!(
            node2_wire
                .iter()
                .any(|p| p.dst_port == port && p.src == flow.vip && p.tunnel.is_none()),
            "node2 sent no reply from {} for {flow:?}",
            flow.vip
        );
    }
    for flow in &local {
        let port = Some(flow.client_port);
        ensure!(
            node1_wire
                .iter()
                .any(|p| p.dst_port == port && p.src == flow.vip && p.tunnel.is_none()),
            "node1 sent no reply from {} for its local {flow:?}",
            flow.vip
        );
    }
    let unrewritten: Vec<&str> = node1_wire
        .iter()
        .chain(node2_wire)
        .filter(|p| p.dst == CLIENT_ADDR && p.src != WEB_VIP && p.src != DNS_VIP)
        .map(|p| p.line.as_str())
        .collect();
    ensure!(
        unrewritten.is_empty(),
        "replies reached the LAN without the VIP as source: {:?}",
        &unrewritten[..unrewritten.len().min(5)]
    );
    Ok(())
}

/// A packet to the client on one of `ports`, whatever its source and however wrapped.
fn is_reply_to(packet: &Packet, ports: &BTreeSet<u16>) -> bool {
    packet.dst == CLIENT_ADDR && packet.dst_port.is_some_and(|port| ports.contains(&port))
}

fn serve_web(lab: &Lab, pod: Ipv4Addr, port: u16, scratch: &Path) -> anyhow::Result<Process> {
    let root = scratch.join(format!("www-{pod}"));
    fs::create_dir_all(&root)?;
    // The body names the pod, so each response tells which backend served it.
    fs::write(root.join("index.html"), format!("{pod}\n"))?;
    lab.pod(pod)?
        .serve_http(port, &root, &web_log(scratch, pod, port))
}

fn web_log(scratch: &Path, pod: Ipv4Addr, port: u16) -> std::path::PathBuf {
    scratch.join(format!("web-{pod}-{port}.log"))
}

fn start_agent(lab: &Lab, node: &Node, agent: &Path, scratch: &Path) -> anyhow::Result<Process> {
    let peers: String = lab
        .nodes
        .iter()
        .map(|peer| format!("  - {{ name: {}, address: {} }}\n", peer.name, peer.addr))
        .collect();
    let config = scratch.join(format!("{}.yaml", node.name));
    fs::write(
        &config,
        format!(
            "node: {}\ninterface: {LAN_IFACE}\npeers:\n{peers}{}",
            node.name,
            services_yaml()
        ),
    )?;
    node.start_agent(
        agent,
        &config,
        &scratch.join(format!("agent-{}.log", node.name)),
    )
}

/// `curl` from the client (optionally from a fixed source port); returns the trimmed body.
fn curl(lab: &Lab, url: &str, client_port: Option<u16>) -> anyhow::Result<String> {
    let mut command = lab.client.command("curl");
    command.args(["--silent", "--show-error", "--fail", "--max-time", "2"]);
    if let Some(port) = client_port {
        ensure!(
            lab::FIXED_CLIENT_PORTS.contains(&port),
            "client port {port} is outside the lab's reserved range"
        );
        command.args(["--local-port", &port.to_string()]);
    }
    let output = command.arg(url).output().context("running curl")?;
    ensure!(
        output.status.success(),
        "curl {url}: {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn served_by(body: &str) -> anyhow::Result<Ipv4Addr> {
    let pod: Ipv4Addr = body
        .parse()
        .with_context(|| format!("response body {body:?} names no pod"))?;
    ensure!(WEB_PODS.contains(&pod), "response from unknown pod {pod}");
    Ok(pod)
}

/// Client addresses of python http.server access-log lines (`ADDR - - [date] "GET …`).
fn http_clients(log: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    log.lines()
        .filter(|line| line.contains("\"GET "))
        .map(|line| {
            let addr = line.split_whitespace().next().unwrap_or_default();
            addr.parse()
                .with_context(|| format!("access-log line without a client: {line}"))
        })
        .collect()
}

/// Client addresses of dnsmasq query-log lines (`query[A] NAME from ADDR`).
fn dns_clients(log: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    log.lines()
        .filter(|line| line.contains("query["))
        .map(|line| {
            let addr = line.rsplit(" from ").next().unwrap_or_default();
            addr.trim()
                .parse()
                .with_context(|| format!("query-log line without a client: {line}"))
        })
        .collect()
}

/// Sizes of the log files at one moment, so checks see only what was logged after it.
struct LogOffsets(BTreeMap<std::path::PathBuf, usize>);

impl LogOffsets {
    fn now(scratch: &Path) -> anyhow::Result<Self> {
        let mut sizes = BTreeMap::new();
        for entry in fs::read_dir(scratch)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "log") {
                sizes.insert(path.clone(), fs::read(&path)?.len());
            }
        }
        Ok(Self(sizes))
    }

    fn tail(&self, log: &Path) -> anyhow::Result<String> {
        let content = fs::read(log).with_context(|| format!("reading {}", log.display()))?;
        let start = self.0.get(log).copied().unwrap_or(0);
        Ok(String::from_utf8_lossy(&content[start.min(content.len())..]).into_owned())
    }
}

fn namespaces(lab: &Lab) -> Vec<&testbed::netns::Netns> {
    std::iter::once(&lab.client)
        .chain(lab.nodes.iter().flat_map(|node| {
            std::iter::once(&node.netns).chain(node.pods.iter().map(|pod| &pod.netns))
        }))
        .collect()
}

/// State worth seeing when the scenario fails, gathered while the lab still exists.
fn diagnostics(lab: &Lab) -> String {
    let mut report = String::new();
    for node in &lab.nodes {
        for script in [
            "ip -d link show dev eth0",
            "ip route",
            "ip neigh",
            "ethtool -S eth0 | grep -v ': 0$'",
        ] {
            let output = node
                .netns
                .run(script)
                .unwrap_or_else(|error| format!("{error:#}"));
            report.push_str(&format!("--- {} $ {script}\n{output}\n", node.name));
        }
    }
    let neigh = lab.client.run("ip neigh; ip route").unwrap_or_default();
    report.push_str(&format!("--- client $ ip neigh; ip route\n{neigh}\n"));
    report
}
