//! One pass of the control loop, free of I/O: the source's [`Cluster`] and the membership
//! view become the data path's inputs and the VIP elections ([`plan`]); the desired state is
//! diffed against what the maps hold and applied ([`Reconciler`]); ownership changes are
//! reported once each ([`Owners`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::{
    arp,
    dataplane::{Dataplane, DataplaneError},
    diff::diff,
    election::{Candidate, Demand, Election, elect_all, owned_by},
    membership::View,
    model::{Inputs, State, Tables, desired_state_with},
    sources::Cluster,
};

/// What one pass decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub inputs: Inputs,
    pub elections: BTreeMap<Ipv4Addr, Election>,
    /// The VIPs this node announces: none until the membership view has settled, so a
    /// starting agent never claims a VIP a live peer holds.
    pub owned: BTreeSet<Ipv4Addr>,
    /// Gratuitous ARP timing of the owned VIPs whose pool sets its own; the others use
    /// the node's.
    pub garp: BTreeMap<Ipv4Addr, arp::Settings>,
}

impl Plan {
    /// Every owned VIP with the gratuitous ARP timing it is announced with.
    pub fn owned_vips(&self, node: arp::Settings) -> arp::OwnedVips {
        self.owned
            .iter()
            .map(|vip| (*vip, self.garp.get(vip).copied().unwrap_or(node)))
            .collect()
    }
}

/// The inputs and elections for `cluster` as `view` sees it. `link_mtu` is the
/// interface's MTU, used unless the source sets one; `interface_problem` is why this
/// node's announce interface is unusable, if it is.
pub fn plan(
    cluster: &Cluster,
    view: &View,
    link_mtu: u32,
    interface_problem: Option<&str>,
) -> Plan {
    let local = &cluster.inputs.node.name;
    let mut inputs = cluster.inputs(link_mtu);
    inputs.down = inputs
        .peers
        .iter()
        .filter(|peer| !view.liveness(&peer.name).serves())
        .map(|peer| peer.name.clone())
        .collect();
    let candidates: Vec<Candidate> = inputs
        .peers
        .iter()
        .map(|peer| Candidate {
            name: peer.name.clone(),
            liveness: view.liveness(&peer.name),
            labels: cluster.labels.get(&peer.name).cloned().unwrap_or_default(),
            interface_problem: interface_problem
                .filter(|_| &peer.name == local)
                .map(str::to_owned),
            ready: !cluster.unready.contains(&peer.name),
            announce_interface: cluster.node_interfaces.get(&peer.name).cloned(),
        })
        .collect();
    let owners = cluster
        .owners
        .iter()
        .map(|(vip, owner)| (*vip, owner.as_str()))
        .collect();
    let mut demands = Demand::from_inputs(&inputs, &owners);
    for demand in &mut demands {
        demand.announcers = cluster.announcers.get(&demand.vip).cloned();
        demand.interfaces = cluster.announce_interfaces.get(&demand.vip).cloned();
    }
    let elections = elect_all(&candidates, &demands);
    let owned = if view.settled {
        owned_by(&elections, local)
    } else {
        BTreeSet::new()
    };
    let garp = cluster
        .garp
        .iter()
        .filter(|(vip, _)| owned.contains(vip))
        .map(|(vip, settings)| (*vip, *settings))
        .collect();
    Plan {
        inputs,
        elections,
        owned,
        garp,
    }
}

/// Keeps a dataplane at the desired state of the latest inputs.
#[derive(Debug)]
pub struct Reconciler<D> {
    dataplane: D,
    /// What the maps hold.
    applied: State,
    /// The announce interface's MAC address; the inputs do not know the interface.
    mac: [u8; 6],
    /// Maglev tables of the last pass, so a pass rebuilds only the tables whose
    /// backends changed.
    tables: Tables,
}

impl<D: Dataplane> Reconciler<D> {
    /// Starts from what the maps hold (empty, or a previous agent's state).
    pub fn new(dataplane: D) -> Result<Self, DataplaneError> {
        let applied = dataplane.read()?;
        Ok(Self {
            dataplane,
            applied,
            mac: [0; 6],
            tables: Tables::default(),
        })
    }

    /// Writes `mac` as this node's MAC address from the next pass on: the data path then
    /// handles only VIP and tunnel frames sent to it (see [`crate::model::NodeConfig`]).
    pub fn with_mac(self, mac: [u8; 6]) -> Self {
        Self { mac, ..self }
    }

    /// Starts the memo from `tables`, e.g. built while adopting the maps, so the first
    /// pass does not build them again.
    pub fn with_tables(self, tables: Tables) -> Self {
        Self { tables, ..self }
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn applied(&self) -> &State {
        &self.applied
    }

    /// Brings the maps to the desired state of `inputs`; returns how long the map
    /// updates took, `None` when nothing changed. After a failed update the maps are read
    /// back, so the next pass diffs against what they really hold.
    pub fn reconcile(&mut self, inputs: &Inputs) -> Result<Option<Duration>, DataplaneError> {
        let mut desired = desired_state_with(inputs, &mut self.tables);
        desired.node.mac = self.mac;
        let changes = diff(&self.applied, &desired);
        if changes.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        match self.dataplane.apply(&changes) {
            Ok(()) => {
                self.applied = desired;
                Ok(Some(started.elapsed()))
            }
            Err(error) => {
                if let Ok(actual) = self.dataplane.read() {
                    self.applied = actual;
                }
                Err(error)
            }
        }
    }
}

/// A VIP whose owner changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerChange {
    pub vip: Ipv4Addr,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The owners last reported, to report each change once.
#[derive(Debug, Default)]
pub struct Owners {
    current: BTreeMap<Ipv4Addr, Option<String>>,
}

impl Owners {
    /// The changes from the previous call (VIPs that appeared or went away included).
    pub fn update(&mut self, elections: &BTreeMap<Ipv4Addr, Election>) -> Vec<OwnerChange> {
        let next: BTreeMap<Ipv4Addr, Option<String>> = elections
            .iter()
            .map(|(vip, election)| (*vip, election.owner.clone()))
            .collect();
        let vips: BTreeSet<Ipv4Addr> = self.current.keys().chain(next.keys()).copied().collect();
        let changes = vips
            .into_iter()
            .filter_map(|vip| {
                let from = self.current.get(&vip).cloned().flatten();
                let to = next.get(&vip).cloned().flatten();
                (from != to).then_some(OwnerChange { vip, from, to })
            })
            .collect();
        self.current = next;
        changes
    }
}

#[cfg(test)]
mod tests;
