//! What the agent reports about itself through the local API ([`crate::api`]) and
//! `lbctl`: one serde data model shared by the agent (which serializes it) and `lbctl`
//! (which reads it back), and the [`StatusProvider`] trait the runtime implements.
//!
//! # Plugging the runtime in
//!
//! The runtime keeps what it already has (inputs, desired state, the kernel dataplane,
//! election results, gossip members) and implements [`StatusProvider`] by filling a
//! [`View`] from it; [`View`] computes everything else:
//!
//! ```ignore
//! use lb_agent::status::{AgentStatus, FlowList, ProviderError, StatusProvider, View};
//!
//! impl StatusProvider for Shared {
//!     fn status(&self) -> AgentStatus {
//!         let runtime = self.lock();
//!         runtime.view().status()
//!     }
//!     fn flows(&self, limit: usize) -> Result<FlowList, ProviderError> {
//!         self.lock().view().flows(limit)
//!     }
//!     fn explain(&self, client: SocketAddrV4, vip: SocketAddrV4, protocol: Protocol)
//!         -> Result<Explanation, ProviderError> {
//!         self.lock().view().explain(client, vip, protocol)
//!     }
//! }
//!
//! impl Runtime {
//!     fn view(&self) -> View<'_> {
//!         View {
//!             inputs: &self.inputs,
//!             state: &self.state,
//!             interface: &self.interface,
//!             xdp_mode: self.xdp_mode.as_deref(),           // e.g. "native", "generic"
//!             ready: self.attached && self.applied_once,
//!             maps: self.dataplane.as_ref().map(|d| d as &dyn MapsView), // KernelDataplane
//!             ownership: &self.ownership,                   // VIP -> owner and candidates
//!             members: MemberStatus::from_view(&self.membership.view().borrow()),
//!             arp: self.announcer.as_ref().map(|a| a.counters().into()),
//!             gossip: Some(self.membership.counters().as_ref().into()),
//!         }
//!     }
//! }
//! ```
//!
//! then hands `Arc<dyn StatusProvider>` to [`crate::api::socket::SocketServer::serve`] and
//! [`crate::api::http::HttpServer::serve`].

mod view;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::UNIX_EPOCH,
};

use lb_common::types::{BackendStats, VipStats};
use serde::{Deserialize, Serialize};

pub use view::{MapsView, View};

pub use crate::explain::Explanation;
use crate::{
    arp,
    dataplane::maps::MapsError,
    election::Liveness,
    membership,
    model::{Protocol, TrafficPolicy},
};

/// Everything `lbctl status` shows: this agent, its VIPs and the members it sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// This node's name.
    pub node: String,
    /// This node's LAN address.
    pub address: Ipv4Addr,
    /// The LAN interface the programs attach to.
    pub interface: String,
    /// How XDP is attached (`native`, `generic`), `None` while detached.
    pub xdp_mode: Option<String>,
    /// The data path is attached and the first desired state is applied.
    pub ready: bool,
    /// The agent's version.
    pub version: String,
    /// Every VIP, in address order.
    pub vips: Vec<VipStatus>,
    /// Every gossip member this node knows, itself included, by name.
    pub members: Vec<MemberStatus>,
    /// Packets per data-path verdict reason (the names of `lb_common::reasons::NAMES`),
    /// summed over CPUs; empty while the maps cannot be read.
    pub reasons: BTreeMap<String, u64>,
    /// `None` while no ARP announcer runs.
    pub arp: Option<ArpStatus>,
    /// `None` while no gossip runs (static membership).
    pub gossip: Option<GossipStatus>,
    /// Live values that could not be read (the rest of the status is still valid).
    pub warnings: Vec<String>,
    /// Why this agent refused the pinned data path (a newer release's map layout): the
    /// programs keep forwarding untouched and the agent takes no part in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One VIP: the services behind it, who announces it and what its traffic did here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub vip: Ipv4Addr,
    /// The services sharing the VIP, by name.
    pub services: Vec<ServiceStatus>,
    /// Every `(port, protocol)` of the VIP, in order.
    pub ports: Vec<PortStatus>,
    /// Packets to other ports are dropped rather than passed to the node's stack.
    pub drop_unknown_ports: bool,
    /// The node that answers ARP for the VIP, if any.
    pub owner: Option<String>,
    /// Why [`Self::owner`] owns it (or why nobody does).
    pub owner_reason: Option<String>,
    /// This node is the owner.
    pub owned_here: bool,
    /// Every node considered for ownership, with its eligibility.
    pub candidates: Vec<CandidateStatus>,
    /// Endpoints taking new flows, over every service of the VIP.
    pub backends_ready: u32,
    /// Endpoints, over every service of the VIP.
    pub backends_total: u32,
    /// Counted by this node's data path; `None` when the maps cannot be read.
    pub counters: Option<VipCounters>,
}

/// One port of a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: u16,
    pub service: String,
}

/// One service of a VIP and how its flows are spread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub traffic_policy: TrafficPolicy,
    /// Nodes with endpoints of the service, by name.
    pub nodes: Vec<NodeShareStatus>,
    /// Every endpoint, by address.
    pub endpoints: Vec<EndpointStatus>,
}

/// A node's place in a service's node table (the owner's choice of backend node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeShareStatus {
    pub node: String,
    pub address: Ipv4Addr,
    pub ready_endpoints: u32,
    pub draining_endpoints: u32,
    /// Slots of the node table pointing at the node; `None` for `Local` services, whose
    /// node table is not used.
    pub slots: Option<u32>,
    /// `slots` over the table size.
    pub share: Option<f64>,
    /// Packets this node tunnelled to that node, over every VIP; `None` for this node
    /// itself (its local deliveries count on its endpoints) or unreadable maps.
    pub counters: Option<BackendCounters>,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub address: Ipv4Addr,
    pub node: String,
    pub ready: bool,
    pub terminating: bool,
    /// Slots of this node's pod table pointing at the endpoint (endpoints of this node
    /// only).
    pub slots: Option<u32>,
    /// `slots` over the pod table size.
    pub share: Option<f64>,
    /// Packets this node delivered to the endpoint, over every VIP it serves (endpoints
    /// of this node only).
    pub counters: Option<BackendCounters>,
}

/// A VIP's counters on this node: the data path's, summed over the CPUs.
pub type VipCounters = VipStats;

/// A backend address's counters on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendCounters {
    pub packets: u64,
    pub bytes: u64,
}

impl From<BackendStats> for BackendCounters {
    fn from(stats: BackendStats) -> Self {
        Self {
            packets: stats.packets,
            bytes: stats.bytes,
        }
    }
}

/// Who owns a VIP, as the runtime's election decided; [`View`] copies it into
/// [`VipStatus`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    pub owner: Option<String>,
    /// Why, e.g. "highest score among 2 eligible alive members" or "set by `owner:` in
    /// the configuration file".
    pub reason: Option<String>,
    pub candidates: Vec<CandidateStatus>,
}

/// A node considered for owning a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateStatus {
    pub node: String,
    pub eligible: bool,
    /// Why the node is not eligible, e.g. "interface eth0 is down".
    pub reason: Option<String>,
    /// Rendezvous-hash score, when the election computed one.
    pub score: Option<u64>,
}

/// Liveness of a gossip member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

impl MemberState {
    pub const ALL: [Self; 3] = [Self::Alive, Self::Suspect, Self::Down];

    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
        }
    }
}

impl From<Liveness> for MemberState {
    fn from(liveness: Liveness) -> Self {
        match liveness {
            Liveness::Alive => Self::Alive,
            Liveness::Suspect => Self::Suspect,
            // Gone from the gossip; its data path serving meanwhile shows in the elections.
            Liveness::HandingOver | Liveness::Down => Self::Down,
        }
    }
}

/// One agent as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    /// Its gossip address.
    pub address: SocketAddrV4,
    pub state: MemberState,
    /// SWIM incarnation: raised by the member to refute suspicion.
    pub incarnation: u64,
    /// When `state` last changed, in milliseconds since the Unix epoch.
    pub last_change_unix_ms: Option<u64>,
}

impl MemberStatus {
    /// Every member of a gossip view, by name.
    pub fn from_view(view: &membership::View) -> Vec<Self> {
        view.members
            .iter()
            .map(|(name, member)| Self {
                name: name.clone(),
                address: member.address,
                state: member.liveness.into(),
                incarnation: u64::from(member.incarnation),
                last_change_unix_ms: member
                    .since
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|since| u64::try_from(since.as_millis()).ok()),
            })
            .collect()
    }
}

/// What the ARP announcer counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpStatus {
    /// ARP requests for a VIP this node owned at the time.
    pub requests: u64,
    /// Replies sent to them.
    pub replies: u64,
    /// Gratuitous ARP frames sent.
    pub gratuitous: u64,
    /// Frames the socket would not send.
    pub send_errors: u64,
    /// Times the ARP interface's link went away (down, or removed).
    #[serde(default)]
    pub link_outages: u64,
}

impl From<arp::Counters> for ArpStatus {
    fn from(counters: arp::Counters) -> Self {
        Self {
            requests: counters.requests_owned,
            replies: counters.replies_sent,
            gratuitous: counters.gratuitous_sent,
            send_errors: counters.send_errors,
            link_outages: counters.link_outages,
        }
    }
}

/// What gossip counted since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// Datagrams dropped, by reason: `forged` and `replayed` are authentication
    /// failures; others include `wrong_key` and `malformed`.
    pub dropped: BTreeMap<String, u64>,
}

impl From<&membership::Counters> for GossipStatus {
    fn from(counters: &membership::Counters) -> Self {
        Self {
            dropped: counters
                .dropped()
                .into_iter()
                .map(|(reason, count)| (reason.to_owned(), count))
                .collect(),
        }
    }
}

/// A page of the flow cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowList {
    /// Flows in the cache; `flows` holds at most the requested number of them.
    pub total: usize,
    pub flows: Vec<FlowEntry>,
}

/// One client flow this node's data path remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub protocol: Protocol,
    pub service: Option<String>,
    /// The backend node chosen when this node received the flow from the LAN.
    pub node: Option<Ipv4Addr>,
    pub node_name: Option<String>,
    /// The pod chosen when this node delivered the flow.
    pub pod: Option<Ipv4Addr>,
}

/// Why a provider could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the data path is not loaded yet")]
    NotLoaded,
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("this agent refused the pinned data path: {0}")]
    Refused(String),
}

/// The runtime, as the local API sees it. Methods are called from blocking threads
/// (they may read BPF maps), concurrently.
pub trait StatusProvider: Send + Sync {
    fn status(&self) -> AgentStatus;

    fn flows(&self, limit: usize) -> Result<FlowList, ProviderError>;

    fn explain(
        &self,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    ) -> Result<Explanation, ProviderError>;

    /// Override when members are cheaper than a whole status.
    fn members(&self) -> Vec<MemberStatus> {
        self.status().members
    }

    /// `/readyz`; override when readiness is cheaper than a whole status.
    fn ready(&self) -> bool {
        self.status().ready
    }
}
