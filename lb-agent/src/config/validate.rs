//! Checks that need more than one field: names that must match, duplicates, ranges.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::Ipv4Addr,
};

use super::{
    Config, EndpointConfig, GossipConfig, NodeSettings, PeerConfig, ServiceConfig,
    bounds::{self, Bound},
    locate::{FieldPath, Problem},
};
use crate::model::{Node, Protocol, capacities::Capacities};

/// Linux's IFNAMSIZ less the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;
const MAX_NAME: usize = 253;

/// Peer name -> address.
type Peers<'a> = BTreeMap<&'a str, Ipv4Addr>;
/// VIP -> the first service that names it.
type Vips<'a> = BTreeMap<Ipv4Addr, &'a str>;

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, path: FieldPath, message: String) {
        self.problems.push(Problem { path, message });
    }

    fn name(&mut self, path: FieldPath, name: &str) {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'));
        if !valid {
            self.report(
                path,
                format!("`{name}` is not a valid name: use 1 to {MAX_NAME} letters, digits, `-`, `.`, `_` or `/`"),
            );
        }
    }

    fn interface(&mut self, path: FieldPath, interface: &str) {
        let valid = !interface.is_empty()
            && interface.len() <= MAX_INTERFACE_NAME
            && interface != "."
            && interface != ".."
            && !interface
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            self.report(
                path,
                format!("`{interface}` is not a Linux interface name (1 to {MAX_INTERFACE_NAME} characters, no `/`, `:` or spaces)"),
            );
        }
    }

    /// The address of node `name`, reporting a name that is not a peer.
    fn node_address(&mut self, path: FieldPath, name: &str, peers: &Peers<'_>) -> Option<Ipv4Addr> {
        let address = peers.get(name).copied();
        if address.is_none() {
            let names: Vec<&str> = peers.keys().copied().collect();
            self.report(
                path,
                format!("`{name}` is not one of `peers` ({})", names.join(", ")),
            );
        }
        address
    }

    fn peers<'a>(&mut self, path: FieldPath, peers: &'a [PeerConfig]) -> Peers<'a> {
        let mut by_name = Peers::new();
        let mut by_address = BTreeMap::new();
        for (index, peer) in peers.iter().enumerate() {
            let at = path.index(index);
            self.name(at.key("name"), &peer.name);
            if by_name.insert(peer.name.as_str(), peer.address).is_some() {
                self.report(
                    at.key("name"),
                    format!("duplicate peer name `{}`", peer.name),
                );
            }
            if let Some(first) = by_address.insert(peer.address, &peer.name) {
                self.report(
                    at.key("address"),
                    format!("{} is already the address of `{first}`", peer.address),
                );
            }
            if peer.labels.keys().any(String::is_empty) {
                self.report(at.key("labels"), "label names must not be empty".to_owned());
            }
        }
        by_name
    }

    fn absolute(&mut self, path: FieldPath, value: &std::path::Path) {
        if !value.is_absolute() {
            self.report(
                path,
                format!("`{}` must be an absolute path", value.display()),
            );
        }
    }

    fn gossip(&mut self, path: FieldPath, gossip: &GossipConfig) {
        self.within([
            (bounds::PROBE_INTERVAL, gossip.probe_interval_ms),
            (bounds::PROBE_TIMEOUT, gossip.probe_timeout_ms),
            (bounds::SUSPICION, gossip.suspicion_ms),
            (bounds::JOIN_TIMEOUT, gossip.join_timeout_ms),
        ]);
        if gossip.probe_timeout_ms >= gossip.probe_interval_ms {
            self.report(
                path.key("probeTimeoutMs"),
                format!(
                    "{} ms must be shorter than probeIntervalMs ({} ms)",
                    gossip.probe_timeout_ms, gossip.probe_interval_ms
                ),
            );
        }
        self.absolute(path.key("keyFile"), &gossip.key_file);
    }

    fn capacities(&mut self, capacities: &Capacities) {
        self.within([
            (bounds::SERVICES, capacities.services),
            (bounds::SERVICE_PORTS, capacities.service_ports),
            (bounds::VIPS, capacities.vips),
            (bounds::BACKENDS, capacities.backends),
            (bounds::FLOWS, capacities.flows),
            (bounds::REPLY_FLOWS, capacities.reply_flows),
        ]);
    }

    /// Reports each value outside its bound, at the bound's key (the node settings are
    /// at the top of either file).
    fn within<const N: usize>(&mut self, entries: [(Bound, u32); N]) {
        for (bound, value) in entries {
            if let Some(problem) = bound.problem(value) {
                let path = bound
                    .key
                    .split('.')
                    .fold(FieldPath::default(), |path, key| path.key(key));
                self.report(path, problem);
            }
        }
    }

    fn endpoints(
        &mut self,
        path: FieldPath,
        endpoints: &[EndpointConfig],
        peers: &Peers<'_>,
        vips: &Vips<'_>,
    ) {
        let mut addresses = BTreeSet::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let at = path.index(index);
            if !addresses.insert(endpoint.address) {
                self.report(
                    at.key("address"),
                    format!("duplicate endpoint address {}", endpoint.address),
                );
            }
            self.endpoint_address(at.key("address"), endpoint, peers, vips);
            self.node_address(at.key("node"), &endpoint.node, peers);
        }
    }

    /// An endpoint's address must not lead back to a VIP, nor be another node than the
    /// one it runs on. Its own node's address is fine: a service on the host network.
    fn endpoint_address(
        &mut self,
        path: FieldPath,
        endpoint: &EndpointConfig,
        peers: &Peers<'_>,
        vips: &Vips<'_>,
    ) {
        let address = endpoint.address;
        if let Some(service) = vips.get(&address) {
            self.report(
                path,
                format!(
                    "{address} is the VIP of service `{service}`: its traffic would be sent back to the VIP in a loop"
                ),
            );
            return;
        }
        let node = peers.iter().find(|(_, peer)| **peer == address);
        if let Some((node, _)) = node.filter(|(node, _)| **node != endpoint.node) {
            self.report(
                path,
                format!(
                    "{address} is the address of node `{node}`, but the endpoint runs on `{}`",
                    endpoint.node
                ),
            );
        }
    }
}

/// What services have claimed so far, across the whole file.
#[derive(Default)]
struct Claims<'a> {
    names: BTreeSet<&'a str>,
    /// `(vip, port, protocol)` -> path of the first port entry using it.
    ports: BTreeMap<(Ipv4Addr, u16, Protocol), FieldPath>,
    /// VIP -> its owner as first named.
    owners: BTreeMap<Ipv4Addr, &'a str>,
}

impl Checker {
    fn service<'a>(
        &mut self,
        at: FieldPath,
        service: &'a ServiceConfig,
        peers: &Peers<'_>,
        vips: &Vips<'_>,
        claims: &mut Claims<'a>,
    ) {
        self.name(at.key("name"), &service.name);
        if !claims.names.insert(&service.name) {
            self.report(
                at.key("name"),
                format!("duplicate service name `{}`", service.name),
            );
        }
        if let Some((node, _)) = peers.iter().find(|(_, address)| **address == service.vip) {
            self.report(
                at.key("vip"),
                format!(
                    "{} is the address of node `{node}`; a VIP must be an address of its own",
                    service.vip
                ),
            );
        }
        if let Some(owner) = &service.owner {
            self.owner(at.key("owner"), service.vip, owner, peers, claims);
        }
        if service.ports.is_empty() {
            self.report(
                at.key("ports"),
                "a service needs at least one port".to_owned(),
            );
        }
        for (index, port) in service.ports.iter().enumerate() {
            let path = at.key("ports").index(index);
            match claims.ports.entry((service.vip, port.port, port.protocol)) {
                Entry::Vacant(vacant) => {
                    vacant.insert(path);
                }
                Entry::Occupied(first) => {
                    let message = format!(
                        "{}:{}/{} is already used by {}",
                        service.vip,
                        port.port,
                        port.protocol,
                        first.get()
                    );
                    self.report(path, message);
                }
            }
        }
        self.endpoints(at.key("endpoints"), &service.endpoints, peers, vips);
    }

    fn owner<'a>(
        &mut self,
        path: FieldPath,
        vip: Ipv4Addr,
        owner: &'a str,
        peers: &Peers<'_>,
        claims: &mut Claims<'a>,
    ) {
        if self.node_address(path.clone(), owner, peers).is_none() {
            return;
        }
        match claims.owners.entry(vip) {
            Entry::Vacant(vacant) => {
                vacant.insert(owner);
            }
            Entry::Occupied(first) if *first.get() != owner => {
                let message = format!(
                    "VIP {vip} is owned by `{}` in an earlier service; services sharing a VIP share its owner",
                    first.get()
                );
                self.report(path, message);
            }
            Entry::Occupied(_) => {}
        }
    }
}

impl Checker {
    /// The keys every settings file of the agent shares, standalone or Kubernetes.
    fn node_settings(&mut self, root: &FieldPath, settings: &NodeSettings) {
        if let Some(interface) = &settings.interface {
            self.interface(root.key("interface"), interface);
        }
        if let Some(interface) = &settings.arp.interface {
            self.interface(root.key("arp").key("interface"), interface);
        }
        if let Some(gossip) = &settings.gossip {
            self.gossip(root.key("gossip"), gossip);
        }
        self.absolute(root.key("pinDir"), &settings.pin_dir);
        self.absolute(root.key("api").key("socket"), &settings.api.socket);
        let arp = &settings.arp;
        self.within([
            (bounds::ICMP_RATE, settings.icmp_rate_per_second),
            (bounds::GARP_REPEATS, arp.garp_repeats),
            (bounds::GARP_INTERVAL, arp.garp_interval_ms),
            (bounds::REFRESH, arp.refresh_seconds),
        ]);
        if let Some(mtu) = settings.mtu {
            self.within([(bounds::MTU, mtu)]);
        }
        self.capacities(&settings.capacities);
    }
}

/// Every problem of the node-local keys of a settings file.
pub fn validate_node_settings(settings: &NodeSettings) -> Result<(), Vec<Problem>> {
    let mut checker = Checker::default();
    checker.node_settings(&FieldPath::default(), settings);
    if checker.problems.is_empty() {
        Ok(())
    } else {
        Err(checker.problems)
    }
}

/// Every problem of `config`, or this node as the peers describe it.
pub fn validate(config: &Config) -> Result<Node, Vec<Problem>> {
    let root = FieldPath::default();
    let mut checker = Checker::default();
    checker.name(root.key("node"), &config.node);
    checker.node_settings(&root, &config.node_settings);
    let peers = checker.peers(root.key("peers"), &config.peers);
    let node = checker
        .node_address(root.key("node"), &config.node, &peers)
        .map(|address| Node {
            name: config.node.clone(),
            address,
        });
    let mut vips = Vips::new();
    for service in &config.services {
        vips.entry(service.vip).or_insert(&service.name);
    }
    let mut claims = Claims::default();
    for (index, service) in config.services.iter().enumerate() {
        checker.service(
            root.key("services").index(index),
            service,
            &peers,
            &vips,
            &mut claims,
        );
    }
    match node {
        Some(node) if checker.problems.is_empty() => Ok(node),
        _ => Err(checker.problems),
    }
}
