//! Map definitions. Each static's name is the map name from `lb_common::maps`; the
//! `testbed` crate checks that every name there exists in the built object.

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    maps::{
        EXPRESS_SLOTS, MAX_BACKENDS_DEFAULT, MAX_FLOWS_DEFAULT, MAX_PEERS, MAX_REPLY_FLOWS_DEFAULT,
        MAX_SERVICE_PORTS_DEFAULT, MAX_SERVICES_DEFAULT, MAX_VIPS_DEFAULT, RING_SPARE_SLOTS,
        VIP_FILTER_SLOTS,
    },
    reasons,
    types::{
        BackendStats, BackendValue, DataplaneConfig, ExpressEntry, FlowKey, FlowValue, NextHop,
        NodeRing, PeerValue, PodRing, RateState, ReplyKey, ReplyValue, ServiceKey, ServiceSlot,
        ServiceValue, VipStats, VipValue,
    },
};

const RING_SLOTS: u32 = MAX_SERVICES_DEFAULT + RING_SPARE_SLOTS;

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(MAX_SERVICE_PORTS_DEFAULT, 0);

/// An array, so a cached flow's service costs an inlined bounds check and add instead of
/// the `SERVICES` hash lookup.
#[map]
pub static SERVICE_SLOTS: Array<ServiceSlot> =
    Array::with_max_entries(MAX_SERVICE_PORTS_DEFAULT, 0);

#[map]
pub static VIPS: HashMap<u32, VipValue> = HashMap::with_max_entries(MAX_VIPS_DEFAULT, 0);

/// A plain array, not per-CPU: the verifier inlines its lookup into a bounds check and an
/// add, which is what makes the non-VIP path cheaper than one hash lookup.
#[map]
pub static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SLOTS, 0);

#[map]
pub static NODE_RINGS: Array<NodeRing> = Array::with_max_entries(RING_SLOTS, 0);

#[map]
pub static POD_RINGS: Array<PodRing> = Array::with_max_entries(RING_SLOTS, 0);

#[map]
pub static BACKENDS: HashMap<u32, BackendValue> =
    HashMap::with_max_entries(MAX_BACKENDS_DEFAULT, 0);

/// Arrays for what a flow-table hit needs per backend: the verifier inlines their
/// lookups, where each hash lookup by address costs a hash and a bucket walk.
#[map]
pub static BACKEND_SLOTS: Array<u32> = Array::with_max_entries(MAX_BACKENDS_DEFAULT, 0);

#[map]
pub static NEXT_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(MAX_BACKENDS_DEFAULT, 0);

#[map]
pub static PEERS: HashMap<u32, PeerValue> = HashMap::with_max_entries(MAX_PEERS, 0);

/// Per-CPU LRU lists (Katran's pattern): no cross-CPU lock on the hot path.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_FLOWS_DEFAULT, BPF_F_NO_COMMON_LRU);

#[map]
pub static REPLY_FLOWS: LruHashMap<ReplyKey, ReplyValue> =
    LruHashMap::with_max_entries(MAX_REPLY_FLOWS_DEFAULT, 0);

#[map]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

#[map]
pub static REASON_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(reasons::COUNT, 0);

#[map]
pub static VIP_STATS: PerCpuArray<VipStats> = PerCpuArray::with_max_entries(MAX_VIPS_DEFAULT, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<BackendStats> =
    PerCpuArray::with_max_entries(MAX_BACKENDS_DEFAULT, 0);

#[map]
pub static ICMP_RATE: PerCpuArray<RateState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: an express entry is written and read by the CPU its flow arrives on, so no
/// write crosses CPUs and the lookup is inlined.
#[map]
pub static EXPRESS: PerCpuArray<ExpressEntry> = PerCpuArray::with_max_entries(EXPRESS_SLOTS, 0);

#[map]
pub static EPOCH: Array<u32> = Array::with_max_entries(1, 0);
