//! What lbctl makes of a cluster, on the homelab cluster of the integration tests'
//! fixture. Reading it from an API server (the requests, lbctl's headers, the errors a
//! user meets) is tested on the binary: lb-agent/tests/integration/lbctl/cluster.rs.

use std::net::SocketAddrV4;

use lb_agent::{explain::Outcome, model::Protocol};
use serde::Deserialize as _;
use serde_json::Value;

use super::*;

const HOMELAB: &str = include_str!("../../../../tests/fixtures/k8s/homelab.yaml");

fn typed<K: for<'de> Deserialize<'de>>(object: Value) -> Arc<K> {
    Arc::new(serde_json::from_value(object).expect("a Kubernetes object"))
}

/// The homelab cluster as lbctl lists it.
fn homelab() -> Snapshot {
    let mut snapshot = Snapshot::default();
    for document in serde_yaml::Deserializer::from_str(HOMELAB) {
        let object = Value::deserialize(document).expect("a YAML document");
        match object["kind"].as_str() {
            Some("Node") => snapshot.nodes.push(typed(object)),
            Some("Service") => snapshot.services.push(typed(object)),
            Some("EndpointSlice") => snapshot.slices.push(typed(object)),
            Some("AddressPool") => snapshot.pools.push(typed(object)),
            _ => {}
        }
    }
    snapshot
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("IPv4")
}

#[test]
fn pools_show_addresses_counts_and_conditions() {
    let pools: Vec<AddressPool> = homelab()
        .pools
        .iter()
        .map(|pool| pool.as_ref().clone())
        .collect();
    let pools = pool_summaries(&pools);
    let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
    assert_eq!(names, ["edge", "lan"]);
    let (edge, lan) = (&pools[0], &pools[1]);
    assert_eq!(edge.addresses, ["172.16.200.0/28", "172.16.200.53/32"]);
    assert!(!edge.auto_assign);
    assert_eq!((edge.assigned, edge.available), (None, None));
    assert!(edge.conditions.is_empty());
    assert!(lan.auto_assign);
    assert_eq!((lan.assigned, lan.available), (Some(2), Some(9)));
    assert_eq!(lan.conditions.len(), 1);
    assert_eq!(
        (
            lan.conditions[0].type_.as_str(),
            lan.conditions[0].status.as_str()
        ),
        ("Ready", "True")
    );
}

/// The agent's settings ConfigMap holding `settings`.
fn settings(settings: &str) -> kube::Result<Option<ConfigMap>> {
    Ok(Some(ConfigMap {
        data: Some([(SETTINGS_KEY.to_owned(), settings.to_owned())].into()),
        ..ConfigMap::default()
    }))
}

const NAMESPACE: &str = "xdplb-system";

#[test]
fn services_show_address_pool_owner_and_endpoints() {
    let snapshot = homelab();
    let (class, note) = settings_class_policy(
        settings("gossip:\n  keyFile: /etc/xdplb/gossip.key\n"),
        NAMESPACE,
    );
    assert_eq!(
        class,
        ClassPolicy {
            default_class: false
        }
    );
    assert_eq!(note, None);
    // This node's agent knows one VIP's owner; it has not applied the other yet.
    let owners = BTreeMap::from([(ip("192.168.8.240"), Some("node1".to_owned()))]);
    let rows: Vec<String> = services(&snapshot, class, Some(&owners))
        .iter()
        .map(|s| {
            format!(
                "{}/{} {:?} {:?} {} {:?} {}/{}",
                s.namespace,
                s.name,
                s.address,
                s.pool,
                s.ports.join(","),
                s.owner,
                s.endpoints.ready,
                s.endpoints.total
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "default/pending None None 8080/TCP Unknown 0/0",
            // The IPv6 slice is not counted; the UDP service's unready pod is.
            "kube-system/coredns-tcp Some(192.168.8.241) Some(\"lan\") 53/TCP Unknown 1/1",
            "kube-system/coredns-udp Some(192.168.8.241) Some(\"lan\") 53/UDP Unknown 1/2",
            // The terminating pod on node2 is counted, not ready.
            "kube-system/traefik Some(192.168.8.240) Some(\"lan\") 80/TCP,443/TCP Node(\"node1\") 2/3",
        ]
    );
    // Without an agent, no owner is known; the agent saying "nobody" is kept apart.
    let nobody = BTreeMap::from([(ip("192.168.8.240"), None)]);
    let traefik = |services: Vec<ServiceSummary>| {
        services
            .into_iter()
            .find(|s| s.name == "traefik")
            .expect("traefik")
            .owner
    };
    assert_eq!(traefik(services(&snapshot, class, None)), Owner::Unknown);
    assert_eq!(
        traefik(services(&snapshot, class, Some(&nobody))),
        Owner::Nobody
    );
    // As the default class, the agents also serve MetalLB's old Service.
    let default_class = ClassPolicy {
        default_class: true,
    };
    let legacy = services(&snapshot, default_class, None)
        .into_iter()
        .find(|s| s.name == "legacy")
        .expect("legacy is ours as the default class");
    assert_eq!(
        (legacy.address, legacy.pool),
        (Some(ip("192.168.7.230")), None)
    );
}

#[test]
fn unreadable_settings_fall_back_to_the_class_with_a_note() {
    let (class, note) = settings_class_policy(Ok(None), NAMESPACE);
    assert_eq!(class, ClassPolicy::default());
    let note = note.expect("a note");
    assert!(
        note.contains("no settings.yaml in ConfigMap xdplb-system/xdplb-agent")
            && note.contains("showing only Services with loadBalancerClass xdplb.io/lb"),
        "{note}"
    );
    assert_eq!(
        settings_class_policy(settings("defaultClass: true\n"), NAMESPACE),
        (
            ClassPolicy {
                default_class: true
            },
            None
        )
    );
}

fn query(vip: &str, port: u16, protocol: Protocol) -> Query {
    Query {
        client: SocketAddrV4::new(ip("192.168.8.10"), 40000),
        vip: SocketAddrV4::new(ip(vip), port),
        protocol,
    }
}

#[test]
fn explain_follows_a_flow_through_the_clusters_state() {
    let snapshot = homelab();
    let class = ClassPolicy::default();

    // No agent asked: the election with every node alive. node2 is excluded, node3 is
    // not Ready and node4 is outside the pool's node selector, so node1 owns Traefik.
    let traefik = query("192.168.8.240", 443, Protocol::Tcp);
    let explanation = explain(&snapshot, class, traefik, None).expect("explains");
    assert_eq!(explanation.outcome, Outcome::Forwarded);
    assert_eq!(explanation.service.as_deref(), Some("kube-system/traefik"));
    assert_eq!(
        explanation.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node1")
    );
    assert!(explanation.steps[0].contains("the election picks it with every node alive"));
    // The node table holds only nodes with serving pods; the pod is on the chosen node,
    // at the port the EndpointSlice names for `websecure`.
    let node = explanation.node.clone().expect("a backend node");
    let pods = BTreeMap::from([("node1", ip("10.42.0.7")), ("node4", ip("10.42.3.4"))]);
    let pod = pods.get(node.name.as_str()).expect("node1 or node4");
    assert_eq!(explanation.destination, Some(SocketAddrV4::new(*pod, 8443)));
    assert_eq!(
        explanation.node_choice.and_then(|choice| choice.backend),
        Some(node.address)
    );

    // The agent's owner wins: the flow is received there.
    let owned =
        explain(&snapshot, class, traefik, Some(Some("node4".to_owned()))).expect("explains");
    assert_eq!(
        owned.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node4")
    );
    assert!(owned.steps[0].contains("the VIP's owner is node4, as the agent on this node sees it"));

    // A Local service is served by its owner's own pod: only node3 has a ready one.
    let dns = explain(
        &snapshot,
        class,
        query("192.168.8.241", 53, Protocol::Udp),
        None,
    )
    .expect("explains");
    assert_eq!(
        dns.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node3")
    );
    assert_eq!(
        dns.destination,
        Some(SocketAddrV4::new(ip("10.42.2.9"), 53))
    );
    assert_eq!(dns.node_choice, None);

    // Not a VIP: passed.
    let other = explain(
        &snapshot,
        class,
        query("192.168.8.99", 80, Protocol::Tcp),
        None,
    )
    .expect("explains");
    assert_eq!(other.outcome, Outcome::Passed);
}

#[test]
fn explain_needs_nodes() {
    let error = explain(
        &Snapshot::default(),
        ClassPolicy::default(),
        query("192.168.8.240", 80, Protocol::Tcp),
        None,
    )
    .expect_err("no nodes");
    assert!(matches!(error, ClusterError::NoNodes), "{error}");
}
