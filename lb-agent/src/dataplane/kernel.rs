//! The dataplane over the kernel's BPF maps.

use aya::Ebpf;
use lb_common::types::{
    BackendValue, DataplaneConfig, NodeRing, PeerValue, PodRing, ServiceKey, ServiceSlot,
    ServiceValue, VipValue,
};

use super::{DataplaneError, Engine, MapStore, maps::Maps};
use crate::model::capacities::Capacities;

/// A dataplane over the maps of a loaded object.
pub type KernelDataplane = Engine<Maps>;

impl KernelDataplane {
    /// `capacities` must be the ones the object was loaded with.
    pub fn new(maps: Maps, capacities: Capacities) -> Self {
        Engine::with_store(maps, capacities)
    }

    /// Takes the maps out of `ebpf`, loaded with `capacities`.
    pub fn open(ebpf: &mut Ebpf, capacities: Capacities) -> Result<Self, DataplaneError> {
        Ok(Self::new(Maps::take(ebpf)?, capacities))
    }
}

/// `CONFIG` holds one entry.
const CONFIG_INDEX: u32 = 0;
/// So does `EPOCH`.
const EPOCH_INDEX: u32 = 0;

impl MapStore for Maps {
    fn set_config(&mut self, config: &DataplaneConfig) -> Result<(), DataplaneError> {
        Ok(self.config.set(CONFIG_INDEX, config)?)
    }

    fn config(&self) -> Result<DataplaneConfig, DataplaneError> {
        Ok(self.config.get(CONFIG_INDEX)?)
    }

    fn epoch(&self) -> Result<u32, DataplaneError> {
        Ok(self.epoch.get(EPOCH_INDEX)?)
    }

    fn set_epoch(&mut self, epoch: u32) -> Result<(), DataplaneError> {
        Ok(self.epoch.set(EPOCH_INDEX, &epoch)?)
    }

    fn insert_peer(&mut self, address: u32) -> Result<(), DataplaneError> {
        Ok(self.peers.insert(&address, &PeerValue::default())?)
    }

    fn remove_peer(&mut self, address: u32) -> Result<(), DataplaneError> {
        Ok(self.peers.remove(&address)?)
    }

    fn peers(&self) -> Result<Vec<u32>, DataplaneError> {
        Ok(self
            .peers
            .entries()?
            .into_iter()
            .map(|(address, _)| address)
            .collect())
    }

    fn insert_backend(&mut self, address: u32, value: &BackendValue) -> Result<(), DataplaneError> {
        Ok(self.backends.insert(&address, value)?)
    }

    fn remove_backend(&mut self, address: u32) -> Result<(), DataplaneError> {
        Ok(self.backends.remove(&address)?)
    }

    fn backends(&self) -> Result<Vec<(u32, BackendValue)>, DataplaneError> {
        Ok(self.backends.entries()?)
    }

    fn insert_vip(&mut self, vip: u32, value: &VipValue) -> Result<(), DataplaneError> {
        Ok(self.vips.insert(&vip, value)?)
    }

    fn remove_vip(&mut self, vip: u32) -> Result<(), DataplaneError> {
        Ok(self.vips.remove(&vip)?)
    }

    fn vips(&self) -> Result<Vec<(u32, VipValue)>, DataplaneError> {
        Ok(self.vips.entries()?)
    }

    fn reset_vip_stats(&mut self, index: u32) -> Result<(), DataplaneError> {
        Ok(self.vip_stats.reset(index)?)
    }

    fn write_rings(
        &mut self,
        slot: u32,
        node: &NodeRing,
        pod: &PodRing,
    ) -> Result<(), DataplaneError> {
        self.node_rings.set(slot, node)?;
        Ok(self.pod_rings.set(slot, pod)?)
    }

    fn node_ring(&self, slot: u32) -> Result<Box<NodeRing>, DataplaneError> {
        Ok(Box::new(self.node_rings.get(slot)?))
    }

    fn pod_ring(&self, slot: u32) -> Result<Box<PodRing>, DataplaneError> {
        Ok(Box::new(self.pod_rings.get(slot)?))
    }

    fn insert_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError> {
        Ok(self.services.insert(key, value)?)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        Ok(self.services.remove(key)?)
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        Ok(self.services.entries()?)
    }

    fn set_service_slot(&mut self, slot: u32, entry: &ServiceSlot) -> Result<(), DataplaneError> {
        Ok(self.service_slots.set(slot, entry)?)
    }

    fn service_slots(&self) -> Result<Vec<(u32, ServiceSlot)>, DataplaneError> {
        let mut held = Vec::new();
        for slot in 0..self.service_slots.len() {
            let entry = self.service_slots.get(slot)?;
            if entry != ServiceSlot::default() {
                held.push((slot, entry));
            }
        }
        Ok(held)
    }
}
