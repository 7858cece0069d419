//! Kubernetes objects -> the core's cluster, from realistic YAML (the seeds' pools and
//! services): which Services are served, named target ports, endpoint conditions,
//! node exclusion, readiness and pool node selectors, and what the election and the
//! data path then make of it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Service};
use lb_agent::{
    apis::address_pool::AddressPool,
    arp,
    election::{ANNOUNCE_INTERFACE_ANNOTATION, EXCLUDE_LABEL, Ineligible},
    ipam::ClassPolicy,
    membership::{Peer, View},
    model::{BackendState, Endpoint, Protocol, ServicePort, TrafficPolicy, desired_state},
    runtime::reconcile::plan,
    sources::kubernetes::{
        slice::Slice,
        translate::{IgnoredAddress, Snapshot, TranslateError, Translation, Translator},
    },
};
use serde_json::Value;

use crate::support::kube_api::{self, HOMELAB, documents, of_kind};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

fn arc<T>(items: Vec<T>) -> Vec<Arc<T>> {
    items.into_iter().map(Arc::new).collect()
}

fn snapshot(documents: &[Value]) -> Snapshot {
    Snapshot {
        nodes: arc(of_kind::<Node>(documents, "Node")),
        services: arc(of_kind::<Service>(documents, "Service")),
        slices: arc(of_kind::<Slice>(documents, "EndpointSlice")),
        pools: arc(of_kind::<AddressPool>(documents, "AddressPool")),
    }
}

fn translator(node: &str) -> Translator {
    Translator {
        node: node.to_owned(),
        class: ClassPolicy::default(),
        mtu: None,
        icmp_rate_per_sec: 100,
    }
}

fn translate(node: &str) -> Translation {
    translator(node)
        .translate(&snapshot(&documents(HOMELAB)))
        .expect("translates")
}

fn endpoint(address: &str, node: &str, ready: bool, terminating: bool) -> Endpoint {
    Endpoint {
        address: ip(address),
        node: node.to_owned(),
        ready,
        terminating,
    }
}

#[test]
fn nodes_become_peers_with_labels_and_readiness() {
    let cluster = translate("node1").cluster;
    assert_eq!(cluster.inputs.node.name, "node1");
    assert_eq!(cluster.inputs.node.address, ip("192.168.8.11"));
    let peers: Vec<(&str, Ipv4Addr)> = cluster
        .inputs
        .peers
        .iter()
        .map(|peer| (peer.name.as_str(), peer.address))
        .collect();
    // node2's IPv6 InternalIP is skipped for its IPv4 one.
    assert_eq!(
        peers,
        [
            ("node1", ip("192.168.8.11")),
            ("node2", ip("192.168.8.12")),
            ("node3", ip("192.168.8.13")),
            ("node4", ip("192.168.8.14")),
        ]
    );
    assert!(cluster.labels["node2"].contains_key(EXCLUDE_LABEL));
    assert_eq!(cluster.unready, BTreeSet::from(["node3".to_owned()]));
    assert_eq!(cluster.mtu, None);
}

#[test]
fn only_our_services_with_an_assigned_vip_are_served() {
    let cluster = translate("node1").cluster;
    let names: Vec<(&str, Ipv4Addr)> = cluster
        .inputs
        .services
        .iter()
        .map(|service| (service.name.as_str(), service.vip))
        .collect();
    // `pending` has no address yet, `legacy` is MetalLB's, `internal` is a ClusterIP.
    assert_eq!(
        names,
        [
            ("kube-system/coredns-tcp", ip("192.168.8.241")),
            ("kube-system/coredns-udp", ip("192.168.8.241")),
            ("kube-system/traefik", ip("192.168.8.240")),
        ]
    );
    // As the default class, the agent takes the class-less `legacy` too, once a pool
    // lists the address MetalLB gave it.
    let default = Translator {
        class: ClassPolicy {
            default_class: true,
        },
        ..translator("node1")
    };
    let legacy = |translation: &Translation| {
        translation
            .cluster
            .inputs
            .services
            .iter()
            .find(|service| service.name == "default/legacy")
            .map(|service| service.vip)
    };
    let without_pool = default
        .translate(&snapshot(&documents(HOMELAB)))
        .expect("translates");
    assert_eq!(legacy(&without_pool), None);
    let mut documents = documents(HOMELAB);
    documents.extend(kube_api::documents(
        r#"
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: migrated }
spec: { addresses: ["192.168.7.230-192.168.7.235"] }
"#,
    ));
    let with_pool = default
        .translate(&snapshot(&documents))
        .expect("translates");
    assert_eq!(legacy(&with_pool), Some(ip("192.168.7.230")));
    assert!(with_pool.ignored.is_empty(), "{:?}", with_pool.ignored);
}

/// The real API server showed a node announcing an address that another writer had put
/// into a Service's status, outside every pool: a node owns only addresses that a valid
/// pool lists; anything else in a status is left out and listed as ignored.
#[test]
fn status_addresses_outside_every_valid_pool_are_never_served() {
    let mut documents = documents(HOMELAB);
    documents.extend(kube_api::documents(
        r#"
apiVersion: v1
kind: Service
metadata: { name: squatter, namespace: default }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 80, protocol: TCP, targetPort: 80 } ]
status: { loadBalancer: { ingress: [ { ip: 10.9.9.9, ipMode: VIP } ] } }
---
apiVersion: v1
kind: Service
metadata: { name: doubled, namespace: default }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 80, protocol: TCP, targetPort: 80 } ]
status: { loadBalancer: { ingress: [ { ip: 10.9.9.10 }, { ip: 192.168.8.245, ipMode: VIP } ] } }
---
apiVersion: v1
kind: Service
metadata: { name: stranded, namespace: default }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 80, protocol: TCP, targetPort: 80 } ]
status: { loadBalancer: { ingress: [ { ip: 192.168.9.1, ipMode: VIP } ] } }
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: broken }
spec: { addresses: ["192.168.9.1/24"] }
"#,
    ));
    let translation = translator("node1")
        .translate(&snapshot(&documents))
        .expect("translates");
    let served: BTreeMap<&str, Ipv4Addr> = translation
        .cluster
        .inputs
        .services
        .iter()
        .map(|service| (service.name.as_str(), service.vip))
        .collect();
    assert!(!served.contains_key("default/squatter"), "{served:?}");
    assert!(!served.contains_key("default/stranded"), "{served:?}");
    assert_eq!(served.get("default/doubled"), Some(&ip("192.168.8.245")));
    let ignored = |name: &str, address: &str, served: Option<&str>| IgnoredAddress {
        namespace: "default".into(),
        name: name.into(),
        ip: ip(address),
        served: served.map(ip),
    };
    assert_eq!(
        translation.ignored.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            ignored("squatter", "10.9.9.9", None),
            ignored("doubled", "10.9.9.10", Some("192.168.8.245")),
            ignored("stranded", "192.168.9.1", None),
        ])
    );
    let notes = translation.notes.join("\n");
    for expected in [
        "default/squatter: 10.9.9.9 in status.loadBalancer.ingress is ignored: no valid AddressPool lists it",
        "default/doubled: 10.9.9.10 in status.loadBalancer.ingress is ignored: the Service is served on 192.168.8.245 alone",
    ] {
        assert!(
            notes.contains(expected),
            "{expected} missing from:\n{notes}"
        );
    }
    // No node is elected for them, so none announces them.
    let view = all_alive(&translation.cluster.inputs.peers, "node1");
    let planned = plan(&translation.cluster, &view, 1500, None);
    for address in ["10.9.9.9", "10.9.9.10", "192.168.9.1"] {
        assert!(!planned.elections.contains_key(&ip(address)), "{address}");
    }
    assert!(planned.elections.contains_key(&ip("192.168.8.245")));
}

#[test]
fn named_target_ports_resolve_from_the_slices() {
    let cluster = translate("node1").cluster;
    let traefik = &cluster.inputs.services[2];
    assert_eq!(
        traefik.ports,
        [
            ServicePort {
                port: 80,
                protocol: Protocol::Tcp,
                target_port: 8000
            },
            ServicePort {
                port: 443,
                protocol: Protocol::Tcp,
                target_port: 8443
            },
        ]
    );
    assert_eq!(traefik.traffic_policy, TrafficPolicy::Cluster);
    let dns_udp = &cluster.inputs.services[1];
    assert_eq!(dns_udp.ports[0].protocol, Protocol::Udp);
    assert_eq!(dns_udp.traffic_policy, TrafficPolicy::Local);
}

#[test]
fn endpoint_conditions_carry_over_and_ipv6_slices_are_skipped() {
    let cluster = translate("node1").cluster;
    let traefik = &cluster.inputs.services[2];
    assert_eq!(
        traefik.endpoints,
        [
            endpoint("10.42.0.7", "node1", true, false),
            // Terminating: keeps its flows, takes no new ones.
            endpoint("10.42.1.5", "node2", false, true),
            // No `serving`/`terminating` given: ready as stated, not terminating.
            endpoint("10.42.3.4", "node4", true, false),
        ]
    );
    let dns_tcp = &cluster.inputs.services[0];
    assert_eq!(
        dns_tcp.endpoints,
        [endpoint("10.42.2.9", "node3", true, false)]
    );
}

#[test]
fn the_pool_node_selector_names_the_announcing_nodes() {
    let cluster = translate("node1").cluster;
    let lan = &cluster.announcers[&ip("192.168.8.240")];
    assert_eq!(lan.pool, "lan");
    assert_eq!(
        lan.nodes,
        BTreeSet::from(["node1".to_owned(), "node2".to_owned(), "node3".to_owned()])
    );
    assert_eq!(cluster.announcers[&ip("192.168.8.241")].nodes, lan.nodes);
}

/// The cluster with the `lan` pool announced only on eth1 and br0 with its own GARP
/// timing, and each of `published` nodes' announce interface on its Node.
fn with_pool_interfaces(published: &[(&str, &str)]) -> Snapshot {
    let mut documents = documents(HOMELAB);
    for document in &mut documents {
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match document["kind"].as_str() {
            Some("AddressPool") if name == "lan" => {
                let announcement = &mut document["spec"]["announcement"];
                announcement["interfaces"] = serde_json::json!(["eth1", "br0"]);
                announcement["garp"] = serde_json::json!({
                    "repeats": 5, "intervalMilliseconds": 200, "refreshSeconds": 0
                });
            }
            Some("Node") => {
                if let Some((_, interface)) = published.iter().find(|(node, _)| *node == name) {
                    document["metadata"]["annotations"] =
                        serde_json::json!({ (ANNOUNCE_INTERFACE_ANNOTATION): interface });
                }
            }
            _ => {}
        }
    }
    snapshot(&documents)
}

#[test]
fn the_pool_interfaces_and_garp_become_per_vip_announcement_settings() {
    let snapshot = with_pool_interfaces(&[("node1", "eth0"), ("node3", "br0")]);
    let cluster = translator("node1")
        .translate(&snapshot)
        .expect("translated")
        .cluster;
    let lan = BTreeSet::from(["br0".to_owned(), "eth1".to_owned()]);
    for vip in [ip("192.168.8.240"), ip("192.168.8.241")] {
        let allowed = &cluster.announce_interfaces[&vip];
        assert_eq!((allowed.pool.as_str(), &allowed.interfaces), ("lan", &lan));
        assert_eq!(
            cluster.garp[&vip],
            arp::Settings {
                garp_repeats: 5,
                garp_interval: Duration::from_millis(200),
                refresh: None,
            }
        );
    }
    // The edge pool restricts nothing.
    assert!(
        !cluster
            .announce_interfaces
            .contains_key(&ip("172.16.200.53"))
    );
    assert!(!cluster.garp.contains_key(&ip("172.16.200.53")));
    assert_eq!(
        cluster.node_interfaces,
        BTreeMap::from([
            ("node1".to_owned(), "eth0".to_owned()),
            ("node3".to_owned(), "br0".to_owned())
        ])
    );
}

#[test]
fn only_nodes_announcing_on_a_pool_interface_own_its_vips_with_its_garp() {
    // node1 announces on eth0, which the pool does not list: node3 (br0), though not
    // Ready, is the only node that may announce Traefik's VIP.
    let snapshot = with_pool_interfaces(&[("node1", "eth0"), ("node3", "br0")]);
    let cluster = translator("node1")
        .translate(&snapshot)
        .expect("translated")
        .cluster;
    let view = all_alive(&cluster.inputs.peers, "node1");
    let planned = plan(&cluster, &view, 1500, None);
    let traefik = &planned.elections[&ip("192.168.8.240")];
    assert_eq!(traefik.owner.as_deref(), Some("node3"));
    let node1 = traefik
        .verdicts
        .iter()
        .find(|verdict| verdict.node == "node1");
    let reason = node1
        .and_then(|verdict| verdict.ineligible.clone())
        .expect("ineligible");
    assert!(
        matches!(&reason, Ineligible::NoAnnounceInterface { node_interface: Some(own), .. } if own == "eth0"),
        "{reason:?}"
    );
    assert!(reason.to_string().contains("[br0, eth1]"), "{reason}");
    assert!(planned.owned_vips(arp::Settings::default()).is_empty());

    // node1 announcing on eth1: it owns the VIP and announces it with the pool's timing.
    let snapshot = with_pool_interfaces(&[("node1", "eth1"), ("node3", "br0")]);
    let cluster = translator("node1")
        .translate(&snapshot)
        .expect("translated")
        .cluster;
    let planned = plan(&cluster, &view, 1500, None);
    assert_eq!(
        planned.elections[&ip("192.168.8.240")].owner.as_deref(),
        Some("node1")
    );
    let owned = planned.owned_vips(arp::Settings::default());
    assert_eq!(
        owned.keys().copied().collect::<Vec<_>>(),
        [ip("192.168.8.240")]
    );
    assert_eq!(owned[&ip("192.168.8.240")].garp_repeats, 5);
}

fn all_alive(peers: &[lb_agent::model::Node], local: &str) -> View {
    let peers: Vec<Peer> = peers
        .iter()
        .map(|node| Peer {
            name: node.name.clone(),
            addr: SocketAddrV4::new(node.address, 7947),
        })
        .collect();
    View::all_alive(local, &peers)
}

#[test]
fn the_election_honours_exclusion_selection_readiness_and_local_endpoints() {
    let cluster = translate("node1").cluster;
    let view = all_alive(&cluster.inputs.peers, "node1");
    let planned = plan(&cluster, &view, 1500, None);
    let traefik = &planned.elections[&ip("192.168.8.240")];
    // node2 is excluded, node3 is not Ready, node4 is outside the pool's selector.
    assert_eq!(traefik.owner.as_deref(), Some("node1"));
    let reasons: BTreeMap<&str, Option<Ineligible>> = traefik
        .verdicts
        .iter()
        .map(|verdict| (verdict.node.as_str(), verdict.ineligible.clone()))
        .collect();
    assert_eq!(reasons["node2"], Some(Ineligible::Excluded));
    assert_eq!(reasons["node3"], Some(Ineligible::NotReady));
    assert_eq!(
        reasons["node4"],
        Some(Ineligible::NotSelected { pool: "lan".into() })
    );
    // DNS is Local and only node3 has a ready endpoint: not Ready, but the only node
    // that can serve it, it owns the VIP rather than nobody.
    let dns = &planned.elections[&ip("192.168.8.241")];
    assert_eq!(dns.owner.as_deref(), Some("node3"));
    assert_eq!(planned.owned, BTreeSet::from([ip("192.168.8.240")]));
}

#[test]
fn terminating_endpoints_drain_in_the_data_path() {
    let cluster = translate("node2").cluster;
    let view = all_alive(&cluster.inputs.peers, "node2");
    let state = desired_state(&plan(&cluster, &view, 1500, None).inputs);
    // node2's only Traefik pod is terminating: the node keeps existing flows only.
    assert_eq!(state.backends[&ip("192.168.8.12")], BackendState::Draining);
    assert_eq!(state.backends[&ip("10.42.1.5")], BackendState::Draining);
    assert_eq!(state.backends[&ip("192.168.8.11")], BackendState::Active);
    assert!(
        !state.rings["kube-system/traefik"]
            .node
            .to_vec()
            .contains(&ip("192.168.8.12"))
    );
    assert!(
        state.rings["kube-system/traefik"]
            .node
            .to_vec()
            .contains(&ip("192.168.8.14"))
    );
    // Both DNS services on one VIP, two protocols.
    let dns: Vec<_> = state
        .ports
        .keys()
        .filter(|key| key.vip == ip("192.168.8.241"))
        .map(|key| (key.port, key.protocol))
        .collect();
    assert_eq!(dns, [(53, Protocol::Tcp), (53, Protocol::Udp)]);
    assert!(
        state
            .ports
            .values()
            .all(|target| target.service != "default/pending")
    );
}

#[test]
fn this_node_must_be_a_node_with_an_ipv4_address() {
    let documents = documents(HOMELAB);
    assert_eq!(
        translator("node9").translate(&snapshot(&documents)),
        Err(TranslateError::UnknownNode("node9".into()))
    );
    let mut nodes = snapshot(&documents);
    let mut node1 = (*nodes.nodes[0]).clone();
    node1.status = None;
    nodes.nodes[0] = Arc::new(node1);
    let error = translator("node1")
        .translate(&nodes)
        .expect_err("no address");
    assert_eq!(error, TranslateError::NoAddress("node1".into()));
    // Another node without an address is only left out, and said so.
    let translation = translator("node2").translate(&nodes).expect("translates");
    assert_eq!(translation.cluster.inputs.peers.len(), 3);
    assert!(
        translation
            .notes
            .iter()
            .any(|note| note.contains("node node1")),
        "{:?}",
        translation.notes
    );
}

#[test]
fn unusable_parts_are_left_out_with_a_note() {
    let mut documents = documents(HOMELAB);
    let extra = kube_api::documents(
        r#"
apiVersion: v1
kind: Service
metadata: { name: sctp, namespace: default }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports:
    - { name: sig, port: 3868, protocol: SCTP, targetPort: 3868 }
    - { name: web, port: 80, protocol: TCP, targetPort: http }
status: { loadBalancer: { ingress: [ { ip: 192.168.8.242 } ] } }
---
apiVersion: v1
kind: Service
metadata: { name: squatter, namespace: default, creationTimestamp: "2025-03-01T00:00:00Z" }
spec:
  type: LoadBalancer
  loadBalancerClass: xdplb.io/lb
  ports: [ { port: 443, protocol: TCP, targetPort: 443 } ]
status: { loadBalancer: { ingress: [ { ip: 192.168.8.240 } ] } }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sctp-1
  namespace: default
  labels: { kubernetes.io/service-name: sctp }
addressType: IPv4
ports: [ { name: web, port: 8080, protocol: TCP } ]
endpoints:
  - addresses: ["10.42.0.50"]
    conditions: { ready: true }
---
apiVersion: xdplb.io/v1alpha1
kind: AddressPool
metadata: { name: broken }
spec:
  addresses: ["192.168.8.242/32"]
  announcement:
    nodeSelector:
      matchExpressions: [ { key: zone, operator: Sideways, values: [a] } ]
"#,
    );
    documents.extend(extra);
    let translation = translator("node1")
        .translate(&snapshot(&documents))
        .expect("translates");
    let sctp = translation
        .cluster
        .inputs
        .services
        .iter()
        .find(|service| service.name == "default/sctp")
        .expect("the TCP port is served");
    assert_eq!(
        sctp.ports,
        [ServicePort {
            port: 80,
            protocol: Protocol::Tcp,
            target_port: 8080
        }]
    );
    assert!(
        sctp.endpoints.is_empty(),
        "no nodeName: cannot be tunnelled to"
    );
    // The older Service keeps 192.168.8.240:443; the newer has nothing left to serve.
    let squatter = translation
        .cluster
        .inputs
        .services
        .iter()
        .find(|service| service.name == "default/squatter");
    assert!(squatter.is_none());
    // An invalid selector lets no node announce.
    assert!(
        translation.cluster.announcers[&ip("192.168.8.242")]
            .nodes
            .is_empty()
    );
    let notes = translation.notes.join("\n");
    for expected in [
        "default/sctp: port 3868 is SCTP",
        "default/sctp: endpoint 10.42.0.50 has no nodeName",
        "default/squatter: 192.168.8.240:443/TCP is already served",
        "default/squatter: no TCP or UDP port to serve",
        "pool broken: announcement.nodeSelector is invalid",
    ] {
        assert!(
            notes.contains(expected),
            "{expected} missing from:\n{notes}"
        );
    }
}
