//! The data-path maps as in-memory tables, for host tests of the agent's core.
//!
//! Besides storing entries, every update is checked against what a concurrently running
//! XDP program could observe: a write that would let a packet see a table being
//! rewritten, a table naming an unknown backend, a port without its VIP, a port whose
//! service slot does not hold it, or a service slot changing key and value at once
//! fails with [`DataplaneError::Hazard`]. [`MemoryMaps::check_epoch`] finds writes the
//! epoch did not follow, which would leave express entries deciding by the old tables.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{
    maps::{
        BACKEND_SLOTS, BACKENDS, CONFIG, NODE_RING_SIZE, NODE_RINGS, PEERS, POD_RING_SIZE,
        SERVICE_SLOTS, SERVICES, VIP_STATS, VIPS,
    },
    types::{
        BackendValue, DataplaneConfig, NodeRing, PodRing, RING_EMPTY, ServiceKey, ServiceSlot,
        ServiceValue, VipStats, VipValue,
    },
};

use super::{DataplaneError, Engine, MapStore};
use crate::{model::capacities::Capacities, wire};

/// A dataplane over [`MemoryMaps`].
pub type MemoryDataplane = Engine<MemoryMaps>;

impl MemoryDataplane {
    pub fn new(capacities: Capacities) -> Self {
        Engine::with_store(MemoryMaps::new(&capacities), capacities)
    }
}

#[derive(Debug)]
pub struct MemoryMaps {
    config: DataplaneConfig,
    peers: BTreeSet<u32>,
    backends: BTreeMap<u32, BackendValue>,
    backend_slots: u32,
    vips: BTreeMap<u32, VipValue>,
    /// One CPU's worth of counters per statistics slot.
    vip_stats: Vec<VipStats>,
    ring_slots: u32,
    node_rings: BTreeMap<u32, Box<NodeRing>>,
    pod_rings: BTreeMap<u32, Box<PodRing>>,
    services: BTreeMap<ServiceKey, ServiceValue>,
    service_slots: Vec<ServiceSlot>,
    epoch: u32,
    /// A map a decision depends on, written since the epoch last advanced.
    unretired: Option<&'static str>,
}

fn hazard(detail: String) -> DataplaneError {
    DataplaneError::Hazard(detail)
}

impl MemoryMaps {
    pub fn new(capacities: &Capacities) -> Self {
        Self {
            config: DataplaneConfig::default(),
            peers: BTreeSet::new(),
            backends: BTreeMap::new(),
            backend_slots: capacities.backends,
            vips: BTreeMap::new(),
            vip_stats: vec![VipStats::default(); capacities.vips as usize],
            ring_slots: capacities.ring_slots(),
            node_rings: BTreeMap::new(),
            pod_rings: BTreeMap::new(),
            services: BTreeMap::new(),
            service_slots: vec![ServiceSlot::default(); capacities.service_ports as usize],
            epoch: 0,
            unretired: None,
        }
    }

    /// Checks that the epoch advanced after the last write of a map the kernel's
    /// decisions depend on: what every apply that changed something leaves behind.
    pub fn check_epoch(&self) -> Result<(), DataplaneError> {
        match self.unretired {
            Some(map) => Err(hazard(format!(
                "{map} written after the epoch last advanced: express entries decided before it still stand"
            ))),
            None => Ok(()),
        }
    }

    /// The maps as pins of a layout without service slots leave them: every port's slot
    /// 0 (its former padding), `SERVICE_SLOTS` all zero (created afresh).
    #[cfg(test)]
    pub fn without_service_slots(&mut self) {
        for value in self.services.values_mut() {
            value.slot = 0;
        }
        self.service_slots.fill(ServiceSlot::default());
    }

    /// Checks that the service slots hold exactly the `SERVICES` entries, each at the
    /// slot its value names: what every apply leaves behind.
    pub fn check_service_slots(&self) -> Result<(), DataplaneError> {
        let mut expected = vec![ServiceSlot::default(); self.service_slots.len()];
        for (key, value) in &self.services {
            let slot = expected
                .get_mut(value.slot as usize)
                .ok_or(DataplaneError::OutOfRange {
                    map: SERVICE_SLOTS,
                    index: value.slot,
                })?;
            *slot = ServiceSlot {
                key: *key,
                value: *value,
            };
        }
        match (0u32..)
            .zip(expected.iter().zip(&self.service_slots))
            .find(|(_, (wanted, held))| wanted != held)
        {
            Some((slot, (wanted, held))) => Err(hazard(format!(
                "service slot {slot} holds {held:?}, SERVICES gives it {wanted:?}"
            ))),
            None => Ok(()),
        }
    }

    /// A port entry may point at its slot only once the slot holds that very entry, and
    /// no other port may point there.
    fn check_slot_of(&self, key: &ServiceKey, value: &ServiceValue) -> Result<(), DataplaneError> {
        let port = wire::port_key(key)?;
        let entry = ServiceSlot {
            key: *key,
            value: *value,
        };
        if self.service_slots.get(value.slot as usize) != Some(&entry) {
            return Err(hazard(format!(
                "{port} points at service slot {} before it holds the port",
                value.slot
            )));
        }
        match self
            .services
            .iter()
            .find(|(other, held)| *other != key && held.slot == value.slot)
        {
            Some((other, _)) => Err(hazard(format!(
                "{port} shares service slot {} with {}",
                value.slot,
                wire::port_key(other)?
            ))),
            None => Ok(()),
        }
    }

    /// The counters of a statistics slot, as the kernel program would update them.
    #[cfg(test)]
    pub fn vip_stats_mut(&mut self, index: u32) -> Option<&mut VipStats> {
        self.vip_stats.get_mut(index as usize)
    }

    pub fn vip_stats(&self, index: u32) -> Option<&VipStats> {
        self.vip_stats.get(index as usize)
    }

    fn users_of_slot(&self, slot: u32) -> impl Iterator<Item = &ServiceKey> {
        self.services
            .iter()
            .filter(move |(_, value)| value.ring_slot == slot)
            .map(|(key, _)| key)
    }

    /// Ring slots some port points at.
    fn live_slots(&self) -> BTreeSet<u32> {
        self.services
            .values()
            .map(|value| value.ring_slot)
            .collect()
    }

    fn check_ring_slot(&self, slot: u32) -> Result<(), DataplaneError> {
        if slot >= self.ring_slots {
            return Err(DataplaneError::OutOfRange {
                map: lb_common::maps::NODE_RINGS,
                index: slot,
            });
        }
        if let Some(key) = self.users_of_slot(slot).next() {
            let port = wire::port_key(key)?;
            return Err(hazard(format!(
                "ring slot {slot} rewritten while {port} points at it"
            )));
        }
        Ok(())
    }

    fn check_members(&self, slot: u32, members: &[u32]) -> Result<(), DataplaneError> {
        match members
            .iter()
            .find(|member| **member != RING_EMPTY && !self.backends.contains_key(member))
        {
            Some(member) => Err(hazard(format!(
                "ring slot {slot} names {} before BACKENDS has it",
                wire::ip(*member)
            ))),
            None => Ok(()),
        }
    }

    fn slot_names(&self, slot: u32, address: u32) -> bool {
        let in_node = self
            .node_rings
            .get(&slot)
            .is_some_and(|ring| ring.backends.contains(&address));
        let in_pod = self
            .pod_rings
            .get(&slot)
            .is_some_and(|ring| ring.backends.contains(&address));
        in_node || in_pod
    }
}

impl MapStore for MemoryMaps {
    fn set_config(&mut self, config: &DataplaneConfig) -> Result<(), DataplaneError> {
        self.config = *config;
        self.unretired = Some(CONFIG);
        Ok(())
    }

    fn config(&self) -> Result<DataplaneConfig, DataplaneError> {
        Ok(self.config)
    }

    fn epoch(&self) -> Result<u32, DataplaneError> {
        Ok(self.epoch)
    }

    fn set_epoch(&mut self, epoch: u32) -> Result<(), DataplaneError> {
        if epoch == 0 || epoch == self.epoch {
            return Err(hazard(format!(
                "epoch {} set to {epoch}: express entries of the old epoch would stand",
                self.epoch
            )));
        }
        self.epoch = epoch;
        self.unretired = None;
        Ok(())
    }

    fn insert_peer(&mut self, address: u32) -> Result<(), DataplaneError> {
        self.peers.insert(address);
        self.unretired = Some(PEERS);
        Ok(())
    }

    fn remove_peer(&mut self, address: u32) -> Result<(), DataplaneError> {
        self.peers.remove(&address);
        self.unretired = Some(PEERS);
        Ok(())
    }

    fn peers(&self) -> Result<Vec<u32>, DataplaneError> {
        Ok(self.peers.iter().copied().collect())
    }

    fn insert_backend(&mut self, address: u32, value: &BackendValue) -> Result<(), DataplaneError> {
        if value.slot >= self.backend_slots {
            return Err(DataplaneError::OutOfRange {
                map: BACKEND_SLOTS,
                index: value.slot,
            });
        }
        if let Some((other, _)) = self
            .backends
            .iter()
            .find(|(other, held)| **other != address && held.slot == value.slot)
        {
            return Err(hazard(format!(
                "backend slot {} given to {} while {} holds it",
                value.slot,
                wire::ip(address),
                wire::ip(*other)
            )));
        }
        self.backends.insert(address, *value);
        self.unretired = Some(BACKENDS);
        Ok(())
    }

    fn remove_backend(&mut self, address: u32) -> Result<(), DataplaneError> {
        if let Some(slot) = self
            .live_slots()
            .into_iter()
            .find(|slot| self.slot_names(*slot, address))
        {
            return Err(hazard(format!(
                "backend {} removed while ring slot {slot} in use names it",
                wire::ip(address)
            )));
        }
        self.backends.remove(&address);
        self.unretired = Some(BACKENDS);
        Ok(())
    }

    fn backends(&self) -> Result<Vec<(u32, BackendValue)>, DataplaneError> {
        Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn insert_vip(&mut self, vip: u32, value: &VipValue) -> Result<(), DataplaneError> {
        if value.stats_index as usize >= self.vip_stats.len() {
            return Err(DataplaneError::OutOfRange {
                map: VIP_STATS,
                index: value.stats_index,
            });
        }
        self.vips.insert(vip, *value);
        self.unretired = Some(VIPS);
        Ok(())
    }

    fn remove_vip(&mut self, vip: u32) -> Result<(), DataplaneError> {
        if let Some(key) = self.services.keys().find(|key| key.vip == vip) {
            let port = wire::port_key(key)?;
            return Err(hazard(format!("VIP removed while {port} still exists")));
        }
        self.vips.remove(&vip);
        self.unretired = Some(VIPS);
        Ok(())
    }

    fn vips(&self) -> Result<Vec<(u32, VipValue)>, DataplaneError> {
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn reset_vip_stats(&mut self, index: u32) -> Result<(), DataplaneError> {
        let stats = self
            .vip_stats
            .get_mut(index as usize)
            .ok_or(DataplaneError::OutOfRange {
                map: VIP_STATS,
                index,
            })?;
        *stats = VipStats::default();
        Ok(())
    }

    fn write_rings(
        &mut self,
        slot: u32,
        node: &NodeRing,
        pod: &PodRing,
    ) -> Result<(), DataplaneError> {
        self.check_ring_slot(slot)?;
        self.check_members(slot, &node.backends)?;
        self.check_members(slot, &pod.backends)?;
        self.node_rings.insert(slot, Box::new(*node));
        self.pod_rings.insert(slot, Box::new(*pod));
        self.unretired = Some(NODE_RINGS);
        Ok(())
    }

    fn node_ring(&self, slot: u32) -> Result<Box<NodeRing>, DataplaneError> {
        Ok(self.node_rings.get(&slot).cloned().unwrap_or_else(|| {
            Box::new(NodeRing {
                backends: [RING_EMPTY; NODE_RING_SIZE],
            })
        }))
    }

    fn pod_ring(&self, slot: u32) -> Result<Box<PodRing>, DataplaneError> {
        Ok(self.pod_rings.get(&slot).cloned().unwrap_or_else(|| {
            Box::new(PodRing {
                backends: [RING_EMPTY; POD_RING_SIZE],
            })
        }))
    }

    fn insert_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError> {
        let port = wire::port_key(key)?;
        if !self.node_rings.contains_key(&value.ring_slot) {
            return Err(hazard(format!(
                "{port} points at ring slot {} before it is written",
                value.ring_slot
            )));
        }
        let Some(vip) = self.vips.get(&key.vip) else {
            return Err(hazard(format!("{port} inserted before its VIP")));
        };
        if vip.stats_index != value.stats_index {
            return Err(hazard(format!(
                "{port} counts into statistics slot {}, its VIP into {}",
                value.stats_index, vip.stats_index
            )));
        }
        self.check_slot_of(key, value)?;
        self.services.insert(*key, *value);
        self.unretired = Some(SERVICES);
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.services.remove(key);
        self.unretired = Some(SERVICES);
        Ok(())
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_service_slot(&mut self, slot: u32, entry: &ServiceSlot) -> Result<(), DataplaneError> {
        let held = self
            .service_slots
            .get_mut(slot as usize)
            .ok_or(DataplaneError::OutOfRange {
                map: SERVICE_SLOTS,
                index: slot,
            })?;
        if !one_sided(held, entry) {
            return Err(hazard(format!(
                "service slot {slot} goes from {held:?} to {entry:?} in one write: a packet may read one's key with the other's value"
            )));
        }
        *held = *entry;
        Ok(())
    }

    fn service_slots(&self) -> Result<Vec<(u32, ServiceSlot)>, DataplaneError> {
        Ok((0u32..)
            .zip(&self.service_slots)
            .filter(|(_, entry)| **entry != ServiceSlot::default())
            .map(|(slot, entry)| (slot, *entry))
            .collect())
    }
}

/// Whether one write from `from` to `to` is safe to read half done: it changes the value
/// only under a zero key (which no flow matches), and the key only to or from zero over
/// an unchanged value.
fn one_sided(from: &ServiceSlot, to: &ServiceSlot) -> bool {
    let cleared = ServiceKey::default();
    if from.value == to.value {
        from.key == to.key || from.key == cleared || to.key == cleared
    } else {
        from.key == cleared && to.key == cleared
    }
}

#[cfg(test)]
mod tests;
