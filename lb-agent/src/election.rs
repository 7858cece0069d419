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
mod tests {
    use super::*;
    use crate::fixtures::{example, ip};

    fn alive(name: &str) -> Candidate {
        Candidate {
            name: name.into(),
            liveness: Liveness::Alive,
            labels: BTreeMap::new(),
            interface_problem: None,
            ready: true,
            announce_interface: Some("eth0".into()),
        }
    }

    fn nodes(count: usize) -> Vec<Candidate> {
        (1..=count).map(|n| alive(&format!("node{n}"))).collect()
    }

    fn demand(vip: Ipv4Addr) -> Demand {
        Demand {
            vip,
            preferred: None,
            local_services: Vec::new(),
            announcers: None,
            interfaces: None,
        }
    }

    fn vips(count: u32) -> Vec<Demand> {
        (0..count)
            .map(|n| demand(Ipv4Addr::from(u32::from(ip("192.168.8.0")) + n)))
            .collect()
    }

    fn owners(candidates: &[Candidate], demands: &[Demand]) -> BTreeMap<Ipv4Addr, Option<String>> {
        elect_all(candidates, demands)
            .into_iter()
            .map(|(vip, election)| (vip, election.owner))
            .collect()
    }

    #[test]
    fn removing_or_downing_a_non_owner_never_moves_a_vip() {
        let demands = vips(200);
        let all = nodes(6);
        let before = owners(&all, &demands);
        for gone in 0..all.len() {
            let name = &all[gone].name;
            let mut fewer = all.clone();
            fewer.remove(gone);
            let mut downed = all.clone();
            downed[gone].liveness = Liveness::Down;
            for after in [owners(&fewer, &demands), owners(&downed, &demands)] {
                for (vip, owner) in &before {
                    if owner.as_ref() != Some(name) {
                        assert_eq!(&after[vip], owner, "{vip} moved when {name} went away");
                    } else {
                        assert_ne!(after[vip].as_ref(), Some(name));
                        assert!(after[vip].is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn vips_spread_over_nodes() {
        let demands = vips(400);
        let elections = elect_all(&nodes(4), &demands);
        for node in 1..=4 {
            let count = owned_by(&elections, &format!("node{node}")).len();
            // 100 expected each; a binomial(400, 1/4) stays well inside this band.
            assert!((60..=140).contains(&count), "node{node} owns {count}");
        }
    }

    #[test]
    fn every_agent_elects_the_same_owner_whatever_the_order() {
        let demands = vips(50);
        let mut reversed = nodes(5);
        reversed.reverse();
        assert_eq!(owners(&nodes(5), &demands), owners(&reversed, &demands));
    }

    #[test]
    fn suspect_nodes_stay_eligible_and_down_ones_do_not() {
        let vip = demand(ip("172.16.200.20"));
        let winner = elect(&nodes(3), &vip).owner.expect("owner");
        let mut candidates = nodes(3);
        let index = candidates
            .iter()
            .position(|c| c.name == winner)
            .expect("winner");
        candidates[index].liveness = Liveness::Suspect;
        assert_eq!(elect(&candidates, &vip).owner.as_ref(), Some(&winner));
        candidates[index].liveness = Liveness::Down;
        let election = elect(&candidates, &vip);
        assert_ne!(election.owner.as_ref(), Some(&winner));
        let verdict = election
            .verdicts
            .iter()
            .find(|verdict| verdict.node == winner)
            .expect("verdict");
        assert_eq!(
            verdict.ineligible,
            Some(Ineligible::NotAlive(Liveness::Down))
        );
    }

    #[test]
    fn each_reason_makes_a_node_ineligible() {
        let vip = ip("172.16.200.20");
        let mut candidates = nodes(4);
        candidates[0].interface_problem = Some("eth0 is down".into());
        candidates[1].liveness = Liveness::Down;
        candidates[2]
            .labels
            .insert(EXCLUDE_LABEL.into(), String::new());
        let local = Demand {
            vip,
            preferred: None,
            local_services: vec![("web".into(), BTreeSet::from(["node4".to_owned()]))],
            announcers: None,
            interfaces: None,
        };
        let election = elect(&candidates, &local);
        assert_eq!(election.owner.as_deref(), Some("node4"));
        let reason = |node: &str| {
            election
                .verdicts
                .iter()
                .find(|verdict| verdict.node == node)
                .and_then(|verdict| verdict.ineligible.clone())
        };
        assert_eq!(
            reason("node1"),
            Some(Ineligible::InterfaceUnusable("eth0 is down".into()))
        );
        assert_eq!(reason("node2"), Some(Ineligible::NotAlive(Liveness::Down)));
        assert_eq!(reason("node3"), Some(Ineligible::Excluded));
        assert_eq!(reason("node4"), None);
        assert!(
            reason("node1")
                .expect("reason")
                .to_string()
                .contains("eth0 is down")
        );
        assert!(
            reason("node3")
                .expect("reason")
                .to_string()
                .contains(EXCLUDE_LABEL)
        );
        // Without node4's endpoint, nobody can serve the Local service.
        let nobody = Demand {
            local_services: vec![("web".into(), BTreeSet::new())],
            ..local
        };
        let election = elect(&candidates, &nobody);
        assert_eq!(election.owner, None);
        assert_eq!(
            election
                .verdicts
                .iter()
                .find(|v| v.node == "node4")
                .and_then(|v| v.ineligible.clone()),
            Some(Ineligible::NoReadyLocalEndpoint {
                service: "web".into()
            })
        );
    }

    #[test]
    fn the_preferred_owner_wins_while_eligible() {
        let vip = ip("172.16.200.53");
        let natural = elect(&nodes(3), &demand(vip)).owner.expect("owner");
        let other = if natural == "node1" { "node2" } else { "node1" };
        let preferring = Demand {
            preferred: Some(other.to_owned()),
            ..demand(vip)
        };
        assert_eq!(elect(&nodes(3), &preferring).owner.as_deref(), Some(other));
        let mut candidates = nodes(3);
        let index = candidates
            .iter()
            .position(|c| c.name == other)
            .expect("node");
        candidates[index].liveness = Liveness::Down;
        assert_eq!(
            elect(&candidates, &preferring).owner,
            Some(natural),
            "falls back to the hash"
        );
    }

    #[test]
    fn demands_come_per_vip_with_local_services_and_preferences() {
        let mut inputs = example();
        inputs.services[1].traffic_policy = TrafficPolicy::Local;
        inputs.services[1]
            .endpoints
            .push(crate::fixtures::endpoint("10.42.0.9", "node1"));
        inputs.services[1].endpoints[1].ready = false;
        let mut shared = inputs.services[0].clone();
        shared.name = "web-admin".into();
        inputs.services.push(shared);
        let owners = BTreeMap::from([(ip("172.16.200.20"), "node2")]);
        let demands = Demand::from_inputs(&inputs, &owners);
        assert_eq!(
            demands,
            [
                Demand {
                    vip: ip("172.16.200.20"),
                    preferred: Some("node2".into()),
                    local_services: Vec::new(),
                    announcers: None,
                    interfaces: None,
                },
                Demand {
                    vip: ip("172.16.200.53"),
                    preferred: None,
                    local_services: vec![("dns".into(), BTreeSet::from(["node2".to_owned()]))],
                    announcers: None,
                    interfaces: None,
                },
            ]
        );
        let elections = elect_all(&nodes(2), &demands);
        assert_eq!(
            owned_by(&elections, "node2"),
            BTreeSet::from([ip("172.16.200.20"), ip("172.16.200.53")])
        );
    }

    #[test]
    fn the_pool_node_selector_limits_the_owners() {
        let vip = ip("192.168.8.240");
        let selected = Demand {
            announcers: Some(Announcers {
                pool: "lan".into(),
                nodes: BTreeSet::from(["node3".to_owned()]),
            }),
            ..demand(vip)
        };
        let election = elect(&nodes(3), &selected);
        assert_eq!(election.owner.as_deref(), Some("node3"));
        let node1 = election.verdicts.iter().find(|v| v.node == "node1");
        let reason = node1
            .and_then(|v| v.ineligible.clone())
            .expect("ineligible");
        assert_eq!(reason, Ineligible::NotSelected { pool: "lan".into() });
        assert!(reason.to_string().contains("pool lan"), "{reason}");
        let nobody = Demand {
            announcers: Some(Announcers {
                pool: "lan".into(),
                nodes: BTreeSet::new(),
            }),
            ..demand(vip)
        };
        assert_eq!(elect(&nodes(3), &nobody).owner, None);
    }

    #[test]
    fn the_pool_interfaces_limit_the_owners_to_nodes_announcing_on_them() {
        let vip = ip("192.168.8.241");
        let mut candidates = nodes(3);
        candidates[1].announce_interface = Some("eth1".into());
        candidates[2].announce_interface = None;
        let on = |interfaces: &[&str]| Demand {
            interfaces: Some(AnnounceInterfaces {
                pool: "lan".into(),
                interfaces: interfaces.iter().map(|name| (*name).to_owned()).collect(),
            }),
            ..demand(vip)
        };
        let election = elect(&candidates, &on(&["eth1", "br0"]));
        assert_eq!(election.owner.as_deref(), Some("node2"));
        let reason = |election: &Election, node: &str| {
            election
                .verdicts
                .iter()
                .find(|verdict| verdict.node == node)
                .and_then(|verdict| verdict.ineligible.clone())
                .expect("ineligible")
        };
        let other = reason(&election, "node1");
        assert_eq!(
            other,
            Ineligible::NoAnnounceInterface {
                pool: "lan".into(),
                interfaces: BTreeSet::from(["br0".to_owned(), "eth1".to_owned()]),
                node_interface: Some("eth0".into()),
            }
        );
        let text = other.to_string();
        assert!(
            text.contains("[br0, eth1]") && text.contains("announces on eth0"),
            "{text}"
        );
        let unknown = reason(&election, "node3").to_string();
        assert!(unknown.contains(ANNOUNCE_INTERFACE_ANNOTATION), "{unknown}");
        // Nobody announces on eth2: nobody owns the VIP.
        assert_eq!(elect(&candidates, &on(&["eth2"])).owner, None);
        // Other checks come first: a down node says so, not its interface.
        candidates[0].liveness = Liveness::Down;
        let election = elect(&candidates, &on(&["eth1"]));
        assert_eq!(
            reason(&election, "node1"),
            Ineligible::NotAlive(Liveness::Down)
        );
    }

    #[test]
    fn not_ready_nodes_own_only_when_no_ready_node_can() {
        let vip = demand(ip("172.16.200.20"));
        let natural = elect(&nodes(3), &vip).owner.expect("owner");
        let mut candidates = nodes(3);
        for candidate in &mut candidates {
            candidate.ready = candidate.name != natural;
        }
        let election = elect(&candidates, &vip);
        assert_ne!(election.owner.as_ref(), Some(&natural));
        assert!(election.owner.is_some());
        for candidate in &mut candidates {
            candidate.ready = false;
        }
        // Every node NotReady (as right after an API-server outage): the hash decides.
        assert_eq!(elect(&candidates, &vip).owner, Some(natural.clone()));
        candidates[0].liveness = Liveness::Down;
        candidates[1].liveness = Liveness::Down;
        candidates[2].liveness = Liveness::Down;
        assert_eq!(elect(&candidates, &vip).owner, None, "down is not soft");
    }
}
