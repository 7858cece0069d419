use lb_common::maps::NODE_RING_SIZE;

use super::*;
use crate::{
    config,
    dataplane::{Engine, memory::MemoryDataplane},
    election::Ineligible,
    election::Liveness,
    fixtures::ip,
    model::{BackendState, capacities::Capacities, desired_state},
};

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");

fn parsed(text: &str) -> Cluster {
    Cluster::from_standalone(&config::parse(text).expect("valid"))
}

fn example_config() -> Cluster {
    parsed(EXAMPLE)
}

fn view_of(cluster: &Cluster) -> View {
    View::all_alive(&cluster.inputs.node.name, &cluster.gossip_peers(7947))
}

fn with(mut view: View, node: &str, liveness: Liveness) -> View {
    view.members
        .get_mut(node)
        .expect("member of the view")
        .liveness = liveness;
    view
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

fn slots_of(state: &State, service: &str, address: &str) -> usize {
    state.rings[service]
        .node
        .iter()
        .filter(|entry| *entry == ip(address))
        .count()
}

#[test]
fn the_example_owner_is_the_configured_preference() {
    let config = example_config();
    let plan = plan(&config, &view_of(&config), 1500, None);
    assert!(plan.inputs.down.is_empty());
    assert_eq!(
        plan.owned,
        BTreeSet::from([ip("172.16.200.20"), ip("172.16.200.53")])
    );
    for election in plan.elections.values() {
        assert_eq!(election.owner.as_deref(), Some("node1"));
    }
}

#[test]
fn an_unsettled_view_claims_nothing() {
    let config = example_config();
    let mut view = view_of(&config);
    view.settled = false;
    let plan = plan(&config, &view, 1500, None);
    assert!(plan.owned.is_empty());
    assert_eq!(
        plan.elections[&ip("172.16.200.20")].owner.as_deref(),
        Some("node1"),
        "the election still shows who would own it"
    );
}

#[test]
fn the_preferred_owner_down_hands_its_vips_over() {
    let config = example_config();
    let view = with(view_of(&config), "node1", Liveness::Down);
    let plan = plan(&config, &view, 1500, None);
    assert!(plan.owned.is_empty());
    for election in plan.elections.values() {
        assert_eq!(election.owner.as_deref(), Some("node2"));
    }
    assert_eq!(plan.inputs.down, BTreeSet::from(["node1".to_owned()]));
}

#[test]
fn an_unusable_interface_makes_this_node_ineligible() {
    let config = example_config();
    let plan = plan(&config, &view_of(&config), 1500, Some("eth0 is down"));
    assert!(plan.owned.is_empty());
    let election = &plan.elections[&ip("172.16.200.20")];
    assert_eq!(election.owner.as_deref(), Some("node2"));
}

#[test]
fn a_member_going_down_changes_the_rings_and_coming_back_restores_them() {
    let config = example_config();
    let mut reconciler =
        Reconciler::new(MemoryDataplane::new(capacities())).expect("empty maps read back");
    let all = plan(&config, &view_of(&config), 1500, None);
    let took = reconciler.reconcile(&all.inputs).expect("first apply");
    assert!(took.is_some());
    let before = reconciler.applied().clone();
    assert!(slots_of(&before, "web", "10.0.0.12") > 0);
    assert_eq!(reconciler.reconcile(&all.inputs).expect("no-op"), None);

    let node2_down = with(view_of(&config), "node2", Liveness::Down);
    let degraded = plan(&config, &node2_down, 1500, None);
    reconciler
        .reconcile(&degraded.inputs)
        .expect("apply without node2");
    let state = reconciler.dataplane().read().expect("read back");
    assert_eq!(&state, reconciler.applied());
    assert_eq!(slots_of(&state, "web", "10.0.0.12"), 0);
    assert_eq!(slots_of(&state, "web", "10.0.0.11"), NODE_RING_SIZE);
    assert!(!state.backends.contains_key(&ip("10.0.0.12")));
    assert_eq!(state.backends[&ip("10.0.0.11")], BackendState::Active);

    let suspect = with(view_of(&config), "node2", Liveness::Suspect);
    reconciler
        .reconcile(&plan(&config, &suspect, 1500, None).inputs)
        .expect("back");
    assert_eq!(
        reconciler.applied(),
        &before,
        "a suspect node keeps its share"
    );
}

#[test]
fn an_adopting_agent_changes_nothing_when_nothing_changed() {
    let config = example_config();
    let inputs = plan(&config, &view_of(&config), 1500, None).inputs;
    let mut first = Reconciler::new(MemoryDataplane::new(capacities())).expect("read");
    first.reconcile(&inputs).expect("apply");
    let desired = first.applied().clone();
    let Reconciler { dataplane, .. } = first;
    let store = dataplane.into_store();
    let adopted = Engine::adopt(store, capacities(), &desired).expect("adopt");
    let mut second = Reconciler::new(adopted).expect("read back the maps");
    assert_eq!(second.applied(), &desired);
    assert_eq!(second.reconcile(&inputs).expect("no-op"), None);
}

#[test]
fn an_adopting_agent_with_a_new_configuration_rewrites_only_what_changed() {
    let config = example_config();
    let inputs = plan(&config, &view_of(&config), 1500, None).inputs;
    let mut first = Reconciler::new(MemoryDataplane::new(capacities())).expect("read");
    first.reconcile(&inputs).expect("apply");
    let old_slot = first.dataplane().ring_slot("dns").expect("dns slot");
    let store = first.dataplane.into_store();

    // The new file drops `web` and renames `dns`: its ports keep their ring slot until
    // the new name's tables are written.
    let text = EXAMPLE.replacen("name: dns", "name: dns-renamed", 1);
    let start = text.find("  - name: web").expect("web");
    let end = text.find("  - name: dns-renamed").expect("dns");
    let changed = parsed(&format!("{}{}", &text[..start], &text[end..]));
    let new_inputs = plan(&changed, &view_of(&changed), 1500, None).inputs;
    let desired = desired_state(&new_inputs);
    let adopted = Engine::adopt(store, capacities(), &desired).expect("adopt");
    assert_eq!(adopted.ring_slot("dns-renamed"), Some(old_slot));
    let mut second = Reconciler::new(adopted).expect("read");
    // web's slot is explained by nothing in the new file: a placeholder until removed.
    assert!(
        second
            .applied()
            .rings
            .keys()
            .any(|name| name.starts_with("~adopted-slot-"))
    );
    second.reconcile(&new_inputs).expect("apply the new file");
    let state = second.dataplane().read().expect("read");
    assert_eq!(state, desired);
    assert_eq!(
        state.rings.keys().collect::<Vec<_>>(),
        ["dns-renamed"].iter().collect::<Vec<_>>()
    );
}

#[test]
fn slots_no_desired_service_explains_get_placeholder_names_and_go() {
    let config = example_config();
    let inputs = plan(&config, &view_of(&config), 1500, None).inputs;
    let mut first = Reconciler::new(MemoryDataplane::new(capacities())).expect("read");
    first.reconcile(&inputs).expect("apply");
    let store = first.dataplane.into_store();
    let adopted = Engine::adopt(store, capacities(), &State::default()).expect("adopt");
    let mut second = Reconciler::new(adopted).expect("read");
    let names: Vec<&String> = second.applied().rings.keys().collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|name| name.starts_with("~adopted-slot-")),
        "{names:?}"
    );
    second.reconcile(&inputs).expect("replace the placeholders");
    assert_eq!(
        second.dataplane().read().expect("read"),
        desired_state(&inputs)
    );
}

#[test]
fn owner_changes_are_reported_once() {
    let config = example_config();
    let mut owners = Owners::default();
    let first = plan(&config, &view_of(&config), 1500, None);
    let changes = owners.update(&first.elections);
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|change| change.from.is_none() && change.to.as_deref() == Some("node1"))
    );
    assert!(owners.update(&first.elections).is_empty());
    let failed = plan(
        &config,
        &with(view_of(&config), "node1", Liveness::Down),
        1500,
        None,
    );
    let changes = owners.update(&failed.elections);
    assert_eq!(
        changes,
        [
            OwnerChange {
                vip: ip("172.16.200.20"),
                from: Some("node1".into()),
                to: Some("node2".into()),
            },
            OwnerChange {
                vip: ip("172.16.200.53"),
                from: Some("node1".into()),
                to: Some("node2".into()),
            },
        ]
    );
    let gone = owners.update(&BTreeMap::new());
    assert!(gone.iter().all(|change| change.to.is_none()));
    assert_eq!(gone.len(), 2);
}

#[test]
fn the_file_mtu_overrides_the_interface_mtu() {
    let config = example_config();
    assert_eq!(
        plan(&config, &view_of(&config), 1400, None).inputs.mtu,
        1400
    );
    let jumbo = parsed(&format!("{EXAMPLE}mtu: 9000\n"));
    assert_eq!(plan(&jumbo, &view_of(&jumbo), 1400, None).inputs.mtu, 9000);
}

#[test]
fn the_interface_mac_is_written_and_an_adopting_agent_keeps_it() {
    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
    let config = example_config();
    let inputs = plan(&config, &view_of(&config), 1500, None).inputs;
    let mut first = Reconciler::new(MemoryDataplane::new(capacities()))
        .expect("read")
        .with_mac(MAC);
    first.reconcile(&inputs).expect("apply");
    let held = first.dataplane().read().expect("read back");
    assert_eq!(held.node.mac, MAC);
    let store = first.dataplane.into_store();
    let adopted = Engine::adopt(store, capacities(), &held).expect("adopt");
    let mut second = Reconciler::new(adopted).expect("read").with_mac(MAC);
    assert_eq!(second.reconcile(&inputs).expect("no-op"), None);
    // A different interface (or none) is a change of the node settings alone.
    let changed = [0x02, 0, 0, 0, 0x0a, 0x02];
    let mut second = second.with_mac(changed);
    assert!(second.reconcile(&inputs).expect("apply").is_some());
    let held_now = second.dataplane().read().expect("read back");
    assert_eq!(held_now.node.mac, changed);
    assert_eq!(
        State {
            node: held.node,
            ..held_now
        },
        held
    );
}

#[test]
fn a_handing_over_owner_keeps_serving_but_owns_nothing_until_its_grace_period_ends() {
    let config = example_config();
    let all = desired_state(&plan(&config, &view_of(&config), 1500, None).inputs);
    let view = with(view_of(&config), "node1", Liveness::HandingOver);
    let since = view.members["node1"].since;

    let handing_over = plan(&config, &view.clone().expire_handovers(since), 1500, None);
    assert!(handing_over.owned.is_empty());
    for election in handing_over.elections.values() {
        assert_eq!(election.owner.as_deref(), Some("node2"));
    }
    assert_eq!(
        Ineligible::NotAlive(Liveness::HandingOver).to_string(),
        "not alive in the gossip (handing over)"
    );
    assert!(handing_over.inputs.down.is_empty());
    assert_eq!(
        desired_state(&handing_over.inputs),
        all,
        "its endpoints stay in the rings and backends"
    );

    let late = since + crate::membership::HANDOVER_GRACE;
    let expired = plan(&config, &view.expire_handovers(late), 1500, None);
    assert_eq!(expired.inputs.down, BTreeSet::from(["node1".to_owned()]));
    let state = desired_state(&expired.inputs);
    assert_eq!(slots_of(&state, "web", "10.0.0.11"), 0);
    assert!(!state.backends.contains_key(&ip("10.0.0.11")));
}
