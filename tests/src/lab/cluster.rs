//! A homelab cluster on the lab LAN: every node runs `lb-agent` in standalone mode with
//! authenticated gossip and no static owner, pods serve web, DNS and line-echo
//! services, and the client reaches VIPs the way a LAN host does, by ARP.
//!
//! Each agent gets its own configuration file, pin directory (on the lab's private BPF
//! filesystem, see [`BpfFs`]) and API socket, all in the cluster's scratch directory,
//! which also holds every log. `lbctl` runs inside a node's namespace against that
//! node's socket, as an operator on the node would run it.
//!
//! Dropping the cluster kills the agents and servers, deletes the namespaces, unmounts
//! the BPF filesystem (every pin goes with it) and removes the scratch directory.
//!
//! The module follows the cluster's concepts: what runs in the pods ([`workload`]),
//! the agents' lifecycle ([`agents`]), what they report and agree on ([`ownership`]),
//! failures and their measurement ([`failover`]), and the two other ways to run the
//! agents ([`containers`], [`kubernetes`]).

use std::{
    cell::RefCell,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tempfile::TempDir;

pub use self::{
    agents::Binaries,
    failover::{FailoverReport, Failure},
    workload::{App, Service, service_yaml},
};
use self::{agents::Slot, workload::node_name, workload::pods_per_node};
use super::{
    BpfFs, Lab, Node,
    container::{Containerd, image::ImageArchive},
    services::spawn_logged,
    shell_quote, wait_for,
};
use crate::netns::Process;

mod agents;
mod containers;
mod failover;
mod kubernetes;
mod ownership;
mod workload;

/// Where the lab's VIPs live; the client sends this range onto the LAN and ARPs.
pub const VIP_CIDR: &str = "172.16.200.0/24";

/// The web VIP of the homelab write-ups (Traefik there).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);

/// The DNS VIP of the homelab write-ups (CoreDNS there).
pub const DNS_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 53);

/// The name the lab's DNS pods answer for (with [`WEB_VIP`]).
pub const DNS_NAME: &str = "web.lab";

/// The lab LAN with agents on every node and servers in every pod.
///
/// Field order is drop order: agents and servers die first, then the namespaces, then
/// the pins, then the scratch directory.
#[derive(Debug)]
pub struct Cluster {
    slots: RefCell<Vec<Slot>>,
    _servers: Vec<Process>,
    /// Container mode: the runtime the agents run in.
    containers: Option<containers::Containers>,
    /// Kubernetes mode: the API double the agents watch.
    kubernetes: Option<kubernetes::Kubernetes>,
    lab: Lab,
    bpffs: BpfFs,
    scratch: TempDir,
    services: Vec<Service>,
    binaries: Binaries,
}

impl Cluster {
    /// Builds a LAN of `nodes` nodes with `services`, starts an agent on every node and
    /// returns once they agree on an owner for every VIP.
    pub fn start(nodes: usize, services: Vec<Service>) -> anyhow::Result<Self> {
        Self::start_with(nodes, services, None, None, |_, _| Ok(None))
    }

    /// [`Self::start`], with the agents in containers of `image` when given, running
    /// `binary` instead of this build's when given, and in Kubernetes mode when
    /// `kubernetes` (called once the lab exists) returns an API double.
    fn start_with(
        nodes: usize,
        services: Vec<Service>,
        image: Option<ImageArchive>,
        binary: Option<&Path>,
        kubernetes: impl FnOnce(&Lab, &[Service]) -> anyhow::Result<Option<kubernetes::Kubernetes>>,
    ) -> anyhow::Result<Self> {
        let binaries = Binaries::locate()?;
        let scratch = tempfile::Builder::new().prefix("xdplb-lab-").tempdir()?;
        let bpffs = BpfFs::mount(&scratch.path().join("bpffs"))?;
        let pods = pods_per_node(nodes, &services)?;
        let lab = Lab::new(&pods.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        lab.route_to_lan(VIP_CIDR)?;
        let kubernetes = kubernetes(&lab, &services)?;
        let containers = image
            .map(|image| containers::Containers::start(scratch.path(), image))
            .transpose()?;
        let mut cluster = Self {
            slots: RefCell::new(
                (0..nodes)
                    .map(|_| Slot {
                        binary: binary.map(Path::to_owned),
                        ..Slot::default()
                    })
                    .collect(),
            ),
            _servers: Vec::new(),
            containers,
            kubernetes,
            lab,
            bpffs,
            scratch,
            services,
            binaries,
        };
        if let Err(error) = cluster.boot() {
            if !super::interrupted() {
                cluster.dump_logs();
            }
            return Err(error);
        }
        Ok(cluster)
    }

    /// [`Self::start`] as a test: skipped (passing) without root; the logs are printed
    /// when `scenario` fails, while the cluster still exists.
    pub fn test(
        name: &str,
        nodes: usize,
        services: Vec<Service>,
        scenario: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        Self::run_test(name, || Self::start(nodes, services), scenario)
    }

    /// [`Self::test`] with every agent running `binary` (e.g. the previous release's
    /// `lb-agent`) until [`Self::set_agent_binary`] says otherwise.
    pub fn test_on_binary(
        name: &str,
        nodes: usize,
        services: Vec<Service>,
        binary: &Path,
        scenario: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let start = || Self::start_with(nodes, services, None, Some(binary), |_, _| Ok(None));
        Self::run_test(name, start, scenario)
    }

    fn run_test(
        name: &str,
        start: impl FnOnce() -> anyhow::Result<Self>,
        scenario: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if super::skip_unless_root(name) {
            return Ok(());
        }
        let cluster = start()?;
        let outcome = scenario(&cluster);
        if outcome.is_err() {
            cluster.dump_logs();
        }
        outcome
    }

    /// Servers, configurations, agents; returns once the agents agree on the owners.
    fn boot(&mut self) -> anyhow::Result<()> {
        self._servers = self.start_servers()?;
        self.write_configs()?;
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes.publish(self)?;
        }
        let names = self.node_names();
        if let Some(containers) = &self.containers {
            for name in &names {
                self.prepare_node(containers, name)?;
            }
        }
        for name in &names {
            self.spawn_agent(name)?;
        }
        for name in &names {
            self.wait_ready(name)?;
        }
        self.wait_settled().map(drop)
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    pub fn bpffs(&self) -> &BpfFs {
        &self.bpffs
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        self.lab.node(name)
    }

    /// The nodes' names, `node1` first.
    pub fn node_names(&self) -> Vec<String> {
        self.lab
            .nodes
            .iter()
            .map(|node| node.name.clone())
            .collect()
    }

    /// The API socket of `node`'s agent (seen from the host).
    pub fn socket(&self, node: &str) -> PathBuf {
        match self.containers {
            Some(_) => containers::node_root(self, node).join("run/xdplb/agent.sock"),
            None => self.scratch().join(format!("{node}.sock")),
        }
    }

    /// `node`'s agent log.
    fn agent_log(&self, node: &str) -> PathBuf {
        self.scratch().join(format!("agent-{node}.log"))
    }

    /// The web server log of `pod` (one line per request, client address first).
    pub fn web_log(&self, pod: Ipv4Addr) -> PathBuf {
        self.scratch().join(format!("web-{pod}.log"))
    }

    /// The echo server log of `pod` (one line per accepted connection).
    fn echo_log(&self, pod: Ipv4Addr) -> PathBuf {
        self.scratch().join(format!("echo-{pod}.log"))
    }

    /// The gossip key every agent shares.
    fn gossip_key(&self) -> PathBuf {
        self.scratch().join("gossip.key")
    }

    fn config(&self, node: &str) -> PathBuf {
        self.scratch().join(format!("{node}.yaml"))
    }

    /// `node`'s pin directory (seen from the host; a container's `/sys/fs/bpf` is the
    /// node's directory of the lab's BPF filesystem).
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        let node_bpffs = self.bpffs.path().join(node);
        match self.containers {
            Some(_) => node_bpffs.join("xdplb"),
            None => node_bpffs,
        }
    }

    /// The container runtime of a containerised cluster.
    pub fn containerd(&self) -> anyhow::Result<&Containerd> {
        Ok(self.containers()?.containerd())
    }

    /// The image a containerised cluster runs.
    pub fn image(&self) -> anyhow::Result<&ImageArchive> {
        Ok(self.containers()?.image())
    }

    fn containers(&self) -> anyhow::Result<&containers::Containers> {
        self.containers
            .as_ref()
            .context("the cluster's agents run as processes, not in containers")
    }

    fn slot_index(&self, node: &str) -> anyhow::Result<usize> {
        self.lab
            .nodes
            .iter()
            .position(|candidate| candidate.name == node)
            .with_context(|| format!("no node {node} in the lab"))
    }

    /// Prints the last lines of every log of the cluster, for a failure's diagnosis:
    /// more of the agents' logs than of the servers' access logs.
    pub fn dump_logs(&self) {
        dump_log_tails(self.scratch(), |log| {
            let is_agent = log
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("agent-"));
            if is_agent { 80 } else { 5 }
        });
    }
}

/// Prints the last `keep(log)` lines of every `*.log` file in `dir`, in name order.
pub fn dump_log_tails(dir: &Path, keep: impl Fn(&Path) -> usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let content = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        let tail = &lines[lines.len().saturating_sub(keep(&log))..];
        eprintln!(
            "--- {} (last {} lines)\n{}",
            log.display(),
            tail.len(),
            tail.join("\n")
        );
    }
}
