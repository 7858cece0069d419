//! The lab cluster with every agent in a container of the xdplb image, run by the lab's
//! own containerd exactly as `deploy/manifests/30-daemonset.yaml` asks (see
//! [`plan`](crate::lab::container::plan)): the init container `prepare-interface` runs
//! first on every node, then the agent container, in the node's network namespace.
//!
//! Each node has a directory standing in for its root filesystem (`/run/xdplb` is made
//! there, so the host side of the agent's socket is `<node root>/run/xdplb/agent.sock`)
//! and its BPF filesystem is a directory of the lab's, mounted as `/sys/fs/bpf`. The
//! ConfigMap `xdplb-agent` holds the manifests' `settings.yaml` with the lab's
//! interface (the lab has no default route to find it by), plus, in standalone mode,
//! the node's standalone file; the Secret `xdplb-gossip-key` holds the lab's key.
//!
//! Two things differ from a cluster, both because the API double speaks plain HTTP
//! without tokens: a Kubernetes-mode agent reads a kubeconfig mounted read-only at
//! [`LAB_KUBECONFIG`] instead of its ServiceAccount token, and standalone agents get
//! `--config` instead of the DaemonSet's arguments.

use std::{
    cell::Cell,
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;

use super::{Cluster, Service, kubernetes::Kubernetes, shell_quote, spawn_logged, wait_for};
use crate::lab::{
    LAN_IFACE,
    container::{
        Containerd,
        image::ImageArchive,
        plan::{Node, PodTemplate, Request},
    },
    workspace_root,
};

/// The DaemonSet's containers.
const INIT_CONTAINER: &str = "prepare-interface";
const AGENT_CONTAINER: &str = "agent";
/// Where a Kubernetes-mode agent finds the lab's kubeconfig.
const LAB_KUBECONFIG: &str = "/etc/xdplb-lab/kubeconfig";
/// The standalone file's key in the ConfigMap, hence `/etc/xdplb/standalone.yaml`.
const STANDALONE_KEY: &str = "standalone.yaml";
/// The manifests' ConfigMap and Secret.
const CONFIG_MAP: &str = "deploy/manifests/20-config.yaml";
/// How long an agent without a capability has to fail (it loads and attaches in well
/// under a second when it can).
const WITHHELD_VERDICT: Duration = Duration::from_secs(20);

/// containerd with the image imported, and the DaemonSet's pod template.
#[derive(Debug)]
pub(super) struct Containers {
    containerd: Containerd,
    image: ImageArchive,
    template: PodTemplate,
    /// Container names are never reused, so a restarted agent is a new container.
    started: Cell<u32>,
}

impl Containers {
    pub(super) fn start(scratch: &Path, image: ImageArchive) -> anyhow::Result<Self> {
        let containerd = Containerd::start(&scratch.join("containerd"))?;
        containerd.import(&image)?;
        Ok(Self {
            containerd,
            image,
            template: PodTemplate::load(&workspace_root())?,
            started: Cell::new(0),
        })
    }

    pub(super) fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    pub(super) fn image(&self) -> &ImageArchive {
        &self.image
    }

    fn next_name(&self, container: &str, node: &str) -> String {
        let index = self.started.get();
        self.started.set(index + 1);
        format!("{container}-{node}-{index}")
    }

    /// The `ctr run` command line of `container` on `node`, and the container's name.
    /// `withheld` names a capability the container's `add` list loses.
    fn run_command(
        &self,
        cluster: &Cluster,
        node: &str,
        container: &str,
        kubernetes: bool,
        withheld: Option<&str>,
    ) -> anyhow::Result<(String, String)> {
        let objects = objects(cluster, node)?;
        let root = node_root(cluster, node);
        let bpffs = cluster.bpffs().path().join(node);
        fs::create_dir_all(&bpffs)?;
        let lab_node = Node {
            name: node,
            netns: cluster.node(node)?.netns.name(),
            root: &root,
            bpffs: &bpffs,
            objects: &objects,
        };
        let mut spec = self.template.container(container)?.clone();
        if let Some(capability) = withheld {
            let added = spec
                .security_context
                .as_mut()
                .and_then(|context| context.capabilities.as_mut())
                .and_then(|capabilities| capabilities.add.as_mut())
                .with_context(|| format!("{container} adds no capabilities"))?;
            ensure!(
                added.iter().any(|cap| cap == capability),
                "{container} is not granted {capability}"
            );
            added.retain(|cap| cap != capability);
        }
        let mut request = Request {
            template: &self.template,
            container: &spec,
            image: &self.image.config,
            node: &lab_node,
            args: None,
            extra_env: Vec::new(),
            extra_mounts: Vec::new(),
        };
        if container == AGENT_CONTAINER {
            if kubernetes {
                request
                    .extra_env
                    .push(("KUBECONFIG".into(), LAB_KUBECONFIG.into()));
                request
                    .extra_mounts
                    .push((cluster.scratch().join("kubeconfig"), LAB_KUBECONFIG.into()));
            } else {
                request.args = Some(vec![
                    "--config".into(),
                    format!("/etc/xdplb/{STANDALONE_KEY}"),
                ]);
            }
        }
        let plan = request.plan()?;
        let name = self.next_name(container, node);
        let words: Vec<String> = ["run".to_owned(), "--rm".to_owned()]
            .into_iter()
            .chain(plan.options)
            .chain([self.image.reference.clone(), name.clone()])
            .chain(plan.process)
            .map(shell_quote)
            .collect();
        Ok((
            format!("{} {}", self.containerd.command_line(), words.join(" ")),
            name,
        ))
    }
}

impl Cluster {
    /// [`Cluster::test`] with every agent in a container of `image`, in Kubernetes mode
    /// against the lab's API double when `kubernetes`.
    pub fn test_containers(
        name: &str,
        nodes: usize,
        services: Vec<Service>,
        image: ImageArchive,
        kubernetes: bool,
        scenario: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        Self::run_test(
            name,
            || {
                Self::start_with(nodes, services, Some(image), None, |lab, services| {
                    kubernetes
                        .then(|| Kubernetes::start(lab, services, &[]))
                        .transpose()
                })
            },
            scenario,
        )
    }

    /// Runs the init container on `node` to its end, as the kubelet does before it
    /// starts the agent; fails with its output if it fails.
    pub(super) fn prepare_node(&self, containers: &Containers, node: &str) -> anyhow::Result<()> {
        let kubernetes = self.kubernetes.is_some();
        let (command, _) = containers.run_command(self, node, INIT_CONTAINER, kubernetes, None)?;
        let log = self.scratch().join(format!("init-{node}.log"));
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{command} >{} 2>&1", shell_quote(log.display())))
            .status()?;
        ensure!(
            output.success(),
            "the init container on {node} failed ({output}): {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(())
    }

    /// The command that starts `node`'s agent container, and the container's name.
    pub(super) fn container_command(
        &self,
        containers: &Containers,
        node: &str,
    ) -> anyhow::Result<(String, String)> {
        containers.run_command(self, node, AGENT_CONTAINER, self.kubernetes.is_some(), None)
    }

    /// Replaces `node`'s agent by one started on a node without pins (as on a first
    /// install) and without `capability`; returns whether it exited (rather than became
    /// ready) and its log. The agent container is gone afterwards either way:
    /// [`Cluster::start_agent`] starts the DaemonSet's again.
    pub fn agent_without(&self, node: &str, capability: &str) -> anyhow::Result<(bool, String)> {
        let containers = self.containers()?;
        if self.agent_running(node)? {
            self.stop_agent(node, Signal::SIGKILL)?;
        }
        let pins = self.pin_dir(node);
        if pins.exists() {
            fs::remove_dir_all(&pins)?;
        }
        let (command, name) = containers.run_command(
            self,
            node,
            AGENT_CONTAINER,
            self.kubernetes.is_some(),
            Some(capability),
        )?;
        let log = self
            .scratch()
            .join(format!("without-{capability}-{node}.log"));
        let mut process = spawn_logged(&self.node(node)?.netns, &command, &log)?;
        let exited = wait_for(
            &format!("the agent without {capability} to exit or become ready"),
            WITHHELD_VERDICT,
            || {
                if process.has_exited()? {
                    return Ok(Some(true));
                }
                let ready = self.status(node).is_ok_and(|status| status.ready);
                Ok(ready.then_some(false))
            },
        )?;
        if !exited {
            containers
                .containerd()
                .ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", &name])?;
        }
        drop(process);
        Ok((exited, fs::read_to_string(&log).unwrap_or_default()))
    }

    /// The standalone file of `node` as its containerised agent reads it: the paths are
    /// the image's defaults (pins in `/sys/fs/bpf/xdplb`, the socket in `/run/xdplb`) and
    /// the key is the Secret's file.
    pub(super) fn container_config(&self, node: &str) -> String {
        self.node_config(node, None)
    }
}

/// The directory standing in for `node`'s root filesystem.
pub(super) fn node_root(cluster: &Cluster, node: &str) -> PathBuf {
    cluster.scratch().join("hosts").join(node)
}

/// The ConfigMap and Secret data `node`'s pod reads.
fn objects(
    cluster: &Cluster,
    node: &str,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut config = BTreeMap::from([("settings.yaml".to_owned(), lab_settings()?)]);
    if cluster.kubernetes.is_none() {
        config.insert(STANDALONE_KEY.to_owned(), cluster.container_config(node));
    }
    let key = fs::read_to_string(cluster.gossip_key())?;
    Ok(BTreeMap::from([
        ("xdplb-agent".to_owned(), config),
        (
            "xdplb-gossip-key".to_owned(),
            BTreeMap::from([("key".to_owned(), key)]),
        ),
    ]))
}

/// The manifests' `settings.yaml` with the lab's LAN interface set, as the install
/// guide's step 3 (docs/install.md) tells a user whose LAN is not the default route to do.
fn lab_settings() -> anyhow::Result<String> {
    let text = fs::read_to_string(workspace_root().join(CONFIG_MAP))?;
    let map: k8s_openapi::api::core::v1::ConfigMap = serde_yaml::from_str(&text)?;
    let settings = map
        .data
        .and_then(|mut data| data.remove("settings.yaml"))
        .with_context(|| format!("{CONFIG_MAP} has no settings.yaml"))?;
    Ok(format!("interface: {LAN_IFACE}\n{settings}"))
}
