//! The minimal set of changes that turns one [`State`] into another.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::model::{BackendState, NodeConfig, PortKey, PortTarget, Rings, State, Vip};

/// Entries of one table to write (new or changed) and to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta<K, V> {
    pub upsert: BTreeMap<K, V>,
    pub remove: BTreeSet<K>,
}

impl<K, V> Default for Delta<K, V> {
    fn default() -> Self {
        Self {
            upsert: BTreeMap::new(),
            remove: BTreeSet::new(),
        }
    }
}

impl<K, V> Delta<K, V> {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

fn delta<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Delta<K, V> {
    Delta {
        upsert: new
            .iter()
            .filter(|(key, value)| old.get(key) != Some(value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        remove: old
            .keys()
            .filter(|key| !new.contains_key(key))
            .cloned()
            .collect(),
    }
}

fn as_map(set: &BTreeSet<Ipv4Addr>) -> BTreeMap<Ipv4Addr, ()> {
    set.iter().map(|address| (*address, ())).collect()
}

/// What a dataplane must do to go from one state to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub node: Option<NodeConfig>,
    pub peers: Delta<Ipv4Addr, ()>,
    pub backends: Delta<Ipv4Addr, BackendState>,
    pub vips: Delta<Ipv4Addr, Vip>,
    /// Services whose tables changed get their whole rings rewritten.
    pub rings: Delta<String, Rings>,
    pub ports: Delta<PortKey, PortTarget>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.peers.is_empty()
            && self.backends.is_empty()
            && self.vips.is_empty()
            && self.rings.is_empty()
            && self.ports.is_empty()
    }
}

/// Only the entries that differ between `old` and `new`.
pub fn diff(old: &State, new: &State) -> Changes {
    Changes {
        node: (old.node != new.node).then_some(new.node),
        peers: delta(&as_map(&old.peers), &as_map(&new.peers)),
        backends: delta(&old.backends, &new.backends),
        vips: delta(&old.vips, &new.vips),
        rings: delta(&old.rings, &new.rings),
        ports: delta(&old.ports, &new.ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{endpoint, example, ip},
        model::{Inputs, Protocol, desired_state},
    };

    fn changed(edit: impl FnOnce(&mut Inputs)) -> (State, State) {
        let mut inputs = example();
        let before = desired_state(&inputs);
        edit(&mut inputs);
        (before, desired_state(&inputs))
    }

    #[test]
    fn same_state_gives_no_changes() {
        let state = desired_state(&example());
        assert!(diff(&state, &state).is_empty());
        assert!(diff(&State::default(), &State::default()).is_empty());
    }

    #[test]
    fn first_apply_writes_everything() {
        let state = desired_state(&example());
        let changes = diff(&State::default(), &state);
        assert_eq!(changes.node, Some(state.node));
        assert_eq!(changes.ports.upsert, state.ports);
        assert_eq!(changes.rings.upsert, state.rings);
        assert_eq!(changes.backends.upsert, state.backends);
        assert_eq!(changes.vips.upsert, state.vips);
        assert_eq!(changes.peers.upsert.len(), 1);
        assert!(changes.ports.remove.is_empty());
    }

    #[test]
    fn adding_a_local_backend_rewrites_only_that_service() {
        let (before, after) = changed(|inputs| {
            inputs.services[0]
                .endpoints
                .push(endpoint("10.42.0.8", "node1"));
        });
        let changes = diff(&before, &after);
        assert_eq!(changes.rings.upsert.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(
            changes.backends.upsert,
            BTreeMap::from([(ip("10.42.0.8"), BackendState::Active)])
        );
        assert!(changes.rings.remove.is_empty());
        assert!(changes.backends.remove.is_empty());
        assert!(changes.ports.is_empty());
        assert!(changes.vips.is_empty());
        assert!(changes.peers.is_empty());
        assert_eq!(changes.node, None);
    }

    #[test]
    fn removing_the_last_local_backend_removes_it_and_this_node() {
        let (before, after) = changed(|inputs| {
            inputs.services[0].endpoints.remove(0);
        });
        let changes = diff(&before, &after);
        assert_eq!(
            changes.backends.remove,
            BTreeSet::from([ip("10.42.0.7"), ip("10.0.0.11")])
        );
        assert!(changes.backends.upsert.is_empty());
        assert_eq!(changes.rings.upsert.keys().collect::<Vec<_>>(), ["web"]);
    }

    #[test]
    fn changing_a_target_port_rewrites_one_port_entry() {
        let (before, after) = changed(|inputs| {
            inputs.services[0].ports[1].target_port = 9443;
        });
        let changes = diff(&before, &after);
        let key = PortKey {
            vip: ip("172.16.200.20"),
            port: 443,
            protocol: Protocol::Tcp,
        };
        assert_eq!(changes.ports.upsert.keys().collect::<Vec<_>>(), [&key]);
        assert_eq!(changes.ports.upsert[&key].target_port, 9443);
        assert!(changes.ports.remove.is_empty());
        assert!(changes.rings.is_empty(), "rings do not depend on ports");
    }

    #[test]
    fn renumbering_a_port_removes_the_old_key() {
        let (before, after) = changed(|inputs| {
            inputs.services[0].ports[0].port = 8000;
        });
        let changes = diff(&before, &after);
        assert_eq!(changes.ports.upsert.len(), 1);
        assert_eq!(
            changes
                .ports
                .remove
                .iter()
                .map(|key| key.port)
                .collect::<Vec<_>>(),
            [80]
        );
    }

    #[test]
    fn removing_a_vip_removes_its_ports_rings_and_backends() {
        let (before, after) = changed(|inputs| {
            inputs.services.retain(|service| service.name != "dns");
        });
        let changes = diff(&before, &after);
        assert_eq!(changes.vips.remove, BTreeSet::from([ip("172.16.200.53")]));
        assert_eq!(changes.ports.remove.len(), 2);
        assert_eq!(changes.rings.remove, BTreeSet::from(["dns".to_string()]));
        // node2 still serves web.
        assert!(changes.backends.is_empty());
        assert!(changes.ports.upsert.is_empty());
        assert!(changes.rings.upsert.is_empty());
    }

    #[test]
    fn mtu_change_touches_only_the_node_config() {
        let (before, after) = changed(|inputs| inputs.mtu = 9000);
        let changes = diff(&before, &after);
        assert_eq!(changes.node.map(|node| node.mtu), Some(9000));
        let without_node = Changes {
            node: None,
            ..changes
        };
        assert!(without_node.is_empty());
    }
}
