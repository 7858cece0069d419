//! `SERVICE_SLOTS`: which slot each service port has, and the writes that change what a
//! slot holds.
//!
//! A flow's cache entry names its service's slot, and `xdp_lb` takes the flow's service
//! from the slot while the slot's key is the flow's `(vip, port, protocol)`. A port keeps
//! its slot while it exists; a removed port's slot is cleared before another port may
//! take it. An array write is a plain copy that a packet may read half done, so no
//! single write changes both a slot's key and its value ([`steps`]).

use std::collections::{BTreeMap, BTreeSet};

use lb_common::types::{ServiceKey, ServiceSlot};

use super::{DataplaneError, index_pool::IndexPool};
use crate::model::PortKey;

/// Which slot each service port has, and what every slot holds as last written.
#[derive(Debug)]
pub(super) struct ServiceSlots {
    pool: IndexPool,
    capacity: u32,
    by_port: BTreeMap<PortKey, u32>,
    /// Slots of removed ports, to be cleared before they are free again.
    retired: BTreeSet<u32>,
    /// What the slots hold; slots not listed hold zeroes.
    held: BTreeMap<u32, ServiceSlot>,
}

impl ServiceSlots {
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            pool: IndexPool::new(capacity),
            capacity,
            by_port: BTreeMap::new(),
            retired: BTreeSet::new(),
            held: BTreeMap::new(),
        }
    }

    /// `port`'s slot, the lowest free one for a new port (then `true`).
    pub(super) fn assign(&mut self, port: &PortKey) -> Result<(u32, bool), DataplaneError> {
        if let Some(slot) = self.by_port.get(port) {
            return Ok((*slot, false));
        }
        let slot = self.pool.take().ok_or(DataplaneError::Capacity {
            what: "service ports",
            needed: self.by_port.len() + self.retired.len() + 1,
            capacity: self.capacity,
        })?;
        self.by_port.insert(*port, slot);
        Ok((slot, true))
    }

    /// Marks `slot` as `port`'s, as found in adopted maps; false if it is out of range
    /// ([`lb_common::types::NO_SLOT`] included) or another port's.
    pub(super) fn claim(&mut self, port: &PortKey, slot: u32) -> bool {
        let claimed = self.pool.claim(slot);
        if claimed {
            self.by_port.insert(*port, slot);
        }
        claimed
    }

    pub(super) fn slot(&self, port: &PortKey) -> Option<u32> {
        self.by_port.get(port).copied()
    }

    /// Frees a slot that was assigned and never written for its port.
    pub(super) fn unassign(&mut self, port: &PortKey) {
        if let Some(slot) = self.by_port.remove(port) {
            self.pool.put(slot);
        }
    }

    /// Takes `port`'s slot from it; the slot is free once [`Self::cleared`] says so.
    pub(super) fn retire(&mut self, port: &PortKey) {
        if let Some(slot) = self.by_port.remove(port) {
            self.retired.insert(slot);
        }
    }

    /// Slots waiting to be cleared.
    pub(super) fn retired(&self) -> Vec<u32> {
        self.retired.iter().copied().collect()
    }

    /// A retired slot now holds zeroes: free.
    pub(super) fn cleared(&mut self, slot: u32) {
        if self.retired.remove(&slot) {
            self.pool.put(slot);
        }
    }

    pub(super) fn held(&self, slot: u32) -> ServiceSlot {
        self.held.get(&slot).copied().unwrap_or_default()
    }

    /// Slots that hold something.
    pub(super) fn written(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// `slot` now holds `content`.
    pub(super) fn record(&mut self, slot: u32, content: ServiceSlot) {
        if content == ServiceSlot::default() {
            self.held.remove(&slot);
        } else {
            self.held.insert(slot, content);
        }
    }
}

/// The writes that take a slot from `from` to `to`, in order. None changes both key and
/// value: the key is zeroed first (no flow matches a zero key), the value written under
/// the zero key, and the key set last over the value it goes with. A packet reading a
/// slot during any one write then sees a key with the value that goes with it, or no
/// match.
pub(super) fn steps(from: &ServiceSlot, to: &ServiceSlot) -> Vec<ServiceSlot> {
    let cleared = ServiceKey::default();
    let mut steps = Vec::new();
    if from == to {
        return steps;
    }
    if from.key != cleared {
        steps.push(ServiceSlot {
            key: cleared,
            value: from.value,
        });
    }
    if from.value != to.value {
        steps.push(ServiceSlot {
            key: cleared,
            value: to.value,
        });
    }
    if to.key != cleared {
        steps.push(*to);
    }
    steps
}
