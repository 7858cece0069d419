//! Indices into the per-CPU [`crate::maps::REASON_STATS`] array: why a packet got its verdict.
//!
//! Plain `u32` constants rather than an enum so the kernel side indexes the array without
//! conversions and user space can iterate [`NAMES`].

pub const PASS_NOT_IPV4: u32 = 0;
pub const PASS_NOT_VIP: u32 = 1;
pub const PASS_UNKNOWN_PORT: u32 = 2;
pub const DROP_UNKNOWN_PORT: u32 = 3;
pub const DROP_MALFORMED: u32 = 4;
pub const DROP_FRAGMENT: u32 = 5;
pub const DROP_IP_OPTIONS: u32 = 6;
pub const DROP_UNSUPPORTED_PROTO: u32 = 7;
pub const DROP_NO_BACKEND: u32 = 8;
pub const TX_ENCAP: u32 = 9;
pub const PASS_LOCAL_DNAT: u32 = 10;
pub const PASS_DECAP_DNAT: u32 = 11;
pub const DROP_IPIP_STRANGER: u32 = 12;
pub const DROP_IPIP_NOT_VIP: u32 = 13;
pub const TX_ICMP_ECHO_REPLY: u32 = 14;
pub const DROP_ICMP_RATE_LIMITED: u32 = 15;
pub const TX_ICMP_FRAG_NEEDED: u32 = 16;
pub const DROP_TOO_BIG: u32 = 17;
pub const ICMP_ERROR_STEERED: u32 = 18;
pub const PASS_FIB_FALLBACK: u32 = 19;
pub const FLOW_CACHE_HIT: u32 = 20;
pub const FLOW_CACHE_MISS: u32 = 21;
pub const DROP_MAP_ERROR: u32 = 22;
pub const TC_REPLY_REWRITTEN: u32 = 23;
pub const TC_MSS_CLAMPED: u32 = 24;
pub const TC_PASS_UNTRACKED: u32 = 25;
/// A VIP (or tunnel) frame sent to another host's MAC address, seen here only because a
/// switch flooded it or a bridge is promiscuous: the addressed node handles it.
pub const PASS_NOT_OUR_MAC: u32 = 26;
/// A flow-cache hit that also found the flow's service in the cache (its
/// `SERVICE_SLOTS` slot), without the `SERVICES` lookup; [`FLOW_CACHE_HIT`] counts the
/// hits that looked the service up.
pub const FLOW_FAST_HIT: u32 = 27;
/// Tunnelled (IPIP) to its backend node from its flow's [`crate::maps::EXPRESS`] entry,
/// without the flow table or any other lookup: an established flow's packets once its
/// first went out as [`TX_ENCAP`].
pub const TX_EXPRESS: u32 = 28;

/// Number of reasons; the size of [`crate::maps::REASON_STATS`].
pub const COUNT: u32 = 29;

/// Stable names for metrics labels and `lbctl`, indexed by reason.
pub const NAMES: [&str; COUNT as usize] = [
    "pass_not_ipv4",
    "pass_not_vip",
    "pass_unknown_port",
    "drop_unknown_port",
    "drop_malformed",
    "drop_fragment",
    "drop_ip_options",
    "drop_unsupported_proto",
    "drop_no_backend",
    "tx_encap",
    "pass_local_dnat",
    "pass_decap_dnat",
    "drop_ipip_stranger",
    "drop_ipip_not_vip",
    "tx_icmp_echo_reply",
    "drop_icmp_rate_limited",
    "tx_icmp_frag_needed",
    "drop_too_big",
    "icmp_error_steered",
    "pass_fib_fallback",
    "flow_cache_hit",
    "flow_cache_miss",
    "drop_map_error",
    "tc_reply_rewritten",
    "tc_mss_clamped",
    "tc_pass_untracked",
    "pass_not_our_mac",
    "flow_fast_hit",
    "tx_express",
];
