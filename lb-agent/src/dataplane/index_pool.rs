//! Free indices of the agent's array maps (ring, statistics, backend and service
//! slots).

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::DataplaneError;

/// Free indices of an array map, lowest first.
#[derive(Debug)]
pub(super) struct IndexPool {
    free: BTreeSet<u32>,
}

impl IndexPool {
    pub(super) fn new(size: u32) -> Self {
        Self {
            free: (0..size).collect(),
        }
    }

    pub(super) fn take(&mut self) -> Option<u32> {
        self.free.pop_first()
    }

    pub(super) fn put(&mut self, index: u32) {
        self.free.insert(index);
    }

    /// Marks `index` used; false if it is out of range or already used.
    pub(super) fn claim(&mut self, index: u32) -> bool {
        self.free.remove(&index)
    }

    /// Claims the `index` that `owner`'s entry in `map` uses (pinned maps adopted): an
    /// index out of range or used twice means the maps hold what this agent never wrote.
    pub(super) fn claim_found(
        &mut self,
        index: u32,
        map: &'static str,
        owner: Ipv4Addr,
        what: &str,
    ) -> Result<(), DataplaneError> {
        if self.claim(index) {
            return Ok(());
        }
        Err(DataplaneError::Foreign {
            map,
            detail: format!("{owner} uses {what} {index}, out of range or shared"),
        })
    }
}
