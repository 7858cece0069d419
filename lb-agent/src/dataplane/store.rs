//! The raw map operations the [`super::Engine`] needs, in lb-common's layouts.

use lb_common::types::{
    BackendValue, DataplaneConfig, NodeRing, PodRing, ServiceKey, ServiceSlot, ServiceValue,
    VipValue,
};

use super::DataplaneError;

/// One set of data-path maps. Addresses are map keys as stored (network byte order).
pub trait MapStore {
    fn set_config(&mut self, config: &DataplaneConfig) -> Result<(), DataplaneError>;
    fn config(&self) -> Result<DataplaneConfig, DataplaneError>;

    /// The data path's epoch ([`lb_common::maps::EPOCH`]): 0 until the first change.
    fn epoch(&self) -> Result<u32, DataplaneError>;
    fn set_epoch(&mut self, epoch: u32) -> Result<(), DataplaneError>;

    fn insert_peer(&mut self, address: u32) -> Result<(), DataplaneError>;
    fn remove_peer(&mut self, address: u32) -> Result<(), DataplaneError>;
    fn peers(&self) -> Result<Vec<u32>, DataplaneError>;

    fn insert_backend(&mut self, address: u32, value: &BackendValue) -> Result<(), DataplaneError>;
    fn remove_backend(&mut self, address: u32) -> Result<(), DataplaneError>;
    fn backends(&self) -> Result<Vec<(u32, BackendValue)>, DataplaneError>;

    fn insert_vip(&mut self, vip: u32, value: &VipValue) -> Result<(), DataplaneError>;
    fn remove_vip(&mut self, vip: u32) -> Result<(), DataplaneError>;
    fn vips(&self) -> Result<Vec<(u32, VipValue)>, DataplaneError>;
    /// Zeroes a VIP statistics slot on every CPU.
    fn reset_vip_stats(&mut self, index: u32) -> Result<(), DataplaneError>;

    /// Writes both tables of one ring slot.
    fn write_rings(
        &mut self,
        slot: u32,
        node: &NodeRing,
        pod: &PodRing,
    ) -> Result<(), DataplaneError>;
    fn node_ring(&self, slot: u32) -> Result<Box<NodeRing>, DataplaneError>;
    fn pod_ring(&self, slot: u32) -> Result<Box<PodRing>, DataplaneError>;

    fn insert_service(
        &mut self,
        key: &ServiceKey,
        value: &ServiceValue,
    ) -> Result<(), DataplaneError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError>;
    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError>;

    /// Writes one `SERVICE_SLOTS` entry.
    fn set_service_slot(&mut self, slot: u32, entry: &ServiceSlot) -> Result<(), DataplaneError>;
    /// Every `SERVICE_SLOTS` entry that is not all zero.
    fn service_slots(&self) -> Result<Vec<(u32, ServiceSlot)>, DataplaneError>;
}
