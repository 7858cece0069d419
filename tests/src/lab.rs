//! A homelab LAN built from network namespaces, shared by the end-to-end tests and the lab.
//!
//! ```text
//!   client (10.0.0.100)     node1 (10.0.0.11)        nodeN (10.0.0.10+N)
//!        eth0                    eth0   ... pods         eth0   ... pods
//!         |                       |                        |
//!   lan:  c0 ----------- br0 ---- n1 ----------- ... ----- nN
//! ```
//!
//! - `lan` holds the bridge `br0`; the client and every node plug into it with a veth whose
//!   inside end is `eth0` (10.0.0.0/24).
//! - Pods of node i live in 10.42.(i-1).0/24, each in its own namespace behind a
//!   point-to-point veth (CNI `ptp` style): the node end `v<last octet>` carries the
//!   gateway 10.42.(i-1).1/32 with the pod as its peer, so the node has a /32 route per pod;
//!   the pod's only route off-link is 10.0.0.0/24 via that gateway. Nodes forward IPv4.
//! - No namespace has a default route and nothing is connected to the host's interfaces,
//!   so no packet can leave the lab. IPv6 is disabled everywhere: the lab is IPv4-only and
//!   captures stay free of router solicitations.
//! - The client's `eth0` has TX checksum offload off, so its frames carry complete
//!   checksums as frames on a real LAN do (veth would otherwise hand over CHECKSUM_PARTIAL
//!   packets with only a pseudo-header sum).
//! - XDP_TX on a node's `eth0` puts the frame into the XDP ring of the peer veth (the
//!   node's bridge port), which exists only while that peer runs NAPI (an XDP program or
//!   GRO on it); otherwise the kernel drops the frame and counts it in the sender's
//!   `rx_queue_*_xdp_tx_errors` (`ethtool -S`). Even with the ring present, the sender
//!   only schedules the peer's NAPI when the peer has an XDP program of its own
//!   (`veth_xdp_flush`): with GRO alone, XDP_TX frames are counted as sent but wait in
//!   the ring until unrelated traffic wakes the port (seen here: `xdp_tx` rising on a
//!   node while its bridge port received nothing). So every node's bridge port runs a
//!   pass-through XDP program ([`port_xdp`]), and GRO, which attaching XDP switches on,
//!   is switched off again so the bridge forwards frames as they were sent rather than
//!   TCP segments merged into GSO packets.
//! - A node sees only frames addressed to its MAC, broadcast or multicast, as behind a
//!   real NIC: the bridge floods no unknown unicast to node ports and knows each node's
//!   MAC from a static entry. A veth has no MAC filter, so without this a frame for a
//!   node whose port went down (a failed VIP owner) would be flooded into the other
//!   nodes' XDP programs, which would forward it before any ARP takeover and make
//!   failover look faster than it is on a switch.
//!
//! Everything is torn down when the [`Lab`] drops: each namespace guard kills the
//! processes inside it and deletes it, which destroys its interfaces.

mod api_double;
mod bpffs;
mod capture;
mod cluster;
pub mod container;
mod fault;
mod flood;
pub mod load;
mod management;
mod partition;
mod pinned;
mod port_stats;
mod port_xdp;
mod probe;
pub mod prometheus;
mod services;

use std::{
    net::Ipv4Addr,
    ops::RangeInclusive,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

pub use self::{
    api_double::ApiDouble,
    bpffs::BpfFs,
    capture::mac_text,
    capture::{ArpFrame, Capture, Packet},
    cluster::{
        App, Binaries, Cluster, DNS_NAME, DNS_VIP, FailoverReport, Failure, Service, VIP_CIDR,
        WEB_VIP, dump_log_tails, service_yaml,
    },
    fault::{FaultReport, failing_until},
    flood::{Flood, FloodReport, syn_flood},
    management::{MONITOR_ADDR, management_addr},
    partition::Partition,
    pinned::{entries, node_table_members},
    port_stats::PortStats,
    probe::{
        Attempt, EchoReport, Pace, Requests, echo_during, requests_during, requests_during_at_most,
    },
};
use crate::netns::{Netns, veth};

/// The client's address on the LAN.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The LAN interface of the client and of every node.
pub const LAN_IFACE: &str = "eth0";
const LAN_CIDR: &str = "10.0.0.0/24";
const LAN_PREFIX_LEN: u8 = 24;
const BRIDGE: &str = "br0";
/// The client's port on the bridge.
const CLIENT_PORT: &str = "c0";
/// Client ports the kernel never picks as ephemeral ports in the client namespace.
/// Checks bind requests to fixed ports here to match them with captured packets; an
/// earlier request's socket in TIME_WAIT on such a port would fail that bind.
pub const FIXED_CLIENT_PORTS: RangeInclusive<u16> = 40000..=49999;

/// Set by the lab program's Ctrl-C handler: every [`wait_for`] then stops at once, so
/// the guards clean the lab up without waiting for timeouts.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes every running and future [`wait_for`] fail (async-signal-safe: one atomic store).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// True (after saying why) when the caller is not root: privileged tests call this first
/// and return early, so a non-root `cargo test` reports them as passed-by-skipping.
pub fn skip_unless_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: network namespaces and BPF need root");
    }
    !root
}

/// Address of node `index` (1-based): 10.0.0.(10 + index).
pub fn node_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + octet(index))
}

/// The node end of every pod veth on node `index`: 10.42.(index - 1).1.
pub fn pod_gateway(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, octet(index) - 1, 1)
}

fn octet(index: usize) -> u8 {
    u8::try_from(index)
        .ok()
        .filter(|index| (1..=89).contains(index))
        .expect("node indices run from 1 to 89 so addresses stay below the client's")
}

/// The client, the nodes with their pods, and the bridge between them.
///
/// Field order is drop order: processes die with their namespace, bridge last.
#[derive(Debug)]
pub struct Lab {
    pub client: Netns,
    pub nodes: Vec<Node>,
    lan: Netns,
}

/// A node: `eth0` on the LAN, forwarding to its pods.
#[derive(Debug)]
pub struct Node {
    /// `node<index>`, the name agents use in their configuration.
    pub name: String,
    pub addr: Ipv4Addr,
    pub netns: Netns,
    pub pods: Vec<Pod>,
    /// The node's port on the bridge, in the `lan` namespace.
    switch_port: String,
    /// Keeps the pass-through XDP program on `switch_port` attached.
    _port_xdp: OwnedFd,
}

/// A pod: a namespace with one `eth0` towards its node.
#[derive(Debug)]
pub struct Pod {
    pub addr: Ipv4Addr,
    pub netns: Netns,
}

impl Lab {
    /// Builds a LAN with one node per entry of `pods`, node i (1-based) getting the pods
    /// listed at `pods[i - 1]` (addresses inside 10.42.(i-1).0/24).
    pub fn new(pods: &[&[Ipv4Addr]]) -> anyhow::Result<Self> {
        let lan = namespace("lan")?;
        lan.run(&format!(
            "ip link add {BRIDGE} type bridge && ip link set {BRIDGE} up"
        ))?;
        let client = namespace("client")?;
        plug(&lan, &client, CLIENT_PORT, CLIENT_ADDR)?;
        client.run(&format!("ethtool -K {LAN_IFACE} tx off >/dev/null"))?;
        client.run(&format!(
            "sysctl -qw net.ipv4.ip_local_reserved_ports={}-{}",
            FIXED_CLIENT_PORTS.start(),
            FIXED_CLIENT_PORTS.end()
        ))?;
        let mut lab = Self {
            client,
            nodes: Vec::with_capacity(pods.len()),
            lan,
        };
        for (slot, node_pods) in pods.iter().enumerate() {
            let node = Node::new(&lab.lan, slot + 1, node_pods)?;
            lab.nodes.push(node);
        }
        Ok(lab)
    }

    /// The node called `name` (`node1`, …).
    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .with_context(|| format!("no node {name} in the lab"))
    }

    /// The pod with address `addr`, on whichever node.
    pub fn pod(&self, addr: Ipv4Addr) -> anyhow::Result<&Pod> {
        self.nodes
            .iter()
            .flat_map(|node| &node.pods)
            .find(|pod| pod.addr == addr)
            .with_context(|| format!("no pod {addr} in the lab"))
    }

    /// The node hosting the pod with address `addr`.
    pub fn node_of(&self, addr: Ipv4Addr) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|node| node.pods.iter().any(|pod| pod.addr == addr))
            .with_context(|| format!("no pod {addr} in the lab"))
    }

    /// Makes the client send traffic for `cidr` onto the LAN and resolve each of `vips`
    /// to `owner`'s MAC with a permanent neighbour entry (no ARP needed from the owner).
    pub fn route_vips(&self, cidr: &str, vips: &[Ipv4Addr], owner: &Node) -> anyhow::Result<()> {
        let mac = owner.mac()?;
        self.client
            .run(&format!("ip route add {cidr} dev {LAN_IFACE}"))?;
        for vip in vips {
            self.client.run(&format!(
                "ip neigh replace {vip} lladdr {mac} dev {LAN_IFACE} nud permanent"
            ))?;
        }
        Ok(())
    }

    /// Makes the client send traffic for `cidr` onto the LAN, resolving each address by
    /// ARP as any LAN host would.
    pub fn route_to_lan(&self, cidr: &str) -> anyhow::Result<()> {
        self.client
            .run(&format!("ip route add {cidr} dev {LAN_IFACE}"))
            .map(drop)
    }

    /// Captures what crosses the client's bridge port.
    pub fn capture_client_port(&self, filter: &str, dir: &Path) -> anyhow::Result<Capture> {
        Capture::start(&self.lan, CLIENT_PORT, filter, dir, "client-port")
    }

    /// Captures what crosses `node`'s bridge port: every frame on the node's wire, seen
    /// from the switch, so neither the node's XDP nor its TC programs can hide packets
    /// from it (a capture on the node's own eth0 misses XDP_TX frames and sees ingress
    /// only after XDP).
    pub fn capture_switch_port(
        &self,
        node: &Node,
        filter: &str,
        dir: &Path,
    ) -> anyhow::Result<Capture> {
        Capture::start(
            &self.lan,
            &node.switch_port,
            filter,
            dir,
            &format!("{}-port", node.name),
        )
    }
}

impl Node {
    fn new(lan: &Netns, index: usize, pods: &[Ipv4Addr]) -> anyhow::Result<Self> {
        let name = format!("node{index}");
        let addr = node_addr(index);
        let netns = namespace(&name)?;
        let switch_port = format!("n{index}");
        plug(lan, &netns, &switch_port, addr)?;
        let port_xdp = {
            let _in_lan = lan.enter()?;
            port_xdp::attach_pass(&switch_port)?
        };
        lan.run(&format!("ethtool -K {switch_port} gro off >/dev/null"))?;
        let mac = netns.run(&format!("cat /sys/class/net/{LAN_IFACE}/address"))?;
        lan.run(&format!(
            "bridge link set dev {switch_port} flood off \
             && bridge fdb replace {} dev {switch_port} master static",
            mac.trim()
        ))?;
        netns.run("echo 1 > /proc/sys/net/ipv4/ip_forward")?;
        let pods = pods
            .iter()
            .map(|&pod| Pod::new(&netns, &name, index, pod))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            name,
            addr,
            netns,
            pods,
            switch_port,
            _port_xdp: port_xdp,
        })
    }

    /// MAC address of the node's LAN interface.
    pub fn mac(&self) -> anyhow::Result<String> {
        let mac = self
            .netns
            .run(&format!("cat /sys/class/net/{LAN_IFACE}/address"))?;
        Ok(mac.trim().to_owned())
    }

    /// Sets the node's LAN interface administratively up or down (a pulled cable, seen
    /// from the node; the switch port loses carrier).
    pub fn set_link(&self, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        self.netns
            .run(&format!("ip link set {LAN_IFACE} {state}"))
            .map(drop)
    }

    /// Whether an XDP program is attached to the node's LAN interface.
    pub fn has_xdp(&self) -> anyhow::Result<bool> {
        let link = self
            .netns
            .run(&format!("ip -d link show dev {LAN_IFACE}"))?;
        Ok(link.contains("prog/xdp"))
    }
}

impl Pod {
    fn new(node: &Netns, node_name: &str, index: usize, addr: Ipv4Addr) -> anyhow::Result<Self> {
        let gateway = pod_gateway(index);
        let [a, b, c, host] = addr.octets();
        ensure!(
            [a, b, c] == gateway.octets()[..3] && host != 0 && host != 1 && host != 255,
            "pod {addr} must be a host address in {gateway}/24 other than the gateway"
        );
        let netns = namespace(&format!("{node_name}-pod{host}"))?;
        let node_if = format!("v{host}");
        veth(node, &node_if, &netns, LAN_IFACE)?;
        node.run(&format!(
            "ip addr add {gateway}/32 peer {addr}/32 dev {node_if}"
        ))?;
        netns.run(&format!(
            "ip addr add {addr}/32 peer {gateway}/32 dev {LAN_IFACE} \
             && ip route add {LAN_CIDR} via {gateway} dev {LAN_IFACE}"
        ))?;
        Ok(Self { addr, netns })
    }
}

/// A namespace with IPv6 off (before any interface exists, so none gets an address).
fn namespace(prefix: &str) -> anyhow::Result<Netns> {
    let netns = Netns::new(prefix)?;
    netns.run(
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 \
         && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
    )?;
    Ok(netns)
}

/// Connects `host` to the bridge: `eth0` inside with `addr`/24, `port` on the bridge.
fn plug(lan: &Netns, host: &Netns, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    veth(host, LAN_IFACE, lan, port)?;
    lan.run(&format!("ip link set {port} master {BRIDGE}"))?;
    host.run(&format!(
        "ip addr add {addr}/{LAN_PREFIX_LEN} dev {LAN_IFACE}"
    ))?;
    Ok(())
}

/// Polls `check` every 100 ms until it yields a value; fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    const INTERVAL: Duration = Duration::from_millis(100);
    let attempts = timeout.as_millis().div_ceil(INTERVAL.as_millis()).max(1);
    for _ in 0..attempts {
        if interrupted() {
            bail!("interrupted while waiting for {what}");
        }
        if let Some(value) = check()? {
            return Ok(value);
        }
        thread::sleep(INTERVAL);
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A binary of this workspace built into the same target directory as the running
/// executable (tests run from `target/<profile>/deps/`, binaries live in
/// `target/<profile>/`).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "{name} not found (looked at {candidates:?}); build it first: cargo build --bins"
            )
        })
}

/// The workspace's root directory (deploy/, the manifests, the README).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testbed crate lives one level below the workspace root")
        .to_path_buf()
}

/// `text` as one word for `sh -c`.
fn shell_quote(text: impl std::fmt::Display) -> String {
    format!("'{}'", text.to_string().replace('\'', r"'\''"))
}
