//! The update logic shared by every [`MapStore`]: in which order entries are written,
//! how a service switches to new tables, which statistics slot a VIP uses and which
//! `SERVICE_SLOTS` slot a service port has.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{
    maps::{BACKENDS, MAX_PEERS, SERVICES, VIPS},
    types::{ServiceKey, ServiceSlot, ServiceValue},
};

use super::{
    Dataplane, DataplaneError, MapStore,
    index_pool::IndexPool,
    service_slots::{self, ServiceSlots},
};
use crate::{
    diff::{Changes, Delta},
    model::capacities::Capacities,
    model::{BackendState, Interner, PortKey, PortTarget, Rings, State, Vip},
    wire,
};

/// Prefix of the names given to adopted ring slots that no desired service claims; a
/// configured name never starts with it, so the next diff removes them.
const ADOPTED_SLOT: &str = "~adopted-slot-";

/// The service a ring slot found in the maps belongs to: the one `desired` gives all of
/// the slot's ports, if that is unambiguous and not taken yet.
fn slot_name(
    slot: u32,
    ports: &[(PortKey, ServiceValue)],
    desired: &State,
    taken: &BTreeSet<String>,
) -> String {
    let mut names = ports
        .iter()
        .map(|(key, _)| desired.ports.get(key).map(|target| &target.service));
    let first = names.next().flatten();
    match first {
        Some(name) if names.all(|other| other == Some(name)) && !taken.contains(name) => {
            name.clone()
        }
        _ => format!("{ADOPTED_SLOT}{slot}"),
    }
}

/// Entries `delta` leaves in a table that holds `current`.
fn count_after<'a, K: Ord + 'a, V>(
    current: impl Iterator<Item = &'a K>,
    delta: &Delta<K, V>,
) -> usize {
    let kept = current
        .filter(|key| !delta.remove.contains(*key) && !delta.upsert.contains_key(*key))
        .count();
    kept + delta.upsert.len()
}

/// A dataplane over `S`. It remembers what it wrote (ports, which ring slot each service
/// uses, which statistics slot each VIP uses, which slot each backend and each service
/// port has) so updates never need to read the maps.
#[derive(Debug)]
pub struct Engine<S> {
    store: S,
    capacities: Capacities,
    ring_pool: IndexPool,
    stats_pool: IndexPool,
    backend_pool: IndexPool,
    /// Service name -> ring slot its ports point at.
    slots: BTreeMap<String, u32>,
    /// VIP -> statistics slot.
    stats: BTreeMap<Ipv4Addr, u32>,
    ports: BTreeMap<PortKey, PortTarget>,
    /// Backend -> its slot in the per-backend arrays.
    backends: BTreeMap<Ipv4Addr, u32>,
    peers: BTreeSet<Ipv4Addr>,
    service_slots: ServiceSlots,
}

impl<S: MapStore> Engine<S> {
    /// An engine over maps that hold nothing yet, sized by `capacities`.
    pub fn with_store(store: S, capacities: Capacities) -> Self {
        Self {
            store,
            ring_pool: IndexPool::new(capacities.ring_slots()),
            stats_pool: IndexPool::new(capacities.vips),
            backend_pool: IndexPool::new(capacities.backends),
            service_slots: ServiceSlots::new(capacities.service_ports),
            capacities,
            slots: BTreeMap::new(),
            stats: BTreeMap::new(),
            ports: BTreeMap::new(),
            backends: BTreeMap::new(),
            peers: BTreeSet::new(),
        }
    }

    /// An engine over maps a previous agent filled (a restart or upgrade): which ring
    /// slot each service uses and which statistics slot each VIP uses are rebuilt from
    /// the maps, so [`Dataplane::read`] returns what they hold and the diff against
    /// `desired` rewrites only what changed. A slot's service name comes from `desired`
    /// (the ports pointing at it name it); slots `desired` does not explain get a
    /// placeholder name and are replaced by the next apply. Service slots are adopted
    /// too ([`Self::adopt_service_slots`]).
    pub fn adopt(
        store: S,
        capacities: Capacities,
        desired: &State,
    ) -> Result<Self, DataplaneError> {
        let mut engine = Self::with_store(store, capacities);
        for (vip, value) in engine.store.vips()? {
            let vip = wire::ip(vip);
            engine
                .stats_pool
                .claim_found(value.stats_index, VIPS, vip, "statistics slot")?;
            engine.stats.insert(vip, value.stats_index);
        }
        let mut by_slot: BTreeMap<u32, Vec<(PortKey, ServiceValue)>> = BTreeMap::new();
        let services = engine.store.services()?;
        for (key, value) in &services {
            by_slot
                .entry(value.ring_slot)
                .or_default()
                .push((wire::port_key(key)?, *value));
        }
        let mut taken = BTreeSet::new();
        for (slot, ports) in by_slot {
            if !engine.ring_pool.claim(slot) {
                return Err(DataplaneError::OutOfRange {
                    map: lb_common::maps::NODE_RINGS,
                    index: slot,
                });
            }
            let name = slot_name(slot, &ports, desired, &taken);
            taken.insert(name.clone());
            for (key, value) in &ports {
                engine
                    .ports
                    .insert(*key, wire::port_target(value, name.clone()));
            }
            engine.slots.insert(name, slot);
        }
        for (address, value) in engine.store.backends()? {
            let address = wire::ip(address);
            engine
                .backend_pool
                .claim_found(value.slot, BACKENDS, address, "backend slot")?;
            engine.backends.insert(address, value.slot);
        }
        let peers = engine.store.peers()?;
        engine.peers = peers.into_iter().map(wire::ip).collect();
        engine.adopt_service_slots(&services)?;
        Ok(engine)
    }

    /// Takes over the service slots `services` (the adopted `SERVICES` entries) name and
    /// makes `SERVICE_SLOTS` match them: a previous agent may have died between two
    /// writes. An entry whose slot is out of range or already another port's (maps
    /// carried over from a layout without service slots) gets a free slot, written
    /// before its `SERVICES` entry is. Until then its flows look it up in `SERVICES`: the
    /// kernel checks a slot's key, so another port's slot never serves them.
    fn adopt_service_slots(
        &mut self,
        services: &[(ServiceKey, ServiceValue)],
    ) -> Result<(), DataplaneError> {
        let mut slotted = Vec::new();
        let mut unslotted = Vec::new();
        for (key, value) in services {
            let port = wire::port_key(key)?;
            if self.service_slots.claim(&port, value.slot) {
                slotted.push((*key, *value));
            } else {
                unslotted.push((port, *key, *value));
            }
        }
        self.resync_service_slots(&slotted)?;
        for (port, key, value) in unslotted {
            let (slot, _) = self.service_slots.assign(&port)?;
            let value = ServiceValue { slot, ..value };
            self.write_service_slot(slot, ServiceSlot { key, value })?;
            self.store.insert_service(&key, &value)?;
        }
        Ok(())
    }

    /// Gives the maps back (e.g. to adopt them in another engine).
    #[cfg(test)]
    pub fn into_store(self) -> S {
        self.store
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// For tests that play the kernel program's part on the maps.
    #[cfg(test)]
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The ring slot `service`'s ports point at.
    pub fn ring_slot(&self, service: &str) -> Option<u32> {
        self.slots.get(service).copied()
    }

    /// The `VIP_STATS` index of `vip`.
    pub fn stats_index(&self, vip: Ipv4Addr) -> Option<u32> {
        self.stats.get(&vip).copied()
    }

    /// The `SERVICE_SLOTS` index of `port`.
    pub fn service_slot(&self, port: &PortKey) -> Option<u32> {
        self.service_slots.slot(port)
    }

    /// Refuses changes that would overflow a map before writing any of them.
    fn check_capacities(&self, changes: &Changes) -> Result<(), DataplaneError> {
        let limits = &self.capacities;
        let checks = [
            (
                "VIPs",
                count_after(self.stats.keys(), &changes.vips),
                limits.vips,
            ),
            (
                "service ports",
                count_after(self.ports.keys(), &changes.ports),
                limits.service_ports,
            ),
            (
                "services",
                count_after(self.slots.keys(), &changes.rings),
                limits.services,
            ),
            (
                "backends",
                count_after(self.backends.keys(), &changes.backends),
                limits.backends,
            ),
            (
                "peers",
                count_after(self.peers.iter(), &changes.peers),
                MAX_PEERS,
            ),
        ];
        match checks
            .into_iter()
            .find(|(_, needed, capacity)| *needed > *capacity as usize)
        {
            Some((what, needed, capacity)) => Err(DataplaneError::Capacity {
                what,
                needed,
                capacity,
            }),
            None => Ok(()),
        }
    }

    fn upsert_vip(&mut self, vip: Ipv4Addr, value: &Vip) -> Result<(), DataplaneError> {
        let index = match self.stats.get(&vip) {
            Some(index) => *index,
            None => {
                let index = self.stats_pool.take().ok_or(DataplaneError::Capacity {
                    what: "VIPs",
                    needed: self.stats.len() + 1,
                    capacity: self.capacities.vips,
                })?;
                // A reused slot still holds the counters of the VIP that had it.
                if let Err(error) = self.store.reset_vip_stats(index) {
                    self.stats_pool.put(index);
                    return Err(error);
                }
                self.stats.insert(vip, index);
                index
            }
        };
        self.store
            .insert_vip(wire::addr(vip), &wire::vip_value(value, index))
    }

    fn remove_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.store.remove_vip(wire::addr(vip))?;
        if let Some(index) = self.stats.remove(&vip) {
            self.stats_pool.put(index);
        }
        Ok(())
    }

    /// Writes `address` in its slot, taking a free one for a new backend.
    fn upsert_backend(
        &mut self,
        address: Ipv4Addr,
        state: BackendState,
    ) -> Result<(), DataplaneError> {
        let (slot, new) = match self.backends.get(&address) {
            Some(slot) => (*slot, false),
            None => {
                let slot = self.backend_pool.take().ok_or(DataplaneError::Capacity {
                    what: "backends",
                    needed: self.backends.len() + 1,
                    capacity: self.capacities.backends,
                })?;
                (slot, true)
            }
        };
        let written = self
            .store
            .insert_backend(wire::addr(address), &wire::backend_value(state, slot));
        match written {
            Ok(()) => {
                self.backends.insert(address, slot);
                Ok(())
            }
            Err(error) => {
                if new {
                    self.backend_pool.put(slot);
                }
                Err(error)
            }
        }
    }

    /// Writes `rings` into a free slot, points the service's ports at it, then frees the
    /// slot they used: packets see the old tables or the new ones, never a mix.
    fn replace_rings(&mut self, service: &str, rings: &Rings) -> Result<(), DataplaneError> {
        let slot = self
            .ring_pool
            .take()
            .ok_or(DataplaneError::NoFreeRingSlot {
                slots: self.capacities.ring_slots(),
            })?;
        let written = self.store.write_rings(
            slot,
            &wire::node_ring(rings.node.iter()),
            &wire::pod_ring(rings.pod.iter()),
        );
        if let Err(error) = written {
            self.ring_pool.put(slot);
            return Err(error);
        }
        let previous = self.slots.insert(service.to_owned(), slot);
        let ports: Vec<(PortKey, PortTarget)> = self
            .ports
            .iter()
            .filter(|(_, target)| target.service == service)
            .map(|(key, target)| (*key, target.clone()))
            .collect();
        for (key, target) in &ports {
            // On failure the previous slot stays allocated: entries may still use it.
            let service_slot = self.service_slot(key).ok_or_else(|| {
                DataplaneError::Hazard(format!("{key} is written but has no service slot"))
            })?;
            self.publish(key, target, slot, service_slot)?;
        }
        if let Some(previous) = previous {
            self.ring_pool.put(previous);
        }
        Ok(())
    }

    fn upsert_port(&mut self, key: &PortKey, target: &PortTarget) -> Result<(), DataplaneError> {
        let ring_slot =
            self.ring_slot(&target.service)
                .ok_or_else(|| DataplaneError::UnknownService {
                    port: key.to_string(),
                    service: target.service.clone(),
                })?;
        let (service_slot, new) = self.service_slots.assign(key)?;
        if let Err(error) = self.publish(key, target, ring_slot, service_slot) {
            if new {
                // `SERVICES` never named the slot; what it holds is recorded, so its next
                // port takes it over safely.
                self.service_slots.unassign(key);
            }
            return Err(error);
        }
        self.ports.insert(*key, target.clone());
        Ok(())
    }

    /// Writes `key`'s entry into its service slot, then into `SERVICES` (which hands the
    /// slot to the flows it serves): the same value in both.
    fn publish(
        &mut self,
        key: &PortKey,
        target: &PortTarget,
        ring_slot: u32,
        service_slot: u32,
    ) -> Result<(), DataplaneError> {
        let value = self.service_value(key, target, ring_slot, service_slot)?;
        let raw = wire::service_key(key);
        self.write_service_slot(service_slot, ServiceSlot { key: raw, value })?;
        self.store.insert_service(&raw, &value)
    }

    /// The `SERVICES` value of `key`, with its VIP's statistics index.
    fn service_value(
        &self,
        key: &PortKey,
        target: &PortTarget,
        ring_slot: u32,
        service_slot: u32,
    ) -> Result<ServiceValue, DataplaneError> {
        let stats_index = self
            .stats_index(key.vip)
            .ok_or_else(|| DataplaneError::UnknownVip {
                port: key.to_string(),
            })?;
        Ok(wire::service_value(
            target,
            ring_slot,
            stats_index,
            service_slot,
        ))
    }

    /// Takes `slot` to `to` in writes a packet can never misread
    /// ([`service_slots::steps`]).
    fn write_service_slot(&mut self, slot: u32, to: ServiceSlot) -> Result<(), DataplaneError> {
        for step in service_slots::steps(&self.service_slots.held(slot), &to) {
            self.store.set_service_slot(slot, &step)?;
            self.service_slots.record(slot, step);
        }
        Ok(())
    }

    /// Removes the port from `SERVICES`, then its slot (cleared before it is free).
    fn remove_port(&mut self, key: &PortKey) -> Result<(), DataplaneError> {
        self.store.remove_service(&wire::service_key(key))?;
        self.ports.remove(key);
        self.service_slots.retire(key);
        self.clear_retired_slots()
    }

    /// Clears the slots of removed ports, which frees them. A slot left uncleared by a
    /// failed write is retried by the next apply.
    fn clear_retired_slots(&mut self) -> Result<(), DataplaneError> {
        for slot in self.service_slots.retired() {
            self.write_service_slot(slot, ServiceSlot::default())?;
            self.service_slots.cleared(slot);
        }
        Ok(())
    }

    /// Makes every slot hold what `services` (the `SERVICES` entries) gives it, zeroes
    /// if nothing, reading what the slots hold first (pinned maps adopted).
    fn resync_service_slots(
        &mut self,
        services: &[(ServiceKey, ServiceValue)],
    ) -> Result<(), DataplaneError> {
        for (slot, content) in self.store.service_slots()? {
            self.service_slots.record(slot, content);
        }
        let mut wanted: BTreeMap<u32, ServiceSlot> = self
            .service_slots
            .written()
            .into_iter()
            .map(|slot| (slot, ServiceSlot::default()))
            .collect();
        for (key, value) in services {
            let content = ServiceSlot {
                key: *key,
                value: *value,
            };
            wanted.insert(value.slot, content);
        }
        for (slot, content) in wanted {
            self.write_service_slot(slot, content)?;
        }
        Ok(())
    }

    /// Frees the ring slots of removed services that no port uses any more.
    fn release_idle_rings(&mut self, removed: &BTreeSet<String>) {
        for service in removed {
            if self.ports.values().any(|target| &target.service == service) {
                continue;
            }
            if let Some(slot) = self.slots.remove(service) {
                self.ring_pool.put(slot);
            }
        }
    }

    fn read_ports(&self) -> Result<BTreeMap<PortKey, PortTarget>, DataplaneError> {
        let names: BTreeMap<u32, &String> = self
            .slots
            .iter()
            .map(|(name, slot)| (*slot, name))
            .collect();
        let mut ports = BTreeMap::new();
        for (key, value) in self.store.services()? {
            let key = wire::port_key(&key)?;
            let service = names
                .get(&value.ring_slot)
                .ok_or_else(|| DataplaneError::Foreign {
                    map: SERVICES,
                    detail: format!("{key} points at unused ring slot {}", value.ring_slot),
                })?;
            ports.insert(key, wire::port_target(&value, (*service).clone()));
        }
        Ok(ports)
    }

    fn read_rings(&self) -> Result<BTreeMap<String, Rings>, DataplaneError> {
        let mut rings = BTreeMap::new();
        // Read back, every slot's tables are separate copies; most node rings are equal.
        let mut interner = Interner::default();
        for (name, slot) in &self.slots {
            let node = interner.intern(wire::table(&self.store.node_ring(*slot)?.backends));
            let pod = interner.intern(wire::table(&self.store.pod_ring(*slot)?.backends));
            rings.insert(name.clone(), Rings { node, pod });
        }
        Ok(rings)
    }

    /// Order: node settings, peers and backends first (tables name them), VIPs (ports
    /// count into their statistics), removed ports (then their service slots, cleared),
    /// tables, new ports (each written into its service slot first); then what nothing
    /// refers to any more: tables of removed services, VIPs, backends, peers.
    fn apply_changes(&mut self, changes: &Changes) -> Result<(), DataplaneError> {
        self.check_capacities(changes)?;
        self.clear_retired_slots()?;
        if let Some(node) = &changes.node {
            self.store.set_config(&wire::config(node))?;
        }
        for peer in changes.peers.upsert.keys() {
            self.store.insert_peer(wire::addr(*peer))?;
            self.peers.insert(*peer);
        }
        for (address, state) in &changes.backends.upsert {
            self.upsert_backend(*address, *state)?;
        }
        for (vip, value) in &changes.vips.upsert {
            self.upsert_vip(*vip, value)?;
        }
        for key in &changes.ports.remove {
            self.remove_port(key)?;
        }
        // Early, so a batch replacing many services needs few spare slots.
        self.release_idle_rings(&changes.rings.remove);
        for (service, rings) in &changes.rings.upsert {
            self.replace_rings(service, rings)?;
        }
        for (key, target) in &changes.ports.upsert {
            self.upsert_port(key, target)?;
        }
        self.release_idle_rings(&changes.rings.remove);
        if let Some(service) = changes
            .rings
            .remove
            .iter()
            .find(|service| self.slots.contains_key(*service))
        {
            return Err(DataplaneError::StillReferenced {
                service: service.clone(),
            });
        }
        for vip in &changes.vips.remove {
            self.remove_vip(*vip)?;
        }
        for address in &changes.backends.remove {
            self.store.remove_backend(wire::addr(*address))?;
            if let Some(slot) = self.backends.remove(address) {
                self.backend_pool.put(slot);
            }
        }
        for peer in &changes.peers.remove {
            self.store.remove_peer(wire::addr(*peer))?;
            self.peers.remove(peer);
        }
        Ok(())
    }

    fn advance_epoch(&mut self) -> Result<(), DataplaneError> {
        let next = lb_common::express::next_epoch(self.store.epoch()?);
        self.store.set_epoch(next)
    }
}

impl<S: MapStore> Dataplane for Engine<S> {
    /// Writes the changes ([`Engine::apply_changes`]), then advances the epoch, which
    /// retires every express entry the kernel made before.
    fn apply(&mut self, changes: &Changes) -> Result<(), DataplaneError> {
        let applied = self.apply_changes(changes);
        if changes.is_empty() {
            return applied;
        }
        // Even a change written only in part retires the express entries decided before.
        let advanced = self.advance_epoch();
        applied.and(advanced)
    }

    fn read(&self) -> Result<State, DataplaneError> {
        let mut backends = BTreeMap::new();
        for (address, value) in self.store.backends()? {
            backends.insert(wire::ip(address), wire::backend_state(address, &value)?);
        }
        Ok(State {
            node: wire::node_config(&self.store.config()?),
            vips: self
                .store
                .vips()?
                .iter()
                .map(|(vip, value)| (wire::ip(*vip), wire::vip(value)))
                .collect(),
            ports: self.read_ports()?,
            rings: self.read_rings()?,
            backends,
            peers: self.store.peers()?.into_iter().map(wire::ip).collect(),
        })
    }
}
