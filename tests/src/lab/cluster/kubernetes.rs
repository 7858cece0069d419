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
    path::Path,
    process::Output,
    time::Duration,
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
use crate::lab::{
    LAN_IFACE, Lab,
    api_double::{AGENT_NAMESPACE, ApiDouble},
};

/// Where the API double listens: on the bridge, outside the nodes' addresses.
const API_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 250);
const API_PORT: u16 = 6443;
/// The longest `lb-agent kubernetes --check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
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
    pub(super) fn start(
        lab: &Lab,
        services: &[Service],
        withheld: &[Ipv4Addr],
    ) -> anyhow::Result<Self> {
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
        let nodes: Vec<(String, Ipv4Addr)> = cluster
            .lab
            .nodes
            .iter()
            .map(|node| (node.name.clone(), node.addr))
            .collect();
        self.api.publish_cluster(&nodes, VIP_CIDR)?;
        for service in &cluster.services {
            self.api
                .put_service(service.name, service.vip, service.app.ports())?;
            self.publish_slice(service)?;
        }
        Ok(())
    }

    fn publish_slice(&self, service: &Service) -> anyhow::Result<()> {
        let published = self.published.borrow();
        let endpoints: Vec<(Ipv4Addr, String)> = service
            .pods
            .iter()
            .filter(|pod| published.contains(pod))
            .map(|&pod| (pod, node_name(pod)))
            .collect();
        self.api
            .put_endpoint_slice(service.name, service.app.ports(), &endpoints)
    }

    /// Writes the kubeconfig every agent reads (`<scratch>/kubeconfig`).
    pub(super) fn write_kubeconfig(&self, cluster: &Cluster) -> anyhow::Result<()> {
        fs::write(
            cluster.scratch().join("kubeconfig"),
            kubeconfig_yaml(self.api.address()),
        )
        .context("writing the lab's kubeconfig")
    }

    /// The command line of `node`'s agent.
    pub(super) fn agent_command(&self, cluster: &Cluster, node: &str) -> anyhow::Result<String> {
        self.agent_command_as(cluster, node, node)
    }

    /// The command line of `node`'s agent (its settings file, written now), claiming
    /// to be the Node `name`.
    fn agent_command_as(
        &self,
        cluster: &Cluster,
        node: &str,
        name: &str,
    ) -> anyhow::Result<String> {
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
        self.api.agent_command(
            &cluster.binaries.agent,
            &settings,
            &cluster.scratch().join("kubeconfig"),
            name,
        )
    }
}

/// What an agent in Kubernetes mode reads, for harnesses that run agents against a
/// double of their own (the control-plane bench) as well as for the lab.
impl ApiDouble {
    /// The Namespaces, the Ready `nodes` (name, InternalIP) and an AddressPool of `pool`.
    pub fn publish_cluster(&self, nodes: &[(String, Ipv4Addr)], pool: &str) -> anyhow::Result<()> {
        for name in [SERVICE_NAMESPACE, AGENT_NAMESPACE] {
            let namespace = Namespace {
                metadata: meta(name, None),
                ..Namespace::default()
            };
            self.put("namespaces", to_json(&namespace)?)?;
        }
        for (name, address) in nodes {
            self.put("nodes", to_json(&kube_node(name, *address))?)?;
        }
        self.put(
            "addresspools",
            json!({
                "apiVersion": "xdplb.io/v1alpha1",
                "kind": "AddressPool",
                "metadata": { "name": "lab" },
                "spec": { "addresses": [pool] },
            }),
        )
    }

    /// A LoadBalancer Service of the agents' class asking for `vip` (`xdplb.io/ips`),
    /// without status: the agent holding the IPAM Lease assigns it. `ports` are
    /// (port, protocol, target port).
    pub fn put_service(
        &self,
        name: &str,
        vip: Ipv4Addr,
        ports: &[(u16, &str, u16)],
    ) -> anyhow::Result<()> {
        self.put("services", to_json(&kube_service(name, vip, ports))?)
    }

    /// Creates or replaces the EndpointSlice of Service `name`: `endpoints` (address,
    /// node name), all ready, on the Service's target ports.
    pub fn put_endpoint_slice(
        &self,
        name: &str,
        ports: &[(u16, &str, u16)],
        endpoints: &[(Ipv4Addr, String)],
    ) -> anyhow::Result<()> {
        self.put(
            "endpointslices",
            to_json(&endpoint_slice(name, ports, endpoints))?,
        )
    }

    /// Writes `kubeconfig` (pointing at this double) and returns the shell command that
    /// runs `agent` in Kubernetes mode as `node` with `settings`.
    pub fn agent_command(
        &self,
        agent: &Path,
        settings: &Path,
        kubeconfig: &Path,
        node: &str,
    ) -> anyhow::Result<String> {
        fs::write(kubeconfig, kubeconfig_yaml(self.address()))?;
        Ok(format!(
            "env KUBECONFIG={} {} kubernetes --settings {} --node {node} --namespace \
             {AGENT_NAMESPACE} --pod {node}-agent",
            shell_quote(kubeconfig.display()),
            shell_quote(agent.display()),
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
                Self::start_with(nodes, services, None, None, |lab, services| {
                    Kubernetes::start(lab, services, withheld).map(Some)
                })
            },
            scenario,
        )
    }

    /// `lb-agent kubernetes --check` as `node`'s agent would run it (its settings,
    /// kubeconfig and namespace) in `node`'s namespace, with `--node name`; bounded by
    /// [`CHECK_TIMEOUT`].
    pub fn kubernetes_check(&self, node: &str, name: &str) -> anyhow::Result<Output> {
        let kubernetes = self
            .kubernetes
            .as_ref()
            .context("the cluster runs in standalone mode")?;
        let command = format!("{} --check", kubernetes.agent_command_as(self, node, name)?);
        self.node(node)?
            .netns
            .command("timeout")
            .arg(CHECK_TIMEOUT.as_secs().to_string())
            .args(["sh", "-c", &command])
            .output()
            .with_context(|| format!("running {command}"))
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

fn kube_service(name: &str, vip: Ipv4Addr, ports: &[(u16, &str, u16)]) -> KubeService {
    let vip = vip.to_string();
    let mut metadata = meta(name, Some(SERVICE_NAMESPACE));
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
                ports
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

fn endpoint_slice(
    name: &str,
    ports: &[(u16, &str, u16)],
    endpoints: &[(Ipv4Addr, String)],
) -> EndpointSlice {
    let mut metadata = meta(name, Some(SERVICE_NAMESPACE));
    metadata.labels = Some([("kubernetes.io/service-name".to_owned(), name.to_owned())].into());
    EndpointSlice {
        metadata,
        address_type: "IPv4".to_owned(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(address, node)| Endpoint {
                    addresses: vec![address.to_string()],
                    node_name: Some(node.clone()),
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
            ports
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
