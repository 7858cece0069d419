//! Control-plane scale with the real kernel: the release `lb-agent` with 1,000 services
//! x 50 endpoints, in a network namespace of its own (one veth pair, nothing else), its
//! maps pinned on a private BPF filesystem; once in standalone mode (one YAML file), once
//! in Kubernetes mode against the lab's API double (listening on loopback inside the
//! agent's namespace), which is how production runs.
//!
//! * cold start, standalone: from spawning the agent until its XDP link is pinned. The
//!   agent writes every table before it attaches (the first packet sees the whole
//!   configuration), so the link pin appearing means every map is programmed; the maps
//!   are then read back to check that every service, VIP and backend is there.
//! * cold start, Kubernetes: from spawning the agent until the pinned maps hold every
//!   service, VIP and backend. The Services are published without status, as after a
//!   fresh install: the agent (the only one, so the IPAM Lease's holder) assigns the
//!   1,000 VIPs from the AddressPool first.
//! * endpoint change, standalone: one endpoint of one service moved to a new address in
//!   the file, then SIGHUP; the agent parses the whole 3 MB file again. Kubernetes: the
//!   service's EndpointSlice replaced in the API double with that endpoint moved, which
//!   reaches the agent as one watch event. The latency is until the service's port
//!   entry points at a pod table holding the new address (what the next packet would
//!   use).
//! * the same change in process (desired state, diff, kernel apply through the agent's
//!   own engine on a loaded object) splits the agent's latency into computing and writing.
//! * resident memory of the agent (VmRSS) with 1,000 services, after the changes, in
//!   both modes.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_agent::{
    config,
    dataplane::{
        Dataplane as _,
        kernel::KernelDataplane,
        loader::{self, PinDir},
        maps::Maps,
    },
    diff::diff,
    ipam::request::ClassPolicy,
    model::{Inputs, State, Tables, capacities::Capacities, desired_state_with},
    sources::kubernetes::translate::{Snapshot, Translator},
};
use lb_common::types::{PROTO_TCP, ServiceKey};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

use super::{Measurement, median, percentile};
use crate::{
    fixture::wire,
    lab::{ApiDouble, BpfFs, workspace_binary},
    netns::{Netns, Process},
};

const GROUP: &str = "control-plane";
const SERVICES: u32 = 1000;
const ENDPOINTS: u32 = 50;
const NODES: u32 = 10;
/// Endpoint changes measured through the agent (SIGHUP), and in process. Each costs the
/// agent a full recomputation (about 1.5 s here), which bounds the count.
const CHANGES: u32 = 40;
/// Endpoint changes left to the agent's file watch (1 s poll) before the SIGHUP ones.
const WATCHED_CHANGES: u32 = 3;
/// Endpoint changes through the API double, also bounded by [`KUBE_CHANGES_BUDGET`].
const KUBE_CHANGES: u32 = 100;
const KUBE_CHANGES_BUDGET: Duration = Duration::from_secs(60);
const COLD_START_LIMIT: Duration = Duration::from_secs(60);
const CHANGE_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(1);
/// The Kubernetes cold start polls every entry of three maps each time: not every 1 ms.
const PROGRAMMED_POLL: Duration = Duration::from_millis(10);
/// Left to the IPAM's last status writes once the maps are complete, so that the
/// changes measured are the only ones the agent is translating.
const QUIET: Duration = Duration::from_secs(1);
const API_PORT: u16 = 6443;
/// In-process runs of the Kubernetes translation.
const TRANSLATIONS: u32 = 10;
const INTERFACE: &str = "eth0";
const SERVICE_PORT: u16 = 80;
/// Addresses per service: its endpoints, then room for the moved ones.
const BLOCK: u32 = 64;
const FIRST_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The AddressPool of the Kubernetes runs: every VIP.
const POOL: &str = "172.16.0.0/22";

pub fn run() -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    standalone(&mut out)?;
    kubernetes(&mut out)?;
    in_process(&mut out)?;
    Ok(out)
}

fn standalone(out: &mut Vec<Measurement>) -> Result<()> {
    let bench = Bench::new()?;
    let mut config = Generated::new();
    let agent = bench.cold_start(&config, out)?;
    bench.agent_changes(&agent, &mut config, out)?;
    out.push(memory(
        &agent,
        "standalone",
        &format!("cold start and {} reloads", WATCHED_CHANGES + CHANGES),
    )?);
    Ok(())
}

/// A fresh namespace and BPF filesystem: the standalone agent's pins stay behind it.
/// Twice: a fresh install (the agent's IPAM assigns every VIP), then, in another
/// namespace against a double holding the Services as that IPAM left them, an agent
/// (re)start, which the changes are measured on.
fn kubernetes(out: &mut Vec<Measurement>) -> Result<()> {
    let mut config = Generated::new();
    let assigned = {
        let (bench, api) = Bench::with_api()?;
        config.publish(&api, None)?;
        drop(bench.kube_cold_start(&api, &config, Start::FreshInstall, out)?);
        api.objects("services")
    };
    let (bench, api) = Bench::with_api()?;
    config.publish(&api, Some(assigned))?;
    let agent = bench.kube_cold_start(&api, &config, Start::Restart, out)?;
    thread::sleep(QUIET);
    let changes = bench.kube_changes(&agent, &api, &mut config, out)?;
    out.push(memory(
        &agent,
        "Kubernetes",
        &format!("cold start and {changes} EndpointSlice changes"),
    )?);
    drop(agent);
    translation(&api, out)
}

/// The agent's translation of the whole API state into its cluster, which its source
/// runs after watch events (once its settle window, 25 ms growing to 200 ms in bursts,
/// has passed): timed in
/// process on what the double holds after the run (the VIPs the agent assigned
/// included), to split the Kubernetes change latency.
fn translation(api: &ApiDouble, out: &mut Vec<Measurement>) -> Result<()> {
    let snapshot = Snapshot {
        nodes: objects(api, "nodes")?,
        services: objects(api, "services")?,
        slices: objects(api, "endpointslices")?,
        pools: objects(api, "addresspools")?,
    };
    let translator = Translator {
        node: "node1".to_owned(),
        class: ClassPolicy::default(),
        mtu: Some(1500),
        icmp_rate_per_sec: 100,
    };
    let mut took = Vec::new();
    for _ in 0..TRANSLATIONS {
        let started = Instant::now();
        let translation = translator.translate(&snapshot)?;
        took.push(started.elapsed().as_secs_f64() * 1e3);
        let services = translation.cluster.inputs.services.len();
        ensure!(
            services == SERVICES as usize,
            "the translation holds {services} services, {SERVICES} expected"
        );
    }
    out.push(Measurement::new(
        GROUP,
        "endpoint change (Kubernetes): translation of the API state, p50",
        median(&took),
        "ms",
        &format!(
            "in process, {TRANSLATIONS} runs of lb-agent's Translator::translate on the {SERVICES} Services, \
             {SERVICES} EndpointSlices, {NODES} Nodes and the pool the API double holds after the run; max {:.0} ms",
            percentile(&took, 100.0)
        ),
    ));
    Ok(())
}

fn objects<K: DeserializeOwned>(api: &ApiDouble, resource: &str) -> Result<Vec<Arc<K>>> {
    api.objects(resource)
        .into_iter()
        .map(|object| Ok(Arc::new(serde_json::from_value(object)?)))
        .collect()
}

fn capacities() -> Capacities {
    Capacities {
        services: SERVICES + 24,
        service_ports: SERVICES + 24,
        vips: SERVICES + 24,
        backends: 8192,
        ..Capacities::default()
    }
}

/// The generated configuration: which services have their first endpoint moved.
struct Generated {
    moved: Vec<bool>,
}

impl Generated {
    fn new() -> Self {
        Self {
            moved: vec![false; SERVICES as usize],
        }
    }

    fn vip(service: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(FIRST_VIP) + service)
    }

    /// Endpoint `index` of `service`; endpoint 0 lives on this node (`node1`) and moves
    /// to a spare address of the service's block when the service is marked moved.
    fn endpoint(&self, service: u32, index: u32) -> Ipv4Addr {
        let slot = if index == 0 && self.moved[service as usize] {
            ENDPOINTS
        } else {
            index
        };
        Ipv4Addr::from(u32::from(FIRST_ENDPOINT) + service * BLOCK + slot)
    }

    /// The node endpoint `index` runs on.
    fn node(index: u32) -> String {
        format!("node{}", index % NODES + 1)
    }

    fn node_address(node: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, 10 + node as u8)
    }

    /// The keys both modes share: the agent's node-local settings.
    fn node_local(pin_dir: &Path, socket: &Path) -> String {
        let c = capacities();
        format!(
            "interface: {INTERFACE}\nmtu: 1500\npinDir: {}\napi:\n  socket: {}\n\
             capacities:\n  services: {}\n  servicePorts: {}\n  vips: {}\n  backends: {}\n",
            pin_dir.display(),
            socket.display(),
            c.services,
            c.service_ports,
            c.vips,
            c.backends
        )
    }

    fn text(&self, pin_dir: &Path, socket: &Path) -> String {
        let mut text = format!("node: node1\n{}peers:\n", Self::node_local(pin_dir, socket));
        for node in 1..=NODES {
            text.push_str(&format!(
                "  - {{ name: node{node}, address: {} }}\n",
                Self::node_address(node)
            ));
        }
        text.push_str("services:\n");
        for service in 0..SERVICES {
            text.push_str(&format!(
                "  - name: svc{service}\n    vip: {}\n    owner: node1\n    ports:\n      \
                 - {{ port: {SERVICE_PORT}, protocol: TCP, targetPort: 8080 }}\n    endpoints:\n",
                Self::vip(service)
            ));
            for index in 0..ENDPOINTS {
                text.push_str(&format!(
                    "      - {{ address: {}, node: {} }}\n",
                    self.endpoint(service, index),
                    Self::node(index)
                ));
            }
        }
        text
    }

    const PORTS: [(u16, &str, u16); 1] = [(SERVICE_PORT, "TCP", 8080)];

    fn service_name(service: u32) -> String {
        format!("svc{service}")
    }

    /// Writes `service`'s EndpointSlice to the API double.
    fn put_slice(&self, api: &ApiDouble, service: u32) -> Result<()> {
        let endpoints: Vec<(Ipv4Addr, String)> = (0..ENDPOINTS)
            .map(|index| (self.endpoint(service, index), Self::node(index)))
            .collect();
        api.put_endpoint_slice(&Self::service_name(service), &Self::PORTS, &endpoints)
    }

    /// The same cluster as [`Self::text`] as Kubernetes objects: the Nodes, an
    /// AddressPool holding the VIPs, and each Service with its EndpointSlice. The
    /// Services are the `assigned` ones (with the status an IPAM wrote), or new ones
    /// asking for their VIP.
    fn publish(&self, api: &ApiDouble, assigned: Option<Vec<serde_json::Value>>) -> Result<()> {
        let nodes: Vec<(String, Ipv4Addr)> = (1..=NODES)
            .map(|node| (format!("node{node}"), Self::node_address(node)))
            .collect();
        api.publish_cluster(&nodes, POOL)?;
        match assigned {
            Some(services) => {
                ensure!(
                    services.len() == SERVICES as usize,
                    "{} assigned Services, {SERVICES} expected",
                    services.len()
                );
                for service in services {
                    api.put("services", service)?;
                }
            }
            None => {
                for service in 0..SERVICES {
                    api.put_service(
                        &Self::service_name(service),
                        Self::vip(service),
                        &Self::PORTS,
                    )?;
                }
            }
        }
        (0..SERVICES).try_for_each(|service| self.put_slice(api, service))
    }
}

/// The namespace, BPF filesystem and scratch directory of the agent runs; field order
/// is drop order.
struct Bench {
    netns: Netns,
    bpffs: BpfFs,
    scratch: TempDir,
    agent_binary: PathBuf,
}

/// What the API holds when a Kubernetes-mode agent starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    FreshInstall,
    Restart,
}

/// A running agent and the maps it pinned.
struct Agent {
    process: Process,
    maps: Maps,
    _ebpf: aya::Ebpf,
}

impl Bench {
    fn new() -> Result<Self> {
        let agent_binary = workspace_binary("lb-agent")?;
        let scratch = tempfile::Builder::new().prefix("xdplb-bench-").tempdir()?;
        let bpffs = BpfFs::mount(&scratch.path().join("bpffs"))?;
        let netns = Netns::new("cp")?;
        netns.run(&format!(
            "ip link add {INTERFACE} type veth peer name {INTERFACE}p && \
             ip addr add 10.0.0.11/24 dev {INTERFACE} && \
             ip link set {INTERFACE} up && ip link set {INTERFACE}p up"
        ))?;
        Ok(Self {
            netns,
            bpffs,
            scratch,
            agent_binary,
        })
    }

    fn config_path(&self) -> PathBuf {
        self.scratch.path().join("agent.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.path().join("agent.log")
    }

    fn pins(&self) -> PinDir {
        PinDir::new(self.bpffs.path().join("node1"))
    }

    /// Writes the file as editors do: a new file renamed over the old one.
    fn write_config(&self, config: &Generated) -> Result<()> {
        let text = config.text(self.pins().root(), &self.scratch.path().join("agent.sock"));
        let temporary = self.config_path().with_extension("tmp");
        fs::write(&temporary, text)?;
        fs::rename(&temporary, self.config_path())?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Spawns the agent with `arguments` (its log goes to [`Self::log_path`]) and
    /// waits until its XDP link is pinned.
    fn spawn_until_linked(&self, arguments: &str) -> Result<(Process, Instant)> {
        let link = self
            .pins()
            .root()
            .join("links")
            .join(INTERFACE)
            .join("xdp-native");
        let command = format!("exec {arguments} >{} 2>&1", self.log_path().display());
        let started = Instant::now();
        let mut process = self.netns.spawn("sh", &["-c", &command])?;
        while !link.exists() {
            self.ensure_running(&mut process, started, "XDP link")?;
            thread::sleep(POLL);
        }
        Ok((process, started))
    }

    /// Fails once the agent has exited or the cold start took too long.
    fn ensure_running(&self, process: &mut Process, started: Instant, awaited: &str) -> Result<()> {
        if process.has_exited()? {
            bail!("the agent exited during cold start:\n{}", self.log_tail());
        }
        if started.elapsed() > COLD_START_LIMIT {
            bail!(
                "no {awaited} after {COLD_START_LIMIT:?}:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    fn cold_start(&self, config: &Generated, out: &mut Vec<Measurement>) -> Result<Agent> {
        self.write_config(config)?;
        let (process, started) = self.spawn_until_linked(&format!(
            "{} --config {}",
            self.agent_binary.display(),
            self.config_path().display(),
        ))?;
        let took = started.elapsed();
        let (ebpf, maps) = open_pinned(&self.pins())?;
        check_programmed(&maps, config)?;
        out.push(
            Measurement::new(
                GROUP,
                "cold start, standalone: 1,000 services x 50 endpoints programmed",
                took.as_secs_f64(),
                "s",
                &format!(
                    "release lb-agent, standalone file ({SERVICES} services, {ENDPOINTS} endpoints each over {NODES} nodes, \
                     5 local), spawn until its XDP link is pinned (tables are written before attach); \
                     every service, VIP and local backend then read back from the pinned maps"
                ),
            )
            .at_most(2.0, "<= 2 s"),
        );
        Ok(Agent {
            process,
            maps,
            _ebpf: ebpf,
        })
    }

    /// One endpoint moved in the file; with `sighup`, the agent is told at once,
    /// otherwise it notices the file by itself. Returns the milliseconds until the maps
    /// show the change.
    fn change(
        &self,
        agent: &Agent,
        config: &mut Generated,
        change: u32,
        sighup: bool,
    ) -> Result<f64> {
        // Spread over the services, each moved once.
        let service = (change * 7) % SERVICES;
        config.moved[service as usize] = true;
        let moved = config.endpoint(service, 0);
        self.write_config(config)?;
        let started = Instant::now();
        if sighup {
            agent.process.signal(Signal::SIGHUP)?;
        }
        self.wait_visible(agent, service, moved, started, change)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// First through the file watch, which also proves the agent's loop (and its SIGHUP
    /// handler) runs, then through SIGHUP.
    fn agent_changes(
        &self,
        agent: &Agent,
        config: &mut Generated,
        out: &mut Vec<Measurement>,
    ) -> Result<()> {
        let watched: Vec<f64> = (0..WATCHED_CHANGES)
            .map(|change| self.change(agent, config, change, false))
            .collect::<Result<_>>()?;
        out.push(Measurement::new(
            GROUP,
            "standalone reload (whole file parsed): endpoint change to map-visible, p50 (file watch)",
            median(&watched),
            "ms",
            &format!(
                "{WATCHED_CHANGES} changes noticed by the agent's 1 s file poll (no signal); \
                 max {:.0} ms",
                percentile(&watched, 100.0)
            ),
        ));
        let latencies: Vec<f64> = (WATCHED_CHANGES..WATCHED_CHANGES + CHANGES)
            .map(|change| self.change(agent, config, change, true))
            .collect::<Result<_>>()?;
        let detail = format!(
            "{CHANGES} changes, one endpoint of one service moved to a new address in the 3 MB file, then SIGHUP: \
             the agent parses the whole file and recomputes every service; until the service's port entry \
             points at a pod table holding it (polled every {} ms). Not the production path: on Kubernetes \
             a change is one EndpointSlice watch event (see the Kubernetes rows, which carry the target)",
            POLL.as_millis()
        );
        for (name, value) in [
            ("p50", median(&latencies)),
            ("p99", percentile(&latencies, 99.0)),
        ] {
            out.push(Measurement::new(
                GROUP,
                &format!(
                    "standalone reload (whole file parsed): endpoint change to map-visible, {name} (SIGHUP)"
                ),
                value,
                "ms",
                &detail,
            ));
        }
        Ok(())
    }

    /// `lb-agent kubernetes` as node1 against `api`, timed until the maps hold every
    /// service, VIP and backend.
    /// A namespace of its own with an API double on its loopback.
    fn with_api() -> Result<(Self, ApiDouble)> {
        let bench = Self::new()?;
        let api = ApiDouble::start(
            &bench.netns,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, API_PORT),
        )?;
        Ok((bench, api))
    }

    fn kube_cold_start(
        &self,
        api: &ApiDouble,
        config: &Generated,
        start: Start,
        out: &mut Vec<Measurement>,
    ) -> Result<Agent> {
        let settings = self.scratch.path().join("settings.yaml");
        fs::write(
            &settings,
            Generated::node_local(self.pins().root(), &self.scratch.path().join("agent.sock")),
        )?;
        let command = api.agent_command(
            &self.agent_binary,
            &settings,
            &self.scratch.path().join("kubeconfig"),
            "node1",
        )?;
        let (mut process, started) = self.spawn_until_linked(&command)?;
        let (ebpf, maps) = open_pinned(&self.pins())?;
        while let Err(missing) = check_programmed(&maps, config) {
            self.ensure_running(
                &mut process,
                started,
                &format!("complete maps ({missing:#})"),
            )?;
            thread::sleep(PROGRAMMED_POLL);
        }
        let (name, services) = match start {
            Start::FreshInstall => (
                "cold start, Kubernetes fresh install (the agent's IPAM assigns the VIPs)",
                "no status yet, each asking for its VIP; the agent, the only one, takes the IPAM Lease \
                 and writes the 1000 statuses one by one, each a watch event; the settle window grows \
                 while they arrive in bursts, so they are translated a few at a time",
            ),
            Start::Restart => (
                "cold start, Kubernetes agent start: 1,000 services x 50 endpoints programmed",
                "VIPs already in status.loadBalancer.ingress, as the fresh-install run's IPAM wrote them",
            ),
        };
        out.push(
            Measurement::new(
                GROUP,
                name,
                started.elapsed().as_secs_f64(),
                "s",
                &format!(
                    "release `lb-agent kubernetes` against the lab's API double on loopback: {NODES} Nodes, \
                     an AddressPool, {SERVICES} LoadBalancer Services ({services}) with an EndpointSlice of \
                     {ENDPOINTS} endpoints each; spawn until every service, VIP and backend is in the pinned \
                     maps (polled every {} ms)",
                    PROGRAMMED_POLL.as_millis()
                ),
            )
            .at_most(2.0, "<= 2 s"),
        );
        Ok(Agent {
            process,
            maps,
            _ebpf: ebpf,
        })
    }

    /// Up to [`KUBE_CHANGES`] EndpointSlice replacements within [`KUBE_CHANGES_BUDGET`];
    /// returns how many were measured.
    fn kube_changes(
        &self,
        agent: &Agent,
        api: &ApiDouble,
        config: &mut Generated,
        out: &mut Vec<Measurement>,
    ) -> Result<u32> {
        let begun = Instant::now();
        let mut latencies = Vec::new();
        for change in 0..KUBE_CHANGES {
            if begun.elapsed() > KUBE_CHANGES_BUDGET {
                break;
            }
            let service = (change * 7) % SERVICES;
            config.moved[service as usize] = true;
            let moved = config.endpoint(service, 0);
            let started = Instant::now();
            config.put_slice(api, service)?;
            self.wait_visible(agent, service, moved, started, change)?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let count = latencies.len();
        let detail = format!(
            "{count} changes (at most {KUBE_CHANGES} within {} s), each one EndpointSlice replaced in the API \
             double with one endpoint moved to a new address, reaching the agent as one watch event; from \
             the write until the service's port entry points at a pod table holding it (polled every {} ms); \
             max {:.0} ms",
            KUBE_CHANGES_BUDGET.as_secs(),
            POLL.as_millis(),
            percentile(&latencies, 100.0)
        );
        out.push(Measurement::new(
            GROUP,
            "endpoint change to map-visible, p50 (Kubernetes, EndpointSlice watch)",
            median(&latencies),
            "ms",
            &detail,
        ));
        out.push(
            Measurement::new(
                GROUP,
                "endpoint change to map-visible, p99 (Kubernetes, EndpointSlice watch)",
                percentile(&latencies, 99.0),
                "ms",
                &detail,
            )
            .at_most(100.0, "<= 100 ms"),
        );
        Ok(u32::try_from(count)?)
    }

    /// Polls until `service`'s pod table holds `pod`.
    fn wait_visible(
        &self,
        agent: &Agent,
        service: u32,
        pod: Ipv4Addr,
        started: Instant,
        change: u32,
    ) -> Result<()> {
        while !pod_ring_holds(&agent.maps, service, pod)? {
            if started.elapsed() > CHANGE_LIMIT {
                bail!(
                    "change {change} not in the maps after {CHANGE_LIMIT:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
        Ok(())
    }
}

fn open_pinned(pins: &PinDir) -> Result<(aya::Ebpf, Maps)> {
    let mut ebpf = loader::load_pinned(&capacities(), pins)?.ebpf;
    let maps = Maps::take(&mut ebpf)?;
    Ok((ebpf, maps))
}

fn service_key(service: u32) -> ServiceKey {
    ServiceKey {
        vip: wire(Generated::vip(service)),
        port: SERVICE_PORT.to_be(),
        proto: PROTO_TCP,
        _pad: 0,
    }
}

/// Whether `service`'s port entry points at a pod table that holds `pod`.
fn pod_ring_holds(maps: &Maps, service: u32, pod: Ipv4Addr) -> Result<bool> {
    let Some(value) = maps.services.get(&service_key(service))? else {
        return Ok(false);
    };
    let ring = maps.pod_rings.get(value.ring_slot)?;
    Ok(ring.backends.contains(&wire(pod)))
}

fn check_programmed(maps: &Maps, config: &Generated) -> Result<()> {
    let services = maps.services.entries()?.len();
    let vips = maps.vips.entries()?.len();
    let backends = maps.backends.entries()?.len();
    let local = (SERVICES * ENDPOINTS / NODES) as usize;
    ensure!(
        services == SERVICES as usize && vips == SERVICES as usize,
        "{services} service ports and {vips} VIPs in the maps, {SERVICES} expected"
    );
    // Every node (this one included) serves endpoints, plus this node's own pods.
    let expected = local + NODES as usize;
    ensure!(
        backends == expected,
        "{backends} backends in the maps, {expected} expected"
    );
    for service in [0, SERVICES / 2, SERVICES - 1] {
        ensure!(
            pod_ring_holds(maps, service, config.endpoint(service, 0))?,
            "svc{service}'s pod table lacks its local endpoint"
        );
    }
    Ok(())
}

/// The agent's VmRSS in `mode`, after `after`.
fn memory(agent: &Agent, mode: &str, after: &str) -> Result<Measurement> {
    let pid = agent.process.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    let rss = field("VmRSS:")?;
    let peak = field("VmHWM:")?;
    Ok(Measurement::new(
        GROUP,
        &format!("agent resident memory, 1,000 services ({mode})"),
        rss,
        "MiB",
        &format!("VmRSS of the agent after {after} (peak VmHWM {peak:.1} MiB)"),
    )
    .at_most(64.0, "<= 64 MiB"))
}

/// The agent's own engine on an unpinned object: the full state applied once, then
/// [`CHANGES`] one-endpoint changes, each timed as compute (desired state, the whole
/// thing as the agent recomputes it) and diff + apply.
fn in_process(out: &mut Vec<Measurement>) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut generated = Generated::new();
    let text = generated.text(&scratch.path().join("pins"), &scratch.path().join("sock"));
    let mut inputs: Inputs = config::parse(&text)?.inputs(1500);
    let mut ebpf = loader::load(&capacities())?;
    let mut dataplane = KernelDataplane::open(&mut ebpf, capacities())?;
    // The agent's reconciler keeps its Maglev tables between passes; so does this loop.
    let mut tables = Tables::default();
    let started = Instant::now();
    let mut applied = desired_state_with(&inputs, &mut tables);
    dataplane.apply(&diff(&State::default(), &applied))?;
    let cold = started.elapsed();
    let (mut compute, mut apply) = (Vec::new(), Vec::new());
    for change in 0..CHANGES {
        let service = (change * 7) % SERVICES;
        generated.moved[service as usize] = true;
        inputs.services[service as usize].endpoints[0].address = generated.endpoint(service, 0);
        let started = Instant::now();
        let desired = desired_state_with(&inputs, &mut tables);
        compute.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        dataplane.apply(&diff(&applied, &desired))?;
        apply.push(started.elapsed().as_secs_f64() * 1e3);
        applied = desired;
    }
    ensure!(
        pod_ring_holds(
            dataplane.store(),
            (CHANGES - 1) * 7 % SERVICES,
            generated.endpoint((CHANGES - 1) * 7 % SERVICES, 0)
        )?,
        "the last in-process change is not in the maps"
    );
    let detail = format!(
        "in process, {CHANGES} changes; lb-agent's desired_state, diff and kernel engine on a loaded object"
    );
    out.push(Measurement::new(
        GROUP,
        "in-process cold apply: desired state + diff + apply, 1,000 services",
        cold.as_secs_f64(),
        "s",
        &detail,
    ));
    for (name, values) in [
        ("endpoint change: desired state computation", &compute),
        ("endpoint change: diff + kernel apply", &apply),
    ] {
        out.push(Measurement::new(
            GROUP,
            &format!("{name}, p50"),
            median(values),
            "ms",
            &detail,
        ));
        out.push(Measurement::new(
            GROUP,
            &format!("{name}, p99"),
            percentile(values, 99.0),
            "ms",
            &detail,
        ));
    }
    Ok(())
}
