use std::net::{Ipv4Addr, SocketAddrV4};

use lb_common::{
    hash::{NODE_SEED, POD_SEED, flow_hash},
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
    types::{FlowValue, PROTO_TCP},
};

use super::*;
use crate::{
    fixtures::{example, example_as, ip},
    model::{Inputs, Service, TrafficPolicy, desired_state},
};

fn web(client_port: u16) -> Query {
    Query {
        client: SocketAddrV4::new(ip("10.0.0.100"), client_port),
        vip: SocketAddrV4::new(ip("172.16.200.20"), 80),
        protocol: Protocol::Tcp,
    }
}

fn service_mut<'a>(inputs: &'a mut Inputs, name: &str) -> &'a mut Service {
    inputs
        .services
        .iter_mut()
        .find(|service| service.name == name)
        .expect("service in fixture")
}

/// The kernel's view of a field: its bytes as on the wire, loaded as a native integer.
fn wire32(address: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(address.octets())
}

fn wire16(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

#[test]
fn hashes_the_flow_as_the_kernel_loads_it() {
    let query = web(40000);
    let expected = flow_hash(
        wire32(ip("10.0.0.100")),
        wire16(40000),
        wire32(ip("172.16.200.20")),
        wire16(80),
        PROTO_TCP,
        NODE_SEED,
    );
    assert_eq!(query.hash(NODE_SEED), expected);
    let key = query.flow_key();
    assert_eq!(key.client.to_ne_bytes(), [10, 0, 0, 100]);
    assert_eq!(key.client_port.to_ne_bytes(), 40000u16.to_be_bytes());
    assert_eq!(Query::from_flow_key(&key), Some(query));
}

#[test]
fn cluster_flow_follows_both_tables_of_the_state() {
    let inputs = example();
    let state = desired_state(&inputs);
    let query = web(40000);
    let explanation = explain(&inputs, &state, Some("node1"), query);

    let node_hash = query.hash(NODE_SEED);
    let node_slot = node_hash % NODE_RING_SIZE as u32;
    let node = state.rings["web"]
        .node
        .get(node_slot as usize)
        .expect("slot");
    let choice = explanation
        .node_choice
        .expect("Cluster uses the node table");
    assert_eq!(
        (choice.hash, choice.slot, choice.backend),
        (node_hash, node_slot, Some(node))
    );
    assert_eq!(explanation.service.as_deref(), Some("web"));
    assert_eq!(explanation.traffic_policy, Some(TrafficPolicy::Cluster));
    assert_eq!(
        explanation.receiver.as_ref().map(|n| n.address),
        Some(ip("10.0.0.11"))
    );
    assert_eq!(explanation.node.as_ref().map(|n| n.address), Some(node));
    assert_eq!(explanation.outcome, Outcome::Forwarded);
    let pod = explanation.destination.expect("forwarded");
    assert_eq!(pod.port(), 8080);
    let pod_choice = explanation.pod_choice.expect("pod lookup");
    assert_eq!(pod_choice.hash, query.hash(POD_SEED));
    assert_eq!(pod_choice.slot, pod_choice.hash % POD_RING_SIZE as u32);
    assert_eq!(pod_choice.backend, Some(*pod.ip()));
}

/// Over many flows: node1 (the owner) explains every flow the way the node that
/// delivers it computes its own tables, for flows landing on either node.
#[test]
fn agrees_with_each_nodes_own_rings() {
    let node1 = example_as("node1");
    let node2 = example_as("node2");
    let states = [
        ("node1", desired_state(&node1)),
        ("node2", desired_state(&node2)),
    ];
    let mut delivered = std::collections::BTreeMap::<String, usize>::new();
    for port in 30000..30400 {
        let query = web(port);
        let explanation = explain(&node1, &states[0].1, Some("node1"), query);
        let node = explanation.node.clone().expect("a node serves web");
        let (_, own) = states
            .iter()
            .find(|(name, _)| *name == node.name)
            .expect("known node");
        let slot = query.hash(POD_SEED) % POD_RING_SIZE as u32;
        let expected = own.rings["web"].pod.get(slot as usize).expect("slot");
        assert_eq!(
            explanation.destination,
            Some(SocketAddrV4::new(expected, 8080)),
            "{explanation:#?}"
        );
        let reason = if node.name == "node1" {
            "pass_local_dnat"
        } else {
            "tx_encap"
        };
        assert_eq!(explanation.reason, reason);
        *delivered.entry(node.name).or_default() += 1;
    }
    // Weights 1:2 over 400 flows: both nodes get flows, node2 about twice as many.
    let (one, two) = (delivered["node1"], delivered["node2"]);
    assert!(one > 80 && two > 180 && one + two == 400, "{delivered:?}");
}

#[test]
fn not_a_vip_is_passed() {
    let inputs = example();
    let state = desired_state(&inputs);
    let mut query = web(1);
    query.vip = SocketAddrV4::new(ip("10.0.0.11"), 22);
    let explanation = explain(&inputs, &state, Some("node1"), query);
    assert_eq!(explanation.outcome, Outcome::Passed);
    assert_eq!(explanation.reason, "pass_not_vip");
    assert!(explanation.steps[0].contains("not a VIP"));
    assert_eq!(explanation.node, None);
}

#[test]
fn unknown_port_passes_or_drops_per_vip_flag() {
    let mut inputs = example();
    let mut query = web(1);
    query.vip.set_port(8080);
    let passed = explain(&inputs, &desired_state(&inputs), Some("node1"), query);
    assert_eq!(
        (passed.outcome, passed.reason.as_str()),
        (Outcome::Passed, "pass_unknown_port")
    );
    assert!(
        passed.steps[0].contains("80/TCP 443/TCP"),
        "{:?}",
        passed.steps
    );

    service_mut(&mut inputs, "web").drop_unknown_ports = true;
    let dropped = explain(&inputs, &desired_state(&inputs), Some("node1"), query);
    assert_eq!(
        (dropped.outcome, dropped.reason.as_str()),
        (Outcome::Dropped, "drop_unknown_port")
    );
}

#[test]
fn empty_node_table_drops() {
    let mut inputs = example();
    service_mut(&mut inputs, "dns").endpoints[0].ready = false;
    let state = desired_state(&inputs);
    let query = Query {
        client: SocketAddrV4::new(ip("10.0.0.100"), 5000),
        vip: SocketAddrV4::new(ip("172.16.200.53"), 53),
        protocol: Protocol::Udp,
    };
    let explanation = explain(&inputs, &state, Some("node1"), query);
    assert_eq!(explanation.outcome, Outcome::Dropped);
    assert_eq!(explanation.reason, "drop_no_backend");
    assert_eq!(
        explanation.node_choice.map(|choice| choice.backend),
        Some(None)
    );
    assert_eq!(explanation.node, None);
}

#[test]
fn local_policy_uses_the_receivers_own_pods() {
    let mut inputs = example();
    service_mut(&mut inputs, "web").traffic_policy = TrafficPolicy::Local;
    let state = desired_state(&inputs);
    let node2_pods = model::pod_ring(&inputs.services[0], "node2");
    for port in 40000..40050 {
        let query = web(port);
        let slot = (query.hash(POD_SEED) % POD_RING_SIZE as u32) as usize;

        let on_node2 = explain(&inputs, &state, Some("node2"), query);
        assert_eq!(on_node2.node_choice, None);
        assert_eq!(
            on_node2.node.as_ref().map(|n| n.name.as_str()),
            Some("node2")
        );
        assert_eq!(on_node2.reason, "pass_local_dnat");
        assert_eq!(
            on_node2.destination,
            Some(SocketAddrV4::new(node2_pods[slot], 8080))
        );

        let on_node1 = explain(&inputs, &state, Some("node1"), query);
        assert_eq!(
            on_node1.destination,
            Some(SocketAddrV4::new(ip("10.42.0.7"), 8080))
        );
    }
}

#[test]
fn local_policy_without_local_endpoints_drops() {
    let mut inputs = example();
    service_mut(&mut inputs, "dns").traffic_policy = TrafficPolicy::Local;
    let state = desired_state(&inputs);
    let query = Query {
        client: SocketAddrV4::new(ip("10.0.0.100"), 5000),
        vip: SocketAddrV4::new(ip("172.16.200.53"), 53),
        protocol: Protocol::Tcp,
    };
    let explanation = explain(&inputs, &state, Some("node1"), query);
    assert_eq!(explanation.outcome, Outcome::Dropped);
    assert_eq!(explanation.reason, "drop_no_backend");
    assert!(
        explanation
            .steps
            .last()
            .expect("steps")
            .contains("node1 has no ready endpoint")
    );
}

#[test]
fn without_a_known_owner_assumes_this_node() {
    let inputs = example_as("node2");
    let state = desired_state(&inputs);
    for owner in [None, Some("node9")] {
        let explanation = explain(&inputs, &state, owner, web(40000));
        assert_eq!(
            explanation.receiver.as_ref().map(|n| n.name.as_str()),
            Some("node2")
        );
        assert!(explanation.steps[1].contains("assuming the packet arrives here"));
    }
}

#[test]
fn cache_entries_are_compared_with_the_tables() {
    let inputs = example();
    let state = desired_state(&inputs);
    let explanation = explain(&inputs, &state, Some("node1"), web(40000));
    let node = explanation.node.clone().expect("node").address;
    let agree = CacheLookup::from_entry(Some(&FlowValue {
        node: wire::addr(node),
        pod: 0,
        ..FlowValue::default()
    }));
    assert_eq!(
        agree,
        CacheLookup::Hit {
            node: Some(node),
            pod: None
        }
    );
    let text = explanation.clone().with_cache("node1", agree);
    assert!(
        text.steps
            .last()
            .expect("step")
            .contains("the tables agree")
    );

    let other = ip("10.0.0.99");
    let moved = explanation.clone().with_cache(
        "node1",
        CacheLookup::Hit {
            node: Some(other),
            pod: None,
        },
    );
    assert!(
        moved
            .steps
            .last()
            .expect("step")
            .contains(&format!("node {other} (the tables now choose {node}")),
        "{:?}",
        moved.steps
    );
    let miss = explanation.with_cache("node1", CacheLookup::from_entry(None));
    assert_eq!(miss.cache, CacheLookup::Miss);
}
