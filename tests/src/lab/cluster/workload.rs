//! What runs on the lab: the services (a VIP and its pods, on the node their address
//! says) and the servers in the pods, web, DNS or line echo.

use std::{collections::BTreeSet, fs, net::Ipv4Addr};

use anyhow::ensure;

use super::{Cluster, DNS_NAME, DNS_VIP, WEB_VIP};
use crate::netns::Process;

/// What a service's pods run, which fixes its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// python's http.server; the page names the pod.
    Web,
    /// dnsmasq answering [`DNS_NAME`].
    Dns,
    /// A line echo server that prefixes each line with the pod's address.
    Echo,
}

impl App {
    pub const WEB_PORT: u16 = 80;
    pub const WEB_TARGET: u16 = 8080;
    pub const DNS_PORT: u16 = 53;
    pub const DNS_TARGET: u16 = 5353;
    pub const ECHO_PORT: u16 = 7000;

    /// (VIP port, protocol, target port) of the service.
    pub(super) fn ports(self) -> &'static [(u16, &'static str, u16)] {
        match self {
            Self::Web => &[(Self::WEB_PORT, "TCP", Self::WEB_TARGET)],
            Self::Dns => &[
                (Self::DNS_PORT, "UDP", Self::DNS_TARGET),
                (Self::DNS_PORT, "TCP", Self::DNS_TARGET),
            ],
            Self::Echo => &[(Self::ECHO_PORT, "TCP", Self::ECHO_PORT)],
        }
    }
}

/// A load-balanced service: its VIP and the pods behind it (a pod on node i is in
/// 10.42.(i-1).0/24).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub app: App,
    pub pods: Vec<Ipv4Addr>,
}

impl Service {
    /// Web pods on all three nodes, on [`WEB_VIP`].
    pub fn web() -> Self {
        Self {
            name: "web",
            vip: WEB_VIP,
            app: App::Web,
            pods: vec![
                Ipv4Addr::new(10, 42, 0, 7),
                Ipv4Addr::new(10, 42, 1, 5),
                Ipv4Addr::new(10, 42, 2, 5),
            ],
        }
    }

    /// The homelab of the lab program: web pods on all three nodes, one DNS pod.
    pub fn homelab() -> Vec<Self> {
        vec![
            Self::web(),
            Self {
                name: "dns",
                vip: DNS_VIP,
                app: App::Dns,
                pods: vec![Ipv4Addr::new(10, 42, 2, 9)],
            },
        ]
    }

    /// Its entry in a standalone file's `services`, the owner left to the agents.
    pub(super) fn yaml(&self) -> String {
        service_yaml(self.name, self.vip, None, self.app.ports(), &self.pods)
    }
}

/// One entry of a standalone file's `services`: `ports` as (VIP port, protocol, target
/// port), an endpoint per pod on the node its address names, and a static `owner` when
/// given (else the agents elect one).
pub fn service_yaml(
    name: &str,
    vip: Ipv4Addr,
    owner: Option<&str>,
    ports: &[(u16, &str, u16)],
    pods: &[Ipv4Addr],
) -> String {
    let owner = owner.map_or_else(String::new, |owner| format!("    owner: {owner}\n"));
    let ports: String = ports
        .iter()
        .map(|(port, protocol, target)| {
            format!("      - {{ port: {port}, protocol: {protocol}, targetPort: {target} }}\n")
        })
        .collect();
    let endpoints: String = pods
        .iter()
        .map(|&pod| format!("      - {{ address: {pod}, node: {} }}\n", node_name(pod)))
        .collect();
    format!(
        "  - name: {name}\n    vip: {vip}\n{owner}    ports:\n{ports}    endpoints:\n{endpoints}"
    )
}

/// The node a pod address belongs to.
pub(super) fn node_index(pod: Ipv4Addr) -> usize {
    usize::from(pod.octets()[2]) + 1
}

pub(super) fn node_name(pod: Ipv4Addr) -> String {
    format!("node{}", node_index(pod))
}

/// Pod addresses per node (node i gets the pods in 10.42.(i-1).0/24), each once.
pub(super) fn pods_per_node(
    nodes: usize,
    services: &[Service],
) -> anyhow::Result<Vec<Vec<Ipv4Addr>>> {
    let mut pods = vec![BTreeSet::new(); nodes];
    for service in services {
        for &pod in &service.pods {
            let index = node_index(pod);
            ensure!(
                (1..=nodes).contains(&index),
                "pod {pod} of {} would be on node{index}, but the lab has {nodes} nodes",
                service.name
            );
            pods[index - 1].insert(pod);
        }
    }
    Ok(pods
        .into_iter()
        .map(|set| set.into_iter().collect())
        .collect())
}

impl Cluster {
    pub(super) fn start_servers(&self) -> anyhow::Result<Vec<Process>> {
        let mut servers = Vec::new();
        for service in &self.services {
            for &pod in &service.pods {
                let pod_ns = self.lab.pod(pod)?;
                servers.push(match service.app {
                    App::Web => {
                        let root = self.scratch().join(format!("www-{pod}"));
                        fs::create_dir_all(&root)?;
                        // The page names the pod, so each answer tells who served it.
                        fs::write(root.join("index.html"), format!("{pod}\n"))?;
                        pod_ns.serve_http(App::WEB_TARGET, &root, &self.web_log(pod))?
                    }
                    App::Dns => pod_ns.serve_dns(
                        App::DNS_TARGET,
                        &[(DNS_NAME, WEB_VIP)],
                        &self.scratch().join(format!("dns-{pod}.log")),
                    )?,
                    App::Echo => pod_ns.serve_echo(App::ECHO_PORT, &self.echo_log(pod))?,
                });
            }
        }
        Ok(servers)
    }
}
