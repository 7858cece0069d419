//! Forwarding in the lab, three ways to one pod in the same run, interleaved round by
//! round so machine noise hits all three alike:
//!
//! - **xdplb:** client -> VIP on node1 (XDP, IPIP) -> node2 (XDP decap + DNAT) -> pod;
//!   replies leave node2 straight to the client (TC rewrites the source to the VIP).
//! - **kube-proxy:** client -> another VIP on node3, which runs no xdplb but kube-proxy's
//!   iptables rules (DNAT to the pod, MASQUERADE) -> node2 -> pod; replies go back through
//!   node3, whose conntrack undoes both translations.
//! - **direct:** client -> pod, routed by node2: the floor of the lab itself.
//!
//! The pod lives on node2, never on an owner. Each sample checks that its traffic took
//! the intended path: node1's `tx_encap` and node2's `pass_decap_dnat` counters, node3's
//! DNAT rule counter and the source addresses the pod saw must all tell the same story.
//! Senders run on CPU 0 and receivers on CPU 1 (see [`Pinning::split`]); veth hands each
//! frame to its peer on the sending CPU, so every hop of a path costs the sender's core.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use lb_agent::{api::socket::Client, status::AgentStatus};
use tempfile::TempDir;

use super::{Measurement, median, rule_packets};
use crate::{
    lab::{
        self, BpfFs, CLIENT_ADDR, LAN_IFACE, Lab, Node,
        load::{self, Closer, CpuTimes, Pinning, Route, TcpRun, UdpRun, Window},
        wait_for,
    },
    netns::Process,
};

/// Over veth, every hop of a path runs on the sender's core and each XDP program first
/// copies the skb into a page: these figures measure veth and the kernel around it, not
/// the owner a NIC would feed (the owner part measures that), so they carry no targets.
const GROUP: &str = "forwarding over veth";
/// The only pod, on node2 (10.42.1.0/24).
const POD: Ipv4Addr = Ipv4Addr::new(10, 42, 1, 5);
/// node1 owns it (xdplb).
const XDPLB_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
/// node3 serves it (kube-proxy).
const KUBE_PROXY_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 21);
const UDP_PORT: u16 = 9000;
const TCP_PORT: u16 = 9080;
/// Server-closes-first requests get a service port of their own: the pod's TIME_WAIT
/// sockets they leave behind (60 s, renewed by every SYN a PAWS check rejects) must not
/// meet the client-closes samples, whose connections the pod never holds in TIME_WAIT.
/// On one port, node3's `--random-fully` source ports keep landing on them, and
/// kube-proxy's client-closes figure dropped from ~20k to ~1.5k req/s.
const TCP_SERVER_CLOSES_PORT: u16 = 9082;
const ROUNDS: usize = 3;
const WINDOW: Window = Window {
    warmup: Duration::from_millis(500),
    measure: Duration::from_secs(2),
};
/// One short unrecorded round first: checks every path and warms ARP and caches.
const WARM_UP: Window = Window {
    warmup: Duration::from_millis(200),
    measure: Duration::from_millis(500),
};
/// UDP flows (one socket each, distinct source ports).
const UDP_FLOWS: usize = 32;
/// Concurrent request loops, and server threads.
const TCP_WORKERS: usize = 4;
const AGENT_READY: Duration = Duration::from_secs(30);
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// The chain holding node3's DNAT rules, whose counters prove kube-proxy's path.
const SEP_CHAIN: &str = "KUBE-SEP-BENCH";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Xdplb,
    KubeProxy,
    Direct,
}

impl Path {
    const ALL: [Self; 3] = [Self::Xdplb, Self::KubeProxy, Self::Direct];

    /// Where the client sends.
    fn destination(self) -> Ipv4Addr {
        match self {
            Self::Xdplb => XDPLB_VIP,
            Self::KubeProxy => KUBE_PROXY_VIP,
            Self::Direct => POD,
        }
    }

    /// The pod's port for `traffic`. Direct traffic goes to another port than the
    /// service's target port: node2 keeps a flow entry for every client port xdplb
    /// delivered, and its TC program would rewrite replies of a direct connection that
    /// reuses such a port to come from the VIP (no real client talks to both).
    fn pod_port(self, traffic: Traffic) -> u16 {
        match self {
            Self::Xdplb | Self::KubeProxy => traffic.port(),
            Self::Direct => traffic.port() + 1,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xdplb => "xdplb",
            Self::KubeProxy => "kube-proxy",
            Self::Direct => "direct to pod",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Traffic {
    Udp,
    /// New connection per request; the client closes first and keeps the TIME_WAIT, so
    /// every path is measured on its forwarding cost alone.
    Tcp,
    /// The same with the server closing first (HTTP/1.0 style): the pod keeps the
    /// TIME_WAIT, which is where masquerading many connections behind one node address
    /// starts to reuse 4-tuples the pod still holds (PAWS rejects, 1 s SYN retries).
    /// On its own port, see [`TCP_SERVER_CLOSES_PORT`].
    TcpServerCloses,
}

impl Traffic {
    const ALL: [Self; 3] = [Self::Udp, Self::Tcp, Self::TcpServerCloses];

    fn port(self) -> u16 {
        match self {
            Self::Udp => UDP_PORT,
            Self::Tcp => TCP_PORT,
            Self::TcpServerCloses => TCP_SERVER_CLOSES_PORT,
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp | Self::TcpServerCloses => "tcp",
        }
    }

    fn closer(self) -> Closer {
        match self {
            Self::TcpServerCloses => Closer::Server,
            Self::Udp | Self::Tcp => Closer::Client,
        }
    }

    fn figure(self) -> &'static str {
        match self {
            Self::Udp => "UDP pps",
            Self::Tcp => "TCP req/s",
            Self::TcpServerCloses => "TCP req/s (server closes first)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Udp => "pps",
            Self::Tcp | Self::TcpServerCloses => "req/s",
        }
    }

    fn how(self) -> String {
        match self {
            Self::Udp => format!(
                "{}-byte UDP payloads (64-byte frames) in {UDP_FLOWS} flows, counted by the \
                 pod's sink",
                load::UDP_PAYLOAD
            ),
            Self::Tcp | Self::TcpServerCloses => format!(
                "{TCP_WORKERS} concurrent loops of connect, {}-byte request, {}-byte \
                 response, close ({} first)",
                load::TCP_REQUEST.len(),
                load::TCP_RESPONSE.len(),
                self.closer().as_str()
            ),
        }
    }
}

pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let bench = Bench::start()?;
    let outcome = bench.measure_all();
    if outcome.is_err() {
        lab::dump_log_tails(bench.scratch.path(), |_| 30);
    }
    outcome
}

/// One sample: the rate, what the sender offered (UDP), and what each CPU did.
#[derive(Debug, Clone)]
struct Sample {
    rate: f64,
    offered: Option<f64>,
    errors: u64,
    cpus: Vec<(f64, f64)>,
}

/// The lab: node1 and node2 run agents, node3 runs kube-proxy's rules.
///
/// Field order is drop order: agents first, then the namespaces, then the pins, then
/// the scratch directory with the logs.
struct Bench {
    agents: Vec<Process>,
    lab: Lab,
    bpffs: BpfFs,
    scratch: TempDir,
    pinning: Pinning,
}

impl Bench {
    fn start() -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("xdplb-bench-").tempdir()?;
        let bpffs = BpfFs::mount(&scratch.path().join("bpffs"))?;
        let lab = Lab::new(&[&[], &[POD], &[]])?;
        let mut bench = Self {
            agents: Vec::new(),
            lab,
            bpffs,
            scratch,
            pinning: Pinning::split(),
        };
        bench.start_agents()?;
        bench.configure_kube_proxy()?;
        bench.configure_client()?;
        Ok(bench)
    }

    fn node(&self, index: usize) -> &Node {
        &self.lab.nodes[index - 1]
    }

    fn socket(&self, node: &Node) -> PathBuf {
        self.scratch.path().join(format!("{}.sock", node.name))
    }

    /// Agents on node1 (the VIP's static owner) and node2 (the pod's node); none on
    /// node3, which is not an xdplb node.
    fn start_agents(&mut self) -> anyhow::Result<()> {
        let agent = lab::workspace_binary("lb-agent")?;
        for index in [1, 2] {
            let node = self.node(index);
            let config = self.scratch.path().join(format!("{}.yaml", node.name));
            fs::write(&config, self.agent_config(node))?;
            let log = self.scratch.path().join(format!("agent-{}.log", node.name));
            let process = node.start_agent(&agent, &config, &log)?;
            self.agents.push(process);
        }
        for index in [1, 2] {
            let node = self.node(index);
            wait_for(
                &format!("the agent on {} to report ready", node.name),
                AGENT_READY,
                || Ok(self.status(node).ok().filter(|status| status.ready)),
            )?;
        }
        Ok(())
    }

    fn agent_config(&self, node: &Node) -> String {
        let peer = |index: usize| {
            let peer = self.node(index);
            format!("  - {{ name: {}, address: {} }}\n", peer.name, peer.addr)
        };
        format!(
            "node: {name}\ninterface: {LAN_IFACE}\npinDir: {pins}\napi:\n  socket: {socket}\n\
             peers:\n{node1}{node2}services:\n  - name: bench\n    vip: {XDPLB_VIP}\n    \
             owner: {owner}\n    ports:\n{ports}    endpoints:\n      \
             - {{ address: {POD}, node: {pod_node} }}\n",
            name = node.name,
            pins = self.bpffs.path().join(&node.name).display(),
            socket = self.socket(node).display(),
            node1 = peer(1),
            node2 = peer(2),
            owner = self.node(1).name,
            pod_node = self.node(2).name,
            ports = Traffic::ALL.map(service_port).concat(),
        )
    }

    /// node3 as a kube-proxy node (iptables mode) serving [`KUBE_PROXY_VIP`] with the pod
    /// as its one endpoint: the chains kube-proxy writes for an external address of a
    /// `Cluster`-policy service, which marks the packets for MASQUERADE, and a route to
    /// node2's pod range as the CNI would set it.
    fn configure_kube_proxy(&self) -> anyhow::Result<()> {
        let node2 = self.node(2);
        let [a, b, c, _] = POD.octets();
        let chains = [
            "-N KUBE-SERVICES".to_owned(),
            "-N KUBE-EXT-BENCH".to_owned(),
            "-N KUBE-SVC-BENCH".to_owned(),
            format!("-N {SEP_CHAIN}"),
            "-N KUBE-MARK-MASQ".to_owned(),
            "-N KUBE-POSTROUTING".to_owned(),
            "-A PREROUTING -j KUBE-SERVICES".to_owned(),
            "-A POSTROUTING -j KUBE-POSTROUTING".to_owned(),
            "-A KUBE-EXT-BENCH -j KUBE-MARK-MASQ".to_owned(),
            "-A KUBE-EXT-BENCH -j KUBE-SVC-BENCH".to_owned(),
            format!("-A KUBE-SVC-BENCH -j {SEP_CHAIN}"),
        ];
        // One service port per traffic kind, each DNATed to the same port on the pod.
        let ports = Traffic::ALL.into_iter().flat_map(|traffic| {
            let (protocol, port) = (traffic.protocol(), traffic.port());
            [
                format!(
                    "-A KUBE-SERVICES -d {KUBE_PROXY_VIP}/32 -p {protocol} --dport {port} \
                     -j KUBE-EXT-BENCH"
                ),
                format!(
                    "-A {SEP_CHAIN} -p {protocol} -m {protocol} --dport {port} \
                     -j DNAT --to-destination {POD}:{port}"
                ),
            ]
        });
        let masquerade = [
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".to_owned(),
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_owned(),
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".to_owned(),
            "-A KUBE-POSTROUTING -j MASQUERADE --random-fully".to_owned(),
        ];
        let script: Vec<String> = chains
            .into_iter()
            .chain(ports)
            .chain(masquerade)
            .map(|rule| format!("iptables -w -t nat {rule}"))
            .collect();
        let node3 = self.node(3);
        node3
            .netns
            .run(&script.join(" && "))
            .context("installing kube-proxy's rules on node3 (is iptables installed?)")?;
        node3
            .netns
            .run(&format!("ip route add {a}.{b}.{c}.0/24 via {}", node2.addr))?;
        Ok(())
    }

    /// Each VIP resolves to its node's MAC, the pod range is routed via node2, and the
    /// client has enough ports for tens of thousands of short connections, reusing
    /// its own TIME_WAIT ports after a second as busy clients are set up to.
    fn configure_client(&self) -> anyhow::Result<()> {
        self.lab
            .route_vips(&format!("{XDPLB_VIP}/32"), &[XDPLB_VIP], self.node(1))?;
        self.lab.route_vips(
            &format!("{KUBE_PROXY_VIP}/32"),
            &[KUBE_PROXY_VIP],
            self.node(3),
        )?;
        let [a, b, c, _] = POD.octets();
        self.lab.client.run(&format!(
            "ip route add {a}.{b}.{c}.0/24 via {} \
             && echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range \
             && echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse",
            self.node(2).addr
        ))?;
        Ok(())
    }

    fn status(&self, node: &Node) -> anyhow::Result<AgentStatus> {
        Ok(Client::connect(&self.socket(node), API_TIMEOUT)?.status()?)
    }

    fn reason(&self, node: &Node, reason: &str) -> anyhow::Result<u64> {
        let status = self.status(node)?;
        Ok(status.reasons.get(reason).copied().unwrap_or(0))
    }

    /// Packets that matched node3's DNAT rules (the first of each connection).
    fn dnat_packets(&self) -> anyhow::Result<u64> {
        rule_packets(&self.node(3).netns, "nat", SEP_CHAIN, "DNAT")
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        Ok(Counters {
            encapsulated: self.reason(self.node(1), "tx_encap")?,
            decapsulated: self.reason(self.node(2), "pass_decap_dnat")?,
            dnat: self.dnat_packets()?,
        })
    }

    fn measure_all(&self) -> anyhow::Result<Vec<Measurement>> {
        for traffic in Traffic::ALL {
            for path in Path::ALL {
                self.sample(path, traffic, WARM_UP)
                    .with_context(|| format!("warm-up: {} over {path}", traffic.figure()))?;
            }
        }
        let mut samples: BTreeMap<(Traffic, Path), Vec<Sample>> = BTreeMap::new();
        for round in 0..ROUNDS {
            for traffic in Traffic::ALL {
                // Each round starts with another path, so no path always runs first.
                for offset in 0..Path::ALL.len() {
                    let path = Path::ALL[(round + offset) % Path::ALL.len()];
                    let sample = self.sample(path, traffic, WINDOW).with_context(|| {
                        format!("round {}: {} over {path}", round + 1, traffic.figure())
                    })?;
                    eprintln!(
                        "forwarding round {}: {} over {path}: {:.0}",
                        round + 1,
                        traffic.figure(),
                        sample.rate
                    );
                    samples.entry((traffic, path)).or_default().push(sample);
                }
            }
        }
        Ok(Traffic::ALL
            .into_iter()
            .flat_map(|traffic| report(traffic, &samples))
            .collect())
    }

    /// One run of `traffic` over `path`, checked to have taken that path.
    fn sample(&self, path: Path, traffic: Traffic, window: Window) -> anyhow::Result<Sample> {
        let pod = self.lab.pod(POD)?;
        let port = path.pod_port(traffic);
        // Service ports equal target ports, so the client and the pod use the same one.
        let route = Route {
            sender: &self.lab.client,
            receiver: &pod.netns,
            target: SocketAddrV4::new(path.destination(), port),
            listen: SocketAddrV4::new(POD, port),
        };
        let before = self.counters()?;
        let cpu_before = CpuTimes::now()?;
        let (sample, delivered, sources) = match traffic {
            Traffic::Udp => {
                let run = load::udp_flood(route, UDP_FLOWS, window, self.pinning)?;
                udp_sample(run)
            }
            Traffic::Tcp | Traffic::TcpServerCloses => {
                let run =
                    load::tcp_requests(route, TCP_WORKERS, traffic.closer(), window, self.pinning)?;
                tcp_sample(run)?
            }
        };
        let cpus = CpuTimes::now()?.since(&cpu_before);
        let change = self.counters()?.since(&before);
        self.check_path(path, &change, delivered, &sources)?;
        Ok(Sample { cpus, ..sample })
    }

    /// The counters and the pod's view agree with `path`, for `delivered` packets or
    /// requests.
    fn check_path(
        &self,
        path: Path,
        change: &Counters,
        delivered: u64,
        sources: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<()> {
        ensure!(delivered > 0, "nothing reached the pod");
        let (expected_sources, tunnelled, translated) = match path {
            Path::Xdplb => (CLIENT_ADDR, true, false),
            Path::KubeProxy => (self.node(3).addr, false, true),
            Path::Direct => (CLIENT_ADDR, false, false),
        };
        ensure!(
            *sources == BTreeSet::from([expected_sources]),
            "over {path} the pod saw sources {sources:?}, expected only {expected_sources}"
        );
        if tunnelled {
            ensure!(
                change.encapsulated >= delivered && change.decapsulated >= delivered,
                "over {path} node1 encapsulated {} and node2 decapsulated {} packets for \
                 {delivered} delivered",
                change.encapsulated,
                change.decapsulated
            );
        } else {
            ensure!(
                change.encapsulated == 0 && change.decapsulated == 0,
                "over {path} node1 encapsulated {} and node2 decapsulated {} packets",
                change.encapsulated,
                change.decapsulated
            );
        }
        ensure!(
            (change.dnat > 0) == translated,
            "over {path} node3's DNAT rules matched {} packets",
            change.dnat
        );
        Ok(())
    }
}

/// The agent config's entry for `traffic`'s service port (the same target port).
fn service_port(traffic: Traffic) -> String {
    format!(
        "      - {{ port: {port}, protocol: {protocol}, targetPort: {port} }}\n",
        port = traffic.port(),
        protocol = traffic.protocol().to_uppercase(),
    )
}

/// Counters that prove which path traffic took.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// node1's XDP `tx_encap` verdicts.
    encapsulated: u64,
    /// node2's XDP `pass_decap_dnat` verdicts.
    decapsulated: u64,
    /// Packets node3's DNAT rules matched.
    dnat: u64,
}

impl Counters {
    fn since(self, earlier: &Self) -> Self {
        Self {
            encapsulated: self.encapsulated.saturating_sub(earlier.encapsulated),
            decapsulated: self.decapsulated.saturating_sub(earlier.decapsulated),
            dnat: self.dnat.saturating_sub(earlier.dnat),
        }
    }
}

/// The sample, the datagrams counted and their sources.
fn udp_sample(run: UdpRun) -> (Sample, u64, BTreeSet<Ipv4Addr>) {
    let sample = Sample {
        rate: run.received_pps(),
        offered: Some(run.sent_pps()),
        errors: run.sent.errors,
        cpus: Vec::new(),
    };
    (sample, run.received.packets, run.received.sources)
}

/// The sample, the requests the server answered and the peers it saw.
fn tcp_sample(run: TcpRun) -> anyhow::Result<(Sample, u64, BTreeSet<Ipv4Addr>)> {
    ensure!(
        run.client.requests > 0,
        "no request was answered: {} errors, first {:?}",
        run.client.errors,
        run.client.first_error
    );
    let sample = Sample {
        rate: run.requests_per_second(),
        offered: None,
        errors: run.client.errors,
        cpus: Vec::new(),
    };
    Ok((sample, run.server.answered, run.server.sources))
}

/// Absolute figures per path and the ratios of xdplb against the other two, each the
/// median over the rounds (ratios are taken within a round, then the median).
fn report(traffic: Traffic, samples: &BTreeMap<(Traffic, Path), Vec<Sample>>) -> Vec<Measurement> {
    let of = |path: Path| samples.get(&(traffic, path)).map_or(&[][..], Vec::as_slice);
    let window = format!(
        "{} s after {} s warm-up, median of {ROUNDS} interleaved rounds",
        WINDOW.measure.as_secs_f64(),
        WINDOW.warmup.as_secs_f64()
    );
    let mut measurements: Vec<Measurement> = Path::ALL
        .into_iter()
        .map(|path| {
            let runs = of(path);
            let rates: Vec<f64> = runs.iter().map(|sample| sample.rate).collect();
            let detail = format!(
                "{}; {window}: {}; {}",
                traffic.how(),
                list(&rates),
                limits(runs)
            );
            Measurement::new(
                GROUP,
                &format!("{}: {path}", traffic.figure()),
                median(&rates),
                traffic.unit(),
                &detail,
            )
        })
        .collect();
    let xdplb = of(Path::Xdplb);
    for other in [Path::KubeProxy, Path::Direct] {
        let ratios: Vec<f64> = xdplb
            .iter()
            .zip(of(other))
            .map(|(ours, theirs)| ours.rate / theirs.rate)
            .collect();
        let name = format!("{}: xdplb / {other}", traffic.figure());
        let detail = format!("per-round ratios {}", list(&ratios));
        measurements.push(Measurement::new(
            GROUP,
            &name,
            median(&ratios),
            "x",
            &detail,
        ));
    }
    measurements
}

/// What the sender offered, failures, and how busy each CPU was (averaged over runs).
fn limits(runs: &[Sample]) -> String {
    let mut parts = Vec::new();
    let offered: Vec<f64> = runs.iter().filter_map(|sample| sample.offered).collect();
    if !offered.is_empty() {
        parts.push(format!("sender offered {}", list(&offered)));
    }
    let errors: u64 = runs.iter().map(|sample| sample.errors).sum();
    if errors > 0 {
        parts.push(format!("{errors} failed sends/requests"));
    }
    let cpus = runs.first().map_or(0, |sample| sample.cpus.len());
    let load: Vec<String> = (0..cpus)
        .map(|cpu| {
            let average = |pick: fn(&(f64, f64)) -> f64| {
                runs.iter()
                    .map(|sample| pick(&sample.cpus[cpu]))
                    .sum::<f64>()
                    / runs.len() as f64
            };
            format!(
                "CPU{cpu} {:.0}% busy ({:.0}% softirq)",
                average(|load| load.0),
                average(|load| load.1)
            )
        })
        .collect();
    if !load.is_empty() {
        parts.push(load.join(", "));
    }
    parts.join("; ")
}

fn list(values: &[f64]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|value| {
            if *value >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            }
        })
        .collect();
    format!("[{}]", shown.join(", "))
}
