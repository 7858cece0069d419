//! `lbctl explain`: which node and pod a client flow to a VIP lands on, and why,
//! computed from the same state the data path holds with the same hash it uses.
//!
//! Pure: [`explain`] reads [`State`] (the tables this node loads) and [`Inputs`] (to
//! compute another node's pod table, exactly as that node's agent does). Whether this
//! node's flow cache overrides the answer is added by [`crate::status::View::explain`].

use std::{
    borrow::Cow,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
};

use lb_common::{
    hash::{NODE_SEED, POD_SEED, flow_hash},
    reasons,
    types::{FlowKey, FlowValue, RING_EMPTY},
};
use serde::{Deserialize, Serialize};

use crate::{
    model::{self, Inputs, PortKey, PortTarget, Protocol, State, TrafficPolicy},
    wire,
};

/// A client flow: what `lbctl explain CLIENT VIP/PROTO` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub protocol: Protocol,
}

impl Query {
    /// The flow as the kernel sees it: addresses and ports as on the wire.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            client: wire::addr(*self.client.ip()),
            vip: wire::addr(*self.vip.ip()),
            client_port: self.client.port().to_be(),
            vip_port: self.vip.port().to_be(),
            proto: self.protocol.number(),
            _pad: 0,
            _pad2: 0,
        }
    }

    /// The flow a kernel key describes; `None` for a protocol the API does not name.
    pub fn from_flow_key(key: &FlowKey) -> Option<Self> {
        Some(Self {
            client: SocketAddrV4::new(wire::ip(key.client), u16::from_be(key.client_port)),
            vip: SocketAddrV4::new(wire::ip(key.vip), u16::from_be(key.vip_port)),
            protocol: Protocol::from_number(key.proto)?,
        })
    }

    /// `flow_hash` over the flow exactly as the kernel calls it.
    pub fn hash(&self, seed: u32) -> u32 {
        let key = self.flow_key();
        flow_hash(
            key.client,
            key.client_port,
            key.vip,
            key.vip_port,
            key.proto,
            seed,
        )
    }
}

/// What happens to the flow's packets on the node that receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Left to the node's own network stack, untouched.
    Passed,
    Dropped,
    /// Sent to a pod (through a tunnel or directly).
    Forwarded,
}

/// A node by name and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub name: String,
    pub address: Ipv4Addr,
}

/// One consistent-hash lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub seed: u32,
    pub hash: u32,
    /// `hash % ring_size`.
    pub slot: u32,
    pub ring_size: u32,
    /// The slot's backend; `None` for an empty slot (no ready backend).
    pub backend: Option<Ipv4Addr>,
}

impl Choice {
    fn lookup(query: &Query, seed: u32, ring: &[Ipv4Addr]) -> Self {
        let hash = query.hash(seed);
        let ring_size = u32::try_from(ring.len()).unwrap_or(u32::MAX);
        let slot = hash.checked_rem(ring_size).unwrap_or(0);
        let backend = ring
            .get(slot as usize)
            .copied()
            .filter(|address| !address.is_unspecified());
        Self {
            seed,
            hash,
            slot,
            ring_size,
            backend,
        }
    }

    fn describe(&self, level: &str, seed_name: &str) -> String {
        let backend = self
            .backend
            .map_or_else(|| "an empty slot".to_owned(), |address| address.to_string());
        format!(
            "{level}: flow_hash(client, VIP, ports, protocol, {seed_name}) = {hash:#010x}; \
             {hash:#010x} % {} = slot {}, which holds {backend}.",
            self.ring_size,
            self.slot,
            hash = self.hash,
        )
    }
}

/// What this node's flow cache (`FLOWS`) holds for the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CacheLookup {
    /// The cache was not read (the data path is not loaded).
    NotChecked,
    Miss,
    /// While the cached backend exists (even draining), packets follow it rather than
    /// the tables.
    Hit {
        node: Option<Ipv4Addr>,
        pod: Option<Ipv4Addr>,
    },
}

impl CacheLookup {
    /// The lookup's result from a `FLOWS` entry (or its absence).
    pub fn from_entry(entry: Option<&FlowValue>) -> Self {
        match entry {
            None => Self::Miss,
            Some(value) => Self::Hit {
                node: recorded(value.node),
                pod: recorded(value.pod),
            },
        }
    }
}

/// A backend address a `FLOWS` entry recorded; each level fills only its own field.
pub(crate) fn recorded(raw: u32) -> Option<Ipv4Addr> {
    (raw != RING_EMPTY).then(|| wire::ip(raw))
}

/// "pins ... (the tables agree)" for one level of a cache hit.
fn pinned(level: &str, cached: Option<Ipv4Addr>, computed: Option<Ipv4Addr>) -> Option<String> {
    let cached = cached?;
    let comparison = match computed {
        Some(computed) if computed == cached => "the tables agree".to_owned(),
        Some(computed) => {
            format!("the tables now choose {computed}: the flow started before they changed")
        }
        None => "the tables were not consulted at this level".to_owned(),
    };
    Some(format!("{level} {cached} ({comparison})"))
}

/// The answer of `lbctl explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub query: Query,
    pub outcome: Outcome,
    /// The `lb_common::reasons` name the receiving node counts the packet under.
    pub reason: String,
    pub service: Option<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    /// The node that receives the flow from the LAN: the VIP's owner.
    pub receiver: Option<NodeRef>,
    /// The node-level lookup (`Cluster` services only).
    pub node_choice: Option<Choice>,
    /// The node that delivers the flow to a pod.
    pub node: Option<NodeRef>,
    /// The pod-level lookup on [`Self::node`].
    pub pod_choice: Option<Choice>,
    /// Where the packet goes after DNAT: pod address and target port.
    pub destination: Option<SocketAddrV4>,
    pub cache: CacheLookup,
    /// The reasoning, one sentence per step, for people.
    pub steps: Vec<String>,
}

impl Explanation {
    /// Adds what `node`'s (this agent's) flow cache holds for the flow.
    pub fn with_cache(mut self, node: &str, cache: CacheLookup) -> Self {
        let text = match cache {
            CacheLookup::NotChecked => format!(
                "The flow cache of {node} was not read (the data path is not loaded). A cache entry overrides the tables while its backend exists."
            ),
            CacheLookup::Miss => format!(
                "The flow cache of {node} has no entry for this flow, so its packets follow the tables above. (An entry on the node that receives the flow would override them while its backend exists.)"
            ),
            CacheLookup::Hit {
                node: cached_node,
                pod,
            } => {
                let levels: Vec<String> = [
                    pinned(
                        "node",
                        cached_node,
                        self.node_choice.and_then(|choice| choice.backend),
                    ),
                    pinned(
                        "pod",
                        pod,
                        self.pod_choice.and_then(|choice| choice.backend),
                    ),
                ]
                .into_iter()
                .flatten()
                .collect();
                if levels.is_empty() {
                    format!(
                        "The flow cache of {node} has an entry for this flow that records no backend yet."
                    )
                } else {
                    format!(
                        "The flow cache of {node} pins this flow to {}. While a pinned backend exists (even draining), packets follow it rather than the tables.",
                        levels.join(" and ")
                    )
                }
            }
        };
        self.cache = cache;
        self.steps.push(text);
        self
    }
}

/// Builds an [`Explanation`] step by step.
struct Builder<'a> {
    inputs: &'a Inputs,
    state: &'a State,
    explanation: Explanation,
}

impl<'a> Builder<'a> {
    fn step(&mut self, text: String) {
        self.explanation.steps.push(text);
    }

    fn finish(mut self, outcome: Outcome, reason: u32, text: String) -> Explanation {
        self.step(text);
        self.explanation.outcome = outcome;
        self.explanation.reason = reasons::NAMES[reason as usize].to_owned();
        self.explanation
    }

    fn node_named(&self, name: &str) -> Option<NodeRef> {
        self.inputs
            .peers
            .iter()
            .chain([&self.inputs.node])
            .find(|node| node.name == name)
            .map(|node| NodeRef {
                name: node.name.clone(),
                address: node.address,
            })
    }

    fn node_at(&self, address: Ipv4Addr) -> NodeRef {
        let name = self
            .inputs
            .peers
            .iter()
            .chain([&self.inputs.node])
            .find(|node| node.address == address)
            .map_or_else(|| address.to_string(), |node| node.name.clone());
        NodeRef { name, address }
    }

    /// The node clients' packets reach: the owner, else (with a note) this node.
    fn receiver(&mut self, owner: Option<&str>) -> NodeRef {
        let this = NodeRef {
            name: self.inputs.node.name.clone(),
            address: self.inputs.node.address,
        };
        let (receiver, note) = match owner.map(|name| (name, self.node_named(name))) {
            Some((_, Some(node))) => {
                let text = format!(
                    "Clients reach the VIP at its owner, {} ({}), which answers ARP for it.",
                    node.name, node.address
                );
                (node, text)
            }
            Some((name, None)) => {
                let text = format!(
                    "The owner {name} is not a known node; assuming the packet arrives here, at {}.",
                    this.name
                );
                (this, text)
            }
            None => {
                let text = format!(
                    "No node owns the VIP right now, so nobody answers ARP for it; assuming the packet arrives here, at {}.",
                    this.name
                );
                (this, text)
            }
        };
        self.step(note);
        receiver
    }

    /// The pod table `node` holds for `service`: the loaded one for this node, else the
    /// one that node's agent computes from the same inputs.
    fn pod_ring(&self, service: &str, node: &str) -> Cow<'a, [Ipv4Addr]> {
        if node == self.inputs.node.name {
            return self
                .state
                .rings
                .get(service)
                .map_or(Cow::Borrowed(&[]), |rings| Cow::Owned(rings.pod.to_vec()));
        }
        self.inputs
            .services
            .iter()
            .find(|candidate| candidate.name == service)
            .map_or(Cow::Borrowed(&[]), |service| {
                Cow::Owned(model::pod_ring(service, node))
            })
    }

    fn unknown_port(self, key: &PortKey, drop: bool) -> Explanation {
        let mut known = String::new();
        for other in self.state.ports.keys().filter(|other| other.vip == key.vip) {
            let _ = write!(known, " {}/{}", other.port, other.protocol);
        }
        let (outcome, reason, action) = if drop {
            (
                Outcome::Dropped,
                reasons::DROP_UNKNOWN_PORT,
                "dropped (dropUnknownPorts)",
            )
        } else {
            (
                Outcome::Passed,
                reasons::PASS_UNKNOWN_PORT,
                "passed to the receiving node's own stack",
            )
        };
        let text = format!(
            "No service listens on {key} (the VIP's ports:{known}); the packet is {action}."
        );
        self.finish(outcome, reason, text)
    }

    /// The node-level lookup of a `Cluster` service; `Err` ends the explanation.
    fn node_level(
        &mut self,
        service: &str,
        receiver: &NodeRef,
    ) -> Result<NodeRef, (Outcome, u32, String)> {
        let ring = self
            .state
            .rings
            .get(service)
            .map_or_else(Vec::new, |rings| rings.node.to_vec());
        let choice = Choice::lookup(&self.explanation.query, NODE_SEED, &ring);
        self.explanation.node_choice = Some(choice);
        self.step(choice.describe("Node level", "NODE_SEED"));
        let Some(address) = choice.backend else {
            return Err((
                Outcome::Dropped,
                reasons::DROP_NO_BACKEND,
                format!(
                    "The slot is empty: no node has a ready endpoint of {service}, so {} drops the packet.",
                    receiver.name
                ),
            ));
        };
        let node = self.node_at(address);
        if node.address == receiver.address {
            self.step(format!(
                "That is {} itself: it delivers the packet without a tunnel.",
                node.name
            ));
        } else {
            self.step(format!(
                "{} encapsulates the packet in IPIP ({} -> {}) and sends it to {}.",
                receiver.name, receiver.address, node.address, node.name
            ));
        }
        Ok(node)
    }

    fn pod_level(mut self, target: &PortTarget, receiver: &NodeRef, node: NodeRef) -> Explanation {
        let ring = self.pod_ring(&target.service, &node.name);
        let choice = Choice::lookup(&self.explanation.query, POD_SEED, &ring);
        self.explanation.pod_choice = Some(choice);
        self.step(choice.describe(&format!("Pod level on {}", node.name), "POD_SEED"));
        let delivered = if node.address == receiver.address {
            reasons::PASS_LOCAL_DNAT
        } else {
            reasons::TX_ENCAP
        };
        let name = node.name.clone();
        self.explanation.node = Some(node);
        let Some(pod) = choice.backend else {
            let text = format!(
                "{name} has no ready endpoint of {}, so it drops the packet.",
                target.service
            );
            return self.finish(Outcome::Dropped, reasons::DROP_NO_BACKEND, text);
        };
        let destination = SocketAddrV4::new(pod, target.target_port);
        self.explanation.destination = Some(destination);
        let vip = self.explanation.query.vip;
        let text = format!(
            "{name} rewrites the destination to {destination} and hands the packet to its kernel; \
             the pod's replies leave {name} with source {vip}, straight to the client."
        );
        self.finish(Outcome::Forwarded, delivered, text)
    }
}

/// Follows `query` through this node's `state`, assuming clients reach the VIP at
/// `owner` (the elected owner's name; `None` if there is none).
pub fn explain(inputs: &Inputs, state: &State, owner: Option<&str>, query: Query) -> Explanation {
    let mut builder = Builder {
        inputs,
        state,
        explanation: Explanation {
            query,
            outcome: Outcome::Passed,
            reason: String::new(),
            service: None,
            traffic_policy: None,
            receiver: None,
            node_choice: None,
            node: None,
            pod_choice: None,
            destination: None,
            cache: CacheLookup::NotChecked,
            steps: Vec::new(),
        },
    };
    let vip = *query.vip.ip();
    let Some(flags) = state.vips.get(&vip) else {
        let text = format!(
            "{vip} is not a VIP of this cluster: XDP passes the packet to the node's own stack untouched."
        );
        return builder.finish(Outcome::Passed, reasons::PASS_NOT_VIP, text);
    };
    let key = PortKey {
        vip,
        port: query.vip.port(),
        protocol: query.protocol,
    };
    let Some(target) = state.ports.get(&key) else {
        return builder.unknown_port(&key, flags.drop_unknown_ports);
    };
    let policy = if target.local_only {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    builder.explanation.service = Some(target.service.clone());
    builder.explanation.traffic_policy = Some(policy);
    builder.step(format!(
        "{key} is a port of service {} (externalTrafficPolicy {policy:?}); its pods listen on port {}.",
        target.service, target.target_port
    ));
    let receiver = builder.receiver(owner);
    builder.explanation.receiver = Some(receiver.clone());
    let node = if target.local_only {
        builder.step(format!(
            "With externalTrafficPolicy Local, {} serves the flow from its own endpoints and never tunnels; the node table is not used.",
            receiver.name
        ));
        receiver.clone()
    } else {
        match builder.node_level(&target.service, &receiver) {
            Ok(node) => node,
            Err((outcome, reason, text)) => return builder.finish(outcome, reason, text),
        }
    };
    builder.pod_level(target, &receiver, node)
}

#[cfg(test)]
mod tests;
