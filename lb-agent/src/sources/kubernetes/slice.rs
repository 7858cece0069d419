//! EndpointSlices as the agent keeps them: only the fields the translation reads, in
//! fewer allocations.
//!
//! The agent holds every EndpointSlice of the cluster in its reflector store. As
//! `k8s_openapi`'s `EndpointSlice`, each endpoint carries a dozen fields the agent never
//! reads (`targetRef` alone is seven strings), ~330 bytes before any of them is set, and
//! its address and node name each in an allocation of its own: at 1,000 Services x 50
//! endpoints, 20 MiB of the agent's resident memory. [`Slice`] is the same API object
//! deserialized into the fields [`super::translate`] uses (the rest of the JSON is
//! skipped while parsing), with IPv4 addresses held as numbers and the node names of a
//! slice's endpoints shared.

use std::{borrow::Cow, collections::BTreeSet, fmt, net::Ipv4Addr, sync::Arc};

use k8s_openapi::{
    api::discovery::v1::{EndpointConditions, EndpointPort, EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::Resource;
use serde::Deserialize;

/// A `discovery.k8s.io/v1` EndpointSlice, reduced to what the translation reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "RawSlice")]
pub struct Slice {
    pub metadata: ObjectMeta,
    pub address_type: String,
    pub endpoints: Option<Vec<SliceEndpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint of a [`Slice`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceEndpoint {
    pub addresses: Vec<Address>,
    pub conditions: Option<EndpointConditions>,
    /// Shared by the slice's endpoints on the same node.
    pub node_name: Option<Arc<str>>,
}

/// An endpoint address as listed: an IPv4 address, or anything else (an IPv6 address in
/// an IPv6 slice, or text that is no address), kept as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address {
    V4(Ipv4Addr),
    Other(Box<str>),
}

impl Address {
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self {
            Self::V4(address) => Some(*address),
            Self::Other(_) => None,
        }
    }
}

impl From<String> for Address {
    fn from(text: String) -> Self {
        // `Ipv4Addr` parses only the canonical form, so displaying it gives `text` back.
        match text.parse() {
            Ok(address) => Self::V4(address),
            Err(_) => Self::Other(text.into_boxed_str()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(address) => address.fmt(f),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// The slice as the API sends it (the fields read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSlice {
    metadata: ObjectMeta,
    address_type: String,
    endpoints: Option<Vec<RawEndpoint>>,
    ports: Option<Vec<EndpointPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    addresses: Vec<String>,
    conditions: Option<EndpointConditions>,
    node_name: Option<String>,
}

impl From<RawSlice> for Slice {
    fn from(raw: RawSlice) -> Self {
        let mut nodes: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut shared = |name: String| match nodes.get(name.as_str()) {
            Some(node) => Arc::clone(node),
            None => {
                let node: Arc<str> = name.into();
                nodes.insert(Arc::clone(&node));
                node
            }
        };
        let endpoints = raw.endpoints.map(|endpoints| {
            endpoints
                .into_iter()
                .map(|endpoint| SliceEndpoint {
                    addresses: endpoint.addresses.into_iter().map(Address::from).collect(),
                    conditions: endpoint.conditions,
                    node_name: endpoint.node_name.map(&mut shared),
                })
                .collect()
        });
        Self {
            metadata: raw.metadata,
            address_type: raw.address_type,
            endpoints,
            ports: raw.ports,
        }
    }
}

/// The API resource is `EndpointSlice`'s: same group, version, kind and scope.
impl Resource for Slice {
    type DynamicType = ();
    type Scope = <EndpointSlice as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        EndpointSlice::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        EndpointSlice::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        EndpointSlice::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        EndpointSlice::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::Endpoint;
    use kube::ResourceExt as _;

    use super::*;

    #[test]
    fn reads_what_the_translation_needs_from_a_full_endpoint_slice() {
        let full = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".to_owned()),
                namespace: Some("apps".to_owned()),
                labels: Some([("kubernetes.io/service-name".to_owned(), "web".to_owned())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_owned(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["10.1.0.5".to_owned()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    serving: Some(true),
                    terminating: Some(true),
                }),
                hostname: Some("web-0".to_owned()),
                node_name: Some("node2".to_owned()),
                zone: Some("a".to_owned()),
                ..Endpoint::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("http".to_owned()),
                port: Some(8080),
                protocol: Some("TCP".to_owned()),
                ..EndpointPort::default()
            }]),
        };
        let json = serde_json::to_value(&full).expect("serializable");
        let slice: Slice = serde_json::from_value(json).expect("a Slice");
        assert_eq!(slice.metadata, full.metadata);
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.ports, full.ports);
        assert_eq!(
            slice.endpoints,
            Some(vec![SliceEndpoint {
                addresses: vec![Address::V4(Ipv4Addr::new(10, 1, 0, 5))],
                conditions: full
                    .endpoints
                    .as_ref()
                    .and_then(|e| e[0].conditions.clone()),
                node_name: Some("node2".into()),
            }])
        );
        assert_eq!(slice.name_any(), "web-abc");
        assert_eq!(Slice::api_version(&()), "discovery.k8s.io/v1");
        assert_eq!(
            Slice::url_path(&(), Some("apps")),
            EndpointSlice::url_path(&(), Some("apps"))
        );
    }

    #[test]
    fn addresses_keep_their_text_and_node_names_are_shared_within_a_slice() {
        let json = serde_json::json!({
            "metadata": { "name": "web-abc", "namespace": "apps" },
            "addressType": "IPv4",
            "endpoints": [
                { "addresses": ["10.1.0.5", "010.1.0.6", "fd00::1"], "nodeName": "node1" },
                { "addresses": ["10.1.0.7"], "nodeName": "node1" },
                { "addresses": ["10.1.0.8"], "nodeName": "node2" },
                { "addresses": ["10.1.0.9"] },
            ],
        });
        let slice: Slice = serde_json::from_value(json).expect("a Slice");
        let endpoints = slice.endpoints.expect("endpoints");
        let texts: Vec<String> = endpoints[0]
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["10.1.0.5", "010.1.0.6", "fd00::1"]);
        let ipv4: Vec<Option<Ipv4Addr>> =
            endpoints[0].addresses.iter().map(Address::ipv4).collect();
        assert_eq!(ipv4, [Some(Ipv4Addr::new(10, 1, 0, 5)), None, None]);
        let node = |index: usize| endpoints[index].node_name.clone().expect("a node");
        assert!(Arc::ptr_eq(&node(0), &node(1)));
        assert_eq!(&*node(2), "node2");
        assert_eq!(endpoints[3].node_name, None);
    }

    #[test]
    fn an_endpoint_slice_without_endpoints_or_ports_is_read() {
        let json = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "empty", "namespace": "apps" },
            "addressType": "IPv4", "endpoints": null,
        });
        let slice: Slice = serde_json::from_value(json).expect("a Slice");
        assert_eq!(slice.endpoints, None);
        assert_eq!(slice.ports, None);
    }
}
