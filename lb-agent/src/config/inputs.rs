//! The standalone file as the core's [`Inputs`]: the cluster it describes, which every
//! node computes the same tables and elections from.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{EndpointConfig, PortConfig, ServiceConfig, Standalone};
use crate::model::{Endpoint, Inputs, Node, Service, ServicePort};

impl Standalone {
    /// The configured owner of each VIP that names one.
    pub fn owners(&self) -> BTreeMap<Ipv4Addr, &str> {
        self.config
            .services
            .iter()
            .filter_map(|service| Some((service.vip, service.owner.as_deref()?)))
            .collect()
    }

    /// The core's inputs, with the interface MTU the caller resolved (`mtu` from the
    /// file if set, else the interface's).
    pub fn inputs(&self, mtu: u32) -> Inputs {
        Inputs {
            node: self.node.clone(),
            peers: self
                .config
                .peers
                .iter()
                .map(|peer| Node {
                    name: peer.name.clone(),
                    address: peer.address,
                })
                .collect(),
            services: self
                .config
                .services
                .iter()
                .map(ServiceConfig::service)
                .collect(),
            mtu,
            icmp_rate_per_sec: self.config.node_settings.icmp_rate_per_second,
            down: BTreeSet::new(),
        }
    }
}

impl ServiceConfig {
    fn service(&self) -> Service {
        Service {
            name: self.name.clone(),
            vip: self.vip,
            ports: self.ports.iter().map(PortConfig::service_port).collect(),
            endpoints: self
                .endpoints
                .iter()
                .map(EndpointConfig::endpoint)
                .collect(),
            traffic_policy: self.external_traffic_policy,
            drop_unknown_ports: self.drop_unknown_ports,
        }
    }
}

impl PortConfig {
    fn service_port(&self) -> ServicePort {
        ServicePort {
            port: self.port,
            protocol: self.protocol,
            target_port: self.target_port.unwrap_or(self.port),
        }
    }
}

impl EndpointConfig {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            node: self.node.clone(),
            ready: self.ready,
            terminating: self.terminating,
        }
    }
}
