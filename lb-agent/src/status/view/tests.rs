use std::collections::BTreeMap;

use lb_common::maps::VIP_STATS;

use super::*;
use crate::{
    explain::{CacheLookup, Outcome},
    fixtures::{example, ip},
    model::desired_state,
    status::{CandidateStatus, MemberState},
};

/// Counters and flows as a loaded data path would report them.
#[derive(Default)]
struct Maps {
    vips: BTreeMap<Ipv4Addr, VipCounters>,
    backends: BTreeMap<Ipv4Addr, BackendCounters>,
    flows: Vec<(FlowKey, FlowValue)>,
    broken: bool,
}

impl Maps {
    fn check(&self) -> Result<(), MapsError> {
        if self.broken {
            return Err(MapsError::Missing { map: VIP_STATS });
        }
        Ok(())
    }
}

impl MapsView for Maps {
    fn vip_counters(&self, vip: Ipv4Addr) -> Result<Option<VipCounters>, MapsError> {
        self.check()?;
        Ok(self.vips.get(&vip).copied())
    }

    fn backend_counters(&self, address: Ipv4Addr) -> Result<BackendCounters, MapsError> {
        Ok(self.backends.get(&address).copied().unwrap_or_default())
    }

    fn reason_totals(&self) -> Result<[u64; reasons::COUNT as usize], MapsError> {
        let mut totals = [0; reasons::COUNT as usize];
        for (index, total) in totals.iter_mut().enumerate() {
            *total = index as u64 * 10;
        }
        Ok(totals)
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        Ok(self.flows.clone())
    }

    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        Ok(self
            .flows
            .iter()
            .find(|(flow, _)| flow == key)
            .map(|(_, value)| *value))
    }
}

fn query(client: &str, vip: &str) -> Query {
    Query {
        client: client.parse().expect("client"),
        vip: vip.parse().expect("vip"),
        protocol: Protocol::Tcp,
    }
}

fn maps() -> Maps {
    let web = ip("172.16.200.20");
    Maps {
        vips: BTreeMap::from([(
            web,
            VipCounters {
                packets: 1000,
                bytes: 64_000,
                encapsulated: 600,
                delivered_local: 390,
                dropped: 10,
                ..VipCounters::default()
            },
        )]),
        backends: BTreeMap::from([
            (
                ip("10.0.0.12"),
                BackendCounters {
                    packets: 600,
                    bytes: 1,
                },
            ),
            (
                ip("10.42.0.7"),
                BackendCounters {
                    packets: 390,
                    bytes: 2,
                },
            ),
        ]),
        flows: vec![
            (
                query("10.0.0.101:2000", "172.16.200.20:80").flow_key(),
                FlowValue {
                    node: wire::addr(ip("10.0.0.12")),
                    pod: 0,
                    ..FlowValue::default()
                },
            ),
            (
                query("10.0.0.100:3000", "172.16.200.20:443").flow_key(),
                FlowValue {
                    node: wire::addr(ip("10.0.0.11")),
                    pod: wire::addr(ip("10.42.0.7")),
                    ..FlowValue::default()
                },
            ),
            (
                query("10.0.0.100:1000", "172.16.200.20:80").flow_key(),
                FlowValue {
                    node: wire::addr(ip("10.0.0.11")),
                    pod: wire::addr(ip("10.42.0.7")),
                    ..FlowValue::default()
                },
            ),
        ],
        broken: false,
    }
}

fn ownership() -> BTreeMap<Ipv4Addr, Ownership> {
    BTreeMap::from([(
        ip("172.16.200.20"),
        Ownership {
            owner: Some("node1".into()),
            reason: Some("highest score".into()),
            candidates: vec![CandidateStatus {
                node: "node1".into(),
                eligible: true,
                reason: None,
                score: Some(7),
            }],
        },
    )])
}

fn view<'a>(
    inputs: &'a Inputs,
    state: &'a State,
    maps: Option<&'a dyn MapsView>,
    ownership: &'a BTreeMap<Ipv4Addr, Ownership>,
) -> View<'a> {
    View {
        inputs,
        state,
        interface: "eth0",
        xdp_mode: Some("native"),
        ready: true,
        maps,
        ownership,
        members: Vec::new(),
        arp: None,
        gossip: None,
    }
}

#[test]
fn status_describes_every_vip_with_live_counters() {
    let inputs = example();
    let state = desired_state(&inputs);
    let maps = maps();
    let ownership = ownership();
    let status = view(&inputs, &state, Some(&maps), &ownership).status();

    assert_eq!(
        (status.node.as_str(), status.address),
        ("node1", ip("10.0.0.11"))
    );
    assert!(status.warnings.is_empty(), "{:?}", status.warnings);
    assert_eq!(status.reasons.len(), reasons::COUNT as usize);
    assert_eq!(status.reasons["drop_no_backend"], 80);

    let [web, dns] = &status.vips[..] else {
        panic!("two VIPs: {:?}", status.vips);
    };
    assert_eq!(web.vip, ip("172.16.200.20"));
    assert_eq!(
        web.ports
            .iter()
            .map(|port| (port.port, port.target_port, port.service.as_str()))
            .collect::<Vec<_>>(),
        [(80, 8080, "web"), (443, 8443, "web")]
    );
    assert_eq!(
        (web.owner.as_deref(), web.owned_here),
        (Some("node1"), true)
    );
    assert_eq!(web.candidates.len(), 1);
    assert_eq!((web.backends_ready, web.backends_total), (3, 3));
    assert_eq!(web.counters.map(|counters| counters.packets), Some(1000));
    assert_eq!((dns.owner.as_deref(), dns.owned_here), (None, false));
    assert_eq!(dns.counters, None);
}

#[test]
fn table_shares_follow_the_rings() {
    let inputs = example();
    let state = desired_state(&inputs);
    let maps = maps();
    let ownership = BTreeMap::new();
    let status = view(&inputs, &state, Some(&maps), &ownership).status();
    let service = &status.vips[0].services[0];
    let [node1, node2] = &service.nodes[..] else {
        panic!("two nodes: {:?}", service.nodes);
    };
    let slots = node1.slots.expect("Cluster") + node2.slots.expect("Cluster");
    assert_eq!(slots as usize, NODE_RING_SIZE);
    // Weights 1:2 (ready endpoints), within the Maglev paper's ~1 %.
    let share = node1.share.expect("Cluster");
    assert!((share - 1.0 / 3.0).abs() < 0.01, "{share}");
    assert_eq!((node1.ready_endpoints, node2.ready_endpoints), (1, 2));
    // Only tunnelled traffic has a node counter; local deliveries count on the pods.
    assert_eq!(node1.counters, None);
    assert_eq!(node2.counters.map(|counters| counters.packets), Some(600));

    let local = &service.endpoints[0];
    assert_eq!(local.address, ip("10.42.0.7"));
    assert_eq!(local.slots, Some(POD_RING_SIZE as u32));
    assert_eq!(local.counters.map(|counters| counters.packets), Some(390));
    let remote = &service.endpoints[1];
    assert_eq!((remote.slots, remote.counters), (None, None));
}

#[test]
fn local_services_have_no_node_table_shares() {
    let mut inputs = example();
    inputs.services[0].traffic_policy = TrafficPolicy::Local;
    let state = desired_state(&inputs);
    let ownership = BTreeMap::new();
    let status = view(&inputs, &state, None, &ownership).status();
    let service = &status.vips[0].services[0];
    assert!(
        service
            .nodes
            .iter()
            .all(|node| node.slots.is_none() && node.share.is_none())
    );
}

#[test]
fn without_maps_only_live_values_are_missing() {
    let inputs = example();
    let state = desired_state(&inputs);
    let ownership = ownership();
    let view = view(&inputs, &state, None, &ownership);
    let status = view.status();
    assert!(status.reasons.is_empty() && status.warnings.is_empty());
    assert_eq!(status.vips.len(), 2);
    assert_eq!(status.vips[0].counters, None);
    assert!(matches!(view.flows(10), Err(ProviderError::NotLoaded)));
    let explanation = view
        .explain(
            "10.0.0.100:40000".parse().expect("client"),
            "172.16.200.20:80".parse().expect("vip"),
            Protocol::Tcp,
        )
        .expect("explain works without maps");
    assert_eq!(explanation.cache, CacheLookup::NotChecked);
}

#[test]
fn unreadable_maps_become_warnings() {
    let inputs = example();
    let state = desired_state(&inputs);
    let maps = Maps {
        broken: true,
        ..maps()
    };
    let ownership = BTreeMap::new();
    let status = view(&inputs, &state, Some(&maps), &ownership).status();
    assert_eq!(
        status.warnings,
        [
            "cannot read the counters of VIP 172.16.200.20: BPF map VIP_STATS is missing from the loaded object",
            "cannot read the counters of VIP 172.16.200.53: BPF map VIP_STATS is missing from the loaded object",
        ]
    );
    assert_eq!(status.vips[0].counters, None);
    assert_eq!(status.reasons.len(), reasons::COUNT as usize);
}

#[test]
fn flows_are_decoded_sorted_and_limited() {
    let inputs = example();
    let state = desired_state(&inputs);
    let maps = maps();
    let ownership = BTreeMap::new();
    let view = view(&inputs, &state, Some(&maps), &ownership);
    let all = view.flows(10).expect("flows");
    assert_eq!(all.total, 3);
    let clients: Vec<String> = all
        .flows
        .iter()
        .map(|flow| flow.client.to_string())
        .collect();
    assert_eq!(
        clients,
        ["10.0.0.100:1000", "10.0.0.101:2000", "10.0.0.100:3000"]
    );
    let first = &all.flows[0];
    assert_eq!(first.vip.to_string(), "172.16.200.20:80");
    assert_eq!(first.service.as_deref(), Some("web"));
    assert_eq!(
        (first.node, first.node_name.as_deref(), first.pod),
        (Some(ip("10.0.0.11")), Some("node1"), Some(ip("10.42.0.7")))
    );
    assert_eq!(all.flows[1].pod, None);

    let page = view.flows(1).expect("flows");
    assert_eq!((page.total, page.flows.len()), (3, 1));
}

#[test]
fn explain_uses_the_owner_and_the_flow_cache() {
    let inputs = example();
    let state = desired_state(&inputs);
    let maps = maps();
    let mut ownership = ownership();
    ownership.get_mut(&ip("172.16.200.20")).expect("web").owner = Some("node2".into());
    let view = view(&inputs, &state, Some(&maps), &ownership);
    let explanation = view
        .explain(
            "10.0.0.101:2000".parse().expect("client"),
            "172.16.200.20:80".parse().expect("vip"),
            Protocol::Tcp,
        )
        .expect("explain");
    assert_eq!(
        explanation.receiver.as_ref().map(|node| node.name.as_str()),
        Some("node2")
    );
    assert_eq!(explanation.outcome, Outcome::Forwarded);
    assert_eq!(
        explanation.cache,
        CacheLookup::Hit {
            node: Some(ip("10.0.0.12")),
            pod: None
        }
    );
}

#[test]
fn members_come_from_the_gossip_view() {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::{
        election::Liveness,
        membership::{MemberView, View as Gossip},
    };

    let since = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let member = |liveness, incarnation| MemberView {
        address: "10.0.0.12:7946".parse().expect("address"),
        liveness,
        incarnation,
        generation: None,
        since,
    };
    let gossip = Gossip {
        local: "node1".into(),
        members: BTreeMap::from([
            ("node2".to_owned(), member(Liveness::Suspect, 3)),
            ("node3".to_owned(), member(Liveness::Down, 0)),
        ]),
        settled: true,
    };
    let members = MemberStatus::from_view(&gossip);
    assert_eq!(
        members
            .iter()
            .map(|member| (member.name.as_str(), member.state, member.incarnation))
            .collect::<Vec<_>>(),
        [
            ("node2", MemberState::Suspect, 3),
            ("node3", MemberState::Down, 0)
        ]
    );
    assert_eq!(members[0].last_change_unix_ms, Some(1_700_000_000_123));
}
