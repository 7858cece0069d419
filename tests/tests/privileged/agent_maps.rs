//! The agent's kernel dataplane against the real BPF maps: the example configuration is
//! applied through `KernelDataplane` and read back through the typed map wrappers.
//! Needs root; run with `cargo test -p testbed --test privileged agent_maps:: --
//! --test-threads=1`.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context as _, ensure};
use aya::Ebpf;
use lb_agent::{
    config,
    dataplane::{Dataplane as _, kernel::KernelDataplane, loader},
    diff::diff,
    model::{Endpoint, Inputs, State, capacities::Capacities, desired_state},
};
use lb_common::{
    maglev::{self, Backend},
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
    types::{
        BACKEND_ACTIVE, DataplaneConfig, PROTO_TCP, PROTO_UDP, RING_EMPTY, ServiceKey, ServiceSlot,
        ServiceValue,
    },
};

use testbed::fixture::equal_ring;

const EXAMPLE: &str = include_str!("../../../lb-agent/examples/standalone.yaml");
const WEB_VIP: &str = "172.16.200.20";
const DNS_VIP: &str = "172.16.200.53";
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x11, 0x01];

fn skip_unless_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: loading BPF programs needs root");
    }
    !root
}

/// An address as the maps store it.
fn wire(address: &str) -> u32 {
    let address: Ipv4Addr = address.parse().expect("test address");
    u32::from_ne_bytes(address.octets())
}

fn capacities() -> Capacities {
    Capacities {
        services: 8,
        service_ports: 32,
        vips: 8,
        backends: 64,
        flows: 1024,
        reply_flows: 1024,
    }
}

fn example_inputs() -> anyhow::Result<Inputs> {
    Ok(config::parse(EXAMPLE)?.inputs(1500))
}

/// Loads the object and applies `state` to its empty maps.
fn loaded(state: &State) -> anyhow::Result<(Ebpf, KernelDataplane)> {
    let mut ebpf = loader::load(&capacities()).context("loading the BPF object")?;
    let mut dataplane = KernelDataplane::open(&mut ebpf, capacities())?;
    dataplane.apply(&diff(&State::default(), state))?;
    Ok((ebpf, dataplane))
}

fn service_key(vip: &str, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: wire(vip),
        port: port.to_be(),
        proto,
        _pad: 0,
    }
}

/// The node table computed straight from lb-common's Maglev, independently of the model.
fn node_table(nodes: &[(&str, &str, u32)]) -> Vec<u32> {
    let backends: Vec<Backend<'_>> = nodes
        .iter()
        .map(|(name, address, weight)| Backend {
            id: name.as_bytes(),
            addr: wire(address),
            weight: *weight,
        })
        .collect();
    maglev::build(&backends, NODE_RING_SIZE)
}

fn pod_table(pods: &[&str]) -> Vec<u32> {
    let pods: Vec<Ipv4Addr> = pods.iter().map(|pod| pod.parse().expect("pod")).collect();
    equal_ring(&pods, POD_RING_SIZE)
}

fn ring_slot(dataplane: &KernelDataplane, service: &str) -> anyhow::Result<u32> {
    dataplane
        .ring_slot(service)
        .with_context(|| format!("{service} has no ring slot"))
}

fn service_slots(dataplane: &KernelDataplane, vip: &str) -> anyhow::Result<Vec<u32>> {
    Ok(dataplane
        .store()
        .services
        .entries()?
        .into_iter()
        .filter(|(key, _)| key.vip == wire(vip))
        .map(|(_, value)| value.ring_slot)
        .collect())
}

#[test]
fn example_state_lands_in_the_maps() -> anyhow::Result<()> {
    if skip_unless_root("example_state_lands_in_the_maps") {
        return Ok(());
    }
    let mut state = desired_state(&example_inputs()?);
    // What the runtime adds: the interface's MAC, written and read back with the rest.
    state.node.mac = NODE_MAC;
    let (_ebpf, dataplane) = loaded(&state)?;
    assert_eq!(dataplane.read()?, state);
    let maps = dataplane.store();

    let web = ring_slot(&dataplane, "web")?;
    let dns = ring_slot(&dataplane, "dns")?;
    assert_ne!(web, dns);
    let mut services = maps.services.entries()?;
    services.sort_by_key(|(key, _)| *key);
    // Every port's entry is in a service slot of its own too; compared below without it.
    let mut slots = BTreeSet::new();
    for (key, value) in &mut services {
        let entry = ServiceSlot {
            key: *key,
            value: *value,
        };
        assert_eq!(maps.service_slots.get(value.slot)?, entry);
        assert!(slots.insert(value.slot), "slot {} shared", value.slot);
        value.slot = 0;
    }
    let counted_as = |vip: &str| dataplane.stats_index(vip.parse().expect("VIP"));
    let (web_stats, dns_stats) = (counted_as(WEB_VIP), counted_as(DNS_VIP));
    let value = |slot, target: u16, stats: Option<u32>| ServiceValue {
        ring_slot: slot,
        target_port: target.to_be(),
        stats_index: stats.expect("the VIP has a statistics slot"),
        ..ServiceValue::default()
    };
    let mut expected = vec![
        (
            service_key(WEB_VIP, 80, PROTO_TCP),
            value(web, 8080, web_stats),
        ),
        (
            service_key(WEB_VIP, 443, PROTO_TCP),
            value(web, 8443, web_stats),
        ),
        (
            service_key(DNS_VIP, 53, PROTO_UDP),
            value(dns, 5353, dns_stats),
        ),
        (
            service_key(DNS_VIP, 53, PROTO_TCP),
            value(dns, 5353, dns_stats),
        ),
    ];
    expected.sort_by_key(|(key, _)| *key);
    assert_eq!(services, expected);

    let web_nodes = node_table(&[("node1", "10.0.0.11", 1), ("node2", "10.0.0.12", 2)]);
    assert_eq!(maps.node_rings.get(web)?.backends.to_vec(), web_nodes);
    assert_eq!(
        maps.pod_rings.get(web)?.backends.to_vec(),
        pod_table(&["10.42.0.7"])
    );
    assert!(
        maps.node_rings
            .get(dns)?
            .backends
            .iter()
            .all(|node| *node == wire("10.0.0.12"))
    );
    assert!(
        maps.pod_rings
            .get(dns)?
            .backends
            .iter()
            .all(|pod| *pod == RING_EMPTY)
    );

    let vips = maps.vips.entries()?;
    assert_eq!(vips.len(), 2);
    for (vip, value) in &vips {
        let address = Ipv4Addr::from(vip.to_ne_bytes());
        assert_eq!(dataplane.stats_index(address), Some(value.stats_index));
        assert!(value.stats_index < capacities().vips);
        assert_eq!(value.flags, 0);
        assert_eq!(maps.vip_stats.total(value.stats_index)?.packets, 0);
    }
    assert_ne!(vips[0].1.stats_index, vips[1].1.stats_index);

    let peers: Vec<u32> = maps
        .peers
        .entries()?
        .into_iter()
        .map(|(peer, _)| peer)
        .collect();
    assert_eq!(peers, [wire("10.0.0.12")]);
    assert_eq!(
        maps.config.get(0)?,
        DataplaneConfig {
            node_addr: wire("10.0.0.11"),
            mtu: 1500,
            icmp_rate_per_sec: 100,
            mac: NODE_MAC,
            _pad: [0; 2],
        }
    );
    let mut backends = maps.backends.entries()?;
    backends.sort_by_key(|(address, _)| u32::from_be(*address));
    let states: Vec<(u32, u32)> = backends
        .into_iter()
        .map(|(address, value)| (address, value.state))
        .collect();
    assert_eq!(
        states,
        [
            (wire("10.0.0.11"), BACKEND_ACTIVE),
            (wire("10.0.0.12"), BACKEND_ACTIVE),
            (wire("10.42.0.7"), BACKEND_ACTIVE),
        ]
    );
    Ok(())
}

#[test]
fn ring_change_switches_slots_and_removal_cleans_up() -> anyhow::Result<()> {
    if skip_unless_root("ring_change_switches_slots_and_removal_cleans_up") {
        return Ok(());
    }
    let mut inputs = example_inputs()?;
    let first = desired_state(&inputs);
    let (_ebpf, mut dataplane) = loaded(&first)?;
    let old_web = ring_slot(&dataplane, "web")?;
    let dns = ring_slot(&dataplane, "dns")?;

    inputs.services[0].endpoints.push(Endpoint {
        address: "10.42.0.8".parse()?,
        node: "node1".into(),
        ready: true,
        terminating: false,
    });
    let second = desired_state(&inputs);
    dataplane.apply(&diff(&first, &second))?;
    let new_web = ring_slot(&dataplane, "web")?;
    ensure!(new_web != old_web, "web stayed on slot {old_web}");
    assert_eq!(service_slots(&dataplane, WEB_VIP)?, [new_web, new_web]);
    assert_eq!(service_slots(&dataplane, DNS_VIP)?, [dns, dns]);
    let all = dataplane.store().services.entries()?;
    assert!(
        all.iter().all(|(_, value)| value.ring_slot != old_web),
        "a port still points at released slot {old_web}"
    );
    let maps = dataplane.store();
    assert_eq!(
        maps.node_rings.get(new_web)?.backends.to_vec(),
        node_table(&[("node1", "10.0.0.11", 2), ("node2", "10.0.0.12", 2)])
    );
    assert_eq!(
        maps.pod_rings.get(new_web)?.backends.to_vec(),
        pod_table(&["10.42.0.7", "10.42.0.8"])
    );
    assert_eq!(
        maps.backends.get(&wire("10.42.0.8"))?.map(|b| b.state),
        Some(BACKEND_ACTIVE)
    );
    assert_eq!(dataplane.read()?, second);

    inputs.services.retain(|service| service.name != "dns");
    let third = desired_state(&inputs);
    dataplane.apply(&diff(&second, &third))?;
    assert_eq!(dataplane.read()?, third);
    assert!(service_slots(&dataplane, DNS_VIP)?.is_empty());
    assert_eq!(dataplane.store().vips.get(&wire(DNS_VIP))?, None);
    assert_eq!(dataplane.stats_index(DNS_VIP.parse()?), None);
    assert_eq!(dataplane.ring_slot("dns"), None);
    Ok(())
}
