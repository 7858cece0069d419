//! The desired content of the data path, computed from what a source (the standalone
//! file today, the Kubernetes API later) says about nodes, services and endpoints.
//!
//! [`desired_state`] is a pure function: every agent given the same [`Inputs`] computes
//! the same node rings, which is what lets a VIP move between owners without breaking
//! established flows.
//!
//! Building the Maglev tables is nearly all of the work, so [`desired_state_with`] takes
//! a memo of table builds ([`Tables`]) that the caller keeps between passes: the memo
//! is injected rather than global so the function stays pure (its result never depends
//! on what the memo holds) and each caller decides how long tables live. The agent's
//! reconciler keeps one; [`desired_state`] uses a fresh one per call.
//!
//! Liveness comes in as [`Inputs::down`], the nodes the gossip declared down: they leave
//! every node ring at once (no new flows) and `BACKENDS` (flows cached on them pick a
//! node again). Suspect nodes are not down: a missed probe moves no traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use lb_common::{
    maglev::Backend,
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
    types::{PROTO_TCP, PROTO_UDP},
};
use serde::{Deserialize, Serialize};

pub mod capacities;
mod tables;
pub mod unicast;

pub use self::tables::{Interner, Table, Tables};

/// Transport protocol of a service port, spelled as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// Kubernetes' `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any node with ready endpoints may serve; the receiving node tunnels to it.
    #[default]
    Cluster,
    /// Only the node that receives the packet serves it, from its own endpoints.
    Local,
}

/// A cluster node: its name (the identity every agent agrees on) and LAN address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub address: Ipv4Addr,
}

/// Everything the data path is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The node this agent runs on.
    pub node: Node,
    /// Every node of the cluster; may include this one.
    pub peers: Vec<Node>,
    pub services: Vec<Service>,
    /// MTU of the LAN interface.
    pub mtu: u32,
    /// ICMP replies the data path may generate per second and CPU.
    pub icmp_rate_per_sec: u32,
    /// Nodes the membership reports down (left, failed, or never heard from). Their
    /// endpoints get no traffic through the node rings; their own local pods are theirs.
    pub down: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique among services; identifies the service's rings.
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub traffic_policy: TrafficPolicy,
    /// Drop packets to ports of the VIP that no service listens on, instead of passing
    /// them to the node's own stack.
    pub drop_unknown_ports: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    /// Name of the node the endpoint runs on.
    pub node: String,
    pub ready: bool,
    pub terminating: bool,
}

impl Endpoint {
    /// Takes new flows. Kubernetes never reports a terminating endpoint as ready, but a
    /// source that does must not send new flows to it either.
    pub fn serving(&self) -> bool {
        self.ready && !self.terminating
    }
}

/// Per-node settings of the data path (the `CONFIG` map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub address: Ipv4Addr,
    pub mtu: u32,
    pub icmp_rate_per_sec: u32,
    /// MAC address of the announce interface: the data path handles only VIP and tunnel
    /// frames sent to it. All zero (what [`desired_state`] leaves, the inputs not knowing
    /// the interface): every destination is accepted. The runtime fills it in.
    pub mac: [u8; 6],
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            address: Ipv4Addr::UNSPECIFIED,
            mtu: 0,
            icmp_rate_per_sec: 0,
            mac: [0; 6],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vip {
    pub drop_unknown_ports: bool,
}

/// What a client addresses: `(vip, port, protocol)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.protocol)
    }
}

/// Where a [`PortKey`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortTarget {
    /// The service whose rings select the backend.
    pub service: String,
    pub target_port: u16,
    pub local_only: bool,
}

/// A service's two Maglev tables. [`Ipv4Addr::UNSPECIFIED`] marks an empty slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rings {
    /// [`NODE_RING_SIZE`] backend node addresses.
    pub node: Table,
    /// [`POD_RING_SIZE`] addresses of this node's pods.
    pub pod: Table,
}

/// Liveness of a backend for flows already pinned to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackendState {
    /// Keeps its flows, gets no new ones.
    Draining,
    /// Takes new flows.
    Active,
}

/// The whole intended content of the data path, in logical terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub node: NodeConfig,
    pub vips: BTreeMap<Ipv4Addr, Vip>,
    pub ports: BTreeMap<PortKey, PortTarget>,
    /// Per service name.
    pub rings: BTreeMap<String, Rings>,
    /// Backend nodes and this node's pods.
    pub backends: BTreeMap<Ipv4Addr, BackendState>,
    /// Nodes IPIP is accepted from: every node but this one.
    pub peers: BTreeSet<Ipv4Addr>,
}

/// A node's share of a service: how many of its endpoints serve, and how many drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeShare {
    pub address: Ipv4Addr,
    pub serving: u32,
    pub draining: u32,
}

/// Every live node hosting an endpoint of `service`, by name. Endpoints on nodes the
/// inputs do not know have no address to tunnel to, and endpoints on down nodes cannot
/// be reached: both are left out.
pub fn node_shares<'a>(inputs: &'a Inputs, service: &'a Service) -> BTreeMap<&'a str, NodeShare> {
    let addresses: BTreeMap<&str, Ipv4Addr> = inputs
        .peers
        .iter()
        .chain([&inputs.node])
        .map(|node| (node.name.as_str(), node.address))
        .collect();
    let mut shares = BTreeMap::new();
    for endpoint in &service.endpoints {
        let Some(address) = addresses.get(endpoint.node.as_str()) else {
            continue;
        };
        if inputs.down.contains(&endpoint.node) {
            continue;
        }
        let share = shares.entry(endpoint.node.as_str()).or_insert(NodeShare {
            address: *address,
            serving: 0,
            draining: 0,
        });
        if endpoint.serving() {
            share.serving += 1;
        } else if endpoint.terminating {
            share.draining += 1;
        }
    }
    shares
}

/// This node's endpoints of `service`.
fn local_endpoints<'a>(
    inputs: &'a Inputs,
    service: &'a Service,
) -> impl Iterator<Item = &'a Endpoint> {
    service
        .endpoints
        .iter()
        .filter(|endpoint| endpoint.node == inputs.node.name)
}

/// The serving endpoints of `service` on `node`, as pod-table backends (id = address).
fn pod_ids(service: &Service, node: &str) -> Vec<(u32, [u8; 4])> {
    service
        .endpoints
        .iter()
        .filter(|endpoint| endpoint.node == node && endpoint.serving())
        .map(|endpoint| (u32::from(endpoint.address), endpoint.address.octets()))
        .collect()
}

fn pod_table(service: &Service, node: &str, tables: &mut Tables) -> Table {
    let ids = pod_ids(service, node);
    let pods: Vec<Backend<'_>> = ids
        .iter()
        .map(|(addr, id)| Backend {
            id,
            addr: *addr,
            weight: 1,
        })
        .collect();
    tables.get(&pods, POD_RING_SIZE)
}

/// The pod-level table `node` builds for `service` from its own serving endpoints. Every
/// agent can compute any node's table, which is how `lbctl explain` follows a flow to
/// the pod on another node.
pub fn pod_ring(service: &Service, node: &str) -> Vec<Ipv4Addr> {
    pod_table(service, node, &mut Tables::default()).to_vec()
}

fn rings(
    inputs: &Inputs,
    service: &Service,
    shares: &BTreeMap<&str, NodeShare>,
    tables: &mut Tables,
) -> Rings {
    let nodes: Vec<Backend<'_>> = shares
        .iter()
        .map(|(name, share)| Backend {
            id: name.as_bytes(),
            addr: u32::from(share.address),
            weight: share.serving,
        })
        .collect();
    Rings {
        node: tables.get(&nodes, NODE_RING_SIZE),
        pod: pod_table(service, &inputs.node.name, tables),
    }
}

/// Records `state` for `address`; a backend both active and draining (one pod behind two
/// services) stays active.
fn mark(backends: &mut BTreeMap<Ipv4Addr, BackendState>, address: Ipv4Addr, state: BackendState) {
    let entry = backends.entry(address).or_insert(state);
    *entry = (*entry).max(state);
}

fn add_backends(
    inputs: &Inputs,
    service: &Service,
    shares: &BTreeMap<&str, NodeShare>,
    state: &mut State,
) {
    for share in shares.values() {
        if share.serving > 0 {
            mark(&mut state.backends, share.address, BackendState::Active);
        } else if share.draining > 0 {
            // Flows the owner pinned to this node keep reaching its draining pods.
            mark(&mut state.backends, share.address, BackendState::Draining);
        }
    }
    for endpoint in local_endpoints(inputs, service) {
        if endpoint.serving() {
            mark(&mut state.backends, endpoint.address, BackendState::Active);
        } else if endpoint.terminating {
            mark(
                &mut state.backends,
                endpoint.address,
                BackendState::Draining,
            );
        }
    }
}

fn add_service(inputs: &Inputs, service: &Service, tables: &mut Tables, state: &mut State) {
    let vip = state.vips.entry(service.vip).or_default();
    // Ports of a VIP are unknown to every service sharing it, so one asking to drop wins.
    vip.drop_unknown_ports |= service.drop_unknown_ports;
    for port in &service.ports {
        let key = PortKey {
            vip: service.vip,
            port: port.port,
            protocol: port.protocol,
        };
        let target = PortTarget {
            service: service.name.clone(),
            target_port: port.target_port,
            local_only: service.traffic_policy == TrafficPolicy::Local,
        };
        state.ports.insert(key, target);
    }
    let shares = node_shares(inputs, service);
    state.rings.insert(
        service.name.clone(),
        rings(inputs, service, &shares, tables),
    );
    add_backends(inputs, service, &shares, state);
}

/// The data path's content for `inputs`.
///
/// Node rings are built over every node's serving endpoints (weight = their number, id =
/// node name) and are identical on every agent; they are built for `Local` services too,
/// which the data path then ignores. Pod rings hold this node's serving endpoints.
pub fn desired_state(inputs: &Inputs) -> State {
    desired_state_with(inputs, &mut Tables::default())
}

/// [`desired_state`], taking the tables from `tables` where it already built them for
/// the same backends, and ending a pass of the memo: it then holds exactly the tables of
/// the returned state.
pub fn desired_state_with(inputs: &Inputs, tables: &mut Tables) -> State {
    let mut state = State {
        node: NodeConfig {
            address: inputs.node.address,
            mtu: inputs.mtu,
            icmp_rate_per_sec: inputs.icmp_rate_per_sec,
            mac: [0; 6],
        },
        peers: inputs
            .peers
            .iter()
            .map(|peer| peer.address)
            .filter(|address| *address != inputs.node.address)
            .collect(),
        ..State::default()
    };
    for service in &inputs.services {
        add_service(inputs, service, tables, &mut state);
    }
    tables.finish_pass();
    state
}

#[cfg(test)]
mod tests;
