//! Keys and values of the BPF maps.
//!
//! Rules for every type here: `#[repr(C)]`, explicit `_pad` fields so no byte is
//! implicit, only fixed-width integers (no bool/enum/Option), and a size assertion.
//! Addresses and ports are stored in network byte order (the bytes as on the wire), so
//! the kernel compares them with packet fields without conversions.

use crate::{
    hash,
    maps::{BENCH_FLOOR_CACHE_SLOTS, NODE_RING_SIZE, POD_RING_SIZE},
};

/// Protocol numbers as in the IPv4 header.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// [`VipValue::flags`]: drop traffic to ports of this VIP that no service listens on
/// (otherwise it is passed to the node's own stack).
pub const VIP_F_DROP_UNKNOWN_PORTS: u32 = 1;

/// [`ServiceValue::flags`]: `externalTrafficPolicy: Local`, deliver only to this node's
/// pods and never tunnel.
pub const SERVICE_F_LOCAL_ONLY: u16 = 1;

/// [`BackendValue::state`]: takes new flows.
pub const BACKEND_ACTIVE: u32 = 1;
/// [`BackendValue::state`]: keeps its existing flows, takes no new ones (terminating).
pub const BACKEND_DRAINING: u32 = 2;

/// A ring slot holding this address means "no backend".
pub const RING_EMPTY: u32 = 0;

/// A backend or service slot that matches nothing: a flow cached with it selects its
/// backend, or looks its service up, again next time.
pub const NO_SLOT: u32 = u32::MAX;

/// Key of [`crate::maps::SERVICES`]; also in [`ServiceSlot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`crate::maps::SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into [`crate::maps::NODE_RINGS`] and [`crate::maps::POD_RINGS`].
    pub ring_slot: u32,
    /// Port on the pod (network byte order).
    pub target_port: u16,
    /// `SERVICE_F_*`.
    pub flags: u16,
    /// The VIP's [`VipValue::stats_index`], so TCP and UDP to a service port need no
    /// `VIPS` lookup.
    pub stats_index: u32,
    /// The service's index in [`crate::maps::SERVICE_SLOTS`], which a flow's cache entry
    /// records ([`FlowValue::service_slot`]); [`NO_SLOT`] if it has none.
    pub slot: u32,
}

/// Value of [`crate::maps::SERVICE_SLOTS`]: a service's `SERVICES` entry, key and value
/// as there. A cached flow names its service's slot, and the flow's next packet takes
/// its service from the slot while the key is the packet's `(vip, port, proto)`. All
/// zero: a free slot (no service has VIP 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlot {
    pub key: ServiceKey,
    pub value: ServiceValue,
}

/// Value of [`crate::maps::VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipValue {
    /// Index into [`crate::maps::VIP_STATS`].
    pub stats_index: u32,
    /// `VIP_F_*`.
    pub flags: u32,
}

/// Value of [`crate::maps::NODE_RINGS`]: backend node addresses, [`RING_EMPTY`] if none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRing {
    pub backends: [u32; NODE_RING_SIZE],
}

/// Value of [`crate::maps::POD_RINGS`]: local pod addresses, [`RING_EMPTY`] if none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodRing {
    pub backends: [u32; POD_RING_SIZE],
}

/// Value of [`crate::maps::BACKENDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// `BACKEND_*`.
    pub state: u32,
    /// The backend's index in [`crate::maps::BACKEND_SLOTS`],
    /// [`crate::maps::BACKEND_STATS`] and [`crate::maps::NEXT_HOPS`].
    pub slot: u32,
}

/// Value of [`crate::maps::PEERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerValue {
    /// Reserved; presence in the map is what admits a peer.
    pub flags: u32,
}

/// Key of [`crate::maps::FLOWS`]: the client's view of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: u32,
    pub vip: u32,
    pub client_port: u16,
    pub vip_port: u16,
    pub proto: u8,
    /// Two fields, not `[u8; 3]`: zeroing three bytes at an odd offset compiles to a
    /// call of a byte-at-a-time `memset` in BPF, on every packet that builds a key.
    pub _pad: u8,
    pub _pad2: u16,
}

/// Value of [`crate::maps::FLOWS`]. Each level fills its own fields lazily: the node that
/// receives from the LAN records the backend node, the backend node records the pod.
/// With each address goes its backend slot, so a cache hit checks liveness with an array
/// lookup (`BACKEND_SLOTS[slot] == address`) instead of a hash lookup. The service's slot
/// does the same for the service: the flow's next packet finds it in
/// [`crate::maps::SERVICE_SLOTS`] instead of looking `SERVICES` up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub node: u32,
    pub pod: u32,
    pub node_slot: u32,
    pub pod_slot: u32,
    /// [`ServiceValue::slot`] of the flow's service when it was last selected or looked
    /// up; [`NO_SLOT`] for none.
    pub service_slot: u32,
}

/// Key of [`crate::maps::REPLY_FLOWS`]: a reply as the pod sends it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    pub pod: u32,
    pub client: u32,
    pub pod_port: u16,
    pub client_port: u16,
    pub proto: u8,
    /// Two fields, not `[u8; 3]`: zeroing three bytes at an odd offset compiles to a
    /// call of a byte-at-a-time `memset` in BPF, on every packet that builds a key.
    pub _pad: u8,
    pub _pad2: u16,
}

/// Value of [`crate::maps::REPLY_FLOWS`]: what the reply's source becomes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyValue {
    pub vip: u32,
    pub vip_port: u16,
    pub _pad: u16,
    /// Index into [`crate::maps::VIP_STATS`] for reply counters.
    pub stats_index: u32,
}

/// Value of [`crate::maps::CONFIG`] (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// This node's LAN address: outer source of IPIP.
    pub node_addr: u32,
    /// LAN interface MTU (host byte order).
    pub mtu: u32,
    /// ICMP replies generated in XDP per second and CPU (host byte order).
    pub icmp_rate_per_sec: u32,
    /// MAC address clients and peers send this node's VIP and tunnel frames to; frames
    /// for any other destination are left to the kernel. All zero: not configured, every
    /// destination is accepted.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of [`crate::maps::VIP_STATS`] (per CPU; host byte order counters), and a VIP's
/// counters on a node as the agent's API shows them (summed over the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct VipStats {
    /// Packets to the VIP, from clients or tunnelled from the owner.
    pub packets: u64,
    pub bytes: u64,
    /// Tunnelled to another node.
    pub encapsulated: u64,
    /// Delivered to a pod on this node.
    pub delivered_local: u64,
    pub dropped: u64,
    /// Echo replies and "fragmentation needed" sent for the VIP.
    pub icmp_replies: u64,
    /// Replies of this node's pods rewritten back to the VIP.
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

/// Value of [`crate::maps::BACKEND_STATS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Value of [`crate::maps::NEXT_HOPS`] (per CPU): the FIB's answer for a backend node,
/// reused until it is [`crate::maps::NEXT_HOP_TTL_JIFFIES`] old.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Interface the FIB sends the packet out of.
    pub ifindex: u32,
    /// Interface the packet arrived on when the FIB was asked (part of its question).
    pub ingress: u32,
    pub _pad: u32,
    /// `jiffies` when the FIB answered; 0: never.
    pub looked_up: u64,
}

/// Value of [`crate::maps::EXPRESS`] (per CPU): everything the owner needs to forward
/// one more packet of an established flow as the full path last did, checked against
/// the packet and the clock instead of the tables. Written by that full path, only for
/// a TCP or UDP packet from the LAN without a VLAN tag that it encapsulated and sent
/// back out of the interface it came in on (`XDP_TX`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpressEntry {
    pub key: FlowKey,
    /// The [`crate::maps::EPOCH`] read before the decision was made; 0: empty slot.
    pub epoch: u32,
    /// The interface the flow arrives on and leaves by.
    pub ifindex: u32,
    /// [`NextHop::looked_up`] of the next hop the MAC addresses came from: the entry is
    /// used only while that answer would be (for [`crate::maps::NEXT_HOP_TTL_JIFFIES`]),
    /// so a neighbour's new MAC address reaches express packets as fast as others.
    pub looked_up: u64,
    /// The MAC addresses as three 16-bit words each (the frame's bytes loaded in host
    /// order): compared and written a word at a time instead of a byte at a time.
    pub dst_mac: [u16; 3],
    pub src_mac: [u16; 3],
    /// [`DataplaneConfig::mac`] when the entry was written: the frame must be addressed
    /// to it (all zero: to anything).
    pub own_mac: [u16; 3],
    /// The largest inner IPv4 total length that still fits the LAN MTU once
    /// encapsulated (host order); longer packets take the full path and its ICMP.
    pub max_len: u16,
    /// Outer source (this node) and destination (the backend node).
    pub node_addr: u32,
    pub backend: u32,
    /// The VIP's statistics index and the backend node's slot, for the counters.
    pub stats_index: u32,
    pub backend_slot: u32,
    pub _pad: u32,
}

/// Value of [`crate::maps::ICMP_RATE`] (per CPU token bucket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub last_ns: u64,
    pub tokens: u64,
}

/// Value of [`crate::maps::BENCH_GEN_SETTINGS`]: what the owner bench's generator does
/// with each frame that comes back to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchGenSettings {
    /// Client flows the regenerated frames cycle through (0: every frame a new flow).
    pub flows: u32,
    /// Non-zero: send the frame back with its MACs swapped instead of regenerating it
    /// (the generator as a second reflector).
    pub reflect: u32,
}

/// Value of [`crate::maps::BENCH_FLOOR_CACHE`]: one slot of a direct-mapped flow cache,
/// the flow it holds and that flow's backend node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchCacheSlot {
    pub key: FlowKey,
    pub node: u32,
}

impl BenchCacheSlot {
    /// The slot of `key`: its node-level flow hash modulo the cache's size.
    #[inline(always)]
    pub const fn index(key: &FlowKey) -> u32 {
        let hash = hash::flow_hash(
            key.client,
            key.client_port,
            key.vip,
            key.vip_port,
            key.proto,
            hash::NODE_SEED,
        );
        // A power of two: the mask is the modulo.
        hash & (BENCH_FLOOR_CACHE_SLOTS - 1)
    }
}

const _: () = {
    assert!(size_of::<ServiceKey>() == 8);
    assert!(size_of::<ServiceValue>() == 16);
    assert!(size_of::<ServiceSlot>() == 24);
    assert!(size_of::<VipValue>() == 8);
    assert!(size_of::<NodeRing>() == 4 * NODE_RING_SIZE);
    assert!(size_of::<PodRing>() == 4 * POD_RING_SIZE);
    assert!(size_of::<BackendValue>() == 8);
    assert!(size_of::<PeerValue>() == 4);
    assert!(size_of::<FlowKey>() == 16);
    assert!(size_of::<FlowValue>() == 20);
    assert!(size_of::<ReplyKey>() == 16);
    assert!(size_of::<ReplyValue>() == 12);
    assert!(size_of::<DataplaneConfig>() == 20);
    assert!(size_of::<VipStats>() == 64);
    assert!(size_of::<BackendStats>() == 16);
    assert!(size_of::<NextHop>() == 32);
    assert!(size_of::<ExpressEntry>() == 72);
    assert!(size_of::<RateState>() == 16);
    assert!(size_of::<BenchGenSettings>() == 8);
    assert!(size_of::<BenchCacheSlot>() == 20);
    assert!(BENCH_FLOOR_CACHE_SLOTS.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! impl_pod {
        ($($t:ty),+ $(,)?) => {$(
            // SAFETY: `$t` is `#[repr(C)]`, made only of integers and integer arrays, with
            // every padding byte an explicit field, so any bit pattern is a valid value.
            unsafe impl aya::Pod for $t {}
        )+};
    }

    impl_pod!(
        ServiceKey,
        ServiceValue,
        ServiceSlot,
        VipValue,
        NodeRing,
        PodRing,
        BackendValue,
        PeerValue,
        FlowKey,
        FlowValue,
        ReplyKey,
        ReplyValue,
        BenchGenSettings,
        BenchCacheSlot,
        DataplaneConfig,
        VipStats,
        BackendStats,
        NextHop,
        ExpressEntry,
        RateState,
    );
}
