//! Building [`AgentStatus`], flow pages and explanations from what the runtime holds:
//! the model (inputs and desired state), live counters read through [`MapsView`], and
//! the election's and gossip's view, which the runtime passes in as is.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use lb_common::{
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
    reasons,
    types::{FlowKey, FlowValue},
};

use super::{
    AgentStatus, ArpStatus, BackendCounters, EndpointStatus, FlowEntry, FlowList, GossipStatus,
    MemberStatus, NodeShareStatus, Ownership, PortStatus, ProviderError, ServiceStatus,
    VipCounters, VipStatus,
};
use crate::{
    dataplane::{kernel::KernelDataplane, maps::MapsError},
    explain::{self, CacheLookup, Explanation, Query, recorded},
    model::{Inputs, PortKey, Protocol, Service, State, Table, TrafficPolicy, Vip, node_shares},
    wire,
};

/// Live values of the data path. [`KernelDataplane`] implements it over the BPF maps.
pub trait MapsView {
    /// `None` if the VIP has no statistics slot (not written to the maps yet).
    fn vip_counters(&self, vip: Ipv4Addr) -> Result<Option<VipCounters>, MapsError>;
    fn backend_counters(&self, address: Ipv4Addr) -> Result<BackendCounters, MapsError>;
    /// Indexed by `lb_common::reasons`.
    fn reason_totals(&self) -> Result<[u64; reasons::COUNT as usize], MapsError>;
    /// Every flow-cache entry.
    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError>;
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError>;
}

impl MapsView for KernelDataplane {
    fn vip_counters(&self, vip: Ipv4Addr) -> Result<Option<VipCounters>, MapsError> {
        self.stats_index(vip)
            .map(|index| self.store().vip_stats.total(index))
            .transpose()
    }

    fn backend_counters(&self, address: Ipv4Addr) -> Result<BackendCounters, MapsError> {
        let total = self.store().backends.totals(&wire::addr(address))?;
        Ok(total.into())
    }

    fn reason_totals(&self) -> Result<[u64; reasons::COUNT as usize], MapsError> {
        self.store().reason_totals()
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        self.store().flows.entries()
    }

    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        self.store().flows.get(key)
    }
}

/// What the runtime holds, borrowed for one request. Only `ownership` and `members`
/// come from the runtime's own modules; everything else it already has for the data
/// path.
#[derive(Clone)]
pub struct View<'a> {
    pub inputs: &'a Inputs,
    /// The state applied to the maps (the desired state of `inputs`).
    pub state: &'a State,
    pub interface: &'a str,
    /// How XDP is attached (`native`, `generic`), `None` while detached.
    pub xdp_mode: Option<&'a str>,
    /// The data path is attached and the first state is applied.
    pub ready: bool,
    /// `None` until the programs are loaded.
    pub maps: Option<&'a dyn MapsView>,
    /// The election's result per VIP; VIPs missing here have no owner.
    pub ownership: &'a BTreeMap<Ipv4Addr, Ownership>,
    /// [`MemberStatus::from_view`] of the gossip's view.
    pub members: Vec<MemberStatus>,
    /// The ARP announcer's counters, if it runs.
    pub arp: Option<ArpStatus>,
    /// Gossip's counters, if it runs.
    pub gossip: Option<GossipStatus>,
}

/// Reads live values, turning failures into warnings so one unreadable map leaves the
/// rest of the status intact.
struct Live<'a> {
    maps: Option<&'a dyn MapsView>,
    warnings: BTreeSet<String>,
}

impl Live<'_> {
    fn read<T>(
        &mut self,
        what: &str,
        read: impl FnOnce(&dyn MapsView) -> Result<T, MapsError>,
    ) -> Option<T> {
        match read(self.maps?) {
            Ok(value) => Some(value),
            Err(error) => {
                self.warnings.insert(format!("cannot read {what}: {error}"));
                None
            }
        }
    }
}

/// `count` slots over a table of `size` slots.
fn fraction(count: u32, size: usize) -> f64 {
    f64::from(count) / size as f64
}

/// Slots of `table` holding `address`.
fn slots(table: Option<&Table>, address: Ipv4Addr) -> u32 {
    let count = table.map_or(0, |table| {
        table.iter().filter(|slot| *slot == address).count()
    });
    u32::try_from(count).unwrap_or(u32::MAX)
}

impl View<'_> {
    fn this_node(&self) -> &str {
        &self.inputs.node.name
    }

    fn node_name(&self, address: Ipv4Addr) -> Option<String> {
        self.inputs
            .peers
            .iter()
            .chain([&self.inputs.node])
            .find(|node| node.address == address)
            .map(|node| node.name.clone())
    }

    /// The whole status; unreadable counters become [`AgentStatus::warnings`].
    pub fn status(&self) -> AgentStatus {
        let mut live = Live {
            maps: self.maps,
            warnings: BTreeSet::new(),
        };
        let reasons = live
            .read("the reason counters", |maps| maps.reason_totals())
            .map(|totals| {
                reasons::NAMES
                    .iter()
                    .zip(totals)
                    .map(|(name, total)| ((*name).to_owned(), total))
                    .collect()
            })
            .unwrap_or_default();
        let vips = self
            .state
            .vips
            .iter()
            .map(|(vip, flags)| self.vip(*vip, flags, &mut live))
            .collect();
        AgentStatus {
            node: self.inputs.node.name.clone(),
            address: self.inputs.node.address,
            interface: self.interface.to_owned(),
            xdp_mode: self.xdp_mode.map(str::to_owned),
            ready: self.ready,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vips,
            members: self.members.clone(),
            reasons,
            arp: self.arp,
            gossip: self.gossip.clone(),
            warnings: live.warnings.into_iter().collect(),
            refused: None,
        }
    }

    fn vip(&self, vip: Ipv4Addr, flags: &Vip, live: &mut Live<'_>) -> VipStatus {
        let services: Vec<&Service> = self
            .inputs
            .services
            .iter()
            .filter(|service| service.vip == vip)
            .collect();
        let ports = self
            .state
            .ports
            .iter()
            .filter(|(key, _)| key.vip == vip)
            .map(|(key, target)| PortStatus {
                port: key.port,
                protocol: key.protocol,
                target_port: target.target_port,
                service: target.service.clone(),
            })
            .collect();
        let endpoints = || services.iter().flat_map(|service| &service.endpoints);
        let count = |serving: bool| {
            let matching = endpoints().filter(|endpoint| !serving || endpoint.serving());
            u32::try_from(matching.count()).unwrap_or(u32::MAX)
        };
        let ownership = self.ownership.get(&vip).cloned().unwrap_or_default();
        VipStatus {
            vip,
            services: services
                .iter()
                .map(|service| self.service(service, live))
                .collect(),
            ports,
            drop_unknown_ports: flags.drop_unknown_ports,
            owned_here: ownership.owner.as_deref() == Some(self.this_node()),
            owner: ownership.owner,
            owner_reason: ownership.reason,
            candidates: ownership.candidates,
            backends_ready: count(true),
            backends_total: count(false),
            counters: live
                .read(&format!("the counters of VIP {vip}"), |maps| {
                    maps.vip_counters(vip)
                })
                .flatten(),
        }
    }

    fn service(&self, service: &Service, live: &mut Live<'_>) -> ServiceStatus {
        let rings = self.state.rings.get(&service.name);
        let node_table = rings.map(|rings| &rings.node);
        let pod_table = rings.map(|rings| &rings.pod);
        let table_used = service.traffic_policy == TrafficPolicy::Cluster;
        let nodes = node_shares(self.inputs, service)
            .into_iter()
            .map(|(name, share)| {
                let slots = table_used.then(|| slots(node_table, share.address));
                let tunnelled = name != self.this_node();
                NodeShareStatus {
                    node: name.to_owned(),
                    address: share.address,
                    ready_endpoints: share.serving,
                    draining_endpoints: share.draining,
                    slots,
                    share: slots.map(|count| fraction(count, NODE_RING_SIZE)),
                    counters: tunnelled
                        .then(|| self.backend_counters(share.address, live))
                        .flatten(),
                }
            })
            .collect();
        let mut endpoints: Vec<EndpointStatus> = service
            .endpoints
            .iter()
            .map(|endpoint| {
                let local = endpoint.node == self.this_node();
                let slots = local.then(|| slots(pod_table, endpoint.address));
                EndpointStatus {
                    address: endpoint.address,
                    node: endpoint.node.clone(),
                    ready: endpoint.ready,
                    terminating: endpoint.terminating,
                    slots,
                    share: slots.map(|count| fraction(count, POD_RING_SIZE)),
                    counters: local
                        .then(|| self.backend_counters(endpoint.address, live))
                        .flatten(),
                }
            })
            .collect();
        endpoints.sort_by_key(|endpoint| endpoint.address);
        ServiceStatus {
            name: service.name.clone(),
            traffic_policy: service.traffic_policy,
            nodes,
            endpoints,
        }
    }

    fn backend_counters(&self, address: Ipv4Addr, live: &mut Live<'_>) -> Option<BackendCounters> {
        live.read(&format!("the counters of backend {address}"), |maps| {
            maps.backend_counters(address)
        })
    }

    /// At most `limit` flow-cache entries, ordered by VIP, protocol and client, and how
    /// many there are in all.
    pub fn flows(&self, limit: usize) -> Result<FlowList, ProviderError> {
        let maps = self.maps.ok_or(ProviderError::NotLoaded)?;
        let entries = maps.flows()?;
        let mut flows: Vec<FlowEntry> = entries
            .iter()
            .filter_map(|(key, value)| self.flow_entry(key, value))
            .collect();
        flows.sort_by_key(|flow| (flow.vip, flow.protocol, flow.client));
        flows.truncate(limit);
        Ok(FlowList {
            total: entries.len(),
            flows,
        })
    }

    fn flow_entry(&self, key: &FlowKey, value: &FlowValue) -> Option<FlowEntry> {
        let query = Query::from_flow_key(key)?;
        let port = PortKey {
            vip: *query.vip.ip(),
            port: query.vip.port(),
            protocol: query.protocol,
        };
        let node = recorded(value.node);
        Some(FlowEntry {
            client: query.client,
            vip: query.vip,
            protocol: query.protocol,
            service: self
                .state
                .ports
                .get(&port)
                .map(|target| target.service.clone()),
            node,
            node_name: node.and_then(|address| self.node_name(address)),
            pod: recorded(value.pod),
        })
    }

    /// [`explain::explain`] with the VIP's elected owner as the receiving node, plus
    /// what this node's flow cache holds for the flow.
    pub fn explain(
        &self,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    ) -> Result<Explanation, ProviderError> {
        let query = Query {
            client,
            vip,
            protocol,
        };
        let owner = self
            .ownership
            .get(vip.ip())
            .and_then(|ownership| ownership.owner.as_deref());
        let explanation = explain::explain(self.inputs, self.state, owner, query);
        // Only flows to a service port are cached.
        if explanation.service.is_none() {
            return Ok(explanation);
        }
        let cache = match self.maps {
            None => CacheLookup::NotChecked,
            Some(maps) => CacheLookup::from_entry(maps.flow(&query.flow_key())?.as_ref()),
        };
        Ok(explanation.with_cache(self.this_node(), cache))
    }
}

#[cfg(test)]
mod tests;
