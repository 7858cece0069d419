//! The container tier: the image `cargo xtask image` built, checked against
//! deploy/Dockerfile, loaded by podman and containerd, and run by containerd on every
//! lab node exactly as deploy/manifests/30-daemonset.yaml asks (security context,
//! volumes, init container), in standalone and in Kubernetes mode: traffic through the
//! VIPs, `lbctl` inside the container, a restart without a failed request and an owner
//! failover.
//!
//! Ignored in the privileged tier: `cargo xtask test` runs them in its container tier
//! after building the image (`cargo test -p testbed --test privileged -- --ignored
//! containers:: --test-threads=1`).

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddrV4,
    os::unix::fs::PermissionsExt as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use lb_agent::status::AgentStatus;
use nix::sys::signal::Signal;
use testbed::lab::{
    App, CLIENT_ADDR, Cluster, DNS_VIP, Failure, LAN_IFACE, Pace, Service, WEB_VIP,
    container::image::ImageArchive, requests_during, skip_unless_root, workspace_root,
};

const NODES: usize = 3;
const IGNORED: &str = "container tier: needs the image of `cargo xtask image`";
/// The capabilities the DaemonSet grants the agent, as bits of a capability mask.
const GRANTED: [(&str, u32); 4] = [
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("PERFMON", 38),
    ("BPF", 39),
];
/// Paths the image must not hold: package managers, toolchains, shells beyond busybox.
const FORBIDDEN: [&str; 8] = [
    "bin/bash",
    "usr/bin/apt",
    "usr/bin/dpkg",
    "usr/bin/perl",
    "usr/bin/python3",
    "usr/bin/cargo",
    "usr/bin/rustc",
    "usr/bin/gcc",
];
/// A containerised failover may be slower than one of processes (the runtime tears the
/// container down), but stays within what the README promises.
const FAILOVER_LIMIT: Duration = Duration::from_secs(2);

#[test]
#[ignore = "container tier: needs the image of `cargo xtask image`"]
fn the_image_is_lean_and_the_dockerfile_describes_it() -> anyhow::Result<()> {
    let image = ImageArchive::locate().context(IGNORED)?;
    let version = env!("CARGO_PKG_VERSION");
    ensure!(
        image.reference == format!("registry.example.invalid/xdplb/lb-agent:{version}"),
        "the archive names {}",
        image.reference
    );
    let manifest = fs::read_to_string(workspace_root().join("deploy/manifests/30-daemonset.yaml"))?;
    ensure!(
        manifest
            .matches(&format!("image: {}", image.reference))
            .count()
            == 2,
        "the DaemonSet's two containers do not both run {}",
        image.reference
    );
    let files = image.files()?;
    let names: Vec<&str> = files.iter().map(|(_, name)| name.as_str()).collect();
    for needed in [
        "usr/local/bin/lb-agent",
        "usr/local/bin/lbctl",
        "bin/busybox",
    ] {
        ensure!(names.contains(&needed), "the image lacks {needed}");
    }
    let forbidden: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|path| names.contains(path))
        .collect();
    ensure!(forbidden.is_empty(), "the image holds {forbidden:?}");
    let links: Vec<&str> = files
        .iter()
        .filter(|(kind, _)| *kind == 'l')
        .map(|(_, link)| link.as_str())
        .filter(|link| link.ends_with("-> busybox"))
        .collect();
    ensure!(
        sorted(&links)
            == [
                "bin/awk -> busybox",
                "bin/sed -> busybox",
                "bin/sh -> busybox"
            ],
        "busybox should provide sh, sed and awk only: {links:?}"
    );
    let dockerfile = Dockerfile::read()?;
    ensure!(
        dockerfile.entrypoint == image.config.entrypoint,
        "Dockerfile ENTRYPOINT {:?}, image {:?}",
        dockerfile.entrypoint,
        image.config.entrypoint
    );
    ensure!(
        dockerfile.user == image.config.user,
        "Dockerfile USER {}, image {}",
        dockerfile.user,
        image.config.user
    );
    ensure!(
        dockerfile.labels == image.config.labels,
        "Dockerfile labels {:?}, image {:?}",
        dockerfile.labels,
        image.config.labels
    );
    ensure!(
        dockerfile
            .bases
            .iter()
            .all(|base| base.contains("bookworm")),
        "every stage of the Dockerfile builds on Debian 12 (bookworm), as the image: {:?}",
        dockerfile.bases
    );
    for shared in ["deploy/image/", "/image/rootfs.sh"] {
        ensure!(
            dockerfile.text.contains(shared),
            "the Dockerfile does not make its root filesystem from {shared}"
        );
    }
    podman_loads(&image)?;
    eprintln!(
        "FIGURE image {}: archive {:.1} MiB, {} files",
        image.reference,
        image.size()? as f64 / f64::from(1 << 20),
        files.len()
    );
    Ok(())
}

fn sorted<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut items = items.to_vec();
    items.sort_unstable();
    items
}

/// `podman load` takes the archive and names the image as the manifests do; the store
/// is a scratch directory.
fn podman_loads(image: &ImageArchive) -> anyhow::Result<()> {
    let store = tempfile::tempdir()?;
    let podman = |args: &[&str]| -> anyhow::Result<String> {
        let output = Command::new("podman")
            .arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .context("running podman")?;
        ensure!(
            output.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    podman(&["load", "--quiet", "--input", &image.path.to_string_lossy()])?;
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?;
    ensure!(
        listed.lines().any(|line| line == image.reference),
        "podman load listed {listed:?}"
    );
    Ok(())
}

/// What deploy/Dockerfile's final stage says about the image.
struct Dockerfile {
    text: String,
    bases: Vec<String>,
    entrypoint: Vec<String>,
    user: String,
    labels: BTreeMap<String, String>,
}

impl Dockerfile {
    fn read() -> anyhow::Result<Self> {
        let text = fs::read_to_string(workspace_root().join("deploy/Dockerfile"))?;
        // Continuation lines joined, comments dropped: one instruction a line.
        let joined = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        let instructions: Vec<(&str, &str)> = joined
            .lines()
            .filter_map(|line| line.trim().split_once(' '))
            .collect();
        let args: BTreeMap<&str, &str> = instructions
            .iter()
            .filter(|(word, _)| *word == "ARG")
            .filter_map(|(_, rest)| rest.split_once('='))
            .collect();
        let bases = instructions
            .iter()
            .filter(|(word, _)| *word == "FROM")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
            .filter(|base| *base != "scratch")
            .map(|base| {
                args.iter().fold(base.to_owned(), |base, (name, value)| {
                    base.replace(&format!("${{{name}}}"), value)
                })
            })
            .collect();
        let last = |word: &str| {
            instructions
                .iter()
                .rev()
                .find(|(instruction, _)| *instruction == word)
                .map(|(_, rest)| rest.trim().to_owned())
                .with_context(|| format!("the Dockerfile has no {word}"))
        };
        let entrypoint = serde_json::from_str(&last("ENTRYPOINT")?)?;
        let user = last("USER")?;
        let labels = labels(&last("LABEL")?)?;
        Ok(Self {
            text,
            bases,
            entrypoint,
            user,
            labels,
        })
    }
}

/// `key="value" key="value"` pairs of a LABEL instruction.
fn labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .context("LABEL key=\"value\" expected")?;
        let (value, after) = after.split_once('"').context("unterminated LABEL value")?;
        labels.insert(key.trim().to_owned(), value.to_owned());
        rest = after.trim();
    }
    Ok(labels)
}

#[test]
#[ignore = "container tier: needs the image of `cargo xtask image`"]
fn standalone_agents_in_containers_serve_restart_and_fail_over() -> anyhow::Result<()> {
    on_containers(
        "standalone_agents_in_containers_serve_restart_and_fail_over",
        false,
    )
}

#[test]
#[ignore = "container tier: needs the image of `cargo xtask image`"]
fn kubernetes_agents_in_containers_serve_restart_and_fail_over() -> anyhow::Result<()> {
    on_containers(
        "kubernetes_agents_in_containers_serve_restart_and_fail_over",
        true,
    )
}

/// Each capability the DaemonSet grants is one the agent cannot start without, on a
/// node without pins (a first install): the grant is the least that works.
#[test]
#[ignore = "container tier: needs the image of `cargo xtask image`"]
fn the_agent_needs_every_capability_the_daemonset_grants() -> anyhow::Result<()> {
    let name = "the_agent_needs_every_capability_the_daemonset_grants";
    if skip_unless_root(name) {
        return Ok(());
    }
    let image = ImageArchive::locate().context(IGNORED)?;
    Cluster::test_containers(name, NODES, Service::homelab(), image, false, |cluster| {
        let node = "node1";
        let mut spare = Vec::new();
        for (capability, _) in GRANTED {
            match cluster.agent_without(node, capability)? {
                (true, log) => eprintln!(
                    "without {capability} the agent fails: {}",
                    log.lines().last().unwrap_or_default()
                ),
                (false, log) => spare.push(format!("{capability}:\n{log}")),
            }
        }
        // The control: with every grant the same node comes up again.
        cluster.start_agent(node)?;
        cluster.wait_settled()?;
        ensure!(
            spare.is_empty(),
            "the DaemonSet grants more than the agent needs; it started without {}",
            spare.join("\n")
        );
        Ok(())
    })
}

fn on_containers(name: &str, kubernetes: bool) -> anyhow::Result<()> {
    if skip_unless_root(name) {
        return Ok(());
    }
    let image = ImageArchive::locate().context(IGNORED)?;
    Cluster::test_containers(
        name,
        NODES,
        Service::homelab(),
        image,
        kubernetes,
        |cluster| {
            for node in &cluster.lab().nodes {
                runs_as_the_daemonset_asks(cluster, &node.name)?;
            }
            serves(cluster)?;
            lbctl_in_the_container(cluster)?;
            restart_fails_no_request(cluster)?;
            owner_fails_over(cluster)
        },
    )
}

/// The agent's process has exactly the granted capabilities, no new privileges and a
/// seccomp filter; its root is read-only; the key is mode 0400; the init container
/// enabled what the data path needs on the LAN interface.
fn runs_as_the_daemonset_asks(cluster: &Cluster, node: &str) -> anyhow::Result<()> {
    let container = cluster.agent_container(node)?;
    let containerd = cluster.containerd()?;
    let pid = containerd.task_pid(&container)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let granted: u64 = GRANTED.iter().map(|(_, bit)| 1u64 << bit).sum();
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        let mask = u64::from_str_radix(field(set)?, 16)?;
        ensure!(
            mask == granted,
            "{node}: {set} is {mask:#x}, the DaemonSet grants {granted:#x} ({:?})",
            GRANTED.map(|(name, _)| name)
        );
    }
    ensure!(
        field("NoNewPrivs")? == "1",
        "{node}: new privileges allowed"
    );
    ensure!(field("Seccomp")? == "2", "{node}: no seccomp filter");
    let write = containerd.exec(&container, "write-probe", &["/bin/sh", "-c", ": > /probe"])?;
    let said = String::from_utf8_lossy(&write.stderr);
    ensure!(
        !write.status.success() && said.contains("Read-only"),
        "{node}: writing to the root filesystem: {} {said}",
        write.status
    );
    let key = fs::metadata(format!("/proc/{pid}/root/etc/xdplb/gossip.key"))?;
    ensure!(
        key.permissions().mode() & 0o777 == 0o400,
        "{node}: gossip.key has mode {:o}",
        key.permissions().mode()
    );
    for setting in ["forwarding", "accept_local"] {
        let value = cluster.node(node)?.netns.run(&format!(
            "cat /proc/sys/net/ipv4/conf/{LAN_IFACE}/{setting}"
        ))?;
        ensure!(value.trim() == "1", "{node}: {setting} is {value:?}");
    }
    Ok(())
}

/// curl and dig through the VIPs, from the client, as a LAN host.
fn serves(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_client_settled(WEB_VIP)?;
    let pods: Vec<_> = (0..12)
        .map(|_| cluster.curl(WEB_VIP, None))
        .collect::<anyhow::Result<_>>()?;
    ensure!(!pods.is_empty(), "no answer through {WEB_VIP}");
    let answer = cluster.lab().client.run(&format!(
        "dig @{DNS_VIP} web.lab +short +tries=3 +time=2 -b {CLIENT_ADDR}"
    ))?;
    ensure!(
        answer.trim() == WEB_VIP.to_string(),
        "dig through {DNS_VIP} answered {answer:?}"
    );
    Ok(())
}

/// `lbctl status` run inside every agent's container (as `kubectl exec` would) names
/// the same owners as the cluster agreed on.
fn lbctl_in_the_container(cluster: &Cluster) -> anyhow::Result<()> {
    let owners = cluster.wait_settled()?;
    for node in &cluster.lab().nodes {
        let container = cluster.agent_container(&node.name)?;
        let output = cluster.containerd()?.exec(
            &container,
            "lbctl",
            &["/usr/local/bin/lbctl", "status", "-o", "json"],
        )?;
        ensure!(
            output.status.success(),
            "lbctl status in {container}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status: AgentStatus = serde_json::from_slice(&output.stdout)?;
        let seen: BTreeMap<_, _> = status
            .vips
            .iter()
            .filter_map(|vip| Some((vip.vip, vip.owner.clone()?)))
            .collect();
        ensure!(
            status.ready && seen == owners,
            "lbctl in {container}: ready {}, owners {seen:?}, agreed {owners:?}",
            status.ready
        );
    }
    Ok(())
}

/// The web VIP owner's container is stopped (SIGTERM, as the kubelet does) and a new
/// one started while the client sends requests: none fails (the new agent adopts the
/// pinned data path).
fn restart_fails_no_request(cluster: &Cluster) -> anyhow::Result<()> {
    let owner = cluster.owner(WEB_VIP)?;
    let pins_before = cluster.bpffs().pins()?;
    let target = SocketAddrV4::new(WEB_VIP, App::WEB_PORT);
    let (back, requests) = requests_during(&cluster.lab().client, target, Pace::RESTART, || {
        thread::sleep(Duration::from_millis(300));
        let stopped = Instant::now();
        cluster.stop_agent(&owner, Signal::SIGTERM)?;
        cluster.start_agent(&owner)?;
        cluster.wait_settled()?;
        let back = stopped.elapsed();
        thread::sleep(Duration::from_millis(500));
        Ok(back)
    })?;
    let failures = requests.failures();
    eprintln!(
        "FIGURE container restart of {owner}: {} requests, {} failed, settled after {} ms",
        requests.0.len(),
        failures.len(),
        back.as_millis()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed across the restart of {owner}'s container: {:?}",
        failures.len(),
        requests.0.len(),
        failures
            .iter()
            .map(|attempt| &attempt.result)
            .collect::<Vec<_>>()
    );
    let own = cluster.pin_dir(&owner);
    ensure!(
        cluster
            .bpffs()
            .pins()?
            .iter()
            .any(|pin| pin.starts_with(&own))
            && pins_before.iter().any(|pin| pin.starts_with(&own)),
        "the pins of {owner} under {} were not kept across the restart",
        own.display()
    );
    Ok(())
}

/// The web VIP owner's node goes away (container killed, link down); a containerised
/// agent on another node takes the VIP over.
fn owner_fails_over(cluster: &Cluster) -> anyhow::Result<()> {
    let report = cluster.measure_failover(WEB_VIP, Failure::NodeGone, Pace::OUTAGE)?;
    eprintln!("FIGURE container failover: {report}");
    ensure!(
        report.new_owner != report.old_owner && report.outage <= FAILOVER_LIMIT,
        "failover too slow or to no other node: {report}"
    );
    cluster.agent_container(&report.new_owner).map(drop)
}
