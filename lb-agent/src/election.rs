//! Which node answers for each VIP: exactly one owner per VIP (services sharing a VIP
//! share its owner), chosen by rendezvous hashing over the eligible nodes.
//!
//! Every node scores every VIP with a hash of (VIP, node name); the eligible node with
//! the highest score owns it. Every agent holding the same view elects the same owners,
//! with no coordination, and a node leaving only moves the VIPs it owned: the others
//! keep their highest-scoring node.
//!
//! A node is eligible for a VIP when (checked in this order, the first failure is the
//! reason `lbctl` shows):
//! 1. its announce interface is usable. Each agent knows only its own: a node whose
//!    interface is missing or down leaves the gossip, so to everyone else it is simply
//!    not alive;
//! 2. the gossip has it alive or suspect (a suspect may still refute);
//! 3. it is not labelled [`EXCLUDE_LABEL`];
//! 4. the VIP's address pool selects it (`AddressPool.spec.announcement.nodeSelector`,
//!    Kubernetes mode);
//! 5. when the pool lists announcement interfaces
//!    (`AddressPool.spec.announcement.interfaces`), the node's announce interface is one
//!    of them. Each agent announces on one interface, the one whose frames reach its XDP
//!    program, and publishes its name on its Node (see [`Candidate::announce_interface`]),
//!    so every agent judges every node alike; announcing a VIP on another interface would
//!    draw its traffic past the data path;
//! 6. for every `externalTrafficPolicy: Local` service on the VIP, it has a ready
//!    endpoint of that service (otherwise it would drop that service's traffic);
//! 7. Kubernetes reports the node Ready. This one is soft: when no Ready node passes
//!    the other checks, the best node that fails only this one owns the VIP, so a
//!    cluster-wide readiness blip (an API-server outage makes every node NotReady once
//!    it ends) never leaves a VIP unanswered.
//!
//! A configured `owner` is a preference: it wins whenever it is eligible, and the hash
//! decides otherwise.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use sha2::{Digest as _, Sha256};

use crate::model::{Inputs, TrafficPolicy};

/// How a node looks to the gossip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Answers probes.
    Alive,
    /// Missed a probe; still counted as alive until the suspicion timeout.
    Suspect,
    /// Left on SIGTERM with its data path kept pinned: it still serves the flows it
    /// holds, but owns no VIP. Down once [`HANDOVER_GRACE`](crate::membership::HANDOVER_GRACE) has passed
    /// ([`crate::membership::View::expire_handovers`]).
    HandingOver,
    /// Declared dead, left, or never heard from.
    Down,
}

impl Liveness {
    /// Alive or suspect: still a member for election.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }

    /// Its data path serves: up, or handing over.
    pub fn serves(self) -> bool {
        self != Self::Down
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::HandingOver => "handing over",
            Self::Down => "down",
        })
    }
}

/// Nodes with this label never announce VIPs (the Kubernetes convention).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The Node annotation where each agent publishes its announce interface.
pub const ANNOUNCE_INTERFACE_ANNOTATION: &str = "xdplb.io/announce-interface";

/// A node as the election sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub liveness: Liveness,
    pub labels: BTreeMap<String, String>,
    /// Why the node's announce interface is unusable; only ever known for this node.
    pub interface_problem: Option<String>,
    /// Kubernetes' Ready condition; always true in standalone mode.
    pub ready: bool,
    /// The interface the node announces VIPs on (and its data path receives them on), as
    /// the node published it; `None` while unknown. Only VIPs whose pool restricts the
    /// interfaces look at it.
    pub announce_interface: Option<String>,
}

/// The nodes a VIP's address pool lets announce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcers {
    pub pool: String,
    pub nodes: BTreeSet<String>,
}

/// The interfaces a VIP's address pool lets it be announced on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceInterfaces {
    pub pool: String,
    /// Never empty: a pool listing none puts no restriction.
    pub interfaces: BTreeSet<String>,
}

/// What one VIP needs from its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub vip: Ipv4Addr,
    pub preferred: Option<String>,
    /// Each `Local` service on the VIP, with the nodes that have a ready endpoint of it.
    pub local_services: Vec<(String, BTreeSet<String>)>,
    /// `None`: any node may announce it.
    pub announcers: Option<Announcers>,
    /// `None`: it may be announced on any node's announce interface.
    pub interfaces: Option<AnnounceInterfaces>,
}

impl Demand {
    /// One demand per VIP of `inputs`, with the configured owners as preferences.
    pub fn from_inputs(inputs: &Inputs, owners: &BTreeMap<Ipv4Addr, &str>) -> Vec<Self> {
        let mut demands: BTreeMap<Ipv4Addr, Self> = BTreeMap::new();
        for service in &inputs.services {
            let demand = demands.entry(service.vip).or_insert_with(|| Self {
                vip: service.vip,
                preferred: owners.get(&service.vip).map(|owner| (*owner).to_owned()),
                local_services: Vec::new(),
                announcers: None,
                interfaces: None,
            });
            if service.traffic_policy == TrafficPolicy::Local {
                let ready = service
                    .endpoints
                    .iter()
                    .filter(|endpoint| endpoint.serving())
                    .map(|endpoint| endpoint.node.clone())
                    .collect();
                demand.local_services.push((service.name.clone(), ready));
            }
        }
        demands.into_values().collect()
    }
}

/// Why a node cannot own a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    InterfaceUnusable(String),
    NotAlive(Liveness),
    Excluded,
    NotSelected {
        pool: String,
    },
    /// The node's announce interface (`None`: not published) is not among the pool's.
    NoAnnounceInterface {
        pool: String,
        interfaces: BTreeSet<String>,
        node_interface: Option<String>,
    },
    NoReadyLocalEndpoint {
        service: String,
    },
    NotReady,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InterfaceUnusable(why) => write!(f, "announce interface unusable: {why}"),
            Self::NotAlive(liveness) => write!(f, "not alive in the gossip ({liveness})"),
            Self::Excluded => write!(f, "labelled {EXCLUDE_LABEL}"),
            Self::NotSelected { pool } => write!(
                f,
                "not selected by the announcement nodeSelector of pool {pool}"
            ),
            Self::NoAnnounceInterface {
                pool,
                interfaces,
                node_interface,
            } => {
                let listed = interfaces.iter().cloned().collect::<Vec<_>>().join(", ");
                match node_interface {
                    Some(own) => write!(
                        f,
                        "pool {pool} is announced only on [{listed}]; this node announces on \
                         {own}, the interface its XDP data path receives VIP traffic on"
                    ),
                    None => write!(
                        f,
                        "pool {pool} is announced only on [{listed}]; this node has not \
                         published its announce interface (Node annotation \
                         {ANNOUNCE_INTERFACE_ANNOTATION}: is its agent running?)"
                    ),
                }
            }
            Self::NoReadyLocalEndpoint { service } => write!(
                f,
                "no ready endpoint of {service} (externalTrafficPolicy: Local)"
            ),
            Self::NotReady => write!(
                f,
                "node not Ready in Kubernetes (owns only when no Ready node can)"
            ),
        }
    }
}

/// One node's standing for one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub node: String,
    pub score: u64,
    pub ineligible: Option<Ineligible>,
}

/// The outcome for one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    pub vip: Ipv4Addr,
    /// `None` when no node is eligible: nobody answers ARP for the VIP.
    pub owner: Option<String>,
    pub preferred: Option<String>,
    /// Every candidate, highest score first.
    pub verdicts: Vec<Verdict>,
}

/// The rendezvous score of `node` for `vip`.
pub fn score(vip: Ipv4Addr, node: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(vip.octets());
    hash.update(node.as_bytes());
    let digest = hash.finalize();
    let mut head = [0; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

fn check(candidate: &Candidate, demand: &Demand) -> Option<Ineligible> {
    if let Some(problem) = &candidate.interface_problem {
        return Some(Ineligible::InterfaceUnusable(problem.clone()));
    }
    if !candidate.liveness.is_up() {
        return Some(Ineligible::NotAlive(candidate.liveness));
    }
    if candidate.labels.contains_key(EXCLUDE_LABEL) {
        return Some(Ineligible::Excluded);
    }
    if let Some(announcers) = &demand.announcers
        && !announcers.nodes.contains(&candidate.name)
    {
        return Some(Ineligible::NotSelected {
            pool: announcers.pool.clone(),
        });
    }
    if let Some(allowed) = &demand.interfaces
        && !candidate
            .announce_interface
            .as_ref()
            .is_some_and(|own| allowed.interfaces.contains(own))
    {
        return Some(Ineligible::NoAnnounceInterface {
            pool: allowed.pool.clone(),
            interfaces: allowed.interfaces.clone(),
            node_interface: candidate.announce_interface.clone(),
        });
    }
    let no_local_endpoint = demand
        .local_services
        .iter()
        .find(|(_, ready)| !ready.contains(&candidate.name))
        .map(|(service, _)| Ineligible::NoReadyLocalEndpoint {
            service: service.clone(),
        });
    // Last, so a NotReady verdict means every other check passed.
    no_local_endpoint.or((!candidate.ready).then_some(Ineligible::NotReady))
}

/// Elects the owner of `demand.vip` among `candidates`.
pub fn elect(candidates: &[Candidate], demand: &Demand) -> Election {
    let mut verdicts: Vec<Verdict> = candidates
        .iter()
        .map(|candidate| Verdict {
            node: candidate.name.clone(),
            score: score(demand.vip, &candidate.name),
            ineligible: check(candidate, demand),
        })
        .collect();
    verdicts.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.node.cmp(&b.node)));
    let eligible = |verdict: &&Verdict| verdict.ineligible.is_none();
    let preferred = demand
        .preferred
        .as_ref()
        .and_then(|name| verdicts.iter().filter(eligible).find(|v| &v.node == name));
    let only_unready = |verdict: &&Verdict| verdict.ineligible == Some(Ineligible::NotReady);
    let owner = preferred
        .or_else(|| verdicts.iter().find(eligible))
        .or_else(|| verdicts.iter().find(only_unready))
        .map(|verdict| verdict.node.clone());
    Election {
        vip: demand.vip,
        owner,
        preferred: demand.preferred.clone(),
        verdicts,
    }
}

/// Elections for every demand, by VIP.
pub fn elect_all(candidates: &[Candidate], demands: &[Demand]) -> BTreeMap<Ipv4Addr, Election> {
    demands
        .iter()
        .map(|demand| (demand.vip, elect(candidates, demand)))
        .collect()
}

/// The VIPs `node` owns.
pub fn owned_by(elections: &BTreeMap<Ipv4Addr, Election>, node: &str) -> BTreeSet<Ipv4Addr> {
    elections
        .values()
        .filter(|election| election.owner.as_deref() == Some(node))
        .map(|election| election.vip)
        .collect()
}

#[cfg(test)]
mod tests;
