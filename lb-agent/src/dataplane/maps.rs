//! Typed wrappers over every BPF map. This is the only module that names a map; everyone
//! else calls these methods with lb-common's key and value types.

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
};
use lb_common::{
    maps as names, reasons,
    types::{
        BackendStats, BackendValue, DataplaneConfig, FlowKey, FlowValue, NodeRing, PeerValue,
        PodRing, ReplyKey, ReplyValue, ServiceKey, ServiceSlot, ServiceValue, VipStats, VipValue,
    },
    vip_filter,
};

/// A map operation failed; `map` names the map for logs and metric labels.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("BPF map {map} is missing from the loaded object")]
    Missing { map: &'static str },
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, MapsError> {
    ebpf.take_map(name).ok_or(MapsError::Missing { map: name })
}

fn convert<T>(name: &'static str, map: Map) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(map).map_err(|source| MapsError::Map { map: name, source })
}

fn failed(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { map: name, source }
}

/// A hash (or LRU hash) map with typed keys and values.
pub struct TypedHash<K: Pod, V: Pod> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
}

impl<K: Pod, V: Pod> TypedHash<K, V> {
    fn open(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapsError> {
        Ok(Self {
            name,
            map: convert(name, take(ebpf, name)?)?,
        })
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, MapsError> {
        match self.map.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(failed(self.name)(source)),
        }
    }

    pub fn insert(&mut self, key: &K, value: &V) -> Result<(), MapsError> {
        self.map.insert(key, value, 0).map_err(failed(self.name))
    }

    /// Removes `key`; a key that is already gone is not an error.
    pub fn remove(&mut self, key: &K) -> Result<(), MapsError> {
        match self.map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(failed(self.name)(source)),
        }
    }

    /// Every entry; entries that vanish while iterating (LRU eviction) are skipped.
    pub fn entries(&self) -> Result<Vec<(K, V)>, MapsError> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            match item {
                Ok(entry) => out.push(entry),
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(failed(self.name)(source)),
            }
        }
        Ok(out)
    }
}

/// An array map with typed values.
pub struct TypedArray<V: Pod> {
    name: &'static str,
    map: Array<MapData, V>,
}

impl<V: Pod> TypedArray<V> {
    fn open(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapsError> {
        Ok(Self {
            name,
            map: convert(name, take(ebpf, name)?)?,
        })
    }

    pub fn len(&self) -> u32 {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn get(&self, index: u32) -> Result<V, MapsError> {
        self.map.get(&index, 0).map_err(failed(self.name))
    }

    pub fn set(&mut self, index: u32, value: &V) -> Result<(), MapsError> {
        self.map.set(index, value, 0).map_err(failed(self.name))
    }
}

/// `VIPS` with its prefilter `VIP_FILTER`, which counts the VIPs of each
/// [`vip_filter::slot`]. Every write goes through here and keeps the two in step: a new
/// VIP is counted before XDP can find it and uncounted only after it is gone, so a
/// count may briefly exceed the VIPs (a wasted hash lookup) but never fall short (a VIP
/// passed to the kernel as not one).
pub struct Vips {
    table: TypedHash<u32, VipValue>,
    filter: TypedArray<u32>,
}

impl Vips {
    /// Opens both maps. When `VIPS` holds entries they are a previous agent's (pinned
    /// maps adopted), and the filter is recounted from them: a previous agent may have
    /// died between the two writes, or predate the filter, whose fresh map is all zero.
    fn open(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut vips = Self {
            table: TypedHash::open(ebpf, names::VIPS)?,
            filter: TypedArray::open(ebpf, names::VIP_FILTER)?,
        };
        let entries = vips.table.entries()?;
        if !entries.is_empty() {
            vips.recount(entries.iter().map(|(vip, _)| *vip))?;
        }
        Ok(vips)
    }

    pub fn get(&self, vip: &u32) -> Result<Option<VipValue>, MapsError> {
        self.table.get(vip)
    }

    pub fn entries(&self) -> Result<Vec<(u32, VipValue)>, MapsError> {
        self.table.entries()
    }

    /// Inserts or updates `vip`; only a new one adds to its slot's count.
    pub fn insert(&mut self, vip: &u32, value: &VipValue) -> Result<(), MapsError> {
        if self.table.get(vip)?.is_some() {
            return self.table.insert(vip, value);
        }
        self.adjust(*vip, 1)?;
        self.table.insert(vip, value).inspect_err(|_| {
            // Undo the count; should that fail too, it only costs lookups.
            let _ = self.adjust(*vip, -1);
        })
    }

    /// Removes `vip`; only one that existed takes from its slot's count.
    pub fn remove(&mut self, vip: &u32) -> Result<(), MapsError> {
        if self.table.get(vip)?.is_none() {
            return Ok(());
        }
        self.table.remove(vip)?;
        self.adjust(*vip, -1)
    }

    /// How many VIPs share `addr`'s filter slot (for inspection and tests).
    pub fn slot_count(&self, addr: u32) -> Result<u32, MapsError> {
        self.filter.get(vip_filter::slot(addr))
    }

    fn adjust(&mut self, vip: u32, delta: i32) -> Result<(), MapsError> {
        let slot = vip_filter::slot(vip);
        let count = self.filter.get(slot)?.saturating_add_signed(delta);
        self.filter.set(slot, &count)
    }

    /// Sets every slot to the number of `vips` folding there, writing only the slots
    /// that differ.
    fn recount(&mut self, vips: impl Iterator<Item = u32>) -> Result<(), MapsError> {
        let mut counts = vec![0u32; names::VIP_FILTER_SLOTS as usize];
        for vip in vips {
            counts[vip_filter::slot(vip) as usize] += 1;
        }
        for (slot, count) in (0u32..).zip(&counts) {
            if self.filter.get(slot)? != *count {
                self.filter.set(slot, count)?;
            }
        }
        Ok(())
    }
}

/// `BACKENDS` with the arrays XDP indexes by [`BackendValue::slot`]: `BACKEND_SLOTS`
/// (which address holds each slot) and `BACKEND_STATS`. Every write goes through here
/// and keeps them in step: a slot names its backend before `BACKENDS` hands the slot
/// out, and is cleared only after the backend is gone from `BACKENDS`; a slot taken by a
/// new address starts from zero counters.
pub struct Backends {
    table: TypedHash<u32, BackendValue>,
    slots: TypedArray<u32>,
    stats: CounterArray<BackendStats>,
}

impl Backends {
    /// Opens the three maps and rewrites `BACKEND_SLOTS` from `BACKENDS`: a previous
    /// agent (pinned maps adopted) may have died between two writes.
    fn open(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut backends = Self {
            table: TypedHash::open(ebpf, names::BACKENDS)?,
            slots: TypedArray::open(ebpf, names::BACKEND_SLOTS)?,
            stats: CounterArray::open(ebpf, names::BACKEND_STATS)?,
        };
        backends.resync()?;
        Ok(backends)
    }

    pub fn get(&self, address: &u32) -> Result<Option<BackendValue>, MapsError> {
        self.table.get(address)
    }

    pub fn entries(&self) -> Result<Vec<(u32, BackendValue)>, MapsError> {
        self.table.entries()
    }

    /// Inserts or updates `address` in the slot `value` names.
    pub fn insert(&mut self, address: &u32, value: &BackendValue) -> Result<(), MapsError> {
        if self.slots.get(value.slot)? != *address {
            self.stats.reset(value.slot)?;
            self.slots.set(value.slot, address)?;
        }
        self.table.insert(address, value)
    }

    /// Removes `address` and frees its slot; one that is already gone is not an error.
    pub fn remove(&mut self, address: &u32) -> Result<(), MapsError> {
        let Some(value) = self.table.get(address)? else {
            return Ok(());
        };
        self.table.remove(address)?;
        if self.slots.get(value.slot)? == *address {
            self.slots.set(value.slot, &FREE_SLOT)?;
        }
        Ok(())
    }

    /// The counters of `address` summed over CPUs; zero for an unknown address.
    pub fn totals(&self, address: &u32) -> Result<BackendStats, MapsError> {
        match self.table.get(address)? {
            Some(value) => self.stats.total(value.slot),
            None => Ok(BackendStats::default()),
        }
    }

    /// Sets every slot to the address `BACKENDS` gives it (free if none), writing only
    /// the slots that differ.
    fn resync(&mut self) -> Result<(), MapsError> {
        let mut wanted = vec![FREE_SLOT; self.slots.len() as usize];
        for (address, value) in self.table.entries()? {
            if let Some(slot) = wanted.get_mut(value.slot as usize) {
                *slot = address;
            }
        }
        for (slot, address) in (0u32..).zip(&wanted) {
            if self.slots.get(slot)? != *address {
                self.slots.set(slot, address)?;
            }
        }
        Ok(())
    }
}

/// What `BACKEND_SLOTS` holds for a slot no backend uses (no backend has address 0).
const FREE_SLOT: u32 = 0;

/// Counter values summed over CPUs.
pub trait Accumulate: Pod + Default {
    fn accumulate(&mut self, other: &Self);
}

impl Accumulate for u64 {
    fn accumulate(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
}

impl Accumulate for VipStats {
    fn accumulate(&mut self, other: &Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.encapsulated = self.encapsulated.wrapping_add(other.encapsulated);
        self.delivered_local = self.delivered_local.wrapping_add(other.delivered_local);
        self.dropped = self.dropped.wrapping_add(other.dropped);
        self.icmp_replies = self.icmp_replies.wrapping_add(other.icmp_replies);
        self.reply_packets = self.reply_packets.wrapping_add(other.reply_packets);
        self.reply_bytes = self.reply_bytes.wrapping_add(other.reply_bytes);
    }
}

impl Accumulate for BackendStats {
    fn accumulate(&mut self, other: &Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

fn sum<V: Accumulate>(values: &PerCpuValues<V>) -> V {
    values.iter().fold(V::default(), |mut total, cpu| {
        total.accumulate(cpu);
        total
    })
}

/// A per-CPU array of counters, read as sums.
pub struct CounterArray<V: Accumulate> {
    name: &'static str,
    map: PerCpuArray<MapData, V>,
}

impl<V: Accumulate> CounterArray<V> {
    fn open(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, MapsError> {
        Ok(Self {
            name,
            map: convert(name, take(ebpf, name)?)?,
        })
    }

    pub fn total(&self, index: u32) -> Result<V, MapsError> {
        let values = self.map.get(&index, 0).map_err(failed(self.name))?;
        Ok(sum(&values))
    }

    /// Zeroes one index on every CPU (a statistics slot being reused).
    pub fn reset(&mut self, index: u32) -> Result<(), MapsError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, error)| failed(self.name)(MapError::IoError(error)))?;
        let zeros = PerCpuValues::try_from(vec![V::default(); cpus])
            .map_err(|error| failed(self.name)(MapError::IoError(error)))?;
        self.map.set(index, zeros, 0).map_err(failed(self.name))
    }
}

/// Every map of the data path, typed.
pub struct Maps {
    pub services: TypedHash<ServiceKey, ServiceValue>,
    pub service_slots: TypedArray<ServiceSlot>,
    pub vips: Vips,
    pub node_rings: TypedArray<NodeRing>,
    pub pod_rings: TypedArray<PodRing>,
    pub backends: Backends,
    pub peers: TypedHash<u32, PeerValue>,
    pub flows: TypedHash<FlowKey, FlowValue>,
    pub reply_flows: TypedHash<ReplyKey, ReplyValue>,
    pub config: TypedArray<DataplaneConfig>,
    pub epoch: TypedArray<u32>,
    pub reason_stats: CounterArray<u64>,
    pub vip_stats: CounterArray<VipStats>,
}

impl Maps {
    /// Takes every map out of a loaded object (the programs keep their references).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Ok(Self {
            services: TypedHash::open(ebpf, names::SERVICES)?,
            service_slots: TypedArray::open(ebpf, names::SERVICE_SLOTS)?,
            vips: Vips::open(ebpf)?,
            node_rings: TypedArray::open(ebpf, names::NODE_RINGS)?,
            pod_rings: TypedArray::open(ebpf, names::POD_RINGS)?,
            backends: Backends::open(ebpf)?,
            peers: TypedHash::open(ebpf, names::PEERS)?,
            flows: TypedHash::open(ebpf, names::FLOWS)?,
            reply_flows: TypedHash::open(ebpf, names::REPLY_FLOWS)?,
            config: TypedArray::open(ebpf, names::CONFIG)?,
            epoch: TypedArray::open(ebpf, names::EPOCH)?,
            reason_stats: CounterArray::open(ebpf, names::REASON_STATS)?,
            vip_stats: CounterArray::open(ebpf, names::VIP_STATS)?,
        })
    }

    /// Every reason counter, summed over CPUs, indexed by `lb_common::reasons`.
    pub fn reason_totals(&self) -> Result<[u64; reasons::COUNT as usize], MapsError> {
        let mut totals = [0u64; reasons::COUNT as usize];
        for (index, total) in (0u32..).zip(totals.iter_mut()) {
            *total = self.reason_stats.total(index)?;
        }
        Ok(totals)
    }
}
