//! How large the BPF maps are made: plain numbers, read from either settings file and
//! used by the loader.

use lb_common::maps as names;
use serde::Deserialize;

/// Map capacities chosen at load time (the kernel side only has defaults): the
/// `capacities` key of either settings file, whose keys are these fields. Each key is
/// optional and at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Capacities {
    /// `services` (default 256): services with their own consistent-hash tables (Maglev
    /// rings). Each costs about 80 KiB of kernel memory (plus 8 spare slots for table
    /// switches).
    pub services: u32,
    /// `servicePorts` (default 1024): `(vip, port, protocol)` entries over all services.
    pub service_ports: u32,
    /// `vips` (default 256): distinct VIP addresses.
    pub vips: u32,
    /// `backends` (default 4096): backend nodes plus this node's endpoints.
    pub backends: u32,
    /// `flows` (default 65536): cached client flows (least recently used ones are
    /// evicted; an evicted flow is hashed again and normally lands on the same backend).
    pub flows: u32,
    /// `replyFlows` (default 65536): connections whose replies this node rewrites back to
    /// the VIP (least recently used ones are evicted).
    pub reply_flows: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            services: names::MAX_SERVICES_DEFAULT,
            service_ports: names::MAX_SERVICE_PORTS_DEFAULT,
            vips: names::MAX_VIPS_DEFAULT,
            backends: names::MAX_BACKENDS_DEFAULT,
            flows: names::MAX_FLOWS_DEFAULT,
            reply_flows: names::MAX_REPLY_FLOWS_DEFAULT,
        }
    }
}

impl Capacities {
    /// Ring slots: one per service plus spares for atomic table switches.
    pub fn ring_slots(&self) -> u32 {
        self.services + names::RING_SPARE_SLOTS
    }
}
