//! Inputs shared by the unit tests: the example file's content, built by hand so the
//! model's tests do not depend on the config parser.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::model::{Endpoint, Inputs, Node, Protocol, Service, ServicePort, TrafficPolicy};

pub fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("test address")
}

pub fn node(name: &str, address: &str) -> Node {
    Node {
        name: name.into(),
        address: ip(address),
    }
}

pub fn endpoint(address: &str, node: &str) -> Endpoint {
    Endpoint {
        address: ip(address),
        node: node.into(),
        ready: true,
        terminating: false,
    }
}

pub fn port(port: u16, protocol: Protocol, target_port: u16) -> ServicePort {
    ServicePort {
        port,
        protocol,
        target_port,
    }
}

/// `lb-agent/examples/standalone.yaml` as seen by `node` (`mtu: 1500`).
pub fn example_as(node_name: &str) -> Inputs {
    let peers = vec![node("node1", "10.0.0.11"), node("node2", "10.0.0.12")];
    let this = peers
        .iter()
        .find(|peer| peer.name == node_name)
        .expect("example node")
        .clone();
    Inputs {
        node: this,
        peers,
        services: vec![
            Service {
                name: "web".into(),
                vip: ip("172.16.200.20"),
                ports: vec![
                    port(80, Protocol::Tcp, 8080),
                    port(443, Protocol::Tcp, 8443),
                ],
                endpoints: vec![
                    endpoint("10.42.0.7", "node1"),
                    endpoint("10.42.1.5", "node2"),
                    endpoint("10.42.1.6", "node2"),
                ],
                traffic_policy: TrafficPolicy::Cluster,
                drop_unknown_ports: false,
            },
            Service {
                name: "dns".into(),
                vip: ip("172.16.200.53"),
                ports: vec![port(53, Protocol::Udp, 5353), port(53, Protocol::Tcp, 5353)],
                endpoints: vec![endpoint("10.42.1.9", "node2")],
                traffic_policy: TrafficPolicy::Cluster,
                drop_unknown_ports: false,
            },
        ],
        mtu: 1500,
        icmp_rate_per_sec: 100,
        down: BTreeSet::new(),
    }
}

pub fn example() -> Inputs {
    example_as("node1")
}
