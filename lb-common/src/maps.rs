//! Map names and sizes: the single place either side spells them.
//!
//! User space overrides the `*_DEFAULT` capacities at load time from its configuration;
//! the kernel programs never assume more than the map reports.

/// `(vip, port, proto)` -> [`crate::types::ServiceValue`].
pub const SERVICES: &str = "SERVICES";
/// Service slot -> [`crate::types::ServiceSlot`]: each service's `SERVICES` entry at the
/// index its value names, so a cached flow finds its service by that index.
pub const SERVICE_SLOTS: &str = "SERVICE_SLOTS";
/// vip -> [`crate::types::VipValue`]: every address this cluster load-balances.
pub const VIPS: &str = "VIPS";
/// Slot ([`crate::vip_filter::slot`]) -> `u32` count of the VIPs folding there: XDP
/// looks `VIPS` up only when the destination's count is not zero.
pub const VIP_FILTER: &str = "VIP_FILTER";
/// Ring slot -> [`crate::types::NodeRing`]: weighted Maglev table over backend nodes.
pub const NODE_RINGS: &str = "NODE_RINGS";
/// Ring slot -> [`crate::types::PodRing`]: Maglev table over this node's local pods.
pub const POD_RINGS: &str = "POD_RINGS";
/// Backend (node or pod) address -> [`crate::types::BackendValue`]: its state and slot.
pub const BACKENDS: &str = "BACKENDS";
/// Backend slot -> `u32` address of the backend holding it (0: free). A cached flow's
/// backend is alive while its slot still holds its address.
pub const BACKEND_SLOTS: &str = "BACKEND_SLOTS";
/// Peer node address -> [`crate::types::PeerValue`]: the only sources IPIP is accepted from.
pub const PEERS: &str = "PEERS";
/// Client flow -> chosen backend (LRU, per-CPU LRU lists).
pub const FLOWS: &str = "FLOWS";
/// Pod-side reply tuple -> VIP tuple, written by XDP on DNAT, read by TC egress (LRU).
pub const REPLY_FLOWS: &str = "REPLY_FLOWS";
/// Single entry: [`crate::types::DataplaneConfig`].
pub const CONFIG: &str = "CONFIG";
/// Per-CPU counters indexed by [`crate::reasons`].
pub const REASON_STATS: &str = "REASON_STATS";
/// Per-CPU [`crate::types::VipStats`] indexed by [`crate::types::VipValue::stats_index`].
pub const VIP_STATS: &str = "VIP_STATS";
/// Per-CPU [`crate::types::BackendStats`] indexed by backend slot.
pub const BACKEND_STATS: &str = "BACKEND_STATS";
/// Per-CPU [`crate::types::NextHop`] indexed by backend slot: the FIB's answer for a
/// backend node, so encapsulation asks the FIB once per node and [`NEXT_HOP_TTL_JIFFIES`].
pub const NEXT_HOPS: &str = "NEXT_HOPS";
/// Per-CPU token bucket for ICMP replies generated in XDP.
pub const ICMP_RATE: &str = "ICMP_RATE";
/// Per-CPU [`crate::types::ExpressEntry`] at [`crate::express::slot`] of its flow: the
/// owner's whole forwarding of an established flow to its backend node, taken without
/// any other map while [`EPOCH`] and the entry's next hop are unchanged.
pub const EXPRESS: &str = "EXPRESS";
/// Single `u32` entry: the data path's epoch. The agent advances it after every change it
/// writes (never to 0), which retires every [`EXPRESS`] entry made before; 0 (nothing
/// written yet) disables the express cache.
pub const EPOCH: &str = "EPOCH";

/// Prime Maglev table size for the node level: >= 100 x nodes for clusters up to 163 nodes.
pub const NODE_RING_SIZE: usize = 16381;
/// Prime Maglev table size for the pod level: >= 100 x local pods for up to 40 pods per node.
pub const POD_RING_SIZE: usize = 4093;

/// How long a cached next hop is used before the FIB is asked again: 25 jiffies, 25 ms
/// to 100 ms depending on the kernel's HZ, so a neighbour's new MAC address is picked up
/// that fast while the FIB is asked a few times a second per node and CPU.
pub const NEXT_HOP_TTL_JIFFIES: u64 = 25;

/// Default number of load-balanced Services (each owns one ring slot).
pub const MAX_SERVICES_DEFAULT: u32 = 256;
/// Spare ring slots: a changed ring is written to a free slot, then services flip to it.
pub const RING_SPARE_SLOTS: u32 = 8;
/// `VIP_FILTER` slots: every 16-bit fold of an address (256 KiB).
pub const VIP_FILTER_SLOTS: u32 = 1 << 16;
/// Default `(vip, port, proto)` entries (`SERVICES`) and service slots (`SERVICE_SLOTS`).
pub const MAX_SERVICE_PORTS_DEFAULT: u32 = 1024;
/// Default distinct VIP addresses.
pub const MAX_VIPS_DEFAULT: u32 = 256;
/// Default backend (nodes + local pods) entries, and slots.
pub const MAX_BACKENDS_DEFAULT: u32 = 4096;
/// Peer node entries.
pub const MAX_PEERS: u32 = 256;
/// Default flow-cache entries (LRU: a flood evicts old flows, never fails inserts).
pub const MAX_FLOWS_DEFAULT: u32 = 65536;
/// [`EXPRESS`] slots per CPU (a power of two): 288 KiB of entries per CPU.
pub const EXPRESS_SLOTS: u32 = 4096;
/// Default reply-flow entries (LRU).
pub const MAX_REPLY_FLOWS_DEFAULT: u32 = 65536;

/// The XDP program attached to the LAN interface.
pub const XDP_PROGRAM: &str = "xdp_lb";
/// The TC egress classifier attached to the LAN interface.
pub const TC_PROGRAM: &str = "tc_reply";
/// Benchmark reference: parses Ethernet and IPv4, returns `XDP_PASS`.
pub const BENCH_PASS_PROGRAM: &str = "bench_parse_pass";
/// Benchmark reference: parses, swaps the MACs, returns `XDP_TX` (the owner bench's
/// reflector).
pub const BENCH_TX_PROGRAM: &str = "bench_parse_tx";
/// Benchmark traffic generator, attached to the generator's veth: frames circulate
/// between it and the owner's program, as XDP frames both ways; each one that comes back
/// is counted in [`BENCH_GEN_ARRIVALS`] by kind, rewritten to [`BENCH_GEN_FRAME`] with
/// the next client flow, and sent out again (`XDP_TX`) while [`BENCH_GEN_BUDGET`] lasts.
pub const BENCH_GENERATE_PROGRAM: &str = "bench_generate";
/// The generator's frame template (one entry of [`BENCH_FRAME_LEN`] bytes).
pub const BENCH_GEN_FRAME: &str = "BENCH_GEN_FRAME";
/// The generator's [`crate::types::BenchGenSettings`] (one entry).
pub const BENCH_GEN_SETTINGS: &str = "BENCH_GEN_SETTINGS";
/// The generator's per-CPU frame sequence number.
pub const BENCH_GEN_SEQ: &str = "BENCH_GEN_SEQ";
/// Frames the generator may still send, per CPU (u64); at 0 it drops what arrives, so
/// the circulating frames die out.
pub const BENCH_GEN_BUDGET: &str = "BENCH_GEN_BUDGET";
/// Frames that reached the generator, per CPU, indexed by `BENCH_ARRIVED_*`.
pub const BENCH_GEN_ARRIVALS: &str = "BENCH_GEN_ARRIVALS";
/// Arrived as sent (UDP to the template's destination): a reflector's.
pub const BENCH_ARRIVED_AS_SENT: u32 = 0;
/// Arrived in IPIP: `xdp_lb`'s, tunnelled to a backend node.
pub const BENCH_ARRIVED_ENCAPSULATED: u32 = 1;
/// Arrived as UDP to another destination: translated (DNAT) by the owner's kernel.
pub const BENCH_ARRIVED_TRANSLATED: u32 = 2;
/// Anything else (ARP, IPv6, ICMP): dropped.
pub const BENCH_ARRIVED_OTHER: u32 = 3;
pub const BENCH_ARRIVAL_KINDS: u32 = 4;
/// Length of the generator's frames: a minimal Ethernet frame (without FCS).
pub const BENCH_FRAME_LEN: usize = 64;
/// Client ports per client address the generator cycles through (a power of two);
/// flow `n` is port [`BENCH_GEN_PORT_BASE`] + n % this at address base + n / this.
pub const BENCH_GEN_PORTS: u32 = 16384;
pub const BENCH_GEN_PORT_BASE: u16 = 16384;
/// Owner floor (benchmark reference): parses as [`BENCH_TX_PROGRAM`] does, then wraps
/// the packet in an outer IPv4 header (IPIP) from [`BENCH_OWNER_ADDR`] to
/// [`BENCH_BACKEND_ADDR`] behind an Ethernet header from [`BENCH_OWNER_MAC`] to
/// [`BENCH_GEN_MAC`], all constants, and returns `XDP_TX`: no map access. The least
/// any owner tunnelling to a backend node costs.
pub const BENCH_FLOOR_ENCAP_PROGRAM: &str = "bench_floor_encap";
/// Owner floor: [`BENCH_FLOOR_ENCAP_PROGRAM`] plus one lookup of the packet's
/// [`crate::types::FlowKey`] in [`BENCH_FLOOR_FLOWS`], the backend node's address taken
/// from the value: the least a flow-table owner (Katran's pattern, `xdp_lb`'s) costs.
pub const BENCH_FLOOR_FLOW_PROGRAM: &str = "bench_floor_flow";
/// Owner floor: [`BENCH_FLOOR_ENCAP_PROGRAM`] plus one lookup in the direct-mapped
/// [`BENCH_FLOOR_CACHE`] at [`crate::types::BenchCacheSlot::index`], the key compared,
/// the backend node's address taken from the slot.
pub const BENCH_FLOOR_CACHE_PROGRAM: &str = "bench_floor_cache";
/// [`crate::types::FlowKey`] -> [`crate::types::FlowValue`], made as `FLOWS` is (LRU
/// hash, per-CPU LRU lists, [`MAX_FLOWS_DEFAULT`] entries); the bench fills it with
/// the generator's flows.
pub const BENCH_FLOOR_FLOWS: &str = "BENCH_FLOOR_FLOWS";
/// Array of [`crate::types::BenchCacheSlot`], [`BENCH_FLOOR_CACHE_SLOTS`] long.
pub const BENCH_FLOOR_CACHE: &str = "BENCH_FLOOR_CACHE";
/// Slots of [`BENCH_FLOOR_CACHE`]: a power of two, as many as `FLOWS` has entries.
pub const BENCH_FLOOR_CACHE_SLOTS: u32 = MAX_FLOWS_DEFAULT;
/// The owner bench's fixed link-layer and node addresses, so the floors can write their
/// outer headers from constants: the owner's LAN port, the generator's port (which
/// stands for the backend node's MAC too), the owner node and the backend node.
pub const BENCH_OWNER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x01];
pub const BENCH_GEN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x02];
pub const BENCH_OWNER_ADDR: [u8; 4] = [10, 0, 0, 1];
pub const BENCH_BACKEND_ADDR: [u8; 4] = [10, 0, 0, 2];
