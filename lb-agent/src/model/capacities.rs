//! How large the BPF maps are made: plain numbers, read from either settings file and
//! used by the loader.

use lb_common::maps as names;

/// Map capacities chosen at load time (the kernel side only has defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Services with their own Maglev rings.
    pub services: u32,
    /// `(vip, port, proto)` entries.
    pub service_ports: u32,
    pub vips: u32,
    pub backends: u32,
    pub flows: u32,
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
