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

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use lb_agent::status::{AgentStatus, MemberState};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

use super::{
    BpfFs, LAN_IFACE, Lab, Node,
    container::{Containerd, image::ImageArchive},
    probe::{Pace, Requests, requests_during},
    services::{ensure_running, spawn_logged},
    shell_quote, wait_for, workspace_binary,
};
use crate::netns::Process;

mod containers;
mod kubernetes;

/// Where the lab's VIPs live; the client sends this range onto the LAN and ARPs.
pub const VIP_CIDR: &str = "172.16.200.0/24";
/// The web VIP of the homelab write-ups (Traefik there).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
/// The DNS VIP of the homelab write-ups (CoreDNS there).
pub const DNS_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 53);
/// The name the lab's DNS pods answer for (with [`WEB_VIP`]).
pub const DNS_NAME: &str = "web.lab";

/// The agents' default metrics port (`api.listen` is left at 0.0.0.0:9477).
const METRICS_PORT: u16 = 9477;
const AGENT_READY: Duration = Duration::from_secs(30);
const AGENT_EXIT: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(20);
const CLIENT_READY: Duration = Duration::from_secs(10);
/// Requests before the failure, proving the path worked right up to it.
const BASELINE: Duration = Duration::from_millis(300);
/// Requests after the new owner is known, so the first success is surely seen.
const AFTERMATH: Duration = Duration::from_millis(800);
/// How long the surviving agents may take to elect a new owner before a failover
/// measurement gives up.
const REELECTION: Duration = Duration::from_secs(10);

/// What a service's pods run, which fixes its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// python's http.server; the page names the pod.
    Web,
    /// dnsmasq answering [`DNS_NAME`].
    Dns,
    /// A line echo server that prefixes each line with the pod's address.
    Echo,
}

impl App {
    pub const WEB_PORT: u16 = 80;
    pub const WEB_TARGET: u16 = 8080;
    pub const DNS_PORT: u16 = 53;
    pub const DNS_TARGET: u16 = 5353;
    pub const ECHO_PORT: u16 = 7000;

    /// (VIP port, protocol, target port) of the service.
    fn ports(self) -> &'static [(u16, &'static str, u16)] {
        match self {
            Self::Web => &[(Self::WEB_PORT, "TCP", Self::WEB_TARGET)],
            Self::Dns => &[
                (Self::DNS_PORT, "UDP", Self::DNS_TARGET),
                (Self::DNS_PORT, "TCP", Self::DNS_TARGET),
            ],
            Self::Echo => &[(Self::ECHO_PORT, "TCP", Self::ECHO_PORT)],
        }
    }
}

/// A load-balanced service: its VIP and the pods behind it (a pod on node i is in
/// 10.42.(i-1).0/24).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub app: App,
    pub pods: Vec<Ipv4Addr>,
}

impl Service {
    /// Web pods on all three nodes, on [`WEB_VIP`].
    pub fn web() -> Self {
        Self {
            name: "web",
            vip: WEB_VIP,
            app: App::Web,
            pods: vec![
                Ipv4Addr::new(10, 42, 0, 7),
                Ipv4Addr::new(10, 42, 1, 5),
                Ipv4Addr::new(10, 42, 2, 5),
            ],
        }
    }

    /// The homelab of the lab program: web pods on all three nodes, one DNS pod.
    pub fn homelab() -> Vec<Self> {
        vec![
            Self::web(),
            Self {
                name: "dns",
                vip: DNS_VIP,
                app: App::Dns,
                pods: vec![Ipv4Addr::new(10, 42, 2, 9)],
            },
        ]
    }

    fn yaml(&self) -> String {
        let ports: String = self
            .app
            .ports()
            .iter()
            .map(|(port, protocol, target)| {
                format!("      - {{ port: {port}, protocol: {protocol}, targetPort: {target} }}\n")
            })
            .collect();
        let endpoints: String = self
            .pods
            .iter()
            .map(|&pod| format!("      - {{ address: {pod}, node: {} }}\n", node_name(pod)))
            .collect();
        format!(
            "  - name: {}\n    vip: {}\n    ports:\n{ports}    endpoints:\n{endpoints}",
            self.name, self.vip
        )
    }
}

/// The node a pod address belongs to.
fn node_index(pod: Ipv4Addr) -> usize {
    usize::from(pod.octets()[2]) + 1
}

fn node_name(pod: Ipv4Addr) -> String {
    format!("node{}", node_index(pod))
}

/// The workspace binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub agent: PathBuf,
    pub lbctl: PathBuf,
}

impl Binaries {
    /// `lb-agent` and `lbctl` next to the running executable (`cargo build --bins`).
    pub fn locate() -> anyhow::Result<Self> {
        Ok(Self {
            agent: workspace_binary("lb-agent")?,
            lbctl: workspace_binary("lbctl")?,
        })
    }
}

/// How a VIP owner is made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The node is gone: its agent is killed with SIGKILL and its LAN link set down.
    NodeGone,
    /// Only the node's LAN link goes down; its agent keeps running.
    LinkDown,
    /// Only the agent is killed with SIGKILL; the link stays up and the pinned data path
    /// keeps running without it.
    AgentKilled,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NodeGone => "agent SIGKILLed and LAN link down",
            Self::LinkDown => "LAN link down",
            Self::AgentKilled => "agent SIGKILLed",
        })
    }
}

/// One measured failover.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub vip: Ipv4Addr,
    pub failure: Failure,
    pub old_owner: String,
    pub new_owner: String,
    /// From the start of the failure (the SIGKILL, or the link going down) to the answer
    /// of the first request started once the failure was complete.
    pub outage: Duration,
    /// From the start of the failure until `lbctl status` on every surviving node named
    /// the new owner (polled, so up to ~100 ms late).
    pub reelected: Duration,
    pub requests: Requests,
}

impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} ({}): first answer after {} ms, new owner reported after {} ms, \
             {} of {} requests failed",
            self.vip,
            self.old_owner,
            self.new_owner,
            self.failure,
            self.outage.as_millis(),
            self.reelected.as_millis(),
            self.requests.failures().len(),
            self.requests.0.len()
        )
    }
}

/// One node's agent and link state.
#[derive(Debug, Default)]
struct Slot {
    agent: Option<Agent>,
    link_down: bool,
}

/// A running agent: its process (`ctr run` for a containerised one, which lives as long
/// as its container) and, in a container, the container's name.
#[derive(Debug)]
struct Agent {
    process: Process,
    container: Option<String>,
}

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
        Self::start_with(nodes, services, None, |_, _| Ok(None))
    }

    /// [`Self::start`], with the agents in containers of `image` when given, and in
    /// Kubernetes mode when `kubernetes` (called once the lab exists) returns an API
    /// double.
    fn start_with(
        nodes: usize,
        services: Vec<Service>,
        image: Option<ImageArchive>,
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
            slots: RefCell::new((0..nodes).map(|_| Slot::default()).collect()),
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
        let names: Vec<String> = self.lab.nodes.iter().map(|n| n.name.clone()).collect();
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

    /// The name of the container `node`'s agent runs in.
    pub fn agent_container(&self, node: &str) -> anyhow::Result<String> {
        let index = self.slot_index(node)?;
        self.slots.borrow()[index]
            .agent
            .as_ref()
            .and_then(|agent| agent.container.clone())
            .with_context(|| format!("no agent container runs on {node}"))
    }

    fn slot_index(&self, node: &str) -> anyhow::Result<usize> {
        self.lab
            .nodes
            .iter()
            .position(|candidate| candidate.name == node)
            .with_context(|| format!("no node {node} in the lab"))
    }

    fn start_servers(&self) -> anyhow::Result<Vec<Process>> {
        let mut servers = Vec::new();
        for service in &self.services {
            for &pod in &service.pods {
                let pod_ns = self.lab.pod(pod)?;
                servers.push(match service.app {
                    App::Web => {
                        let root = self.scratch().join(format!("www-{pod}"));
                        fs::create_dir_all(&root)?;
                        // The page names the pod, so each answer tells who served it.
                        fs::write(root.join("index.html"), format!("{pod}\n"))?;
                        pod_ns.serve_http(App::WEB_TARGET, &root, &self.web_log(pod))?
                    }
                    App::Dns => pod_ns.serve_dns(
                        App::DNS_TARGET,
                        &[(DNS_NAME, WEB_VIP)],
                        &self.scratch().join(format!("dns-{pod}.log")),
                    )?,
                    App::Echo => pod_ns.serve_echo(App::ECHO_PORT, &self.echo_log(pod))?,
                });
            }
        }
        Ok(servers)
    }

    /// A random key, readable by root only, and one configuration file per node for
    /// agents run as processes.
    fn write_configs(&self) -> anyhow::Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.gossip_key())?
            .write_all(random_key()?.as_bytes())?;
        for node in &self.lab.nodes {
            let paths = NodePaths {
                pins: self.pin_dir(&node.name),
                key: self.gossip_key(),
                socket: self.socket(&node.name),
            };
            fs::write(
                self.config(&node.name),
                self.node_config(&node.name, Some(&paths)),
            )?;
        }
        Ok(())
    }

    /// `node`'s standalone file: the same peers, gossip and services everywhere, its own
    /// name and, when given, `paths` (else the defaults and the Secret's key file).
    fn node_config(&self, node: &str, paths: Option<&NodePaths>) -> String {
        let peers: String = self
            .lab
            .nodes
            .iter()
            .map(|node| format!("  - {{ name: {}, address: {} }}\n", node.name, node.addr))
            .collect();
        let services: String = self.services.iter().map(Service::yaml).collect();
        let (pins, key, api) = match paths {
            Some(paths) => (
                format!("pinDir: {}\n", paths.pins.display()),
                paths.key.display().to_string(),
                format!("api:\n  socket: {}\n", paths.socket.display()),
            ),
            None => (
                String::new(),
                "/etc/xdplb/gossip.key".to_owned(),
                String::new(),
            ),
        };
        format!(
            "node: {node}\ninterface: {LAN_IFACE}\n{pins}peers:\n{peers}gossip:\n  keyFile: \
             {key}\n{api}services:\n{services}"
        )
    }

    fn spawn_agent(&self, node: &str) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        let (command, container) = match (&self.containers, &self.kubernetes) {
            (Some(containers), kubernetes) => {
                if let Some(kubernetes) = kubernetes {
                    kubernetes.write_kubeconfig(self)?;
                }
                let (command, name) = self.container_command(containers, node)?;
                (command, Some(name))
            }
            (None, Some(kubernetes)) => (kubernetes.agent_command(self, node)?, None),
            (None, None) => (
                format!(
                    "{} --config {}",
                    shell_quote(self.binaries.agent.display()),
                    shell_quote(self.config(node).display())
                ),
                None,
            ),
        };
        let process = spawn_logged(
            &self.lab.nodes[index].netns,
            &command,
            &self.agent_log(node),
        )?;
        self.slots.borrow_mut()[index].agent = Some(Agent { process, container });
        Ok(())
    }

    /// Waits until `node`'s agent answers `lbctl status` as ready.
    fn wait_ready(&self, node: &str) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        wait_for(
            &format!("the agent on {node} to report ready"),
            AGENT_READY,
            || {
                if let Some(agent) = self.slots.borrow_mut()[index].agent.as_mut() {
                    ensure_running(&mut agent.process, &self.agent_log(node))?;
                } else {
                    bail!("no agent runs on {node}");
                }
                Ok(self
                    .status(node)
                    .ok()
                    .filter(|status| status.ready)
                    .map(drop))
            },
        )
    }

    /// Starts the agent on `node` again and waits until it is ready.
    pub fn start_agent(&self, node: &str) -> anyhow::Result<()> {
        self.spawn_agent(node)?;
        self.wait_ready(node)
    }

    /// Sends `signal` to `node`'s agent (in a container: to the container's process,
    /// as the runtime does); for anything but SIGKILL, waits until it has exited (it
    /// handles the signal).
    pub fn stop_agent(&self, node: &str, signal: Signal) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        let Agent {
            process: mut agent,
            container,
        } = self.slots.borrow_mut()[index]
            .agent
            .take()
            .with_context(|| format!("no agent runs on {node}"))?;
        match container {
            Some(name) => self
                .containerd()?
                .ctr_ok(&["tasks", "kill", "--signal", signal.as_str(), &name])
                .map(drop)?,
            None => agent.signal(signal)?,
        }
        if signal != Signal::SIGKILL {
            wait_for(
                &format!("the agent on {node} to exit after {signal}"),
                AGENT_EXIT,
                || Ok(agent.has_exited()?.then_some(())),
            )?;
        }
        Ok(())
    }

    /// Whether `node`'s agent process is running.
    pub fn agent_running(&self, node: &str) -> anyhow::Result<bool> {
        let index = self.slot_index(node)?;
        let mut slots = self.slots.borrow_mut();
        Ok(match slots[index].agent.as_mut() {
            Some(agent) => !agent.process.has_exited()?,
            None => false,
        })
    }

    /// Sets `node`'s LAN link up or down.
    pub fn set_link(&self, node: &str, up: bool) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        self.lab.nodes[index].set_link(up)?;
        self.slots.borrow_mut()[index].link_down = !up;
        Ok(())
    }

    /// Nodes whose agent runs and whose link is up: the ones the LAN can hear.
    pub fn reachable(&self) -> Vec<&Node> {
        let slots = self.slots.borrow();
        self.lab
            .nodes
            .iter()
            .zip(slots.iter())
            .filter(|(_, slot)| slot.agent.is_some() && !slot.link_down)
            .map(|(node, _)| node)
            .collect()
    }

    /// Runs `lbctl --socket <node's socket> ARGS` in `node`'s namespace.
    pub fn lbctl_output(&self, node: &str, args: &[&str]) -> anyhow::Result<Output> {
        let socket = self.socket(node);
        self.node(node)?
            .netns
            .command(&self.binaries.lbctl.to_string_lossy())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .context("running lbctl")
    }

    /// `lbctl ARGS` on `node`: its stdout, or an error with its stderr.
    pub fn lbctl(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self.lbctl_output(node, args)?;
        ensure!(
            output.status.success(),
            "lbctl {} on {node}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `lbctl ARGS -o json` on `node`, parsed.
    pub fn lbctl_json<T: DeserializeOwned>(&self, node: &str, args: &[&str]) -> anyhow::Result<T> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.lbctl(node, &args)?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing lbctl {} output: {text}", args.join(" ")))
    }

    pub fn status(&self, node: &str) -> anyhow::Result<AgentStatus> {
        self.lbctl_json(node, &["status"])
    }

    /// `view` of every node's status, by node name.
    pub fn per_node<T>(
        &self,
        view: impl Fn(&AgentStatus) -> T,
    ) -> anyhow::Result<BTreeMap<String, T>> {
        self.lab()
            .nodes
            .iter()
            .map(|node| Ok((node.name.clone(), view(&self.status(&node.name)?))))
            .collect()
    }

    /// `node`'s Prometheus metrics, scraped inside its namespace.
    pub fn metrics(&self, node: &str) -> anyhow::Result<String> {
        self.node(node)?.netns.run(&format!(
            "curl --silent --fail --max-time 2 http://127.0.0.1:{METRICS_PORT}/metrics"
        ))
    }

    /// The owner of every VIP, when every reachable agent is ready, sees every reachable
    /// node alive, and names the same reachable owner for each VIP; `None` otherwise.
    pub fn agreed_owners(&self) -> anyhow::Result<Option<BTreeMap<Ipv4Addr, String>>> {
        Ok(self.consensus()?.ok())
    }

    /// [`Self::agreed_owners`], or what stands in the way of agreement.
    fn consensus(&self) -> anyhow::Result<Result<BTreeMap<Ipv4Addr, String>, String>> {
        let reachable: BTreeSet<String> = self
            .reachable()
            .iter()
            .map(|node| node.name.clone())
            .collect();
        let vips: BTreeSet<Ipv4Addr> = self.services.iter().map(|s| s.vip).collect();
        let mut agreed: Option<(String, BTreeMap<Ipv4Addr, String>)> = None;
        for node in &reachable {
            let status = match self.status(node) {
                Ok(status) => status,
                Err(error) => return Ok(Err(format!("{node}: {error:#}"))),
            };
            let not_alive: Vec<String> = status
                .members
                .iter()
                .filter(|member| reachable.contains(&member.name))
                .filter(|member| member.state != MemberState::Alive)
                .map(|member| format!("{} {:?}", member.name, member.state))
                .collect();
            let owners: BTreeMap<Ipv4Addr, String> = status
                .vips
                .iter()
                .filter_map(|vip| Some((vip.vip, vip.owner.clone()?)))
                .collect();
            let complete = owners.keys().copied().collect::<BTreeSet<_>>() == vips
                && owners.values().all(|owner| reachable.contains(owner));
            let seen: BTreeSet<&String> = status.members.iter().map(|m| &m.name).collect();
            if !status.ready
                || !not_alive.is_empty()
                || !reachable.iter().all(|name| seen.contains(name))
                || !complete
            {
                return Ok(Err(format!(
                    "{node}: ready {}, members not alive {not_alive:?} (of {seen:?}), \
                     owners {owners:?}",
                    status.ready
                )));
            }
            if let Some((first, agreed)) = &agreed
                && *agreed != owners
            {
                return Ok(Err(format!(
                    "{first} says {agreed:?}, {node} says {owners:?}"
                )));
            }
            agreed = Some((node.clone(), owners));
        }
        Ok(agreed
            .map(|(_, owners)| owners)
            .ok_or_else(|| "no reachable agent".to_owned()))
    }

    /// Waits (bounded) for [`Self::agreed_owners`].
    pub fn wait_settled(&self) -> anyhow::Result<BTreeMap<Ipv4Addr, String>> {
        let mut last = String::new();
        wait_for(
            "the reachable agents to agree on every VIP's owner",
            SETTLE,
            || {
                Ok(match self.consensus()? {
                    Ok(owners) => Some(owners),
                    Err(why) => {
                        last = why;
                        None
                    }
                })
            },
        )
        .with_context(|| format!("last seen: {last}"))
    }

    /// The agreed owner of `vip` (waiting for agreement).
    pub fn owner(&self, vip: Ipv4Addr) -> anyhow::Result<String> {
        self.wait_settled()?
            .remove(&vip)
            .with_context(|| format!("{vip} is not a VIP of the lab"))
    }

    /// Waits until the client reaches the web `vip` and has resolved it to its owner's
    /// MAC by ARP: the steady state every measurement starts from.
    pub fn wait_client_settled(&self, vip: Ipv4Addr) -> anyhow::Result<()> {
        let owner = self.owner(vip)?;
        let mac = self.node(&owner)?.mac()?;
        wait_for(
            &format!("the client to reach {vip} through {owner} ({mac})"),
            CLIENT_READY,
            || {
                let answered = self.curl(vip, None).is_ok();
                Ok(
                    (answered && self.client_neighbour(vip)?.as_deref() == Some(&mac))
                        .then_some(()),
                )
            },
        )
    }

    /// The MAC the client's ARP cache holds for `addr`, if any.
    pub fn client_neighbour(&self, addr: Ipv4Addr) -> anyhow::Result<Option<String>> {
        let line = self
            .lab
            .client
            .run(&format!("ip neigh show {addr} dev {LAN_IFACE}"))?;
        let mut words = line.split_whitespace();
        Ok(words
            .by_ref()
            .skip_while(|word| *word != "lladdr")
            .nth(1)
            .map(str::to_owned))
    }

    /// `curl http://VIP/` from the client (optionally from a fixed source port); the pod
    /// that answered.
    pub fn curl(&self, vip: Ipv4Addr, client_port: Option<u16>) -> anyhow::Result<Ipv4Addr> {
        let mut command = self.lab.client.command("curl");
        command.args(["--silent", "--show-error", "--fail", "--max-time", "2"]);
        if let Some(port) = client_port {
            command.args(["--local-port", &port.to_string()]);
        }
        let url = format!("http://{vip}:{}/", App::WEB_PORT);
        let output = command.arg(&url).output().context("running curl")?;
        ensure!(
            output.status.success(),
            "curl {url}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let body = String::from_utf8_lossy(&output.stdout);
        body.trim()
            .parse()
            .with_context(|| format!("curl {url}: the body {body:?} names no pod"))
    }

    /// Makes `node` fail as `failure` says.
    pub fn fail(&self, node: &str, failure: Failure) -> anyhow::Result<()> {
        if matches!(failure, Failure::NodeGone | Failure::AgentKilled) {
            self.stop_agent(node, Signal::SIGKILL)?;
        }
        if matches!(failure, Failure::NodeGone | Failure::LinkDown) {
            self.set_link(node, false)?;
        }
        Ok(())
    }

    /// Brings `node` back (link up, agent started) and waits until the cluster has
    /// settled with it and the client reaches `vip` through its owner again.
    pub fn restore(&self, node: &str, vip: Ipv4Addr) -> anyhow::Result<()> {
        let index = self.slot_index(node)?;
        if self.slots.borrow()[index].link_down {
            self.set_link(node, true)?;
        }
        if !self.agent_running(node)? {
            self.slots.borrow_mut()[index].agent = None;
            self.start_agent(node)?;
        }
        self.wait_settled()?;
        self.wait_client_settled(vip)
    }

    /// Waits until every reachable agent names an owner of `vip` other than `old`.
    pub fn wait_new_owner(&self, vip: Ipv4Addr, old: &str) -> anyhow::Result<String> {
        wait_for(
            &format!("a new owner of {vip} after {old} failed"),
            REELECTION,
            || {
                Ok(self
                    .agreed_owners()?
                    .and_then(|mut owners| owners.remove(&vip))
                    .filter(|owner| owner != old))
            },
        )
    }

    /// Makes the owner of the web `vip` fail while the client sends requests at `pace`,
    /// and measures how long the client went without an answer.
    pub fn measure_failover(
        &self,
        vip: Ipv4Addr,
        failure: Failure,
        pace: Pace,
    ) -> anyhow::Result<FailoverReport> {
        self.wait_client_settled(vip)?;
        let old_owner = self.owner(vip)?;
        let target = SocketAddrV4::new(vip, App::WEB_PORT);
        let ((failing, failed, new_owner, reelected), requests) =
            requests_during(&self.lab.client, target, pace, || {
                thread::sleep(BASELINE);
                let failing = Instant::now();
                self.fail(&old_owner, failure)?;
                let failed = Instant::now();
                let new_owner = self.wait_new_owner(vip, &old_owner)?;
                let reelected = Instant::now();
                thread::sleep(AFTERMATH);
                Ok((failing, failed, new_owner, reelected))
            })?;
        let before: Vec<String> = requests
            .failures()
            .iter()
            .filter(|attempt| attempt.finished < failing)
            .map(|attempt| format!("{:?}", attempt.result))
            .collect();
        ensure!(
            before.is_empty(),
            "requests failed before {old_owner} failed, so the measurement is void: {before:?}"
        );
        // Only requests started once the failure is complete count: one started while
        // `ip link` was still running could have been answered by the old owner.
        let answered = requests.first_answer_after(failed).with_context(|| {
            format!(
                "no request succeeded after {old_owner} failed ({failure}); {} attempts, \
                 last error {:?}",
                requests.0.len(),
                requests.failures().last().map(|attempt| &attempt.result)
            )
        })?;
        let outage = answered - failing;
        Ok(FailoverReport {
            vip,
            failure,
            old_owner,
            new_owner,
            outage,
            reelected: reelected - failing,
            requests,
        })
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

/// Pod addresses per node (node i gets the pods in 10.42.(i-1).0/24), each once.
fn pods_per_node(nodes: usize, services: &[Service]) -> anyhow::Result<Vec<Vec<Ipv4Addr>>> {
    let mut pods = vec![BTreeSet::new(); nodes];
    for service in services {
        for &pod in &service.pods {
            let index = node_index(pod);
            ensure!(
                (1..=nodes).contains(&index),
                "pod {pod} of {} would be on node{index}, but the lab has {nodes} nodes",
                service.name
            );
            pods[index - 1].insert(pod);
        }
    }
    Ok(pods
        .into_iter()
        .map(|set| set.into_iter().collect())
        .collect())
}

/// Where an agent run as a process keeps its files.
struct NodePaths {
    pins: PathBuf,
    key: PathBuf,
    socket: PathBuf,
}

/// 32 random bytes, hex-encoded: the shared gossip key.
fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
