use super::*;
use crate::fixtures::{example, ip};

fn alive(name: &str) -> Candidate {
    Candidate {
        name: name.into(),
        liveness: Liveness::Alive,
        labels: BTreeMap::new(),
        interface_problem: None,
        ready: true,
        announce_interface: Some("eth0".into()),
    }
}

fn nodes(count: usize) -> Vec<Candidate> {
    (1..=count).map(|n| alive(&format!("node{n}"))).collect()
}

fn demand(vip: Ipv4Addr) -> Demand {
    Demand {
        vip,
        preferred: None,
        local_services: Vec::new(),
        announcers: None,
        interfaces: None,
    }
}

fn vips(count: u32) -> Vec<Demand> {
    (0..count)
        .map(|n| demand(Ipv4Addr::from(u32::from(ip("192.168.8.0")) + n)))
        .collect()
}

fn owners(candidates: &[Candidate], demands: &[Demand]) -> BTreeMap<Ipv4Addr, Option<String>> {
    elect_all(candidates, demands)
        .into_iter()
        .map(|(vip, election)| (vip, election.owner))
        .collect()
}

#[test]
fn removing_or_downing_a_non_owner_never_moves_a_vip() {
    let demands = vips(200);
    let all = nodes(6);
    let before = owners(&all, &demands);
    for gone in 0..all.len() {
        let name = &all[gone].name;
        let mut fewer = all.clone();
        fewer.remove(gone);
        let mut downed = all.clone();
        downed[gone].liveness = Liveness::Down;
        for after in [owners(&fewer, &demands), owners(&downed, &demands)] {
            for (vip, owner) in &before {
                if owner.as_ref() != Some(name) {
                    assert_eq!(&after[vip], owner, "{vip} moved when {name} went away");
                } else {
                    assert_ne!(after[vip].as_ref(), Some(name));
                    assert!(after[vip].is_some());
                }
            }
        }
    }
}

#[test]
fn vips_spread_over_nodes() {
    let demands = vips(400);
    let elections = elect_all(&nodes(4), &demands);
    for node in 1..=4 {
        let count = owned_by(&elections, &format!("node{node}")).len();
        // 100 expected each; a binomial(400, 1/4) stays well inside this band.
        assert!((60..=140).contains(&count), "node{node} owns {count}");
    }
}

#[test]
fn every_agent_elects_the_same_owner_whatever_the_order() {
    let demands = vips(50);
    let mut reversed = nodes(5);
    reversed.reverse();
    assert_eq!(owners(&nodes(5), &demands), owners(&reversed, &demands));
}

#[test]
fn suspect_nodes_stay_eligible_and_down_ones_do_not() {
    let vip = demand(ip("172.16.200.20"));
    let winner = elect(&nodes(3), &vip).owner.expect("owner");
    let mut candidates = nodes(3);
    let index = candidates
        .iter()
        .position(|c| c.name == winner)
        .expect("winner");
    candidates[index].liveness = Liveness::Suspect;
    assert_eq!(elect(&candidates, &vip).owner.as_ref(), Some(&winner));
    candidates[index].liveness = Liveness::Down;
    let election = elect(&candidates, &vip);
    assert_ne!(election.owner.as_ref(), Some(&winner));
    let verdict = election
        .verdicts
        .iter()
        .find(|verdict| verdict.node == winner)
        .expect("verdict");
    assert_eq!(
        verdict.ineligible,
        Some(Ineligible::NotAlive(Liveness::Down))
    );
}

#[test]
fn each_reason_makes_a_node_ineligible() {
    let vip = ip("172.16.200.20");
    let mut candidates = nodes(4);
    candidates[0].interface_problem = Some("eth0 is down".into());
    candidates[1].liveness = Liveness::Down;
    candidates[2]
        .labels
        .insert(EXCLUDE_LABEL.into(), String::new());
    let local = Demand {
        vip,
        preferred: None,
        local_services: vec![("web".into(), BTreeSet::from(["node4".to_owned()]))],
        announcers: None,
        interfaces: None,
    };
    let election = elect(&candidates, &local);
    assert_eq!(election.owner.as_deref(), Some("node4"));
    let reason = |node: &str| {
        election
            .verdicts
            .iter()
            .find(|verdict| verdict.node == node)
            .and_then(|verdict| verdict.ineligible.clone())
    };
    assert_eq!(
        reason("node1"),
        Some(Ineligible::InterfaceUnusable("eth0 is down".into()))
    );
    assert_eq!(reason("node2"), Some(Ineligible::NotAlive(Liveness::Down)));
    assert_eq!(reason("node3"), Some(Ineligible::Excluded));
    assert_eq!(reason("node4"), None);
    assert!(
        reason("node1")
            .expect("reason")
            .to_string()
            .contains("eth0 is down")
    );
    assert!(
        reason("node3")
            .expect("reason")
            .to_string()
            .contains(EXCLUDE_LABEL)
    );
    // Without node4's endpoint, nobody can serve the Local service.
    let nobody = Demand {
        local_services: vec![("web".into(), BTreeSet::new())],
        ..local
    };
    let election = elect(&candidates, &nobody);
    assert_eq!(election.owner, None);
    assert_eq!(
        election
            .verdicts
            .iter()
            .find(|v| v.node == "node4")
            .and_then(|v| v.ineligible.clone()),
        Some(Ineligible::NoReadyLocalEndpoint {
            service: "web".into()
        })
    );
}

#[test]
fn the_preferred_owner_wins_while_eligible() {
    let vip = ip("172.16.200.53");
    let natural = elect(&nodes(3), &demand(vip)).owner.expect("owner");
    let other = if natural == "node1" { "node2" } else { "node1" };
    let preferring = Demand {
        preferred: Some(other.to_owned()),
        ..demand(vip)
    };
    assert_eq!(elect(&nodes(3), &preferring).owner.as_deref(), Some(other));
    let mut candidates = nodes(3);
    let index = candidates
        .iter()
        .position(|c| c.name == other)
        .expect("node");
    candidates[index].liveness = Liveness::Down;
    assert_eq!(
        elect(&candidates, &preferring).owner,
        Some(natural),
        "falls back to the hash"
    );
}

#[test]
fn demands_come_per_vip_with_local_services_and_preferences() {
    let mut inputs = example();
    inputs.services[1].traffic_policy = TrafficPolicy::Local;
    inputs.services[1]
        .endpoints
        .push(crate::fixtures::endpoint("10.42.0.9", "node1"));
    inputs.services[1].endpoints[1].ready = false;
    let mut shared = inputs.services[0].clone();
    shared.name = "web-admin".into();
    inputs.services.push(shared);
    let owners = BTreeMap::from([(ip("172.16.200.20"), "node2")]);
    let demands = Demand::from_inputs(&inputs, &owners);
    assert_eq!(
        demands,
        [
            Demand {
                vip: ip("172.16.200.20"),
                preferred: Some("node2".into()),
                local_services: Vec::new(),
                announcers: None,
                interfaces: None,
            },
            Demand {
                vip: ip("172.16.200.53"),
                preferred: None,
                local_services: vec![("dns".into(), BTreeSet::from(["node2".to_owned()]))],
                announcers: None,
                interfaces: None,
            },
        ]
    );
    let elections = elect_all(&nodes(2), &demands);
    assert_eq!(
        owned_by(&elections, "node2"),
        BTreeSet::from([ip("172.16.200.20"), ip("172.16.200.53")])
    );
}

#[test]
fn the_pool_node_selector_limits_the_owners() {
    let vip = ip("192.168.8.240");
    let selected = Demand {
        announcers: Some(Announcers {
            pool: "lan".into(),
            nodes: BTreeSet::from(["node3".to_owned()]),
        }),
        ..demand(vip)
    };
    let election = elect(&nodes(3), &selected);
    assert_eq!(election.owner.as_deref(), Some("node3"));
    let node1 = election.verdicts.iter().find(|v| v.node == "node1");
    let reason = node1
        .and_then(|v| v.ineligible.clone())
        .expect("ineligible");
    assert_eq!(reason, Ineligible::NotSelected { pool: "lan".into() });
    assert!(reason.to_string().contains("pool lan"), "{reason}");
    let nobody = Demand {
        announcers: Some(Announcers {
            pool: "lan".into(),
            nodes: BTreeSet::new(),
        }),
        ..demand(vip)
    };
    assert_eq!(elect(&nodes(3), &nobody).owner, None);
}

#[test]
fn the_pool_interfaces_limit_the_owners_to_nodes_announcing_on_them() {
    let vip = ip("192.168.8.241");
    let mut candidates = nodes(3);
    candidates[1].announce_interface = Some("eth1".into());
    candidates[2].announce_interface = None;
    let on = |interfaces: &[&str]| Demand {
        interfaces: Some(AnnounceInterfaces {
            pool: "lan".into(),
            interfaces: interfaces.iter().map(|name| (*name).to_owned()).collect(),
        }),
        ..demand(vip)
    };
    let election = elect(&candidates, &on(&["eth1", "br0"]));
    assert_eq!(election.owner.as_deref(), Some("node2"));
    let reason = |election: &Election, node: &str| {
        election
            .verdicts
            .iter()
            .find(|verdict| verdict.node == node)
            .and_then(|verdict| verdict.ineligible.clone())
            .expect("ineligible")
    };
    let other = reason(&election, "node1");
    assert_eq!(
        other,
        Ineligible::NoAnnounceInterface {
            pool: "lan".into(),
            interfaces: BTreeSet::from(["br0".to_owned(), "eth1".to_owned()]),
            node_interface: Some("eth0".into()),
        }
    );
    let text = other.to_string();
    assert!(
        text.contains("[br0, eth1]") && text.contains("announces on eth0"),
        "{text}"
    );
    let unknown = reason(&election, "node3").to_string();
    assert!(unknown.contains(ANNOUNCE_INTERFACE_ANNOTATION), "{unknown}");
    // Nobody announces on eth2: nobody owns the VIP.
    assert_eq!(elect(&candidates, &on(&["eth2"])).owner, None);
    // Other checks come first: a down node says so, not its interface.
    candidates[0].liveness = Liveness::Down;
    let election = elect(&candidates, &on(&["eth1"]));
    assert_eq!(
        reason(&election, "node1"),
        Ineligible::NotAlive(Liveness::Down)
    );
}

#[test]
fn not_ready_nodes_own_only_when_no_ready_node_can() {
    let vip = demand(ip("172.16.200.20"));
    let natural = elect(&nodes(3), &vip).owner.expect("owner");
    let mut candidates = nodes(3);
    for candidate in &mut candidates {
        candidate.ready = candidate.name != natural;
    }
    let election = elect(&candidates, &vip);
    assert_ne!(election.owner.as_ref(), Some(&natural));
    assert!(election.owner.is_some());
    for candidate in &mut candidates {
        candidate.ready = false;
    }
    // Every node NotReady (as right after an API-server outage): the hash decides.
    assert_eq!(elect(&candidates, &vip).owner, Some(natural.clone()));
    candidates[0].liveness = Liveness::Down;
    candidates[1].liveness = Liveness::Down;
    candidates[2].liveness = Liveness::Down;
    assert_eq!(elect(&candidates, &vip).owner, None, "down is not soft");
}
