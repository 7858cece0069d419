//! The Kubernetes objects the agent watches, as the core's [`Cluster`]. Pure: the
//! reflectors ([`super::source`]) hand a [`Snapshot`] in, every agent given the same
//! snapshot computes the same cluster.
//!
//! - Nodes: every Node with an IPv4 `InternalIP` is a peer (gossip, IPIP, rings). Its
//!   labels go to the election (`node.kubernetes.io/exclude-from-external-load-balancers`
//!   excludes it); a Node whose `Ready` condition is not `True` owns VIPs only when no
//!   Ready node can (see [`crate::election`]).
//! - Services: `type: LoadBalancer` Services of our class (see
//!   [`ClassPolicy::responsibility`]) with an IPv4 address in
//!   `status.loadBalancer.ingress` — the VIP the IPAM assigned. A Service still waiting
//!   for its address is not served yet. Service `ns/name` is the core's service
//!   `ns/name`. The VIP is the first status address that a valid AddressPool lists:
//!   anyone may write a status, and an address outside every pool (another writer's, or
//!   one whose pool was deleted) must never be announced. Every other status address is
//!   left out and listed in [`Translation::ignored`], which the source counts and
//!   reports on the Service.
//! - Ports: TCP and UDP; the target port is the number the Service's EndpointSlices
//!   list for the port's name, which resolves named `targetPort`s. Without any slice
//!   listing it (no endpoints yet), a numeric `targetPort` is used as is, a named one
//!   falls back to the port number: nothing can be reached through it until endpoints
//!   appear, and they bring the real number.
//! - Endpoints: IPv4 EndpointSlices labelled `kubernetes.io/service-name`. `ready`
//!   (absent: true) and `terminating` (absent: false) carry over as they are: a
//!   terminating endpoint takes no new flows but keeps the ones it has. Endpoints
//!   without `nodeName` cannot be tunnelled to and are left out. An address listed by
//!   several slices (during a slice update) counts once, serving if any says so.
//! - Pools: the AddressPool whose addresses contain a VIP restricts its owners to the
//!   Nodes its `announcement.nodeSelector` matches (an invalid selector matches none)
//!   and to the Nodes whose announce interface is one of its `announcement.interfaces`;
//!   its `announcement.garp` sets the VIP's gratuitous ARP timing. Each agent publishes
//!   its announce interface on its Node as the annotation
//!   [`ANNOUNCE_INTERFACE_ANNOTATION`], read here for every Node.
//!
//! Anything left out is reported in [`Translation::notes`], which the source logs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Node, Service, ServicePort as KubePort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    ResourceExt as _,
    core::{Selector, SelectorExt as _},
};

use super::slice::{Address, Slice};
use crate::{
    apis::{
        address_pool::{AddressPool, Garp},
        pool_status, service,
    },
    arp,
    election::{ANNOUNCE_INTERFACE_ANNOTATION, AnnounceInterfaces, Announcers},
    ipam::{
        Pool,
        addresses::AddressSet,
        request::{ClassPolicy, Responsibility},
    },
    model::{
        Endpoint, Inputs, Node as CoreNode, Protocol, Service as CoreService, ServicePort,
        TrafficPolicy,
    },
    sources::Cluster,
};

/// The label EndpointSlices name their Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects the translation reads, as the reflector stores hold them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Arc<Node>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<Slice>>,
    pub pools: Vec<Arc<AddressPool>>,
}

/// How this agent reads the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translator {
    /// This node's name (`NODE_NAME`, from the downward API).
    pub node: String,
    pub class: ClassPolicy,
    /// The settings file's `mtu`.
    pub mtu: Option<u32>,
    pub icmp_rate_per_sec: u32,
}

/// The cluster, and what was left out of it and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub cluster: Cluster,
    pub notes: Vec<String>,
    /// Status addresses of our Services that no node may own.
    pub ignored: Vec<IgnoredAddress>,
}

/// An address in a Service's `status.loadBalancer.ingress` that is neither announced
/// nor forwarded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IgnoredAddress {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    /// The address the Service is served on instead, if any: it has one VIP.
    pub served: Option<Ipv4Addr>,
}

impl fmt::Display for IgnoredAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.ip;
        match self.served {
            Some(vip) => write!(
                f,
                "{ip} in status.loadBalancer.ingress is ignored: the Service is served on {vip} alone"
            ),
            None => write!(
                f,
                "{ip} in status.loadBalancer.ingress is ignored: no valid AddressPool lists it, so no node announces or forwards it"
            ),
        }
    }
}

/// Why there is no cluster to run at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("this node `{0}` (NODE_NAME) is not among the cluster's Nodes")]
    UnknownNode(String),
    #[error("this node `{0}` has no IPv4 InternalIP address")]
    NoAddress(String),
}

impl TranslateError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::UnknownNode(_) => "unknown_node",
            Self::NoAddress(_) => "no_node_address",
        }
    }
}

impl Translator {
    pub fn translate(&self, snapshot: &Snapshot) -> Result<Translation, TranslateError> {
        let mut notes = Vec::new();
        let nodes = nodes(snapshot, &mut notes);
        let this = nodes
            .iter()
            .find(|node| node.core.name == self.node)
            .map(|node| node.core.clone())
            .ok_or_else(
                || match snapshot.nodes.iter().any(|n| n.name_any() == self.node) {
                    true => TranslateError::NoAddress(self.node.clone()),
                    false => TranslateError::UnknownNode(self.node.clone()),
                },
            )?;
        let node_addresses: BTreeMap<Ipv4Addr, &str> = nodes
            .iter()
            .map(|node| (node.core.address, node.core.name.as_str()))
            .collect();
        let (pools, _) = pool_status::compile(&snapshot.pools);
        let mut ignored = Vec::new();
        let services = self.services(snapshot, &pools, &node_addresses, &mut notes, &mut ignored);
        let labels: BTreeMap<String, BTreeMap<String, String>> = nodes
            .iter()
            .map(|node| (node.core.name.clone(), node.labels.clone()))
            .collect();
        let pools = announcements(&services, &snapshot.pools, &labels, &mut notes);
        let node_interfaces = nodes
            .iter()
            .filter_map(|node| Some((node.core.name.clone(), node.interface.clone()?)))
            .collect();
        let cluster = Cluster {
            inputs: Inputs {
                node: this,
                peers: nodes.iter().map(|node| node.core.clone()).collect(),
                services,
                mtu: self.mtu.unwrap_or(0),
                icmp_rate_per_sec: self.icmp_rate_per_sec,
                down: BTreeSet::new(),
            },
            mtu: self.mtu,
            labels,
            unready: nodes
                .iter()
                .filter(|node| !node.ready)
                .map(|node| node.core.name.clone())
                .collect(),
            owners: BTreeMap::new(),
            announcers: pools.announcers,
            announce_interfaces: pools.interfaces,
            node_interfaces,
            garp: pools.garp,
        };
        Ok(Translation {
            cluster,
            notes,
            ignored,
        })
    }

    fn services(
        &self,
        snapshot: &Snapshot,
        pools: &[Pool],
        node_addresses: &BTreeMap<Ipv4Addr, &str>,
        notes: &mut Vec<String>,
        ignored: &mut Vec<IgnoredAddress>,
    ) -> Vec<CoreService> {
        let mut ours: Vec<(String, &Service, Ipv4Addr)> = snapshot
            .services
            .iter()
            .filter(|service| service::responsibility(self.class, service) == Responsibility::Ours)
            .filter_map(|service| {
                let vip = vip(service, pools, ignored);
                Some((service_name(service), service.as_ref(), vip?))
            })
            .collect();
        for address in ignored.iter() {
            notes.push(format!("{}/{}: {address}", address.namespace, address.name));
        }
        // Older Services keep a contested port, as they keep a contested address.
        ours.sort_by(|a, b| {
            let created = |service: &Service| service.metadata.creation_timestamp.clone();
            (created(a.1), &a.0).cmp(&(created(b.1), &b.0))
        });
        let service_slices = slices_by_service(&snapshot.slices);
        let mut taken = BTreeSet::new();
        let mut services = Vec::new();
        for (name, service, vip) in ours {
            if let Some(node) = node_addresses.get(&vip) {
                notes.push(format!(
                    "{name}: VIP {vip} is the address of node {node}; not served"
                ));
                continue;
            }
            let slices = service_slices
                .get(&(service.namespace(), service.name_any()))
                .map_or(&[][..], Vec::as_slice);
            let mut ports = Vec::new();
            for port in service::ports(service) {
                match core_port(&name, port, slices) {
                    Ok(core) if taken.insert((vip, core.port, core.protocol)) => ports.push(core),
                    Ok(core) => notes.push(format!(
                        "{name}: {vip}:{}/{} is already served by another Service; port left out",
                        core.port, core.protocol
                    )),
                    Err(note) => notes.push(note),
                }
            }
            if ports.is_empty() {
                notes.push(format!("{name}: no TCP or UDP port to serve"));
                continue;
            }
            services.push(CoreService {
                endpoints: endpoints(&name, slices, notes),
                name,
                vip,
                ports,
                traffic_policy: traffic_policy(service),
                drop_unknown_ports: false,
            });
        }
        services
    }
}

/// The first of `service`'s status addresses that one of `pools` lists; the others
/// go to `ignored`.
fn vip(service: &Service, pools: &[Pool], ignored: &mut Vec<IgnoredAddress>) -> Option<Ipv4Addr> {
    let addresses = service::status_addresses(service);
    let vip = addresses
        .iter()
        .copied()
        .find(|&ip| pools.iter().any(|pool| pool.addresses.contains(ip)));
    let others = addresses.into_iter().filter(|&ip| Some(ip) != vip);
    ignored.extend(others.map(|ip| IgnoredAddress {
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
        ip,
        served: vip,
    }));
    vip
}

/// A Node as the translation needs it.
struct NodeInfo {
    core: CoreNode,
    labels: BTreeMap<String, String>,
    ready: bool,
    /// The announce interface its agent published.
    interface: Option<String>,
}

fn nodes(snapshot: &Snapshot, notes: &mut Vec<String>) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = snapshot
        .nodes
        .iter()
        .filter_map(|node| {
            let name = node.name_any();
            let Some(address) = internal_ip(node) else {
                notes.push(format!("node {name}: no IPv4 InternalIP; not a peer"));
                return None;
            };
            Some(NodeInfo {
                core: CoreNode { name, address },
                labels: node.labels().clone(),
                ready: node_ready(node),
                interface: node
                    .annotations()
                    .get(ANNOUNCE_INTERFACE_ANNOTATION)
                    .filter(|name| !name.is_empty())
                    .cloned(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.core.name.cmp(&b.core.name));
    nodes
}

pub(super) fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|address| address.type_ == "InternalIP")
        .find_map(|address| address.address.parse().ok())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|ready| ready.status == "True")
}

fn service_name(service: &Service) -> String {
    format!(
        "{}/{}",
        service.namespace().unwrap_or_default(),
        service.name_any()
    )
}

fn traffic_policy(service: &Service) -> TrafficPolicy {
    let policy = service
        .spec
        .as_ref()
        .and_then(|spec| spec.external_traffic_policy.as_deref());
    match policy {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// The IPv4 slices by the (namespace, name) of the Service they belong to: one pass over
/// the slices instead of one per Service.
fn slices_by_service(slices: &[Arc<Slice>]) -> HashMap<(Option<String>, String), Vec<&Slice>> {
    let mut index: HashMap<_, Vec<&Slice>> = HashMap::new();
    for slice in slices.iter().filter(|slice| slice.address_type == "IPv4") {
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            index
                .entry((slice.namespace(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    index
}

fn parse_protocol(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn core_port(service: &str, port: &KubePort, slices: &[&Slice]) -> Result<ServicePort, String> {
    let Some(protocol) = parse_protocol(port.protocol.as_deref()) else {
        return Err(format!(
            "{service}: port {} is {}; only TCP and UDP are served",
            port.port,
            port.protocol.as_deref().unwrap_or_default()
        ));
    };
    let number = u16::try_from(port.port)
        .ok()
        .filter(|number| *number != 0)
        .ok_or_else(|| format!("{service}: port {} is not a port number", port.port))?;
    let target_port = resolved_target(port, protocol, slices).unwrap_or(match &port.target_port {
        Some(IntOrString::Int(target)) => u16::try_from(*target).unwrap_or(number),
        _ => number,
    });
    Ok(ServicePort {
        port: number,
        protocol,
        target_port,
    })
}

/// The target port the slices list for `port`: the one most endpoints use when pods
/// resolve a named port differently (the data path has one target per port).
fn resolved_target(port: &KubePort, protocol: Protocol, slices: &[&Slice]) -> Option<u16> {
    let name = port.name.as_deref().unwrap_or_default();
    let mut votes: BTreeMap<u16, usize> = BTreeMap::new();
    for slice in slices {
        let listed = slice.ports.iter().flatten().find(|candidate| {
            candidate.name.as_deref().unwrap_or_default() == name
                && parse_protocol(candidate.protocol.as_deref()) == Some(protocol)
        });
        let Some(number) = listed
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        *votes.entry(number).or_default() += slice.endpoints.as_ref().map_or(0, Vec::len).max(1);
    }
    votes
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(number, _)| number)
}

fn endpoints(service: &str, slices: &[&Slice], notes: &mut Vec<String>) -> Vec<Endpoint> {
    let mut found: BTreeMap<Ipv4Addr, Endpoint> = BTreeMap::new();
    for endpoint in slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
    {
        let conditions = endpoint.conditions.clone().unwrap_or_default();
        let Some(node) = endpoint.node_name.as_deref() else {
            let addresses: Vec<String> =
                endpoint.addresses.iter().map(ToString::to_string).collect();
            notes.push(format!(
                "{service}: endpoint {} has no nodeName; left out",
                addresses.join(",")
            ));
            continue;
        };
        for address in endpoint.addresses.iter().filter_map(Address::ipv4) {
            let candidate = Endpoint {
                address,
                node: node.to_owned(),
                ready: conditions.ready.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
            };
            match found.get(&address) {
                Some(existing) if existing.serving() || !candidate.serving() => {}
                _ => {
                    found.insert(address, candidate);
                }
            }
        }
    }
    found.into_values().collect()
}

/// What the VIPs' address pools say about announcing them.
#[derive(Debug, Default)]
struct PoolAnnouncements {
    /// VIPs whose pool has a node selector.
    announcers: BTreeMap<Ipv4Addr, Announcers>,
    /// VIPs whose pool lists interfaces.
    interfaces: BTreeMap<Ipv4Addr, AnnounceInterfaces>,
    /// VIPs whose pool sets gratuitous ARP timing.
    garp: BTreeMap<Ipv4Addr, arp::Settings>,
}

/// The announcement settings of every VIP's pool (the first by name when several hold it).
fn announcements(
    services: &[CoreService],
    pools: &[Arc<AddressPool>],
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    notes: &mut Vec<String>,
) -> PoolAnnouncements {
    let mut sorted: Vec<&AddressPool> = pools.iter().map(AsRef::as_ref).collect();
    sorted.sort_by_key(|pool| pool.name_any());
    let parsed: Vec<(&AddressPool, AddressSet)> = sorted
        .into_iter()
        .filter_map(|pool| {
            let set = AddressSet::parse(&pool.spec.addresses, pool.spec.avoid_buggy_ips).ok()?;
            Some((pool, set))
        })
        .collect();
    let vips: BTreeSet<Ipv4Addr> = services.iter().map(|service| service.vip).collect();
    let mut result = PoolAnnouncements::default();
    for vip in vips {
        let mut holding = parsed.iter().filter(|(_, set)| set.contains(vip));
        let Some((pool, _)) = holding.next() else {
            continue;
        };
        if let Some((other, _)) = holding.next() {
            notes.push(format!(
                "VIP {vip} is in pools {} and {}; announcing by {}",
                pool.name_any(),
                other.name_any(),
                pool.name_any()
            ));
        }
        let Some(announcement) = &pool.spec.announcement else {
            continue;
        };
        if let Some(selector) = announcement.node_selector.clone() {
            let announcers = announcers(pool, vip, selector, labels, notes);
            result.announcers.insert(vip, announcers);
        }
        if !announcement.interfaces.is_empty() {
            let interfaces = AnnounceInterfaces {
                pool: pool.name_any(),
                interfaces: announcement.interfaces.iter().cloned().collect(),
            };
            result.interfaces.insert(vip, interfaces);
        }
        if let Some(garp) = &announcement.garp {
            result.garp.insert(vip, garp_settings(garp));
        }
    }
    result
}

/// The nodes `selector` (`pool`'s node selector) lets announce `vip`.
fn announcers(
    pool: &AddressPool,
    vip: Ipv4Addr,
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    notes: &mut Vec<String>,
) -> Announcers {
    let nodes = match Selector::try_from(selector) {
        Ok(selector) => labels
            .iter()
            .filter(|(_, labels)| selector.matches(labels))
            .map(|(name, _)| name.clone())
            .collect(),
        Err(error) => {
            notes.push(format!(
                "pool {}: announcement.nodeSelector is invalid ({}); no node announces VIP {vip}",
                pool.name_any(),
                error.0
            ));
            BTreeSet::new()
        }
    };
    Announcers {
        pool: pool.name_any(),
        nodes,
    }
}

/// The announcer's timing for a pool's `garp` settings.
fn garp_settings(garp: &Garp) -> arp::Settings {
    arp::Settings {
        garp_repeats: garp.repeats,
        garp_interval: Duration::from_millis(garp.interval_milliseconds.into()),
        refresh: (garp.refresh_seconds > 0)
            .then(|| Duration::from_secs(garp.refresh_seconds.into())),
    }
}
