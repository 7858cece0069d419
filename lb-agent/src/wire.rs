//! Logical values <-> the byte layouts of lb-common's map types. Addresses and ports
//! are stored in network byte order, so the kernel compares them with packet fields as
//! loaded.

use std::net::Ipv4Addr;

use lb_common::types::{
    BACKEND_ACTIVE, BACKEND_DRAINING, BackendValue, DataplaneConfig, NodeRing, PodRing,
    SERVICE_F_LOCAL_ONLY, ServiceKey, ServiceValue, VIP_F_DROP_UNKNOWN_PORTS, VipValue,
};

use crate::model::{BackendState, NodeConfig, PortKey, PortTarget, Protocol, Vip};

/// A map entry this agent did not write (a value no decoding here accepts); the
/// dataplane reports it as `DataplaneError::Foreign`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    pub map: &'static str,
    pub detail: String,
}

pub fn addr(address: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(address.octets())
}

pub fn ip(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

pub fn config(node: &NodeConfig) -> DataplaneConfig {
    DataplaneConfig {
        node_addr: addr(node.address),
        mtu: node.mtu,
        icmp_rate_per_sec: node.icmp_rate_per_sec,
        mac: node.mac,
        _pad: [0; 2],
    }
}

pub fn node_config(raw: &DataplaneConfig) -> NodeConfig {
    NodeConfig {
        address: ip(raw.node_addr),
        mtu: raw.mtu,
        icmp_rate_per_sec: raw.icmp_rate_per_sec,
        mac: raw.mac,
    }
}

pub fn service_key(key: &PortKey) -> ServiceKey {
    ServiceKey {
        vip: addr(key.vip),
        port: key.port.to_be(),
        proto: key.protocol.number(),
        _pad: 0,
    }
}

pub fn port_key(raw: &ServiceKey) -> Result<PortKey, Foreign> {
    let protocol = Protocol::from_number(raw.proto).ok_or_else(|| Foreign {
        map: lb_common::maps::SERVICES,
        detail: format!("protocol {}", raw.proto),
    })?;
    Ok(PortKey {
        vip: ip(raw.vip),
        port: u16::from_be(raw.port),
        protocol,
    })
}

pub fn service_value(
    target: &PortTarget,
    ring_slot: u32,
    stats_index: u32,
    slot: u32,
) -> ServiceValue {
    ServiceValue {
        ring_slot,
        target_port: target.target_port.to_be(),
        flags: if target.local_only {
            SERVICE_F_LOCAL_ONLY
        } else {
            0
        },
        stats_index,
        slot,
    }
}

pub fn port_target(raw: &ServiceValue, service: String) -> PortTarget {
    PortTarget {
        service,
        target_port: u16::from_be(raw.target_port),
        local_only: raw.flags & SERVICE_F_LOCAL_ONLY != 0,
    }
}

pub fn vip_value(vip: &Vip, stats_index: u32) -> VipValue {
    VipValue {
        stats_index,
        flags: if vip.drop_unknown_ports {
            VIP_F_DROP_UNKNOWN_PORTS
        } else {
            0
        },
    }
}

pub fn vip(raw: &VipValue) -> Vip {
    Vip {
        drop_unknown_ports: raw.flags & VIP_F_DROP_UNKNOWN_PORTS != 0,
    }
}

pub fn backend_value(state: BackendState, slot: u32) -> BackendValue {
    BackendValue {
        state: match state {
            BackendState::Active => BACKEND_ACTIVE,
            BackendState::Draining => BACKEND_DRAINING,
        },
        slot,
    }
}

pub fn backend_state(address: u32, raw: &BackendValue) -> Result<BackendState, Foreign> {
    match raw.state {
        BACKEND_ACTIVE => Ok(BackendState::Active),
        BACKEND_DRAINING => Ok(BackendState::Draining),
        other => Err(Foreign {
            map: lb_common::maps::BACKENDS,
            detail: format!("{} in state {other}", ip(address)),
        }),
    }
}

fn fill(slots: &mut [u32], table: impl IntoIterator<Item = Ipv4Addr>) {
    for (slot, address) in slots.iter_mut().zip(table) {
        *slot = addr(address);
    }
}

pub fn node_ring(table: impl IntoIterator<Item = Ipv4Addr>) -> Box<NodeRing> {
    let mut ring = Box::new(NodeRing {
        backends: [0; lb_common::maps::NODE_RING_SIZE],
    });
    fill(&mut ring.backends, table);
    ring
}

pub fn pod_ring(table: impl IntoIterator<Item = Ipv4Addr>) -> Box<PodRing> {
    let mut ring = Box::new(PodRing {
        backends: [0; lb_common::maps::POD_RING_SIZE],
    });
    fill(&mut ring.backends, table);
    ring
}

pub fn table(slots: &[u32]) -> Vec<Ipv4Addr> {
    slots.iter().map(|raw| ip(*raw)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ip as parse;

    #[test]
    fn addresses_are_stored_as_on_the_wire() {
        let raw = addr(parse("10.0.0.11"));
        assert_eq!(raw.to_ne_bytes(), [10, 0, 0, 11]);
        assert_eq!(ip(raw), parse("10.0.0.11"));
    }

    #[test]
    fn ports_are_stored_big_endian() {
        let key = PortKey {
            vip: parse("172.16.200.20"),
            port: 443,
            protocol: Protocol::Tcp,
        };
        let raw = service_key(&key);
        assert_eq!(raw.port.to_ne_bytes(), [0x01, 0xbb]);
        assert_eq!(raw.proto, 6);
        assert_eq!(port_key(&raw).expect("valid key"), key);
        let target = PortTarget {
            service: "web".into(),
            target_port: 8443,
            local_only: true,
        };
        let value = service_value(&target, 7, 3, 5);
        assert_eq!((value.ring_slot, value.stats_index, value.slot), (7, 3, 5));
        assert_eq!(value.target_port.to_ne_bytes(), 8443u16.to_be_bytes());
        assert_eq!(value.flags, SERVICE_F_LOCAL_ONLY);
        assert_eq!(port_target(&value, "web".into()), target);
    }
}
