//! Which nodes announce a pool, and on which interfaces: MetalLB spreads this over every
//! `L2Advertisement` that selects the pool; an `AddressPool` holds it in one
//! `announcement`.
//!
//! MetalLB's rule is a union: a node announces the pool when any advertisement that
//! selects the pool selects the node (an advertisement without `nodeSelectors` selects
//! every node; one with several ORs them), on the interfaces that advertisement lists
//! (none listed: every interface). One node selector can express the union exactly when
//! the advertisements agree on one selector, or one of them takes every node; otherwise
//! the conversion keeps the first advertisement's selector and says so.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt as _};

use super::{
    MigrateError,
    metallb::{L2AdvertisementSpec, Object},
};

/// An `L2Advertisement` with its spec.
pub struct Advertisement<'a> {
    pub object: &'a Object,
    pub spec: &'a L2AdvertisementSpec,
}

impl Advertisement<'_> {
    /// Whether this advertisement announces `pool`.
    pub fn selects(&self, pool: &Object) -> Result<bool, MigrateError> {
        let spec = self.spec;
        if spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty() {
            return Ok(true);
        }
        if spec.ip_address_pools.iter().any(|name| name == pool.name()) {
            return Ok(true);
        }
        let labels = pool.labels();
        for selector in &spec.ip_address_pool_selectors {
            let selector =
                Selector::try_from(selector.clone()).map_err(|error| MigrateError::Invalid {
                    origin: self.object.origin.clone(),
                    message: format!("ipAddressPoolSelectors: {}", error.0),
                })?;
            if selector.matches(&labels) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The merged announcement of one pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    /// `None`: every node.
    pub node_selector: Option<LabelSelector>,
    /// Empty: every interface.
    pub interfaces: Vec<String>,
    /// What the converted pool cannot express, for people.
    pub warnings: Vec<String>,
}

/// The announcement of `pool`, from the advertisements that select it (in name order).
pub fn merge(pool: &str, selecting: &[&Advertisement<'_>]) -> Merged {
    let mut merged = Merged::default();
    let every_node = selecting
        .iter()
        .any(|advertisement| advertisement.spec.node_selectors.is_empty());
    let mut distinct: Vec<(&LabelSelector, String)> = Vec::new();
    for advertisement in selecting {
        for selector in &advertisement.spec.node_selectors {
            if !distinct.iter().any(|(known, _)| *known == selector) {
                distinct.push((selector, advertisement.object.qualified_name()));
            }
        }
    }
    if !every_node {
        merged.node_selector = distinct.first().map(|(selector, _)| (*selector).clone());
    }
    if !every_node && distinct.len() > 1 {
        let sources: Vec<&str> = distinct.iter().map(|(_, name)| name.as_str()).collect();
        merged.warnings.push(format!(
            "pool {pool}: MetalLB announced it from the nodes matching any of {} node selectors \
             (in {}); an AddressPool has one node selector, so this one keeps the first (from {}). \
             Nodes that only the others select no longer announce {pool}: give those nodes a \
             common label and select it if they must.",
            distinct.len(),
            sources.join(", "),
            sources[0]
        ));
    }
    if selecting
        .iter()
        .all(|advertisement| !advertisement.spec.interfaces.is_empty())
    {
        let mut interfaces: Vec<String> = selecting
            .iter()
            .flat_map(|advertisement| advertisement.spec.interfaces.iter().cloned())
            .collect();
        interfaces.sort();
        interfaces.dedup();
        merged.interfaces = interfaces;
    }
    merged
}
