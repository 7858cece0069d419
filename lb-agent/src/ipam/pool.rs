//! A pool as the allocator uses it: an `AddressPool` checked and compiled once
//! (`Pool::from_resource`, in [`crate::apis::address_pool`]), plus the
//! questions asked of it (may this Service use it, in which order, which pools overlap).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    addresses::{AddressSet, InvalidAddresses},
    selector::Selector,
};

/// Label keys to values, as on Kubernetes objects.
pub type Labels = BTreeMap<String, String>;

/// A valid pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub addresses: AddressSet,
    pub auto_assign: bool,
    /// Lower first; `None` after every number.
    pub priority: Option<i32>,
    /// Empty: any namespace.
    pub namespaces: BTreeSet<String>,
    pub namespace_selector: Option<Selector>,
    pub service_selector: Option<Selector>,
}

/// Why an `AddressPool` cannot be used; the pool's `Invalid` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("spec.addresses: {0}")]
    Addresses(#[from] InvalidAddresses),
    #[error("{field}: {problem}")]
    Selector {
        field: &'static str,
        problem: String,
    },
}

impl PoolError {
    /// The condition's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Addresses(_) => "InvalidAddresses",
            Self::Selector { .. } => "InvalidSelector",
        }
    }
}

/// Why a Service may not use a pool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("pool `{pool}` serves only namespaces {allowed}")]
    Namespace { pool: String, allowed: String },
    #[error("namespace `{namespace}` does not match the namespaceSelector of pool `{pool}`")]
    NamespaceSelector { pool: String, namespace: String },
    #[error("the Service's labels do not match the serviceSelector of pool `{pool}`")]
    ServiceSelector { pool: String },
}

impl Pool {
    /// Whether the pool is dedicated to some Services: such pools are tried before
    /// general ones of the same priority, as MetalLB does.
    pub fn is_restricted(&self) -> bool {
        !self.namespaces.is_empty()
            || self.namespace_selector.is_some()
            || self.service_selector.is_some()
    }

    /// Whether a Service in `namespace` (whose labels are `namespace_labels`) with
    /// `service_labels` may use the pool.
    pub fn admits(
        &self,
        namespace: &str,
        namespace_labels: &Labels,
        service_labels: &Labels,
    ) -> Result<(), Refusal> {
        if !self.namespaces.is_empty() && !self.namespaces.contains(namespace) {
            let allowed: Vec<&str> = self.namespaces.iter().map(String::as_str).collect();
            return Err(Refusal::Namespace {
                pool: self.name.clone(),
                allowed: allowed.join(", "),
            });
        }
        let refuses = |selector: &Option<Selector>, labels: &Labels| {
            selector
                .as_ref()
                .is_some_and(|selector| !selector.matches(labels))
        };
        if refuses(&self.namespace_selector, namespace_labels) {
            return Err(Refusal::NamespaceSelector {
                pool: self.name.clone(),
                namespace: namespace.to_owned(),
            });
        }
        if refuses(&self.service_selector, service_labels) {
            return Err(Refusal::ServiceSelector {
                pool: self.name.clone(),
            });
        }
        Ok(())
    }

    /// The order in which pools are tried for a Service that names none: priority (none
    /// last), then dedicated before general, then name.
    pub fn preference(&self, other: &Pool) -> Ordering {
        let rank = |pool: &Pool| {
            (
                pool.priority.is_none(),
                pool.priority,
                !pool.is_restricted(),
            )
        };
        rank(self)
            .cmp(&rank(other))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// Another pool that shares addresses with a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub other: String,
    /// The lowest shared address.
    pub first: Ipv4Addr,
}

impl Overlap {
    /// The `Overlapping` condition's message for one overlap.
    pub fn message(&self) -> String {
        format!(
            "shares addresses with pool `{}`, from {} on",
            self.other, self.first
        )
    }
}

/// For each pool that overlaps others, those others (by name). Overlapping pools still
/// work: the allocator tracks addresses, not pools, so an address is never given twice.
pub fn overlaps(pools: &[Pool]) -> BTreeMap<String, Vec<Overlap>> {
    let mut found: BTreeMap<String, Vec<Overlap>> = BTreeMap::new();
    for (index, pool) in pools.iter().enumerate() {
        for other in &pools[index + 1..] {
            let Some(first) = pool.addresses.first_overlap(&other.addresses) else {
                continue;
            };
            for (this, that) in [(pool, other), (other, pool)] {
                found.entry(this.name.clone()).or_default().push(Overlap {
                    other: that.name.clone(),
                    first,
                });
            }
        }
    }
    for list in found.values_mut() {
        list.sort_by(|a, b| a.other.cmp(&b.other));
    }
    found
}

#[cfg(test)]
mod tests;
