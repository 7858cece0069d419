//! A container of `deploy/manifests/30-daemonset.yaml` as a node's kubelet would have
//! containerd start it, spelled as `ctr run` options: the node's network namespace for
//! `hostNetwork`, the capabilities, seccomp, read-only root and privilege-escalation
//! settings of its security context, its environment with the downward-API fields
//! resolved, and its volumes made on the lab node (ConfigMap and Secret files with their
//! modes, host paths mapped to the node's directories).
//!
//! Everything is read from the manifest, so the lab runs what the manifest says; what
//! `ctr` cannot express (another user than the image's) is refused, not ignored.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Container, KeyToPath, PodSpec, SecurityContext, Volume, VolumeMount},
};

use super::image::ImageConfig;

/// Every Linux capability (6.x), for `drop: [ALL]`: ctr's `--cap-drop` takes names only.
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Where the manifest lives, from the workspace root.
pub const DAEMONSET: &str = "deploy/manifests/30-daemonset.yaml";

/// The DaemonSet of the manifests.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    name: String,
    namespace: String,
    pod: PodSpec,
}

impl PodTemplate {
    /// Reads [`DAEMONSET`] below `root`.
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let path = root.join(DAEMONSET);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {DAEMONSET}"))?;
        let set: DaemonSet =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {DAEMONSET}"))?;
        let pod = set
            .spec
            .template
            .spec
            .context("the DaemonSet has no pod template")?;
        Ok(Self {
            name: set.metadata.name.context("the DaemonSet has no name")?,
            namespace: set
                .metadata
                .namespace
                .context("the DaemonSet has no namespace")?,
            pod,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The init container or container called `name`.
    pub fn container(&self, name: &str) -> anyhow::Result<&Container> {
        self.pod
            .init_containers
            .iter()
            .flatten()
            .chain(&self.pod.containers)
            .find(|container| container.name == name)
            .with_context(|| format!("{DAEMONSET} has no container {name}"))
    }
}

/// What a lab node offers a pod: its network namespace, its directories and the
/// objects the pod's volumes name.
#[derive(Debug)]
pub struct Node<'a> {
    pub name: &'a str,
    /// The node's network namespace (`/run/netns/<name>`).
    pub netns: &'a str,
    /// Stands in for the node's root directory: host paths are made below it.
    pub root: &'a Path,
    /// The node's BPF filesystem, the host path `/sys/fs/bpf`.
    pub bpffs: &'a Path,
    /// Data of the ConfigMaps and Secrets by name.
    pub objects: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl Node<'_> {
    /// A host path of the pod spec on this node. `/proc` stays itself: a process sees its
    /// own network namespace's `/proc/sys/net`, which for a host-network pod is the
    /// node's.
    pub fn host_path(&self, path: &str) -> PathBuf {
        if path == "/sys/fs/bpf" {
            self.bpffs.to_owned()
        } else if path.starts_with("/proc/") {
            PathBuf::from(path)
        } else {
            self.root.join(path.trim_start_matches('/'))
        }
    }

    fn object(&self, name: &str) -> anyhow::Result<&BTreeMap<String, String>> {
        self.objects
            .get(name)
            .with_context(|| format!("the lab provides no ConfigMap or Secret {name}"))
    }
}

/// `ctr run` options and the process of one container.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub options: Vec<String>,
    pub process: Vec<String>,
}

/// How `container` of `template` runs on `node` from an image configured as `image`;
/// `args` replaces the container's arguments (standalone mode), `extra_env` and
/// `extra_mounts` ((host, container) read-only) add what only the lab needs.
pub struct Request<'a> {
    pub template: &'a PodTemplate,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    pub node: &'a Node<'a>,
    pub args: Option<Vec<String>>,
    pub extra_env: Vec<(String, String)>,
    pub extra_mounts: Vec<(PathBuf, String)>,
}

impl Request<'_> {
    /// The run plan; makes the container's volumes on the node first.
    pub fn plan(&self) -> anyhow::Result<RunPlan> {
        let mut options = self.security_options()?;
        if self.template.pod.host_network == Some(true) {
            options.push(format!("--with-ns=network:/run/netns/{}", self.node.netns));
        }
        for (key, value) in self
            .environment()?
            .into_iter()
            .chain(self.extra_env.clone())
        {
            options.push(format!("--env={key}={value}"));
        }
        for mount in self.container.volume_mounts.iter().flatten() {
            options.push(self.mount(mount)?);
        }
        for (host, target) in &self.extra_mounts {
            options.push(bind(host, target, "ro"));
        }
        Ok(RunPlan {
            options,
            process: self.process(),
        })
    }

    /// Kubernetes semantics: `command` replaces the entrypoint, `args` the image's cmd.
    fn process(&self) -> Vec<String> {
        let args = self
            .args
            .clone()
            .or_else(|| self.container.args.clone())
            .or_else(|| self.image.cmd.clone())
            .unwrap_or_default();
        let command = self
            .container
            .command
            .clone()
            .unwrap_or_else(|| self.image.entrypoint.clone());
        command.into_iter().chain(args).collect()
    }

    fn security_options(&self) -> anyhow::Result<Vec<String>> {
        let empty = SecurityContext::default();
        let context = self.container.security_context.as_ref().unwrap_or(&empty);
        let name = &self.container.name;
        ensure!(
            context.privileged != Some(true),
            "{name} asks to be privileged"
        );
        let image_user = self.image.user.split(':').next().unwrap_or("0");
        if let Some(user) = context.run_as_user {
            // ctr runs the image's user; a different one could not be honoured.
            ensure!(
                user.to_string() == image_user,
                "{name} runs as user {user}, the image as {image_user}"
            );
        }
        let mut options = Vec::new();
        if self.seccomp()? {
            options.push("--seccomp".to_owned());
        }
        if context.read_only_root_filesystem == Some(true) {
            options.push("--read-only".to_owned());
        }
        // Kubernetes allows escalation unless told not to; ctr forbids it by default.
        if context.allow_privilege_escalation != Some(false) {
            options.push("--allow-new-privs".to_owned());
        }
        let capabilities = context.capabilities.clone().unwrap_or_default();
        let added = capabilities.add.unwrap_or_default();
        // The kubelet drops, then adds; ctr adds, then drops: so never drop an added one.
        let dropped = capabilities.drop.unwrap_or_default();
        let dropped: Vec<&str> = if dropped.iter().any(|cap| cap == "ALL") {
            ALL_CAPABILITIES.to_vec()
        } else {
            dropped.iter().map(String::as_str).collect()
        };
        options.extend(
            dropped
                .into_iter()
                .filter(|cap| !added.iter().any(|add| add == cap))
                .map(|cap| format!("--cap-drop=CAP_{cap}")),
        );
        options.extend(added.iter().map(|cap| format!("--cap-add=CAP_{cap}")));
        Ok(options)
    }

    /// Whether the runtime's default seccomp profile applies (container over pod).
    fn seccomp(&self) -> anyhow::Result<bool> {
        let profile = self
            .container
            .security_context
            .as_ref()
            .and_then(|context| context.seccomp_profile.clone())
            .or_else(|| {
                self.template
                    .pod
                    .security_context
                    .as_ref()
                    .and_then(|context| context.seccomp_profile.clone())
            });
        match profile.map(|profile| profile.type_) {
            Some(kind) if kind == "RuntimeDefault" => Ok(true),
            Some(kind) if kind == "Unconfined" => Ok(false),
            None => Ok(false),
            Some(other) => bail!("seccomp profile {other} is not one the lab can apply"),
        }
    }

    fn environment(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.container
            .env
            .iter()
            .flatten()
            .map(|var| {
                let value = match (&var.value, &var.value_from) {
                    (Some(value), _) => value.clone(),
                    (None, Some(source)) => {
                        let field = source
                            .field_ref
                            .as_ref()
                            .with_context(|| format!("{}: only fieldRef sources", var.name))?;
                        self.field(&field.field_path)?
                    }
                    (None, None) => String::new(),
                };
                Ok((var.name.clone(), value))
            })
            .collect()
    }

    /// A downward-API field of the pod on this node.
    fn field(&self, path: &str) -> anyhow::Result<String> {
        Ok(match path {
            "spec.nodeName" => self.node.name.to_owned(),
            "metadata.namespace" => self.template.namespace.clone(),
            "metadata.name" => format!("{}-{}", self.template.name, self.node.name),
            other => bail!("the lab cannot resolve the field {other}"),
        })
    }

    fn mount(&self, mount: &VolumeMount) -> anyhow::Result<String> {
        let volume = self
            .template
            .pod
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name)
            .with_context(|| format!("no volume {}", mount.name))?;
        let (source, api_data) = self.volume_source(volume)?;
        // The kubelet mounts ConfigMap, Secret and projected volumes read-only always.
        let mut options = if api_data || mount.read_only == Some(true) {
            "ro".to_owned()
        } else {
            "rw".to_owned()
        };
        if mount.mount_propagation.as_deref() == Some("HostToContainer") {
            options.push_str(":rslave");
        }
        Ok(bind(&source, &mount.mount_path, &options))
    }

    /// The node directory backing `volume`, made now; true for API data (files).
    fn volume_source(&self, volume: &Volume) -> anyhow::Result<(PathBuf, bool)> {
        if let Some(host) = &volume.host_path {
            let path = self.node.host_path(&host.path);
            if host.type_.as_deref() == Some("DirectoryOrCreate") {
                fs::create_dir_all(&path)?;
            }
            ensure!(
                path.is_dir(),
                "host path {} is missing on {}",
                host.path,
                self.node.name
            );
            return Ok((path, false));
        }
        let dir = self
            .node
            .root
            .join("var/lib/kubelet/volumes")
            .join(&self.container.name)
            .join(&volume.name);
        fs::create_dir_all(&dir)?;
        if let Some(map) = &volume.config_map {
            let mode = map.default_mode.unwrap_or(0o644);
            self.project(&dir, &map.name, map.items.as_deref(), mode)?;
        } else if let Some(projected) = &volume.projected {
            let mode = projected.default_mode.unwrap_or(0o644);
            for source in projected.sources.iter().flatten() {
                if let Some(map) = &source.config_map {
                    self.project(&dir, &map.name, map.items.as_deref(), mode)?;
                } else if let Some(secret) = &source.secret {
                    self.project(&dir, &secret.name, secret.items.as_deref(), mode)?;
                } else {
                    bail!(
                        "volume {}: the lab projects ConfigMaps and Secrets only",
                        volume.name
                    );
                }
            }
        } else {
            bail!("volume {}: a kind the lab cannot provide", volume.name);
        }
        Ok((dir, true))
    }

    /// Writes the keys of object `name` (all, or `items`) into `dir` with their modes.
    fn project(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&[KeyToPath]>,
        default_mode: i32,
    ) -> anyhow::Result<()> {
        let data = self.node.object(name)?;
        let files: Vec<(&String, String, i32)> = match items {
            Some(items) => items
                .iter()
                .map(|item| {
                    let value = data
                        .get(&item.key)
                        .with_context(|| format!("{name} has no key {}", item.key))?;
                    Ok((value, item.path.clone(), item.mode.unwrap_or(default_mode)))
                })
                .collect::<anyhow::Result<_>>()?,
            None => data
                .iter()
                .map(|(key, value)| (value, key.clone(), default_mode))
                .collect(),
        };
        for (value, path, mode) in files {
            let file = dir.join(path);
            fs::write(&file, value)?;
            let mode = u32::try_from(mode).context("negative file mode")?;
            fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

fn bind(source: &Path, target: &str, options: &str) -> String {
    format!(
        "--mount=type=bind,src={},dst={target},options=rbind:{options}",
        source.display()
    )
}
