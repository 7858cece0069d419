use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::types::{NodeRing, PodRing, ServiceKey, ServiceSlot, ServiceValue, VipValue};

use super::*;
use crate::{
    dataplane::Dataplane,
    dataplane::service_slots::{ServiceSlots, steps},
    diff::{Changes, diff},
    fixtures::{endpoint, example, example_as, ip, port},
    model::{Inputs, PortKey, PortTarget, Protocol, Service, State, TrafficPolicy, desired_state},
};

fn small() -> Capacities {
    Capacities {
        services: 8,
        service_ports: 32,
        vips: 8,
        backends: 64,
        flows: 1024,
        reply_flows: 1024,
    }
}

fn fresh(state: &State) -> MemoryDataplane {
    let mut dataplane = MemoryDataplane::new(small());
    dataplane
        .apply(&diff(&State::default(), state))
        .expect("fresh apply");
    dataplane
}

fn edited(edit: impl FnOnce(&mut Inputs)) -> State {
    let mut inputs = example();
    edit(&mut inputs);
    desired_state(&inputs)
}

fn ssh_service() -> Service {
    Service {
        name: "ssh".into(),
        vip: ip("172.16.200.22"),
        ports: vec![port(22, Protocol::Tcp, 22)],
        endpoints: vec![endpoint("10.42.0.9", "node1")],
        traffic_policy: TrafficPolicy::Local,
        drop_unknown_ports: true,
    }
}

/// States that differ from the example in every way a source can change it.
fn variants() -> Vec<(&'static str, State)> {
    vec![
        ("example", desired_state(&example())),
        (
            "web+pod",
            edited(|inputs| {
                inputs.services[0]
                    .endpoints
                    .push(endpoint("10.42.0.8", "node1"))
            }),
        ),
        (
            "web pod terminating",
            edited(|inputs| {
                inputs.services[0].endpoints[0].ready = false;
                inputs.services[0].endpoints[0].terminating = true;
            }),
        ),
        ("no dns", edited(|inputs| inputs.services.truncate(1))),
        (
            "dns renamed",
            edited(|inputs| inputs.services[1].name = "coredns".into()),
        ),
        (
            "dns moved ports",
            edited(|inputs| {
                inputs.services[1].ports[0].port = 5353;
                inputs.services[1].traffic_policy = TrafficPolicy::Local;
            }),
        ),
        (
            "ssh added",
            edited(|inputs| inputs.services.push(ssh_service())),
        ),
        ("no services", edited(|inputs| inputs.services.clear())),
        ("node2's view", desired_state(&example_as("node2"))),
    ]
}

#[test]
fn fresh_apply_reads_back_the_state() {
    let state = desired_state(&example());
    assert_eq!(fresh(&state).read().expect("read"), state);
}

#[test]
fn a_change_advances_the_epoch_and_no_change_keeps_it() {
    let state = desired_state(&example());
    let mut dataplane = fresh(&state);
    let first = dataplane.store().epoch().expect("epoch");
    assert_ne!(first, 0, "the first change turns the express path on");
    dataplane
        .apply(&diff(&state, &state))
        .expect("nothing to apply");
    assert_eq!(dataplane.store().epoch().expect("epoch"), first);
    let (_, other) = &variants()[1];
    dataplane.apply(&diff(&state, other)).expect("apply");
    assert_ne!(dataplane.store().epoch().expect("epoch"), first);
}

#[test]
fn every_transition_equals_a_fresh_apply() {
    let variants = variants();
    for (from_name, from) in &variants {
        for (to_name, to) in &variants {
            let mut dataplane = fresh(from);
            dataplane
                .apply(&diff(from, to))
                .unwrap_or_else(|error| panic!("{from_name} -> {to_name}: {error}"));
            dataplane
                .store()
                .check_service_slots()
                .unwrap_or_else(|error| panic!("{from_name} -> {to_name}: {error}"));
            dataplane
                .store()
                .check_epoch()
                .unwrap_or_else(|error| panic!("{from_name} -> {to_name}: {error}"));
            assert_eq!(
                dataplane.read().expect("read"),
                fresh(to).read().expect("read"),
                "{from_name} -> {to_name}"
            );
            assert_eq!(
                &dataplane.read().expect("read"),
                to,
                "{from_name} -> {to_name}"
            );
        }
    }
}

#[test]
fn a_ring_change_moves_the_service_to_another_slot() {
    let first = desired_state(&example());
    let mut dataplane = fresh(&first);
    let web_before = dataplane.ring_slot("web").expect("web slot");
    let dns_before = dataplane.ring_slot("dns").expect("dns slot");

    let second = edited(|inputs| {
        inputs.services[0]
            .endpoints
            .push(endpoint("10.42.0.8", "node1"))
    });
    dataplane.apply(&diff(&first, &second)).expect("apply");
    let web_after = dataplane.ring_slot("web").expect("web slot");
    assert_ne!(web_after, web_before);
    assert_eq!(dataplane.ring_slot("dns"), Some(dns_before));
    let slots: Vec<u32> = dataplane
        .store()
        .services()
        .expect("services")
        .iter()
        .map(|(_, value)| value.ring_slot)
        .collect();
    assert!(!slots.contains(&web_before), "no port left on the old slot");

    // The released slot is the lowest free one again.
    dataplane.apply(&diff(&second, &first)).expect("apply back");
    assert_eq!(dataplane.ring_slot("web"), Some(web_before));
}

/// Asserts that no two owners (backends, service ports) share a slot.
fn assert_one_slot_each<K: std::fmt::Debug>(slots: &BTreeMap<K, u32>) {
    let distinct: BTreeSet<u32> = slots.values().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot shared in {slots:?}");
}

/// Backend address -> slot, as the maps hold them.
fn backend_slots(dataplane: &MemoryDataplane) -> BTreeMap<Ipv4Addr, u32> {
    let entries = dataplane.store().backends().expect("backends");
    entries
        .into_iter()
        .map(|(address, value)| (wire::ip(address), value.slot))
        .collect()
}

#[test]
fn backends_keep_their_slots_and_a_freed_one_is_reused() {
    let first = desired_state(&example());
    let mut dataplane = fresh(&first);
    let before = backend_slots(&dataplane);
    assert_one_slot_each(&before);

    let terminating = edited(|inputs| {
        inputs.services[0].endpoints[0].ready = false;
        inputs.services[0].endpoints[0].terminating = true;
    });
    dataplane.apply(&diff(&first, &terminating)).expect("drain");
    assert_eq!(
        backend_slots(&dataplane),
        before,
        "a state change keeps slots"
    );

    let gone = edited(|inputs| {
        inputs.services[0].endpoints.remove(0);
    });
    dataplane.apply(&diff(&terminating, &gone)).expect("remove");
    let freed: BTreeSet<u32> = before
        .iter()
        .filter(|(address, _)| !gone.backends.contains_key(*address))
        .map(|(_, slot)| *slot)
        .collect();
    assert!(!freed.is_empty(), "a backend left");
    let replaced = edited(|inputs| {
        inputs.services[0].endpoints.remove(0);
        inputs.services[0]
            .endpoints
            .push(endpoint("10.42.0.99", "node1"));
    });
    dataplane.apply(&diff(&gone, &replaced)).expect("add");
    let after = backend_slots(&dataplane);
    let new_slot = after.get(&ip("10.42.0.99")).expect("new backend");
    assert!(
        freed.contains(new_slot),
        "{new_slot} is not one of {freed:?}"
    );
    assert_one_slot_each(&after);

    let adopted = Engine::adopt(dataplane.into_store(), small(), &replaced).expect("adopt");
    assert_eq!(backend_slots(&adopted), after, "adoption keeps every slot");
}

#[test]
fn adoption_refuses_a_statistics_slot_used_twice() {
    let mut maps = MemoryMaps::new(&small());
    for vip in ["172.16.200.20", "172.16.200.21"] {
        maps.insert_vip(wire::addr(ip(vip)), &vip_value())
            .expect("vip");
    }
    let refused = Engine::adopt(maps, small(), &State::default()).expect_err("shared slot");
    assert_eq!(refused.metric_label(), "foreign_entry");
    assert!(
        refused
            .to_string()
            .contains("172.16.200.21 uses statistics slot 0"),
        "{refused}"
    );
}

#[test]
fn a_reused_stats_slot_starts_from_zero() {
    let first = desired_state(&example());
    let mut dataplane = fresh(&first);
    let web = dataplane.stats_index(ip("172.16.200.20")).expect("web");
    let dns = dataplane.stats_index(ip("172.16.200.53")).expect("dns");
    assert_ne!(web, dns);
    for index in [web, dns] {
        dataplane
            .store_mut()
            .vip_stats_mut(index)
            .expect("slot")
            .packets = 42;
    }

    let without_dns = edited(|inputs| inputs.services.truncate(1));
    dataplane
        .apply(&diff(&first, &without_dns))
        .expect("remove dns");
    assert_eq!(dataplane.stats_index(ip("172.16.200.53")), None);

    let with_ssh = edited(|inputs| {
        inputs.services.truncate(1);
        inputs.services.push(ssh_service());
    });
    dataplane
        .apply(&diff(&without_dns, &with_ssh))
        .expect("add ssh");
    assert_eq!(dataplane.stats_index(ip("172.16.200.22")), Some(dns));
    assert_eq!(dataplane.store().vip_stats(dns).expect("slot").packets, 0);
    assert_eq!(dataplane.store().vip_stats(web).expect("slot").packets, 42);
    assert_eq!(dataplane.stats_index(ip("172.16.200.20")), Some(web));
}

#[test]
fn changes_beyond_a_capacity_are_refused_before_any_write() {
    let state = desired_state(&example());
    for (limits, what) in [
        (Capacities { vips: 1, ..small() }, "VIPs"),
        (
            Capacities {
                services: 1,
                ..small()
            },
            "services",
        ),
        (
            Capacities {
                service_ports: 3,
                ..small()
            },
            "service ports",
        ),
        (
            Capacities {
                backends: 2,
                ..small()
            },
            "backends",
        ),
    ] {
        let mut dataplane = MemoryDataplane::new(limits);
        let error = dataplane
            .apply(&diff(&State::default(), &state))
            .expect_err("over capacity");
        assert!(
            matches!(error, DataplaneError::Capacity { what: w, .. } if w == what),
            "{error}"
        );
        assert_eq!(error.metric_label(), "capacity");
        assert_eq!(dataplane.read().expect("read"), State::default(), "{what}");
    }
}

#[test]
fn a_port_of_an_unknown_service_is_refused() {
    let mut dataplane = MemoryDataplane::new(small());
    let mut changes = Changes::default();
    changes
        .vips
        .upsert
        .insert(ip("172.16.200.20"), Default::default());
    changes.ports.upsert.insert(
        PortKey {
            vip: ip("172.16.200.20"),
            port: 80,
            protocol: Protocol::Tcp,
        },
        PortTarget {
            service: "ghost".into(),
            target_port: 80,
            local_only: false,
        },
    );
    let error = dataplane.apply(&changes).expect_err("unknown service");
    assert_eq!(error.metric_label(), "unknown_service");
}

fn empty_rings() -> (Box<NodeRing>, Box<PodRing>) {
    (wire::node_ring([]), wire::pod_ring([]))
}

fn web_key() -> ServiceKey {
    wire::service_key(&PortKey {
        vip: ip("172.16.200.20"),
        port: 80,
        protocol: Protocol::Tcp,
    })
}

fn vip_value() -> VipValue {
    VipValue {
        stats_index: 0,
        flags: 0,
    }
}

/// Writes `key` and `value` into service slot `slot` as the engine does.
fn publish_slot(maps: &mut MemoryMaps, slot: u32, key: ServiceKey, value: ServiceValue) {
    let held = maps
        .service_slots()
        .expect("slots")
        .into_iter()
        .find(|(index, _)| *index == slot)
        .map_or_else(ServiceSlot::default, |(_, entry)| entry);
    for step in steps(&held, &ServiceSlot { key, value }) {
        maps.set_service_slot(slot, &step).expect("safe step");
    }
}

#[test]
fn the_memory_maps_catch_unsafe_orders() {
    let mut maps = MemoryMaps::new(&small());
    let (node, pod) = empty_rings();
    let key = web_key();
    let value = ServiceValue {
        ring_slot: 3,
        target_port: 80u16.to_be(),
        ..Default::default()
    };
    maps.insert_vip(key.vip, &vip_value()).expect("vip");
    let early = maps
        .insert_service(&key, &value)
        .expect_err("unwritten slot");
    assert_eq!(early.metric_label(), "hazard");
    publish_slot(&mut maps, 0, key, value);

    maps.write_rings(3, &node, &pod).expect("rings");
    let miscounted = ServiceValue {
        stats_index: 1,
        ..value
    };
    let other_slot = maps
        .insert_service(&key, &miscounted)
        .expect_err("statistics slot of another VIP");
    assert!(other_slot.to_string().contains("slot 1"), "{other_slot}");
    maps.insert_service(&key, &value).expect("service");
    let rewrite = maps.write_rings(3, &node, &pod).expect_err("slot in use");
    assert!(rewrite.to_string().contains("ring slot 3"), "{rewrite}");
    let orphan = maps.remove_vip(key.vip).expect_err("port still there");
    assert_eq!(orphan.metric_label(), "hazard");

    let stranger = wire::node_ring([ip("10.0.0.99")]);
    let unknown = maps
        .write_rings(4, &stranger, &pod)
        .expect_err("unknown backend");
    assert!(unknown.to_string().contains("10.0.0.99"), "{unknown}");
    maps.insert_backend(wire::addr(ip("10.0.0.99")), &Default::default())
        .expect("backend");
    maps.write_rings(4, &stranger, &pod).expect("rings");
    let flipped = ServiceValue {
        ring_slot: 4,
        ..value
    };
    publish_slot(&mut maps, 0, key, flipped);
    maps.insert_service(&key, &flipped).expect("flip");
    let in_use = maps
        .remove_backend(wire::addr(ip("10.0.0.99")))
        .expect_err("ring names it");
    assert_eq!(in_use.metric_label(), "hazard");

    let shared = maps
        .insert_backend(wire::addr(ip("10.0.0.98")), &Default::default())
        .expect_err("slot 0 is 10.0.0.99's");
    assert!(shared.to_string().contains("10.0.0.99"), "{shared}");
    let beyond = BackendValue {
        slot: small().backends,
        ..Default::default()
    };
    let out_of_range = maps
        .insert_backend(wire::addr(ip("10.0.0.98")), &beyond)
        .expect_err("no such slot");
    assert_eq!(out_of_range.metric_label(), "out_of_range");
}

/// Port -> service slot, as `SERVICES` holds them.
fn service_slots(dataplane: &MemoryDataplane) -> BTreeMap<PortKey, u32> {
    let entries = dataplane.store().services().expect("services");
    entries
        .into_iter()
        .map(|(key, value)| (wire::port_key(&key).expect("port"), value.slot))
        .collect()
}

fn web_port(port: u16) -> PortKey {
    PortKey {
        vip: ip("172.16.200.20"),
        port,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn service_ports_keep_their_slots_and_a_freed_one_is_reused_after_it_is_cleared() {
    let first = desired_state(&example());
    let mut dataplane = fresh(&first);
    let before = service_slots(&dataplane);
    assert_one_slot_each(&before);
    assert_eq!(
        dataplane.service_slot(&web_port(80)),
        before.get(&web_port(80)).copied()
    );

    // New tables and a new target port: every port keeps its slot.
    let changed = edited(|inputs| {
        inputs.services[0]
            .endpoints
            .push(endpoint("10.42.0.8", "node1"));
        inputs.services[0].ports[1].target_port = 9443;
    });
    dataplane.apply(&diff(&first, &changed)).expect("change");
    assert_eq!(service_slots(&dataplane), before, "a change keeps slots");
    dataplane.store().check_service_slots().expect("in step");

    // A removed port's slot is cleared, and only then taken by the next new port.
    let renumbered = edited(|inputs| inputs.services[0].ports[0].port = 8000);
    dataplane
        .apply(&diff(&changed, &renumbered))
        .expect("renumber");
    let after = service_slots(&dataplane);
    assert_eq!(after.get(&web_port(8000)), before.get(&web_port(80)));
    assert_eq!(after.get(&web_port(443)), before.get(&web_port(443)));
    assert_one_slot_each(&after);
    dataplane.store().check_service_slots().expect("in step");

    let adopted = Engine::adopt(dataplane.into_store(), small(), &renumbered).expect("adopt");
    assert_eq!(service_slots(&adopted), after, "adoption keeps every slot");
    assert_eq!(
        adopted.service_slot(&web_port(8000)),
        after.get(&web_port(8000)).copied()
    );
}

#[test]
fn service_slots_run_out_with_a_capacity_error() {
    let mut slots = ServiceSlots::new(2);
    assert_eq!(slots.assign(&web_port(80)).expect("first"), (0, true));
    assert_eq!(slots.assign(&web_port(443)).expect("second"), (1, true));
    assert_eq!(slots.assign(&web_port(80)).expect("again"), (0, false));
    let error = slots.assign(&web_port(8080)).expect_err("full");
    assert!(
        matches!(
            error,
            DataplaneError::Capacity {
                what: "service ports",
                needed: 3,
                capacity: 2
            }
        ),
        "{error}"
    );
    // A retired slot is not free until it is cleared.
    slots.retire(&web_port(80));
    assert!(slots.assign(&web_port(8080)).is_err(), "not cleared yet");
    slots.cleared(0);
    assert_eq!(slots.assign(&web_port(8080)).expect("freed"), (0, true));
}

#[test]
fn no_service_slot_write_changes_key_and_value_at_once() {
    let key = web_key();
    let other = ServiceKey {
        port: 443u16.to_be(),
        ..key
    };
    let value = |ring_slot| ServiceValue {
        ring_slot,
        ..Default::default()
    };
    let entry = |key, ring_slot| ServiceSlot {
        key,
        value: value(ring_slot),
    };
    let cleared = ServiceKey::default();
    assert_eq!(steps(&entry(key, 1), &entry(key, 1)), []);
    assert_eq!(
        steps(&ServiceSlot::default(), &entry(key, 1)),
        [entry(cleared, 1), entry(key, 1)]
    );
    assert_eq!(
        steps(&entry(key, 1), &entry(key, 2)),
        [entry(cleared, 1), entry(cleared, 2), entry(key, 2)]
    );
    assert_eq!(
        steps(&entry(key, 1), &entry(other, 2)),
        [entry(cleared, 1), entry(cleared, 2), entry(other, 2)]
    );
    assert_eq!(
        steps(&entry(key, 1), &ServiceSlot::default()),
        [entry(cleared, 1), ServiceSlot::default()]
    );

    let mut maps = MemoryMaps::new(&small());
    let torn = maps
        .set_service_slot(0, &entry(key, 1))
        .expect_err("key and value in one write");
    assert_eq!(torn.metric_label(), "hazard");
    publish_slot(&mut maps, 0, key, value(1));
    let changed = maps
        .set_service_slot(0, &entry(key, 2))
        .expect_err("value under a live key");
    assert_eq!(changed.metric_label(), "hazard");
    let beyond = maps
        .set_service_slot(small().service_ports, &ServiceSlot::default())
        .expect_err("no such slot");
    assert_eq!(beyond.metric_label(), "out_of_range");
}

#[test]
fn two_ports_never_share_a_service_slot() {
    let mut maps = MemoryMaps::new(&small());
    let (node, pod) = empty_rings();
    maps.write_rings(0, &node, &pod).expect("rings");
    let key = web_key();
    maps.insert_vip(key.vip, &vip_value()).expect("vip");
    let value = ServiceValue::default();
    publish_slot(&mut maps, 0, key, value);
    maps.insert_service(&key, &value).expect("web");
    let other = ServiceKey {
        port: 443u16.to_be(),
        ..key
    };
    publish_slot(&mut maps, 0, other, value);
    let shared = maps
        .insert_service(&other, &value)
        .expect_err("slot 0 is web's");
    assert!(
        shared.to_string().contains("shares service slot 0"),
        "{shared}"
    );
}

#[test]
fn adoption_rewrites_service_slots_a_dead_agent_left_half_written() {
    let state = desired_state(&example());
    let dataplane = fresh(&state);
    let slots = service_slots(&dataplane);
    let mut maps = dataplane.into_store();
    let web = *slots.get(&web_port(80)).expect("web slot");
    let free = (0..small().service_ports)
        .find(|slot| !slots.values().any(|used| used == slot))
        .expect("a free slot");
    // Died after writing a new value into web's slot, before SERVICES; and after
    // removing a port from SERVICES, before clearing its slot.
    let held = maps
        .service_slots()
        .expect("slots")
        .into_iter()
        .find(|(slot, _)| *slot == web)
        .expect("web's slot")
        .1;
    let newer = ServiceValue {
        target_port: 9999u16.to_be(),
        ..held.value
    };
    publish_slot(&mut maps, web, held.key, newer);
    let gone = ServiceKey {
        port: 8080u16.to_be(),
        ..held.key
    };
    publish_slot(&mut maps, free, gone, held.value);
    assert!(maps.check_service_slots().is_err());

    let adopted = Engine::adopt(maps, small(), &state).expect("adopt");
    adopted.store().check_service_slots().expect("repaired");
    assert_eq!(adopted.read().expect("read"), state);
}

#[test]
fn adoption_gives_every_port_carried_over_without_a_slot_one_of_its_own() {
    let state = desired_state(&example());
    let mut maps = fresh(&state).into_store();
    maps.without_service_slots();
    let adopted = Engine::adopt(maps, small(), &state).expect("adopt");
    adopted
        .store()
        .check_service_slots()
        .expect("every port in its slot");
    assert_one_slot_each(&service_slots(&adopted));
    assert_eq!(adopted.read().expect("read"), state);
}
