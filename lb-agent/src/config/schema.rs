//! The standalone file's own keys: the cluster it describes (nodes, services,
//! endpoints). The node-local keys beside them are [`NodeSettings`].

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Deserializer, de::Error as _};

use super::node::NodeSettings;
use crate::model::{Protocol, TrafficPolicy};

/// The top level of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `node` (required): the name of the node this agent runs on. It must be the `name`
    /// of one of `peers`; the agent takes its own address from there.
    pub node: String,
    /// `peers` (required): every node of the cluster, this one included. Tunnelled
    /// traffic is accepted only from these addresses, and gossip only from these nodes.
    pub peers: Vec<PeerConfig>,
    /// `services` (default: none): the load-balanced services.
    pub services: Vec<ServiceConfig>,
    /// The keys the file shares with the Kubernetes settings file: `interface`, `mtu`,
    /// `icmpRatePerSecond`, `capacities`, `gossip`, `arp`, `api` and `pinDir`.
    pub node_settings: NodeSettings,
}

/// The keys of [`Config`] that are the standalone file's own, as serde reads them (each
/// documented there).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OwnKeys {
    node: String,
    peers: Vec<PeerConfig>,
    #[serde(default)]
    services: Vec<ServiceConfig>,
}

impl OwnKeys {
    pub(super) fn with(self, node_settings: NodeSettings) -> Config {
        Config {
            node: self.node,
            peers: self.peers,
            services: self.services,
            node_settings,
        }
    }
}

/// One entry of `peers`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerConfig {
    /// `name` (required): the node's name, unique among peers (letters, digits, `-`,
    /// `.`, `_`). Endpoints and `node` refer to it; it also seeds the node's place in
    /// the consistent-hash tables, so renaming a node moves some flows.
    pub name: String,
    /// `address` (required): the node's IPv4 address on the LAN. Gossip binds to it.
    #[serde(deserialize_with = "unicast")]
    pub address: Ipv4Addr,
    /// `labels` (default: none): node labels, as Kubernetes would have them. A node
    /// labelled `node.kubernetes.io/exclude-from-external-load-balancers` (any value)
    /// never owns a VIP.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `services`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceConfig {
    /// `name` (required): unique among services, e.g. `web` or `default/traefik`
    /// (letters, digits, `-`, `.`, `_`, `/`).
    pub name: String,
    /// `vip` (required): the IPv4 address clients connect to. Services may share a VIP
    /// on different ports. It must not be a node's address and must not be configured
    /// on any interface: the agent handles it in XDP.
    #[serde(deserialize_with = "unicast")]
    pub vip: Ipv4Addr,
    /// `owner` (optional): the preferred owner of the VIP, the node that answers ARP for
    /// it whenever it is eligible (alive, not excluded, and for `Local` services with a
    /// ready endpoint); otherwise the election picks one. Must be one of `peers`;
    /// services sharing a VIP must name the same owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// `ports` (required, at least one): what the service listens on. A
    /// `(vip, port, protocol)` may appear only once in the whole file.
    pub ports: Vec<PortConfig>,
    /// `endpoints` (default: none): the pods (or any hosts) that serve. Without ready
    /// endpoints, packets to the service's ports are dropped.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// `externalTrafficPolicy` (`Cluster` or `Local`, default `Cluster`): `Cluster`
    /// spreads flows over every node's ready endpoints, tunnelling to other nodes;
    /// `Local` serves only from endpoints on the node that received the packet. The
    /// client's source address is preserved either way.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// `dropUnknownPorts` (default `false`): drop packets to ports of the VIP that no
    /// service lists, instead of passing them to the node's own network stack. For a
    /// VIP shared by several services, one asking to drop is enough.
    #[serde(default)]
    pub drop_unknown_ports: bool,
}

/// One entry of a service's `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortConfig {
    /// `port` (required, 1 to 65535): the port on the VIP.
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// `protocol` (`TCP` or `UDP`, default `TCP`).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// `targetPort` (1 to 65535, default: same as `port`): the port the endpoints listen
    /// on.
    #[serde(default, deserialize_with = "optional_port")]
    pub target_port: Option<u16>,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

/// One entry of a service's `endpoints`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointConfig {
    /// `address` (required): the endpoint's IPv4 address (a pod IP, or a host address for
    /// host-network services), unique within the service.
    #[serde(deserialize_with = "unicast")]
    pub address: Ipv4Addr,
    /// `node` (required): the peer the endpoint runs on; traffic for it is tunnelled
    /// there.
    pub node: String,
    /// `ready` (default `true`): only ready endpoints get new flows.
    #[serde(default = "default_true")]
    pub ready: bool,
    /// `terminating` (default `false`): the endpoint is shutting down. It gets no new
    /// flows, but flows it already serves keep reaching it until it is removed.
    #[serde(default)]
    pub terminating: bool,
}

fn default_true() -> bool {
    true
}

fn unicast<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Addr, D::Error> {
    let text = String::deserialize(deserializer)?;
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| D::Error::custom(format!("`{text}` is not an IPv4 address")))?;
    crate::model::unicast::unicast(address).map_err(|problem| D::Error::custom(problem.to_string()))
}

pub(super) fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(D::Error::custom(format!(
            "`{text}` is not a port number (1 to 65535)"
        ))),
    }
}

fn optional_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    port(deserializer).map(Some)
}
