use lb_common::maps::{NODE_RING_SIZE, POD_RING_SIZE};

use super::*;
use crate::fixtures::{endpoint, example, example_as, ip};

fn count(table: &Table, address: &str) -> usize {
    table.iter().filter(|entry| *entry == ip(address)).count()
}

fn service_mut<'a>(inputs: &'a mut Inputs, name: &str) -> &'a mut Service {
    inputs
        .services
        .iter_mut()
        .find(|service| service.name == name)
        .expect("service in fixture")
}

#[test]
fn example_state_has_every_table() {
    let state = desired_state(&example());
    assert_eq!(
        state.node,
        NodeConfig {
            address: ip("10.0.0.11"),
            mtu: 1500,
            icmp_rate_per_sec: 100,
            mac: [0; 6],
        }
    );
    assert_eq!(state.peers, BTreeSet::from([ip("10.0.0.12")]));
    assert_eq!(
        state.vips,
        BTreeMap::from([
            (ip("172.16.200.20"), Vip::default()),
            (ip("172.16.200.53"), Vip::default()),
        ])
    );
    let web = |port, target_port| {
        (
            PortKey {
                vip: ip("172.16.200.20"),
                port,
                protocol: Protocol::Tcp,
            },
            PortTarget {
                service: "web".into(),
                target_port,
                local_only: false,
            },
        )
    };
    let dns = |protocol| {
        (
            PortKey {
                vip: ip("172.16.200.53"),
                port: 53,
                protocol,
            },
            PortTarget {
                service: "dns".into(),
                target_port: 5353,
                local_only: false,
            },
        )
    };
    assert_eq!(
        state.ports,
        BTreeMap::from([
            web(80, 8080),
            web(443, 8443),
            dns(Protocol::Tcp),
            dns(Protocol::Udp)
        ])
    );
    assert_eq!(
        state.backends,
        BTreeMap::from([
            (ip("10.0.0.11"), BackendState::Active),
            (ip("10.0.0.12"), BackendState::Active),
            (ip("10.42.0.7"), BackendState::Active),
        ])
    );
    assert_eq!(
        state.rings.keys().collect::<Vec<_>>(),
        ["dns", "web"].iter().collect::<Vec<_>>()
    );
}

#[test]
fn node_ring_is_weighted_by_serving_endpoints() {
    let state = desired_state(&example());
    let web = &state.rings["web"];
    assert_eq!(web.node.len(), NODE_RING_SIZE);
    let node1 = count(&web.node, "10.0.0.11");
    let node2 = count(&web.node, "10.0.0.12");
    assert_eq!(node1 + node2, NODE_RING_SIZE, "every slot holds a node");
    // One endpoint on node1, two on node2: a third and two thirds, within 1 %.
    let third = NODE_RING_SIZE as f64 / 3.0;
    assert!(
        (node1 as f64 - third).abs() < NODE_RING_SIZE as f64 * 0.01,
        "node1 share {node1}"
    );
    assert_eq!(web.pod.len(), POD_RING_SIZE);
    assert_eq!(count(&web.pod, "10.42.0.7"), POD_RING_SIZE);
}

#[test]
fn service_without_local_endpoints_has_an_empty_pod_ring() {
    let state = desired_state(&example());
    let dns = &state.rings["dns"];
    assert_eq!(count(&dns.node, "10.0.0.12"), NODE_RING_SIZE);
    assert_eq!(count(&dns.pod, "0.0.0.0"), POD_RING_SIZE);
}

#[test]
fn every_node_computes_the_same_node_rings() {
    let mut on_node2 = example_as("node2");
    on_node2.peers.reverse();
    for service in &mut on_node2.services {
        service.endpoints.reverse();
    }
    let one = desired_state(&example());
    let two = desired_state(&on_node2);
    for name in ["web", "dns"] {
        assert_eq!(one.rings[name].node, two.rings[name].node, "{name}");
    }
    // Pod rings are each node's own business.
    assert_eq!(count(&two.rings["dns"].pod, "10.42.1.9"), POD_RING_SIZE);
    assert_eq!(
        count(&two.rings["web"].pod, "10.42.1.5") + count(&two.rings["web"].pod, "10.42.1.6"),
        POD_RING_SIZE
    );
    assert_eq!(two.peers, BTreeSet::from([ip("10.0.0.11")]));
}

#[test]
fn terminating_local_endpoint_drains_and_leaves_the_pod_ring() {
    let mut inputs = example();
    let web = service_mut(&mut inputs, "web");
    web.endpoints.push(endpoint("10.42.0.8", "node1"));
    web.endpoints[0].ready = false;
    web.endpoints[0].terminating = true;
    let state = desired_state(&inputs);
    assert_eq!(state.backends[&ip("10.42.0.7")], BackendState::Draining);
    assert_eq!(state.backends[&ip("10.42.0.8")], BackendState::Active);
    assert_eq!(count(&state.rings["web"].pod, "10.42.0.8"), POD_RING_SIZE);
}

#[test]
fn unready_endpoint_is_no_backend_at_all() {
    let mut inputs = example();
    service_mut(&mut inputs, "web").endpoints[0].ready = false;
    let state = desired_state(&inputs);
    assert!(!state.backends.contains_key(&ip("10.42.0.7")));
    // node1 has nothing left to serve web with, so it leaves web's node ring.
    assert_eq!(count(&state.rings["web"].node, "10.0.0.12"), NODE_RING_SIZE);
    assert!(!state.backends.contains_key(&ip("10.0.0.11")));
}

#[test]
fn node_with_only_terminating_endpoints_drains() {
    let mut inputs = example();
    for endpoint in &mut service_mut(&mut inputs, "dns").endpoints {
        endpoint.ready = false;
        endpoint.terminating = true;
    }
    service_mut(&mut inputs, "web").endpoints.truncate(1);
    let state = desired_state(&inputs);
    assert_eq!(state.backends[&ip("10.0.0.12")], BackendState::Draining);
    assert_eq!(count(&state.rings["dns"].node, "0.0.0.0"), NODE_RING_SIZE);
}

#[test]
fn shared_backend_stays_active_when_one_service_drains_it() {
    let mut inputs = example();
    let mut extra = inputs.services[0].clone();
    extra.name = "web-alt".into();
    extra.ports = vec![crate::fixtures::port(8080, Protocol::Tcp, 8080)];
    extra.endpoints[0].ready = false;
    extra.endpoints[0].terminating = true;
    inputs.services.push(extra);
    let state = desired_state(&inputs);
    assert_eq!(state.backends[&ip("10.42.0.7")], BackendState::Active);
}

#[test]
fn local_policy_and_drop_flag_reach_ports_and_vip() {
    let mut inputs = example();
    let dns = service_mut(&mut inputs, "dns");
    dns.traffic_policy = TrafficPolicy::Local;
    dns.drop_unknown_ports = true;
    let state = desired_state(&inputs);
    for (key, target) in &state.ports {
        assert_eq!(target.local_only, key.vip == ip("172.16.200.53"), "{key}");
    }
    assert!(state.vips[&ip("172.16.200.53")].drop_unknown_ports);
    assert!(!state.vips[&ip("172.16.200.20")].drop_unknown_ports);
}

#[test]
fn one_service_asking_to_drop_unknown_ports_sets_the_shared_vip() {
    let mut inputs = example();
    let mut second = inputs.services[0].clone();
    second.name = "web-admin".into();
    second.ports = vec![crate::fixtures::port(9000, Protocol::Tcp, 9000)];
    second.drop_unknown_ports = true;
    inputs.services.insert(0, second);
    let state = desired_state(&inputs);
    assert!(state.vips[&ip("172.16.200.20")].drop_unknown_ports);
    assert_eq!(state.vips.len(), 2);
}

#[test]
fn endpoints_on_unknown_nodes_are_ignored() {
    let mut inputs = example();
    service_mut(&mut inputs, "dns")
        .endpoints
        .push(endpoint("10.42.9.9", "node9"));
    assert_eq!(desired_state(&inputs), desired_state(&example()));
}

#[test]
fn protocol_numbers_round_trip() {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        assert_eq!(Protocol::from_number(protocol.number()), Some(protocol));
    }
    assert_eq!(Protocol::from_number(1), None);
}

#[test]
fn a_down_node_leaves_the_node_rings_and_backends_at_once() {
    let mut inputs = example();
    inputs.down.insert("node2".into());
    let state = desired_state(&inputs);
    for name in ["web", "dns"] {
        assert_eq!(
            count(&state.rings[name].node, "10.0.0.12"),
            0,
            "{name} still sends to node2"
        );
    }
    // web keeps its node1 endpoint; dns has no live endpoint left.
    assert_eq!(count(&state.rings["web"].node, "10.0.0.11"), NODE_RING_SIZE);
    assert_eq!(count(&state.rings["dns"].node, "0.0.0.0"), NODE_RING_SIZE);
    assert!(!state.backends.contains_key(&ip("10.0.0.12")));
    assert_eq!(state.backends[&ip("10.0.0.11")], BackendState::Active);
    // Tunnels from it are still accepted: its in-flight packets are not dropped.
    assert_eq!(state.peers, BTreeSet::from([ip("10.0.0.12")]));
}

#[test]
fn a_node_coming_back_gets_the_same_ring_as_before() {
    let before = desired_state(&example());
    let mut inputs = example();
    inputs.down.insert("node2".into());
    assert_ne!(desired_state(&inputs).rings, before.rings);
    inputs.down.clear();
    assert_eq!(desired_state(&inputs), before);
}

#[test]
fn this_node_down_keeps_its_pods_but_leaves_the_node_rings() {
    let mut inputs = example();
    inputs.down.insert("node1".into());
    let state = desired_state(&inputs);
    assert_eq!(count(&state.rings["web"].node, "10.0.0.11"), 0);
    assert_eq!(count(&state.rings["web"].pod, "10.42.0.7"), POD_RING_SIZE);
    assert_eq!(state.backends[&ip("10.42.0.7")], BackendState::Active);
}

#[test]
fn memoized_passes_equal_fresh_computations() {
    let mut tables = Tables::default();
    let mut inputs = example();
    let edits: [fn(&mut Inputs); 5] = [
        |_| {},
        |inputs| {
            inputs.services[0]
                .endpoints
                .push(endpoint("10.42.0.8", "node1"))
        },
        |inputs| {
            inputs.down.insert("node2".into());
        },
        |inputs| inputs.services[0].endpoints[0].terminating = true,
        |inputs| {
            inputs.down.clear();
            inputs.services.reverse();
        },
    ];
    for edit in edits {
        edit(&mut inputs);
        assert_eq!(
            desired_state_with(&inputs, &mut tables),
            desired_state(&inputs)
        );
    }
}

#[test]
fn the_memo_holds_only_the_tables_of_the_last_pass() {
    let distinct = |state: &State| {
        state
            .rings
            .values()
            .flat_map(|rings| [rings.node.clone(), rings.pod.clone()])
            .collect::<std::collections::HashSet<Table>>()
            .len()
    };
    let mut tables = Tables::default();
    let mut inputs = example();
    let state = desired_state_with(&inputs, &mut tables);
    assert_eq!(tables.len(), distinct(&state));
    inputs.services.retain(|service| service.name != "web");
    let state = desired_state_with(&inputs, &mut tables);
    assert_eq!(tables.len(), distinct(&state));
    inputs.services.clear();
    desired_state_with(&inputs, &mut tables);
    assert!(tables.is_empty());
}
