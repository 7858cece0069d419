//! The agents of a cluster: their configuration files and shared gossip key, starting
//! one (as a process, in a container or in Kubernetes mode) and waiting until it is
//! ready, stopping it with a signal, and the link state the LAN sees them by.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::Signal;

use super::{Cluster, Service, shell_quote, spawn_logged, wait_for};
use crate::{
    lab::{LAN_IFACE, Node, services::ensure_running, workspace_binary},
    netns::Process,
};

const AGENT_READY: Duration = Duration::from_secs(30);

const AGENT_EXIT: Duration = Duration::from_secs(10);

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

/// One node's agent and link state.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) agent: Option<Agent>,
    pub(super) link_down: bool,
    /// Another `lb-agent` than this build's, e.g. the previous release's.
    pub(super) binary: Option<PathBuf>,
}

/// A running agent: its process (`ctr run` for a containerised one, which lives as long
/// as its container) and, in a container, the container's name.
#[derive(Debug)]
pub(super) struct Agent {
    process: Process,
    container: Option<String>,
}

impl Cluster {
    /// A random key, readable by root only, and one configuration file per node for
    /// agents run as processes.
    pub(super) fn write_configs(&self) -> anyhow::Result<()> {
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
    pub(super) fn node_config(&self, node: &str, paths: Option<&NodePaths>) -> String {
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

    pub(super) fn spawn_agent(&self, node: &str) -> anyhow::Result<()> {
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
                    shell_quote(
                        self.slots.borrow()[index]
                            .binary
                            .as_ref()
                            .unwrap_or(&self.binaries.agent)
                            .display()
                    ),
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
    pub(super) fn wait_ready(&self, node: &str) -> anyhow::Result<()> {
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

    /// Appends `yaml` to `node`'s standalone file (an agent run as a process): what its
    /// agent reads at the next start, e.g. other `capacities`.
    pub fn append_config(&self, node: &str, yaml: &str) -> anyhow::Result<()> {
        ensure!(
            self.containers.is_none() && self.kubernetes.is_none(),
            "only agents run as processes read the standalone file"
        );
        let path = self.config(node);
        let mut file = fs::OpenOptions::new().append(true).open(&path)?;
        Ok(file.write_all(yaml.as_bytes())?)
    }

    /// Runs `binary` (none: this build's) as `node`'s agent from its next start on.
    pub fn set_agent_binary(&self, node: &str, binary: Option<PathBuf>) -> anyhow::Result<()> {
        ensure!(
            self.containers.is_none() && self.kubernetes.is_none(),
            "only agents run as processes can run another binary"
        );
        let index = self.slot_index(node)?;
        self.slots.borrow_mut()[index].binary = binary;
        Ok(())
    }

    /// The executable `node`'s agent process runs (an agent run as a process).
    pub fn agent_executable(&self, node: &str) -> anyhow::Result<PathBuf> {
        let index = self.slot_index(node)?;
        let slots = self.slots.borrow();
        let agent = slots[index]
            .agent
            .as_ref()
            .with_context(|| format!("no agent runs on {node}"))?;
        let exe = format!("/proc/{}/exe", agent.process.pid());
        fs::read_link(&exe).with_context(|| format!("reading {exe}"))
    }

    /// Whether `node`'s agent has logged `text` (since it last started).
    pub fn agent_logged(&self, node: &str, text: &str) -> anyhow::Result<bool> {
        Ok(fs::read_to_string(self.agent_log(node))?.contains(text))
    }

    /// The id of the XDP program attached to `node`'s LAN interface, if any.
    pub fn xdp_program(&self, node: &str) -> anyhow::Result<Option<u32>> {
        self.node(node)?.netns.xdp_program(LAN_IFACE)
    }

    /// Starts `node`'s agent expecting it to refuse to run, as a previous release does
    /// on pins of a newer layout: waits until it has exited and returns its log.
    pub fn start_agent_expecting_refusal(&self, node: &str) -> anyhow::Result<String> {
        self.spawn_agent(node)?;
        let index = self.slot_index(node)?;
        wait_for(&format!("the agent on {node} to exit"), AGENT_EXIT, || {
            let mut slots = self.slots.borrow_mut();
            let agent = slots[index]
                .agent
                .as_mut()
                .with_context(|| format!("no agent runs on {node}"))?;
            Ok(agent.process.has_exited()?.then_some(()))
        })?;
        self.slots.borrow_mut()[index].agent = None;
        Ok(fs::read_to_string(self.agent_log(node))?)
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

    /// The name of the container `node`'s agent runs in.
    pub fn agent_container(&self, node: &str) -> anyhow::Result<String> {
        let index = self.slot_index(node)?;
        self.slots.borrow()[index]
            .agent
            .as_ref()
            .and_then(|agent| agent.container.clone())
            .with_context(|| format!("no agent container runs on {node}"))
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
}

/// Where an agent run as a process keeps its files.
pub(super) struct NodePaths {
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
