//! The lab cluster in Kubernetes mode: every agent runs `lb-agent kubernetes` against an
//! [`ApiDouble`] on the LAN (an address on the lab's bridge, reachable from the node
//! namespaces only), which holds the Nodes, Services, EndpointSlices and the AddressPool
//! the lab's services make, and takes the agents' Lease, status and Event writes. The
//! Services name their VIP with `xdplb.io/ips`, so the agent holding the IPAM Lease
//! assigns exactly the lab's VIPs.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::Context as _;
use k8s_openapi::{
    api::{
        core::v1::{
            Namespace, Node, NodeAddress, NodeCondition, NodeStatus, Service as KubeService,
            ServicePort, ServiceSpec,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Cluster, Service, VIP_CIDR, node_name, shell_quote};
use crate::lab::{LAN_IFACE, Lab, api_double::ApiDouble};

/// Where the API double listens: on the bridge, outside the nodes' addresses.
const API_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 250);
const API_PORT: u16 = 6443;
/// The agents' namespace (their IPAM Lease lives there).
const AGENT_NAMESPACE: &str = "xdplb-system";
/// The Services' namespace.
const SERVICE_NAMESPACE: &str = "default";

/// The API double and what it publishes.
#[derive(Debug)]
pub(super) struct Kubernetes {
    api: ApiDouble,
    /// Pods the EndpointSlices list; the others exist in the lab but are not endpoints
    /// yet.
    published: RefCell<BTreeSet<Ipv4Addr>>,
}

impl Kubernetes {
    /// Starts the double on the lab's bridge; `withheld` pods stay out of the slices
    /// until [`Cluster::publish_endpoint`].
    fn start(lab: &Lab, services: &[Service], withheld: &[Ipv4Addr]) -> anyhow::Result<Self> {
        lab.lan.run(&format!(
            "ip addr add {API_ADDR}/24 dev {}",
            crate::lab::BRIDGE
        ))?;
        let api = ApiDouble::start(&lab.lan, SocketAddrV4::new(API_ADDR, API_PORT))?;
        let published = services
            .iter()
            .flat_map(|service| service.pods.iter().copied())
            .filter(|pod| !withheld.contains(pod))
            .collect();
        Ok(Self {
            api,
            published: RefCell::new(published),
        })
    }

    /// Every object the agents read, before any agent starts.
    pub(super) fn publish(&self, cluster: &Cluster) -> anyhow::Result<()> {
        for name in [SERVICE_NAMESPACE, AGENT_NAMESPACE] {
            let namespace = Namespace {
                metadata: meta(name, None),
                ..Namespace::default()
            };
            self.api.put("namespaces", to_json(&namespace)?)?;
        }
        for node in &cluster.lab.nodes {
            self.api
                .put("nodes", to_json(&kube_node(&node.name, node.addr))?)?;
        }
        self.api.put(
            "addresspools",
            json!({
                "apiVersion": "xdplb.io/v1alpha1",
                "kind": "AddressPool",
                "metadata": { "name": "lab" },
                "spec": { "addresses": [VIP_CIDR] },
            }),
        )?;
        for service in &cluster.services {
            self.api.put("services", to_json(&kube_service(service))?)?;
            self.publish_slice(service)?;
        }
        Ok(())
    }

    fn publish_slice(&self, service: &Service) -> anyhow::Result<()> {
        let published = self.published.borrow();
        let slice = endpoint_slice(service, &published);
        self.api.put("endpointslices", to_json(&slice)?)
    }

    /// The settings file and the command line of `node`'s agent.
    pub(super) fn agent_command(&self, cluster: &Cluster, node: &str) -> anyhow::Result<String> {
        let settings = cluster.scratch().join(format!("{node}-settings.yaml"));
        fs::write(
            &settings,
            format!(
                "interface: {LAN_IFACE}\npinDir: {pins}\ngossip:\n  keyFile: {key}\napi:\n  \
                 socket: {socket}\n",
                pins = cluster.pin_dir(node).display(),
                key = cluster.gossip_key().display(),
                socket = cluster.socket(node).display(),
            ),
        )?;
        let kubeconfig = cluster.scratch().join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(self.api.address()))?;
        Ok(format!(
            "env KUBECONFIG={} {} kubernetes --settings {} --node {node} --namespace \
             {AGENT_NAMESPACE} --pod {node}-agent",
            shell_quote(kubeconfig.display()),
            shell_quote(cluster.binaries.agent.display()),
            shell_quote(settings.display()),
        ))
    }
}

impl Cluster {
    /// [`Cluster::test`] in Kubernetes mode; `withheld` pods run but are no endpoints
    /// until [`Self::publish_endpoint`].
    pub fn test_kubernetes(
        name: &str,
        nodes: usize,
        services: Vec<Service>,
        withheld: &[Ipv4Addr],
        scenario: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        Self::run_test(
            name,
            || {
                Self::start_with(nodes, services, |lab, services| {
                    Kubernetes::start(lab, services, withheld).map(Some)
                })
            },
            scenario,
        )
    }

    /// The API double of a Kubernetes-mode cluster.
    pub fn api_double(&self) -> anyhow::Result<&ApiDouble> {
        self.kubernetes
            .as_ref()
            .map(|kubernetes| &kubernetes.api)
            .context("the cluster runs in standalone mode")
    }

    /// Adds `pod` to its service's EndpointSlice, as the endpoints controller would
    /// once the pod is ready.
    pub fn publish_endpoint(&self, pod: Ipv4Addr) -> anyhow::Result<()> {
        let kubernetes = self
            .kubernetes
            .as_ref()
            .context("the cluster runs in standalone mode")?;
        let service = self
            .services
            .iter()
            .find(|service| service.pods.contains(&pod))
            .with_context(|| format!("{pod} belongs to no service"))?;
        kubernetes.published.borrow_mut().insert(pod);
        kubernetes.publish_slice(service)
    }
}

fn to_json(object: &impl Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(object).context("serialising a Kubernetes object")
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

fn kube_node(name: &str, address: Ipv4Addr) -> Node {
    Node {
        metadata: meta(name, None),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".to_owned(),
                address: address.to_string(),
            }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

/// A port's name, shared by the Service and its slices.
fn port_name(port: u16, protocol: &str) -> String {
    format!("{}-{port}", protocol.to_lowercase())
}

fn kube_service(service: &Service) -> KubeService {
    let vip = service.vip.to_string();
    let mut metadata = meta(service.name, Some(SERVICE_NAMESPACE));
    metadata.annotations = Some(
        [
            ("xdplb.io/ips".to_owned(), vip.clone()),
            ("xdplb.io/sharing-key".to_owned(), vip),
        ]
        .into(),
    );
    KubeService {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            load_balancer_class: Some("xdplb.io/lb".to_owned()),
            external_traffic_policy: Some("Cluster".to_owned()),
            ports: Some(
                service
                    .app
                    .ports()
                    .iter()
                    .map(|&(port, protocol, target)| ServicePort {
                        name: Some(port_name(port, protocol)),
                        port: i32::from(port),
                        protocol: Some(protocol.to_owned()),
                        target_port: Some(IntOrString::Int(i32::from(target))),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn endpoint_slice(service: &Service, published: &BTreeSet<Ipv4Addr>) -> EndpointSlice {
    let mut metadata = meta(service.name, Some(SERVICE_NAMESPACE));
    metadata.labels = Some(
        [(
            "kubernetes.io/service-name".to_owned(),
            service.name.to_owned(),
        )]
        .into(),
    );
    EndpointSlice {
        metadata,
        address_type: "IPv4".to_owned(),
        endpoints: Some(
            service
                .pods
                .iter()
                .filter(|pod| published.contains(pod))
                .map(|pod| Endpoint {
                    addresses: vec![pod.to_string()],
                    node_name: Some(node_name(*pod)),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(
            service
                .app
                .ports()
                .iter()
                .map(|&(port, protocol, target)| EndpointPort {
                    name: Some(port_name(port, protocol)),
                    port: Some(i32::from(target)),
                    protocol: Some(protocol.to_owned()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

fn kubeconfig_yaml(server: SocketAddrV4) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: \
         http://{server}\nusers:\n- name: lab\n  user: {{}}\ncontexts:\n- name: lab\n  \
         context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n"
    )
}
