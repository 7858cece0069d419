//! Control-plane scale with the real kernel: the release `lb-agent` in standalone mode
//! with 1,000 services x 50 endpoints, in a network namespace of its own (one veth pair,
//! nothing else), its maps pinned on a private BPF filesystem.
//!
//! * cold start: from spawning the agent until its XDP link is pinned. The agent writes
//!   every table before it attaches (the first packet sees the whole configuration), so
//!   the link pin appearing means every map is programmed; the maps are then read back
//!   to check that every service, VIP and backend is there.
//! * endpoint change: one endpoint of one service moved to a new address in the file,
//!   then SIGHUP; the latency is until the service's port entry points at a pod table
//!   holding the new address (what the next packet would use).
//! * the same change in process (desired state, diff, kernel apply through the agent's
//!   own engine on a loaded object) splits the agent's latency into computing and writing.
//! * resident memory of the agent (VmRSS) with 1,000 services, after the changes.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_agent::{
    config,
    dataplane::{
        Dataplane as _,
        kernel::KernelDataplane,
        loader::{self, Capacities, PinDir},
        maps::Maps,
    },
    diff::diff,
    model::{Inputs, State, Tables, desired_state_with},
};
use lb_common::types::{PROTO_TCP, ServiceKey};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::{Measurement, median, percentile};
use crate::{
    fixture::wire,
    lab::{BpfFs, workspace_binary},
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
const COLD_START_LIMIT: Duration = Duration::from_secs(60);
const CHANGE_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(1);
const INTERFACE: &str = "eth0";
const SERVICE_PORT: u16 = 80;
/// Addresses per service: its endpoints, then room for the moved ones.
const BLOCK: u32 = 64;
const FIRST_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

pub fn run() -> Result<Vec<Measurement>> {
    let bench = Bench::new()?;
    let mut config = Generated::new();
    let mut out = Vec::new();
    let agent = bench.cold_start(&config, &mut out)?;
    bench.agent_changes(&agent, &mut config, &mut out)?;
    out.push(memory(&agent)?);
    drop(agent);
    in_process(&mut out)?;
    Ok(out)
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

    fn text(&self, pin_dir: &Path, socket: &Path) -> String {
        let c = capacities();
        let mut text = format!(
            "node: node1\ninterface: {INTERFACE}\nmtu: 1500\npinDir: {}\napi:\n  socket: {}\n\
             capacities:\n  services: {}\n  servicePorts: {}\n  vips: {}\n  backends: {}\npeers:\n",
            pin_dir.display(),
            socket.display(),
            c.services,
            c.service_ports,
            c.vips,
            c.backends
        );
        for node in 1..=NODES {
            text.push_str(&format!(
                "  - {{ name: node{node}, address: 10.0.0.{} }}\n",
                10 + node
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
                    "      - {{ address: {}, node: node{} }}\n",
                    self.endpoint(service, index),
                    index % NODES + 1
                ));
            }
        }
        text
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

    fn cold_start(&self, config: &Generated, out: &mut Vec<Measurement>) -> Result<Agent> {
        self.write_config(config)?;
        let link = self
            .pins()
            .root()
            .join("links")
            .join(INTERFACE)
            .join("xdp-native");
        let command = format!(
            "exec {} --config {} >{} 2>&1",
            self.agent_binary.display(),
            self.config_path().display(),
            self.log_path().display()
        );
        let started = Instant::now();
        let mut process = self.netns.spawn("sh", &["-c", &command])?;
        while !link.exists() {
            if process.has_exited()? {
                bail!("the agent exited during cold start:\n{}", self.log_tail());
            }
            if started.elapsed() > COLD_START_LIMIT {
                bail!(
                    "no XDP link after {COLD_START_LIMIT:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
        let took = started.elapsed();
        let (ebpf, maps) = open_pinned(&self.pins())?;
        check_programmed(&maps, config)?;
        out.push(
            Measurement::new(
                GROUP,
                "cold start: 1,000 services x 50 endpoints programmed",
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
        while !pod_ring_holds(&agent.maps, service, moved)? {
            if started.elapsed() > CHANGE_LIMIT {
                bail!(
                    "change {change} not in the maps after {CHANGE_LIMIT:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
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
            "endpoint change to map-visible, p50 (agent, file watch)",
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
            "{CHANGES} changes, one endpoint of one service moved to a new address in the file, then SIGHUP; \
             until the service's port entry points at a pod table holding it (polled every {} ms)",
            POLL.as_millis()
        );
        out.push(Measurement::new(
            GROUP,
            "endpoint change to map-visible, p50 (agent, SIGHUP)",
            median(&latencies),
            "ms",
            &detail,
        ));
        out.push(
            Measurement::new(
                GROUP,
                "endpoint change to map-visible, p99 (agent, SIGHUP)",
                percentile(&latencies, 99.0),
                "ms",
                &detail,
            )
            .at_most(100.0, "<= 100 ms"),
        );
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

fn memory(agent: &Agent) -> Result<Measurement> {
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
        "agent resident memory, 1,000 services",
        rss,
        "MiB",
        &format!(
            "VmRSS of the agent after cold start and {} reloads (peak VmHWM {peak:.1} MiB)",
            WATCHED_CHANGES + CHANGES
        ),
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
