//! The node-local keys: how the agent runs on this node. Both settings files have them
//! at their top level, beside keys of their own: the standalone file ([`super::Config`])
//! and the Kubernetes mode's settings file
//! ([`crate::sources::kubernetes::settings::KubernetesSettings`]). One type reads them
//! for both, so both take the same keys with the same defaults and checks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de::Error as _};

use super::schema::port;
use crate::{
    api::{http::DEFAULT_LISTEN, socket::DEFAULT_PATH},
    model::capacities::Capacities,
};

/// The node-local keys of a settings file.
///
/// Unknown keys are refused when the file is read ([`super::document`]), not by serde:
/// the mapping that holds these keys holds the file's own keys too.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    /// `interface` (default: the interface of the IPv4 default route): the LAN interface
    /// VIP traffic arrives on, e.g. `eth0`, `enp1s0` or a bridge such as `vmbr0`. The XDP
    /// program and the TC reply program are attached to it, and ARP is announced on it
    /// unless `arp.interface` names another. Bridge or bond members, NOARP links and CNI
    /// interfaces are refused, configured or not.
    #[serde(default)]
    pub interface: Option<String>,
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
    /// `capacities` (default: every entry at its default): sizes of the kernel tables
    /// (each key is documented on [`Capacities`]). A changed value takes effect at the
    /// next start: the pinned map's entries move into a map of the new size.
    #[serde(default)]
    pub capacities: Capacities,
    /// `gossip` (default: none): membership by authenticated SWIM gossip, which makes
    /// VIPs fail over. Without it every peer is taken as alive forever (static
    /// membership): VIP owners never change, which suits a single node or a test. In
    /// Kubernetes mode the peers are the cluster's Nodes at their InternalIP.
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

fn default_icmp_rate() -> u32 {
    100
}

/// Where maps and links are pinned unless `pinDir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdplb";

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

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
            socket: PathBuf::from(DEFAULT_PATH),
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
        }
    }
}

fn socket_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        D::Error::custom(format!(
            "`{text}` is not an address and port such as `0.0.0.0:9477`"
        ))
    })
}
