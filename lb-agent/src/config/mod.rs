//! The standalone configuration file: static nodes, services and endpoints for running
//! the agent without Kubernetes (Proxmox or VM setups, the lab, tests).
//!
//! ```yaml
//! node: node1                 # this node; one of the peers
//! interface: eth0             # LAN interface (default: the default route's)
//! peers:                      # every node, this one included
//!   - { name: node1, address: 10.0.0.11 }
//!   - { name: node2, address: 10.0.0.12 }
//! gossip:                     # membership and failover (see `GossipConfig`)
//!   keyFile: /etc/xdplb/gossip.key
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
//! [`CapacitiesConfig`], [`GossipConfig`], [`ArpConfig`], [`ApiConfig`]). Keys are spelled as in Kubernetes (camelCase); unknown keys are
//! errors, so a typo never silently falls back to a default. To use a default, leave the
//! key out (`~`/`null` is not accepted as "default").
//!
//! Every node gets the same file except for `node` (and possibly `interface`, `mtu`,
//! `pinDir` and `api`); agents given the same peers, services and endpoints compute the
//! same tables and elect the same VIP owners.
//!
//! The running agent re-reads the file on SIGHUP and when it changes on disk; a file
//! that fails these checks is logged and ignored, and the agent keeps running what it
//! has. `interface`, `pinDir`, `capacities`, `gossip`, `arp` and `api` are read at start
//! only: changing them needs a restart (the agent says so in its log).
//!
//! [`parse`] rejects an invalid file before anything touches the kernel, with the line
//! and the field path of each problem, e.g.
//! `line 21, column 31: services[1].ports[0].protocol: unknown variant `SCTP`, expected `TCP` or `UDP``
//! for the example above with `protocol: SCTP` on its line 21.

mod locate;
mod validate;

use std::{
    collections::BTreeMap,
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use marked_yaml::{LoadError, LoaderOptions, Marker};
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{
    model::capacities::Capacities,
    model::{Endpoint, Inputs, Node, Protocol, Service, ServicePort, TrafficPolicy},
};

/// The top level of the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// `node` (required): the name of the node this agent runs on. It must be the `name`
    /// of one of `peers`; the agent takes its own address from there.
    pub node: String,
    /// `interface` (default: the interface of the IPv4 default route): the LAN interface
    /// VIP traffic arrives on, e.g. `eth0`, `enp1s0` or a bridge such as `vmbr0`. The XDP
    /// program and the TC reply program are attached to it, and ARP is announced on it
    /// unless `arp.interface` names another. Bridge or bond members, NOARP links and CNI
    /// interfaces are refused, configured or not.
    #[serde(default)]
    pub interface: Option<String>,
    /// `peers` (required): every node of the cluster, this one included. Tunnelled
    /// traffic is accepted only from these addresses, and gossip only from these nodes.
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
    /// They are fixed when the maps are created: a restarted agent refuses different
    /// capacities than its pinned maps have, and `lb-agent cleanup` (which drops every
    /// cached flow) is needed before a change.
    #[serde(default)]
    pub capacities: CapacitiesConfig,
    /// `gossip` (default: none): membership by authenticated SWIM gossip, which makes
    /// VIPs fail over. Without it every peer is taken as alive forever (static
    /// membership): VIP owners never change, which suits a single node or a test.
    #[serde(default)]
    pub gossip: Option<GossipConfig>,
    /// `arp` (default: every entry at its default): announcing owned VIPs.
    #[serde(default)]
    pub arp: ArpConfig,
    /// `api` (default: every entry at its default): the local API and metrics.
    #[serde(default)]
    pub api: ApiConfig,
    /// `pinDir` (default `/sys/fs/bpf/xdplb`): where maps and program links are pinned
    /// (on a BPF filesystem), so a restarted or upgraded agent adopts them without
    /// dropping traffic. Agents sharing a host (a lab) need one each. If the default's
    /// `/sys/fs/bpf` is not a BPF filesystem yet, the agent mounts one there.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
}

pub(crate) fn default_icmp_rate() -> u32 {
    100
}

/// Where maps and links are pinned unless `pinDir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdplb";

pub(crate) fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

/// The keys the standalone file shares with the Kubernetes mode's settings, borrowed
/// from either for the checks they share.
pub struct NodeLocal<'a> {
    pub interface: Option<&'a str>,
    pub mtu: Option<u32>,
    pub capacities: &'a CapacitiesConfig,
    pub gossip: Option<&'a GossipConfig>,
    pub arp: &'a ArpConfig,
    pub api: &'a ApiConfig,
    pub pin_dir: &'a Path,
}

/// A settings file with the node-local keys.
pub trait HasNodeLocal {
    fn node_local(&self) -> NodeLocal<'_>;
}

/// Implements [`HasNodeLocal`] for a settings struct with the node-local fields under
/// their standalone names.
macro_rules! impl_node_local {
    ($settings:ty) => {
        impl $crate::config::HasNodeLocal for $settings {
            fn node_local(&self) -> $crate::config::NodeLocal<'_> {
                $crate::config::NodeLocal {
                    interface: self.interface.as_deref(),
                    mtu: self.mtu,
                    capacities: &self.capacities,
                    gossip: self.gossip.as_ref(),
                    arp: &self.arp,
                    api: &self.api,
                    pin_dir: &self.pin_dir,
                }
            }
        }
    };
}
pub(crate) use impl_node_local;

impl_node_local!(Config);

/// `gossip`: SWIM membership over UDP on the nodes' LAN addresses. Every datagram is
/// authenticated with HMAC-SHA256 under a key all nodes share, and replays are refused.
///
/// The defaults detect a failed node in about half a second and at worst
/// `2(N−1)·probeIntervalMs + suspicionMs + 100 ms` for `N` nodes (800 ms for three);
/// see [`crate::membership`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GossipConfig {
    /// `port` (default 7947, beside MetalLB's 7946): the UDP port on every node.
    #[serde(default = "default_gossip_port", deserialize_with = "port")]
    pub port: u16,
    /// `keyFile` (required): a file holding the shared key, at least 16 bytes (trailing
    /// whitespace ignored), the same on every node, e.g. made with
    /// `head -c 32 /dev/urandom | base64`. Keep it readable by root only.
    pub key_file: PathBuf,
    /// `probeIntervalMs` (default 100): each node probes one peer this often.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u32,
    /// `probeTimeoutMs` (default 40, below `probeIntervalMs`): how long to wait for a
    /// probe's answer before asking other nodes to probe too; above the LAN's round trip.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_ms: u32,
    /// `suspicionMs` (default 300): how long a node that missed a probe has to refute
    /// before it is declared down and its VIPs move.
    #[serde(default = "default_suspicion")]
    pub suspicion_ms: u32,
    /// `joinTimeoutMs` (default 1000): how long a starting agent waits to hear from every
    /// peer before it claims VIPs on what it knows.
    #[serde(default = "default_join_timeout")]
    pub join_timeout_ms: u32,
}

fn default_gossip_port() -> u16 {
    7947
}

fn default_probe_interval() -> u32 {
    100
}

fn default_probe_timeout() -> u32 {
    40
}

fn default_suspicion() -> u32 {
    300
}

fn default_join_timeout() -> u32 {
    1000
}

impl GossipConfig {
    pub fn timing(&self) -> crate::membership::Timing {
        let ms = |value: u32| Duration::from_millis(u64::from(value));
        crate::membership::Timing {
            probe_interval: ms(self.probe_interval_ms),
            probe_timeout: ms(self.probe_timeout_ms),
            suspicion: ms(self.suspicion_ms),
            join_timeout: ms(self.join_timeout_ms),
            ..crate::membership::Timing::default()
        }
    }
}

/// `arp`: answering ARP for the VIPs this node owns, and gratuitous ARP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ArpConfig {
    /// `interface` (default: the top-level `interface`): where ARP is answered.
    pub interface: Option<String>,
    /// `garpRepeats` (default 3): gratuitous ARP rounds after the first one when this
    /// node takes a VIP over.
    pub garp_repeats: u32,
    /// `garpIntervalMs` (default 500): time between those rounds.
    pub garp_interval_ms: u32,
    /// `refreshSeconds` (default 60, `0` turns it off): re-announce every owned VIP this
    /// often. With direct server return the owner rarely sends frames itself, so
    /// switches would otherwise age its port out and flood the VIP's traffic.
    pub refresh_seconds: u32,
}

impl ArpConfig {
    /// Gratuitous ARP timing.
    pub fn settings(&self) -> crate::arp::Settings {
        crate::arp::Settings {
            garp_repeats: self.garp_repeats,
            garp_interval: Duration::from_millis(u64::from(self.garp_interval_ms)),
            refresh: (self.refresh_seconds > 0)
                .then(|| Duration::from_secs(u64::from(self.refresh_seconds))),
        }
    }
}

impl Default for ArpConfig {
    fn default() -> Self {
        Self {
            interface: None,
            garp_repeats: 3,
            garp_interval_ms: 500,
            refresh_seconds: 60,
        }
    }
}

/// Where the local API listens unless `api.socket` says otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/xdplb/agent.sock";
/// Where metrics and health checks are served unless `api.listen` says otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9477";

/// `api`: the local status API (`lbctl`) and the HTTP endpoint for `/metrics`,
/// `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ApiConfig {
    /// `socket` (default `/run/xdplb/agent.sock`): the Unix socket `lbctl` talks to
    /// (mode 0600). Agents sharing a host need one each.
    pub socket: PathBuf,
    /// `listen` (default `0.0.0.0:9477`): address and port of the HTTP endpoint.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_API_SOCKET),
            listen: DEFAULT_METRICS_LISTEN.parse().expect("valid default"),
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
    crate::model::unicast::unicast(address).map_err(|problem| D::Error::custom(problem.to_string()))
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

fn socket_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!(
            "`{text}` is not an address and port such as `0.0.0.0:9477`"
        ))
    })
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
    let document = document(text)?;
    if document.as_mapping().is_some_and(|top| top.is_empty()) {
        return Err(ConfigError::Syntax(Issue {
            location: Some(Location { line: 1, column: 1 }),
            field: None,
            message: "the file is empty; it needs at least `node` and `peers`".to_owned(),
        }));
    }
    let config: Config = typed(&document)?;
    validate::validate(&config)
        .map(|node| Standalone { config, node })
        .map_err(|problems| invalid(problems, &document))
}

/// `problems` placed in `document`, in file order.
fn invalid(problems: Vec<locate::Problem>, document: &marked_yaml::Node) -> ConfigError {
    let mut issues: Vec<Issue> = problems
        .into_iter()
        .map(|problem| problem.locate(document))
        .collect();
    issues.sort_by_key(|issue| issue.location);
    ConfigError::Invalid(issues)
}

fn document(text: &str) -> Result<marked_yaml::Node, ConfigError> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let document = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| ConfigError::Syntax(load_issue(&error)))?;
    let lines: Vec<&str> = text.lines().collect();
    match first_null(&document, "", &lines) {
        Some(issue) => Err(ConfigError::Syntax(issue)),
        None => Ok(document),
    }
}

/// The first YAML null (`~` or `null`, unquoted) in `node`, whose field path is `path`;
/// `lines` is the text it was parsed from. The loader keeps scalars as text, so a null
/// would otherwise reach a text setting as the name `~` (e.g. an interface) instead of
/// meaning "the default", which it does not.
fn first_null(node: &marked_yaml::Node, path: &str, lines: &[&str]) -> Option<Issue> {
    match node {
        marked_yaml::Node::Scalar(scalar) => {
            let start = scalar.span().start()?;
            let spelled_null = matches!(scalar.as_str(), "~" | "null" | "Null" | "NULL");
            (spelled_null && !quoted(lines, start)).then(|| Issue {
                location: Some(Location::from(start)),
                field: (!path.is_empty()).then(|| path.to_owned()),
                message: format!(
                    "`{}` is no value: leave the key out to take its default",
                    scalar.as_str()
                ),
            })
        }
        marked_yaml::Node::Mapping(mapping) => mapping.iter().find_map(|(key, value)| {
            let path = match path {
                "" => key.as_str().to_owned(),
                parent => format!("{parent}.{}", key.as_str()),
            };
            first_null(value, &path, lines)
        }),
        marked_yaml::Node::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| first_null(item, &format!("{path}[{index}]"), lines)),
    }
}

/// Whether the scalar starting at `start` (1-based line and column) opens with a quote.
fn quoted(lines: &[&str], start: &Marker) -> bool {
    lines
        .get(start.line().saturating_sub(1))
        .and_then(|line| line.chars().nth(start.column().saturating_sub(1)))
        .is_some_and(|first| first == '"' || first == '\'')
}

fn typed<T: serde::de::DeserializeOwned>(document: &marked_yaml::Node) -> Result<T, ConfigError> {
    marked_yaml::from_node(document).map_err(|error| ConfigError::Schema(schema_issue(&error)))
}

/// Parses another YAML file of the agent (the Kubernetes mode's settings) with this
/// file's checks of the node-local keys and its error reporting: the line, column and
/// field path of each problem.
pub fn parse_as<T: serde::de::DeserializeOwned + HasNodeLocal>(
    text: &str,
) -> Result<T, ConfigError> {
    let document = document(text)?;
    let settings: T = typed(&document)?;
    validate::validate_node_local(&settings.node_local())
        .map_err(|problems| invalid(problems, &document))?;
    Ok(settings)
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Standalone, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
    parse(&text)
}

/// [`load`] for a process that keeps running on the result: the same outcome, without
/// the parse's transient memory staying resident.
///
/// The parse builds a span tree of the whole file (for locating problems), about 20
/// times the file's size: ~65 MiB for 1,000 services x 50 endpoints. Freed, that memory
/// stays in the process whenever longer-lived allocations end up between its pieces,
/// as the configuration itself and everything computed after it do: the agent's resident
/// memory stayed at the parse's peak. So the parse runs on a thread of its own, whose
/// allocations the C allocator takes from an arena of that thread; the configuration is
/// copied on this thread, the thread's copy dropped, which leaves that arena with nothing
/// live, and the free memory is given back to the kernel.
pub fn load_apart(path: &Path) -> Result<Standalone, ConfigError> {
    let parsed = std::thread::scope(|scope| scope.spawn(|| load(path)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let kept = parsed.clone();
    drop(parsed);
    crate::heap::release_free_memory();
    Ok(kept)
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

    /// The configured LAN interface, if any.
    pub fn interface(&self) -> Option<&str> {
        self.config.interface.as_deref()
    }

    /// The interface ARP is announced on, if configured.
    pub fn arp_interface(&self) -> Option<&str> {
        self.config.arp.interface.as_deref().or(self.interface())
    }

    /// Gratuitous ARP timing.
    pub fn arp_settings(&self) -> crate::arp::Settings {
        self.config.arp.settings()
    }

    /// Labels of `node`, empty for an unknown node.
    pub fn labels(&self, node: &str) -> BTreeMap<String, String> {
        self.config
            .peers
            .iter()
            .find(|peer| peer.name == node)
            .map(|peer| peer.labels.clone())
            .unwrap_or_default()
    }

    /// The gossip peers (this node included): every node's address on the gossip port.
    pub fn gossip_peers(&self, port: u16) -> Vec<crate::membership::Peer> {
        self.config
            .peers
            .iter()
            .map(|peer| crate::membership::Peer {
                name: peer.name.clone(),
                addr: std::net::SocketAddrV4::new(peer.address, port),
            })
            .collect()
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
            down: std::collections::BTreeSet::new(),
        }
    }
}

/// Why a changed file cannot be applied without a restart.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadRefusal {
    #[error("`node` changed from {from} to {to}: restart the agent to apply the new file")]
    NodeRenamed { from: String, to: String },
    #[error(
        "this node's address changed from {from} to {to}: restart the agent to apply the new file"
    )]
    AddressChanged { from: Ipv4Addr, to: Ipv4Addr },
}

impl Standalone {
    /// `new` as the running agent can apply it: the settings read at start only are
    /// kept from `self`, and listed (by key) when `new` changes them. A new node name or
    /// address cannot be applied at all.
    pub fn reloaded(
        &self,
        new: Standalone,
    ) -> Result<(Standalone, Vec<&'static str>), ReloadRefusal> {
        if new.node.name != self.node.name {
            return Err(ReloadRefusal::NodeRenamed {
                from: self.node.name.clone(),
                to: new.node.name,
            });
        }
        if new.node.address != self.node.address {
            return Err(ReloadRefusal::AddressChanged {
                from: self.node.address,
                to: new.node.address,
            });
        }
        let (running, mut config) = (&self.config, new.config);
        let gossip_peers = |config: &Config| {
            config
                .peers
                .iter()
                .map(|peer| (peer.name.clone(), peer.address))
                .collect::<Vec<_>>()
        };
        let mut kept = Vec::new();
        if running.gossip.is_some() && gossip_peers(running) != gossip_peers(&config) {
            // The data path takes the new peers; the gossip keeps its list until then.
            kept.push("peers (gossip)");
        }
        let mut keep = |key: &'static str, differs: bool| {
            if differs {
                kept.push(key);
            }
        };
        keep("interface", config.interface != running.interface);
        keep("pinDir", config.pin_dir != running.pin_dir);
        keep("capacities", config.capacities != running.capacities);
        keep("gossip", config.gossip != running.gossip);
        keep("arp", config.arp != running.arp);
        keep("api", config.api != running.api);
        config.interface.clone_from(&running.interface);
        config.pin_dir.clone_from(&running.pin_dir);
        config.capacities = running.capacities;
        config.gossip.clone_from(&running.gossip);
        config.arp.clone_from(&running.arp);
        config.api.clone_from(&running.api);
        Ok((
            Standalone {
                config,
                node: new.node,
            },
            kept,
        ))
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
