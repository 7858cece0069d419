//! The data plane the fuzzer runs against: two VIPs with local, tunnelled, local-only
//! and backend-less services, two tunnel peers, next hops on two links (so encapsulated
//! frames leave by TX, REDIRECT and the kernel fallback), and recorded reply flows for
//! the TC program. Checks and frame builders read the same tables.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Result;
use lb_common::types::{
    PROTO_TCP, PROTO_UDP, ReplyValue, SERVICE_F_LOCAL_ONLY, VIP_F_DROP_UNKNOWN_PORTS,
};

use crate::fixture::{
    Dataplane, MTU, NEXT_HOP_MAC, NODE, PEER, PEER2, POD, POD2, VIP, VIP_STATS_INDEX, reply_key,
    wire, wire_port,
};

/// A second VIP that drops traffic to ports it does not serve.
pub const VIP2: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 241);
pub const VIPS: [Ipv4Addr; 2] = [VIP, VIP2];
/// A backend node behind a second link: reached by XDP_REDIRECT.
pub const FAR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const FAR_LINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Tunnel peers; PEER2 has no neighbour entry, so its tunnel falls back to the kernel.
pub const PEERS: [Ipv4Addr; 2] = [PEER, PEER2];
/// An address on the LAN that is no peer.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
/// Echo replies must not be starved by the limiter: roughly one token per microsecond.
pub const ICMP_RATE: u32 = 1_000_000;
/// The LAN interface receiving every frame.
pub const LAN: &str = "lan0";
const FAR_LAN: &str = "lan1";
/// Clients whose reply flows are recorded before the run: replies to them from a pod
/// must leave rewritten. Their subnet is disjoint from the random clients' (see
/// `frames::client`) so XDP's own records never make another frame tracked.
pub const TRACKED_CLIENTS: [SocketAddrV4; 3] = [
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 10), 40000),
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 11), 51234),
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 2, 12), 65535),
];

/// One VIP service and where its traffic may go.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    /// 0 keeps the service port.
    pub target_port: u16,
    pub slot: u32,
    pub flags: u16,
    /// Backend nodes (the node ring); empty: no backend.
    pub nodes: &'static [Ipv4Addr],
    pub pods: &'static [Ipv4Addr],
}

impl Service {
    pub const fn socket(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.vip, self.port)
    }

    /// The port the pods listen on.
    pub const fn pod_port(&self) -> u16 {
        if self.target_port == 0 {
            self.port
        } else {
            self.target_port
        }
    }

    /// Whether a well-formed packet to it must leave forwarded (DNATed or tunnelled).
    pub const fn has_backends(&self) -> bool {
        !self.pods.is_empty() && (!self.nodes.is_empty() || self.flags & SERVICE_F_LOCAL_ONLY != 0)
    }
}

pub const SERVICES: [Service; 5] = [
    Service {
        vip: VIP,
        port: 443,
        proto: PROTO_TCP,
        target_port: 8443,
        slot: 0,
        flags: 0,
        nodes: &[NODE, PEER, FAR],
        pods: &[POD, POD2],
    },
    Service {
        vip: VIP,
        port: 53,
        proto: PROTO_UDP,
        target_port: 5353,
        slot: 1,
        flags: 0,
        nodes: &[NODE, PEER2],
        pods: &[POD],
    },
    Service {
        vip: VIP,
        port: 80,
        proto: PROTO_TCP,
        target_port: 0,
        slot: 2,
        flags: SERVICE_F_LOCAL_ONLY,
        nodes: &[PEER],
        pods: &[POD2],
    },
    Service {
        vip: VIP2,
        port: 500,
        proto: PROTO_UDP,
        target_port: 0,
        slot: 3,
        flags: 0,
        nodes: &[NODE, PEER],
        pods: &[POD, POD2],
    },
    Service {
        vip: VIP2,
        port: 22,
        proto: PROTO_TCP,
        target_port: 2222,
        slot: 4,
        flags: 0,
        nodes: &[],
        pods: &[],
    },
];

/// The service a packet to `vip:port` over `proto` addresses.
pub fn service(vip: [u8; 4], port: u16, proto: u8) -> Option<&'static Service> {
    SERVICES.iter().find(|service| {
        service.vip.octets() == vip && service.port == port && service.proto == proto
    })
}

/// The service whose pod `pod:port` sent a reply over `proto`.
pub fn service_of_pod(pod: [u8; 4], port: u16, proto: u8) -> Option<&'static Service> {
    SERVICES.iter().find(|service| {
        service.proto == proto
            && service.pod_port() == port
            && service.pods.iter().any(|addr| addr.octets() == pod)
    })
}

/// Every backend node a flow may be tunnelled to.
pub fn is_backend_node(addr: [u8; 4]) -> bool {
    SERVICES
        .iter()
        .flat_map(|service| service.nodes)
        .any(|node| *node != NODE && node.octets() == addr)
}

/// The loaded data plane and the interface facts the checks need.
pub struct Scenario {
    pub lb: Dataplane,
    /// Index of [`LAN`], the ingress interface of every XDP run.
    pub lan: u32,
    pub lan_mac: [u8; 6],
    pub far_mac: [u8; 6],
}

impl Scenario {
    pub fn load() -> Result<Self> {
        let mut lb = Dataplane::empty()?;
        lb.configure(MTU, ICMP_RATE)?;
        lb.add_vip(VIP, 0)?;
        lb.add_vip(VIP2, VIP_F_DROP_UNKNOWN_PORTS)?;
        for service in &SERVICES {
            lb.add_service(
                service.socket(),
                service.proto,
                service.target_port,
                service.slot,
                service.flags,
            )?;
            lb.set_node_ring(service.slot, service.nodes)?;
            lb.set_pod_ring(service.slot, service.pods)?;
        }
        for peer in PEERS {
            lb.add_peer(peer)?;
        }
        let lan = lb.add_link(LAN, NODE, PEER, Some(NEXT_HOP_MAC))?;
        lb.add_link(FAR_LAN, FAR_LINK_ADDR, FAR, Some(NEXT_HOP_MAC))?;
        record_tracked_replies(&mut lb)?;
        Ok(Self {
            lan_mac: lb.mac(LAN)?,
            far_mac: lb.mac(FAR_LAN)?,
            lb,
            lan,
        })
    }
}

fn record_tracked_replies(lb: &mut Dataplane) -> Result<()> {
    for service in &SERVICES {
        for pod in service.pods {
            for client in TRACKED_CLIENTS {
                let key = reply_key(
                    SocketAddrV4::new(*pod, service.pod_port()),
                    client,
                    service.proto,
                );
                let value = ReplyValue {
                    vip: wire(service.vip),
                    vip_port: wire_port(service.port),
                    _pad: 0,
                    stats_index: VIP_STATS_INDEX,
                };
                lb.maps.reply_flows.insert(&key, &value)?;
            }
        }
    }
    Ok(())
}

/// Whether REPLY_FLOWS holds the reply `pod:pod_port -> client:client_port` before the
/// run: the reply must leave rewritten.
pub fn is_tracked_reply(
    pod: [u8; 4],
    pod_port: u16,
    client: [u8; 4],
    client_port: u16,
    proto: u8,
) -> bool {
    service_of_pod(pod, pod_port, proto).is_some()
        && TRACKED_CLIENTS
            .iter()
            .any(|tracked| tracked.ip().octets() == client && tracked.port() == client_port)
}
