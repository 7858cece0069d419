//! The standalone configuration file: static nodes, services and endpoints for running
//! the agent without Kubernetes (Proxmox or VM setups, the lab, tests).
//!
//! ```yaml
//! node: node1                 # this node; one of the peers
//! interface: eth0             # LAN interface the programs attach to
//! peers:                      # every node, this one included
//!   - { name: node1, address: 10.0.0.11 }
//!   - { name: node2, address: 10.0.0.12 }
//! services:
//!   - name: web
//!     vip: 172.16.200.20
//!     owner: node1
//!     ports:
//!       - { port: 80, protocol: TCP, targetPort: 8080 }
//!       - { port: 443, protocol: TCP, targetPort: 8443 }
//!     endpoints:
//!       - { address: 10.42.0.7, node: node1 }
//!       - { address: 10.42.1.5, node: node2 }
//!       - { address: 10.42.1.6, node: node2 }
//!   - name: dns
//!     vip: 172.16.200.53
//!     owner: node1
//!     ports:
//!       - { port: 53, protocol: UDP, targetPort: 5353 }
//!       - { port: 53, protocol: TCP, targetPort: 5353 }
//!     endpoints:
//!       - { address: 10.42.1.9, node: node2 }
//! ```
//!
//! Every key is documented on the struct field that holds it ([`Config`],
//! [`PeerConfig`], [`ServiceConfig`], [`PortConfig`], [`EndpointConfig`],
//! [`CapacitiesConfig`]). Keys are spelled as in Kubernetes (camelCase); unknown keys are
//! errors, so a typo never silently falls back to a default. To use a default, leave the
//! key out (`~`/`null` is not accepted as "default").
//!
//! Every node gets the same file except for `node` (and possibly `interface` and `mtu`);
//! agents given the same peers, services and endpoints compute the same tables.
//!
//! [`parse`] rejects an invalid file before anything touches the kernel, with the line
//! and the field path of each problem, e.g.
//! `line 21, column 31: services[1].ports[0].protocol: unknown variant `SCTP`, expected `TCP` or `UDP``
//! for the example above with `protocol: SCTP` on its line 21.

mod locate;
mod validate;

use std::{collections::BTreeMap, fmt, io, net::Ipv4Addr, path::Path};

use marked_yaml::{LoadError, LoaderOptions, Marker};
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{
    dataplane::loader::Capacities,
    model::{Endpoint, Inputs, Node, Protocol, Service, ServicePort, TrafficPolicy},
};

/// The top level of the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// `node` (required): the name of the node this agent runs on. It must be the `name`
    /// of one of `peers`; the agent takes its own address from there.
    pub node: String,
    /// `interface` (required): the LAN interface VIP traffic arrives on, e.g. `eth0`,
    /// `enp1s0` or a bridge such as `vmbr0`. The XDP program and the TC reply program
    /// are attached to it.
    pub interface: String,
    /// `peers` (required): every node of the cluster, this one included. Tunnelled
    /// traffic is accepted only from these addresses.
    pub peers: Vec<PeerConfig>,
    /// `services` (default: none): the load-balanced services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// `mtu` (default: the interface's MTU, read from `/sys/class/net/<interface>/mtu`
    /// at start; 576 to 65535): the LAN MTU. Oversized packets to a VIP get ICMP
    /// "fragmentation needed", and TCP MSS is clamped so tunnelled segments still fit.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `icmpRatePerSecond` (default 100): how many ICMP messages (ping replies to a VIP,
    /// "fragmentation needed") the data path may send per second and CPU. `0` disables
    /// them.
    #[serde(default = "default_icmp_rate")]
    pub icmp_rate_per_second: u32,
    /// `capacities` (default: every entry at its default): sizes of the kernel tables.
    #[serde(default)]
    pub capacities: CapacitiesConfig,
}

fn default_icmp_rate() -> u32 {
    100
}

/// One entry of `peers`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerConfig {
    /// `name` (required): the node's name, unique among peers (letters, digits, `-`,
    /// `.`, `_`). Endpoints and `node` refer to it; it also seeds the node's place in
    /// the consistent-hash tables, so renaming a node moves some flows.
    pub name: String,
    /// `address` (required): the node's IPv4 address on the LAN.
    #[serde(deserialize_with = "unicast")]
    pub address: Ipv4Addr,
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
    /// `owner` (optional): the node clients are pointed at, the one that will answer ARP
    /// for the VIP. Must be one of `peers`; services sharing a VIP must name the same
    /// owner. Until ARP and election arrive, every node forwards any VIP packet it
    /// receives, so this is informational.
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

/// `capacities`: maximum entries of the kernel tables, fixed when the programs are
/// loaded. Each key is optional and at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CapacitiesConfig {
    /// `services` (default 256): services with their own consistent-hash tables. Each
    /// costs about 80 KiB of kernel memory (plus 8 spare slots for table switches).
    pub services: u32,
    /// `servicePorts` (default 1024): `(vip, port, protocol)` entries over all services.
    pub service_ports: u32,
    /// `vips` (default 256): distinct VIP addresses.
    pub vips: u32,
    /// `backends` (default 4096): backend nodes plus this node's endpoints.
    pub backends: u32,
    /// `flows` (default 65536): cached client flows (least recently used ones are
    /// evicted; an evicted flow is hashed again and normally lands on the same backend).
    pub flows: u32,
    /// `replyFlows` (default 65536): connections whose replies this node rewrites back to
    /// the VIP (least recently used ones are evicted).
    pub reply_flows: u32,
}

impl Default for CapacitiesConfig {
    fn default() -> Self {
        let defaults = Capacities::default();
        Self {
            services: defaults.services,
            service_ports: defaults.service_ports,
            vips: defaults.vips,
            backends: defaults.backends,
            flows: defaults.flows,
            reply_flows: defaults.reply_flows,
        }
    }
}

impl From<CapacitiesConfig> for Capacities {
    fn from(config: CapacitiesConfig) -> Self {
        Self {
            services: config.services,
            service_ports: config.service_ports,
            vips: config.vips,
            backends: config.backends,
            flows: config.flows,
            reply_flows: config.reply_flows,
        }
    }
}

fn unicast<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ipv4Addr, D::Error> {
    let text = String::deserialize(deserializer)?;
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| D::Error::custom(format!("`{text}` is not an IPv4 address")))?;
    let unusable = match address.octets()[0] {
        0 => Some("in 0.0.0.0/8"),
        127 => Some("a loopback address"),
        224..=239 => Some("a multicast address"),
        240.. => Some("reserved or broadcast"),
        _ => None,
    };
    match unusable {
        Some(why) => Err(D::Error::custom(format!(
            "`{address}` is {why}; expected a unicast IPv4 address"
        ))),
        None => Ok(address),
    }
}

fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
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

/// Where in the file a problem is (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl From<&Marker> for Location {
    fn from(marker: &Marker) -> Self {
        Self {
            line: marker.line(),
            column: marker.column(),
        }
    }
}

/// One problem in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub location: Option<Location>,
    /// Path of the offending field, e.g. `services[1].ports[0].protocol`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(Location { line, column }) = self.location {
            write!(f, "line {line}, column {column}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn lines(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the file: {0}")]
    Read(#[source] io::Error),
    /// Not well-formed YAML, or empty.
    #[error("{0}")]
    Syntax(Issue),
    /// A missing, unknown or mistyped key or value.
    #[error("{0}")]
    Schema(Issue),
    /// Well-typed but inconsistent: every problem found, in file order.
    #[error("{}", lines(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read(_) => "read",
            Self::Syntax(_) => "syntax",
            Self::Schema(_) => "schema",
            Self::Invalid(_) => "invalid",
        }
    }

    /// The problems found in the file (none for a read error).
    pub fn issues(&self) -> &[Issue] {
        match self {
            Self::Read(_) => &[],
            Self::Syntax(issue) | Self::Schema(issue) => std::slice::from_ref(issue),
            Self::Invalid(issues) => issues,
        }
    }
}

fn load_issue(error: &LoadError) -> Issue {
    let (marker, message) = match error {
        LoadError::ScanError(marker, scan) => {
            (Some(marker), format!("YAML syntax error: {}", scan.info()))
        }
        LoadError::DuplicateKey(keys) => (
            keys.key.span().start(),
            format!("duplicate key `{}`", keys.key.as_str()),
        ),
        LoadError::TopLevelMustBeMapping(marker) | LoadError::TopLevelMustBeSequence(marker) => (
            Some(marker),
            "the file must be a mapping of keys such as `node:`".to_owned(),
        ),
        LoadError::UnexpectedAnchor(marker) => {
            (Some(marker), "YAML anchors are not supported".to_owned())
        }
        LoadError::MappingKeyMustBeScalar(marker) => {
            (Some(marker), "keys must be plain names".to_owned())
        }
        LoadError::UnexpectedTag(marker) => {
            (Some(marker), "YAML tags are not supported".to_owned())
        }
    };
    Issue {
        location: marker.map(Location::from),
        field: None,
        message,
    }
}

fn schema_issue(error: &marked_yaml::FromNodeError) -> Issue {
    use marked_yaml::Error;
    let message = match &**error {
        Error::IntegerParseFailure(cause, _) => format!("expected a whole number ({cause})"),
        Error::NotBoolean(_) => "expected `true` or `false`".to_owned(),
        other => other.to_string(),
    };
    Issue {
        location: error.start_mark().as_ref().map(Location::from),
        field: error.path().map(str::to_owned),
        message,
    }
}

/// A file that passed every check, and the node it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standalone {
    config: Config,
    node: Node,
}

/// Parses and validates a configuration file's text.
pub fn parse(text: &str) -> Result<Standalone, ConfigError> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let document = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| ConfigError::Syntax(load_issue(&error)))?;
    if document.as_mapping().is_some_and(|top| top.is_empty()) {
        return Err(ConfigError::Syntax(Issue {
            location: Some(Location { line: 1, column: 1 }),
            field: None,
            message: "the file is empty; it needs at least `node`, `interface` and `peers`"
                .to_owned(),
        }));
    }
    let config: Config = marked_yaml::from_node(&document)
        .map_err(|error| ConfigError::Schema(schema_issue(&error)))?;
    match validate::validate(&config) {
        Ok(node) => Ok(Standalone { config, node }),
        Err(problems) => {
            let mut issues: Vec<Issue> = problems
                .into_iter()
                .map(|problem| problem.locate(&document))
                .collect();
            issues.sort_by_key(|issue| issue.location);
            Err(ConfigError::Invalid(issues))
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Standalone, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
    parse(&text)
}

impl Standalone {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node, with its address from `peers`.
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn capacities(&self) -> Capacities {
        self.config.capacities.into()
    }

    /// The configured owner of each VIP that names one.
    pub fn owners(&self) -> BTreeMap<Ipv4Addr, &str> {
        self.config
            .services
            .iter()
            .filter_map(|service| Some((service.vip, service.owner.as_deref()?)))
            .collect()
    }

    /// The core's inputs, with the interface MTU the caller resolved (`mtu` from the
    /// file if set, else the interface's).
    pub fn inputs(&self, mtu: u32) -> Inputs {
        Inputs {
            node: self.node.clone(),
            peers: self
                .config
                .peers
                .iter()
                .map(|peer| Node {
                    name: peer.name.clone(),
                    address: peer.address,
                })
                .collect(),
            services: self
                .config
                .services
                .iter()
                .map(ServiceConfig::service)
                .collect(),
            mtu,
            icmp_rate_per_sec: self.config.icmp_rate_per_second,
        }
    }
}

impl ServiceConfig {
    fn service(&self) -> Service {
        Service {
            name: self.name.clone(),
            vip: self.vip,
            ports: self.ports.iter().map(PortConfig::service_port).collect(),
            endpoints: self
                .endpoints
                .iter()
                .map(EndpointConfig::endpoint)
                .collect(),
            traffic_policy: self.external_traffic_policy,
            drop_unknown_ports: self.drop_unknown_ports,
        }
    }
}

impl PortConfig {
    fn service_port(&self) -> ServicePort {
        ServicePort {
            port: self.port,
            protocol: self.protocol,
            target_port: self.target_port.unwrap_or(self.port),
        }
    }
}

impl EndpointConfig {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            node: self.node.clone(),
            ready: self.ready,
            terminating: self.terminating,
        }
    }
}

#[cfg(test)]
mod tests;
