//! What each AddressPool's status should say: its counts and its Ready, Overlapping and
//! Invalid conditions, from the pools as written and the allocator's holdings. Pure.

use std::{collections::BTreeMap, sync::Arc};

use kube::ResourceExt as _;

use super::{
    address_pool::{AddressPool, CONDITION_INVALID, CONDITION_OVERLAPPING, CONDITION_READY},
    conditions::Wanted,
};
use crate::ipam::{Allocator, Pool, PoolError, overlaps};

/// One pool's status, before transition times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReport {
    pub assigned: u64,
    pub available: u64,
    pub conditions: Vec<Wanted>,
}

/// The valid pools, and why each invalid one is.
pub fn compile(resources: &[Arc<AddressPool>]) -> (Vec<Pool>, BTreeMap<String, PoolError>) {
    let mut valid = Vec::new();
    let mut invalid = BTreeMap::new();
    for resource in resources {
        match Pool::from_resource(resource) {
            Ok(pool) => valid.push(pool),
            Err(error) => {
                invalid.insert(resource.name_any(), error);
            }
        }
    }
    (valid, invalid)
}

/// Every pool's report, by name.
pub fn reports(
    resources: &[Arc<AddressPool>],
    allocator: &Allocator,
) -> BTreeMap<String, PoolReport> {
    let (valid, invalid) = compile(resources);
    let usage = allocator.usage();
    let overlapping = overlaps(&valid);
    let mut reports: BTreeMap<String, PoolReport> = invalid
        .into_iter()
        .map(|(name, error)| (name, invalid_report(&error)))
        .collect();
    for pool in &valid {
        let counts = usage.get(&pool.name).copied().unwrap_or_default();
        let total = pool.addresses.len();
        let ready = if counts.available == 0 {
            Wanted::new(
                CONDITION_READY,
                true,
                "Exhausted",
                format!("all {total} addresses are assigned"),
            )
        } else {
            Wanted::new(
                CONDITION_READY,
                true,
                "Assigning",
                format!("assigning from {total} addresses"),
            )
        };
        let overlap = match overlapping.get(&pool.name) {
            Some(list) => {
                let messages: Vec<String> = list.iter().map(|overlap| overlap.message()).collect();
                Wanted::new(
                    CONDITION_OVERLAPPING,
                    true,
                    "Overlapping",
                    messages.join("; "),
                )
            }
            None => Wanted::new(CONDITION_OVERLAPPING, false, "NoOverlap", ""),
        };
        let report = PoolReport {
            assigned: counts.assigned,
            available: counts.available,
            conditions: vec![
                ready,
                overlap,
                Wanted::new(CONDITION_INVALID, false, "Valid", ""),
            ],
        };
        reports.insert(pool.name.clone(), report);
    }
    reports
}

fn invalid_report(error: &PoolError) -> PoolReport {
    let message = error.to_string();
    PoolReport {
        assigned: 0,
        available: 0,
        conditions: vec![
            Wanted::new(CONDITION_READY, false, error.reason(), message.clone()),
            Wanted::new(CONDITION_OVERLAPPING, false, "Invalid", ""),
            Wanted::new(CONDITION_INVALID, true, error.reason(), message),
        ],
    }
}
