//! The range of every number the settings take. Outside it a value is refused with its
//! line: each limit keeps the agent from asking the kernel for more memory than a node
//! can spare, the gossip from waiting longer than any failover is worth, or the ARP
//! announcer from flooding the LAN. docs/configuration.md states each range; a test
//! reads them there.

/// One key's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The key as the file spells it, e.g. `capacities.flows`.
    pub key: &'static str,
    pub min: u32,
    pub max: u32,
}

impl Bound {
    const fn new(key: &'static str, min: u32, max: u32) -> Self {
        Self { key, min, max }
    }

    /// The problem with `value`, if it is outside the range.
    pub fn problem(&self, value: u32) -> Option<String> {
        (!(self.min..=self.max).contains(&value))
            .then(|| format!("{value} is outside {} to {}", self.min, self.max))
    }
}

/// The LAN's MTU, from IPv4's minimum to the largest IPv4 packet.
pub const MTU: Bound = Bound::new("mtu", 576, 65535);
/// ICMP messages per second and CPU.
pub const ICMP_RATE: Bound = Bound::new("icmpRatePerSecond", 0, 10_000);
/// Services: two consistent-hash tables of ~80 KiB each, so at most ~160 MiB.
pub const SERVICES: Bound = Bound::new("capacities.services", 1, 2048);
pub const SERVICE_PORTS: Bound = Bound::new("capacities.servicePorts", 1, 65_536);
pub const VIPS: Bound = Bound::new("capacities.vips", 1, 65_536);
pub const BACKENDS: Bound = Bound::new("capacities.backends", 1, 65_536);
/// Flow-cache entries take ~100 bytes of kernel memory each: at most ~400 MiB.
pub const FLOWS: Bound = Bound::new("capacities.flows", 1, 4_194_304);
pub const REPLY_FLOWS: Bound = Bound::new("capacities.replyFlows", 1, 4_194_304);
/// Gossip timings: up to a minute between probes, ten minutes to suspect or join.
pub const PROBE_INTERVAL: Bound = Bound::new("gossip.probeIntervalMs", 1, 60_000);
pub const PROBE_TIMEOUT: Bound = Bound::new("gossip.probeTimeoutMs", 1, 60_000);
pub const SUSPICION: Bound = Bound::new("gossip.suspicionMs", 1, 600_000);
pub const JOIN_TIMEOUT: Bound = Bound::new("gossip.joinTimeoutMs", 1, 600_000);
/// Gratuitous ARP after a takeover: at most ten more rounds, at least 100 ms apart, so
/// a takeover of many VIPs cannot flood the LAN.
pub const GARP_REPEATS: Bound = Bound::new("arp.garpRepeats", 0, 10);
pub const GARP_INTERVAL: Bound = Bound::new("arp.garpIntervalMs", 100, 60_000);
/// Re-announcing owned VIPs: off (0), or up to once a day.
pub const REFRESH: Bound = Bound::new("arp.refreshSeconds", 0, 86_400);

/// Every bound, for the reference's test.
pub const ALL: [Bound; 15] = [
    MTU,
    ICMP_RATE,
    SERVICES,
    SERVICE_PORTS,
    VIPS,
    BACKENDS,
    FLOWS,
    REPLY_FLOWS,
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    SUSPICION,
    JOIN_TIMEOUT,
    GARP_REPEATS,
    GARP_INTERVAL,
    REFRESH,
];
