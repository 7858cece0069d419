//! lbctl's cluster side: what it reads from the Kubernetes API, and what it makes of it.
//!
//! Reading ([`pools`], [`snapshot`], [`class_policy`]) is the only I/O; [`services`] and
//! [`explain`] are pure, and compute with the agent's own code: the translation of the
//! API objects into the core's inputs, the election and the data path's hash tables.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use kube::{Api, Client, Config, ResourceExt as _, api::ListParams};
use lb_agent::{
    apis::{address_pool::AddressPool, service},
    explain::{self, Explanation, Query},
    ipam::{
        pool::Pool,
        request::{ClassPolicy, LOAD_BALANCER_CLASS, Responsibility},
    },
    ipam_controller::ALLOCATED_CONDITION,
    membership::View,
    model::desired_state,
    runtime::reconcile::plan,
    sources::kubernetes::{
        client::{LBCTL_USER_AGENT, identified},
        settings::KubernetesSettings,
        slice::Slice,
        translate::{SERVICE_NAME_LABEL, Snapshot, TranslateError, Translator},
    },
};
use serde::{Deserialize, Serialize};

/// The agent's ConfigMap and the key of its settings file in it.
const SETTINGS_CONFIG_MAP: &str = "xdplb-agent";
const SETTINGS_KEY: &str = "settings.yaml";
/// ICMP rate of the default settings; it does not change where a flow goes.
const ICMP_RATE: u32 = 100;

/// How long to wait for the API server to accept a connection, and to answer.
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const API_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` as lbctl uses it: its requests name lbctl (User-Agent `lbctl/<version>`)
/// and give up on an API server that does not answer.
pub fn configured(config: Config) -> Config {
    let mut config = identified(config, LBCTL_USER_AGENT);
    config.connect_timeout = Some(API_CONNECT_TIMEOUT);
    config.read_timeout = Some(API_READ_TIMEOUT);
    config
}

/// Why lbctl has no answer from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("listing {what}: {source}")]
    Api {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster has no Node with an IPv4 InternalIP")]
    NoNodes,
    #[error(transparent)]
    Translate(#[from] TranslateError),
}

async fn list<K>(api: Api<K>, what: &'static str) -> Result<Vec<K>, ClusterError>
where
    K: Clone + std::fmt::Debug + for<'de> Deserialize<'de>,
{
    api.list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|source| ClusterError::Api { what, source })
}

/// One condition of a pool, as `kubectl` would show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// `lbctl pools`: one AddressPool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSummary {
    pub name: String,
    pub addresses: Vec<String>,
    pub auto_assign: bool,
    /// `None` until the agent holding the IPAM lease writes the pool's status.
    pub assigned: Option<u64>,
    pub available: Option<u64>,
    /// `announcement.interfaces`: only nodes announcing on one of them own the pool's
    /// addresses; empty: any node's announce interface.
    #[serde(default)]
    pub interfaces: Vec<String>,
    pub conditions: Vec<ConditionSummary>,
}

impl PoolSummary {
    fn from_pool(pool: &AddressPool) -> Self {
        let status = pool.status.as_ref();
        Self {
            name: pool.name_any(),
            addresses: pool.spec.addresses.clone(),
            auto_assign: pool.spec.auto_assign,
            assigned: status.map(|status| status.assigned),
            available: status.map(|status| status.available),
            interfaces: pool
                .spec
                .announcement
                .as_ref()
                .map(|announcement| announcement.interfaces.clone())
                .unwrap_or_default(),
            conditions: status
                .map(|status| {
                    status
                        .conditions
                        .iter()
                        .map(|condition| ConditionSummary {
                            type_: condition.type_.clone(),
                            status: condition.status.clone(),
                            reason: condition.reason.clone(),
                            message: condition.message.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Every AddressPool, by name.
pub async fn pools(client: &Client) -> Result<Vec<PoolSummary>, ClusterError> {
    let pools = list(Api::<AddressPool>::all(client.clone()), "AddressPools").await?;
    Ok(pool_summaries(&pools))
}

fn pool_summaries(pools: &[AddressPool]) -> Vec<PoolSummary> {
    let mut summaries: Vec<PoolSummary> = pools.iter().map(PoolSummary::from_pool).collect();
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    summaries
}

/// Everything the agents read from the API, once.
pub async fn snapshot(client: &Client) -> Result<Snapshot, ClusterError> {
    fn shared<K>(items: Vec<K>) -> Vec<Arc<K>> {
        items.into_iter().map(Arc::new).collect()
    }
    Ok(Snapshot {
        nodes: shared(list(Api::<Node>::all(client.clone()), "Nodes").await?),
        services: shared(list(Api::<Service>::all(client.clone()), "Services").await?),
        slices: shared(list(Api::<Slice>::all(client.clone()), "EndpointSlices").await?),
        pools: shared(list(Api::<AddressPool>::all(client.clone()), "AddressPools").await?),
    })
}

/// Which Services the agents serve, from their settings in `namespace`; with a note
/// when the settings cannot be read (then only Services naming xdplb's class count).
pub async fn class_policy(client: &Client, namespace: &str) -> (ClassPolicy, Option<String>) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    settings_class_policy(api.get_opt(SETTINGS_CONFIG_MAP).await, namespace)
}

/// [`class_policy`] from what reading the settings' ConfigMap gave.
fn settings_class_policy(
    read: kube::Result<Option<ConfigMap>>,
    namespace: &str,
) -> (ClassPolicy, Option<String>) {
    let source = format!("ConfigMap {namespace}/{SETTINGS_CONFIG_MAP}");
    let problem = match read {
        Ok(map) => match map.and_then(|map| map.data?.remove(SETTINGS_KEY)) {
            Some(text) => match KubernetesSettings::parse(&text) {
                Ok(settings) => return (settings.class_policy(), None),
                Err(error) => format!("the settings in {source} do not parse ({error})"),
            },
            None => format!("no {SETTINGS_KEY} in {source} (is xdplb installed in {namespace}?)"),
        },
        Err(error) => format!("cannot read {source} ({error})"),
    };
    let note = format!(
        "{problem}: showing only Services with loadBalancerClass {LOAD_BALANCER_CLASS}; pass \
         --xdplb-namespace if xdplb runs elsewhere"
    );
    (ClassPolicy::default(), Some(note))
}

/// Who owns a Service's VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "node")]
pub enum Owner {
    Node(String),
    /// The agent says no node can own it.
    Nobody,
    /// Only an agent knows (its gossip), and none was asked.
    Unknown,
}

/// Endpoints of a Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCount {
    pub ready: u32,
    pub total: u32,
}

/// `lbctl services`: one LoadBalancer Service the agents serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub namespace: String,
    pub name: String,
    /// `None` while the IPAM has not assigned one.
    pub address: Option<Ipv4Addr>,
    /// The pool the address belongs to.
    pub pool: Option<String>,
    /// `80/TCP`, ...
    pub ports: Vec<String>,
    pub owner: Owner,
    pub endpoints: EndpointCount,
    /// Why the IPAM gave no address (its condition's message).
    pub problem: Option<String>,
}

fn endpoints(service: &Service, slices: &[Arc<Slice>]) -> EndpointCount {
    let name = service.name_any();
    let mut all = BTreeMap::new();
    for slice in slices.iter().filter(|slice| {
        slice.metadata.namespace == service.metadata.namespace
            && slice.address_type == "IPv4"
            && slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
    }) {
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.ready)
                .unwrap_or(true);
            for address in &endpoint.addresses {
                *all.entry(address.clone()).or_insert(false) |= ready;
            }
        }
    }
    let count = |iter: usize| u32::try_from(iter).unwrap_or(u32::MAX);
    EndpointCount {
        ready: count(all.values().filter(|ready| **ready).count()),
        total: count(all.len()),
    }
}

fn problem(service: &Service) -> Option<String> {
    let condition = service
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == ALLOCATED_CONDITION)?;
    (condition.status != "True").then(|| format!("{}: {}", condition.reason, condition.message))
}

/// The Services of `snapshot` the agents serve under `class`, by namespace and name,
/// with the owner of each VIP from `owners` (the agent's, when it answered).
pub fn services(
    snapshot: &Snapshot,
    class: ClassPolicy,
    owners: Option<&BTreeMap<Ipv4Addr, Option<String>>>,
) -> Vec<ServiceSummary> {
    let pools: Vec<Pool> = snapshot
        .pools
        .iter()
        .filter_map(|pool| Pool::from_resource(pool).ok())
        .collect();
    let mut summaries: Vec<ServiceSummary> = snapshot
        .services
        .iter()
        .filter(|service| service::responsibility(class, service) == Responsibility::Ours)
        .map(|service| {
            let address = service::status_addresses(service).first().copied();
            let owner = match (owners, address) {
                (Some(owners), Some(address)) => match owners.get(&address) {
                    Some(Some(node)) => Owner::Node(node.clone()),
                    Some(None) => Owner::Nobody,
                    None => Owner::Unknown,
                },
                _ => Owner::Unknown,
            };
            let ports = service
                .spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten())
                .map(|port| {
                    format!(
                        "{}/{}",
                        port.port,
                        port.protocol.as_deref().unwrap_or("TCP")
                    )
                })
                .collect();
            ServiceSummary {
                namespace: service.namespace().unwrap_or_default(),
                name: service.name_any(),
                address,
                pool: address.and_then(|address| {
                    pools
                        .iter()
                        .find(|pool| pool.addresses.contains(address))
                        .map(|pool| pool.name.clone())
                }),
                ports,
                owner,
                endpoints: endpoints(service, &snapshot.slices),
                problem: problem(service),
            }
        })
        .collect();
    summaries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    summaries
}

/// Where `client`'s flow to `vip` goes, computed from the cluster's state as every
/// agent computes it. The owner is `agent_owner` when an agent said (`Some(None)`: no
/// node owns it), else the one the election picks with every node alive.
pub fn explain(
    snapshot: &Snapshot,
    class: ClassPolicy,
    query: Query,
    agent_owner: Option<Option<String>>,
) -> Result<Explanation, ClusterError> {
    let any_node = snapshot
        .nodes
        .iter()
        .map(|node| node.name_any())
        .min()
        .ok_or(ClusterError::NoNodes)?;
    let translator = |node: String| Translator {
        node,
        class,
        mtu: None,
        icmp_rate_per_sec: ICMP_RATE,
    };
    let cluster = translator(any_node.clone()).translate(snapshot)?.cluster;
    let (owner, source) = match agent_owner {
        Some(owner) => (owner, "as the agent on this node sees it"),
        None => {
            let everyone = View::all_alive(&any_node, &cluster.gossip_peers(0));
            let elected = plan(&cluster, &everyone, 0, None);
            let owner = elected
                .elections
                .get(query.vip.ip())
                .and_then(|election| election.owner.clone());
            (
                owner,
                "as the election picks it with every node alive (no agent was asked)",
            )
        }
    };
    // Seen from the node clients reach: the owner's tables.
    let receiver = owner.clone().unwrap_or(any_node);
    let cluster = translator(receiver).translate(snapshot)?.cluster;
    let inputs = cluster.inputs(0);
    let state = desired_state(&inputs);
    let mut explanation = explain::explain(&inputs, &state, owner.as_deref(), query);
    let owner_text = owner.as_deref().unwrap_or("no node");
    explanation.steps.insert(
        0,
        format!(
            "Computed from the cluster's Nodes, Services, EndpointSlices and AddressPools; the \
             VIP's owner is {owner_text}, {source}."
        ),
    );
    Ok(explanation)
}

#[cfg(test)]
mod tests;
