//! The IPAM's share of the metrics: what it did (allocations, refusals, releases, by
//! pool) and how full each pool is. Only the agent holding the IPAM Lease counts them;
//! the pool gauges go away when it hands the Lease over, so a dashboard or an alert
//! summing over the nodes never adds a former holder's stale view to the current one.

use std::{collections::BTreeMap, fmt, sync::MutexGuard};

use prometheus_client::encoding::DescriptorEncoder;

use super::{Kind, Labels, PoisonError, Scrape, Telemetry, family};

/// What the IPAM did, counted since the agent started. The pool is `""` where none
/// applies (a request naming no pool, an address no valid pool lists any more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamCounts {
    /// Addresses given to Services, by pool.
    pub allocations: BTreeMap<String, u64>,
    /// Requests refused, by (requested pool, reason): each refusal counted once, when it
    /// is reported, not on every retry.
    pub failures: BTreeMap<(String, String), u64>,
    /// Addresses taken back from Services, by pool.
    pub releases: BTreeMap<String, u64>,
    /// Every valid pool's addresses as the IPAM last published them; empty while this
    /// agent does not hold the Lease.
    pub pools: BTreeMap<String, PoolAddresses>,
}

/// One pool's addresses: held by a Service (ours or another class's) and still free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolAddresses {
    pub assigned: u64,
    pub available: u64,
}

impl Telemetry {
    fn ipam(&self) -> MutexGuard<'_, IpamCounts> {
        self.ipam.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The IPAM gave a Service an address from `pool`.
    pub fn ipam_allocated(&self, pool: Option<&str>) {
        *self
            .ipam()
            .allocations
            .entry(pool.unwrap_or_default().to_owned())
            .or_default() += 1;
    }

    /// The IPAM refused a Service's request (for `pool`, if it named one) for `reason`.
    pub fn ipam_failed(&self, pool: Option<&str>, reason: &str) {
        let key = (pool.unwrap_or_default().to_owned(), reason.to_owned());
        *self.ipam().failures.entry(key).or_default() += 1;
    }

    /// The IPAM took an address of `pool` back from a Service.
    pub fn ipam_released(&self, pool: Option<&str>) {
        *self
            .ipam()
            .releases
            .entry(pool.unwrap_or_default().to_owned())
            .or_default() += 1;
    }

    /// The valid pools' addresses now, replacing the last report (a pool left out is
    /// gone or invalid); an empty map once this agent stops running the IPAM.
    pub fn ipam_pools(&self, pools: BTreeMap<String, PoolAddresses>) {
        self.ipam().pools = pools;
    }

    pub fn ipam_counts(&self) -> IpamCounts {
        self.ipam().clone()
    }
}

fn pool_label(pool: &str) -> Labels {
    vec![("pool", pool.to_owned())]
}

impl Scrape {
    pub(super) fn encode_ipam(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let ipam = &self.ipam;
        family(
            encoder,
            "ipam_allocations",
            "Addresses the IPAM gave to Services, by pool",
            Kind::Counter,
            ipam.allocations
                .iter()
                .map(|(pool, count)| (pool_label(pool), *count)),
        )?;
        family(
            encoder,
            "ipam_allocation_failures",
            "Service requests the IPAM refused, by requested pool (empty: none named) and reason",
            Kind::Counter,
            ipam.failures.iter().map(|((pool, reason), count)| {
                let mut labels = pool_label(pool);
                labels.push(("reason", reason.clone()));
                (labels, *count)
            }),
        )?;
        family(
            encoder,
            "ipam_releases",
            "Addresses the IPAM took back from Services, by pool",
            Kind::Counter,
            ipam.releases
                .iter()
                .map(|(pool, count)| (pool_label(pool), *count)),
        )?;
        family(
            encoder,
            "ipam_pool_addresses",
            "Addresses of each valid AddressPool, assigned or available (only on the agent running the IPAM)",
            Kind::Gauge,
            ipam.pools.iter().flat_map(|(pool, addresses)| {
                [
                    ("assigned", addresses.assigned),
                    ("available", addresses.available),
                ]
                .map(|(state, count)| {
                    let mut labels = pool_label(pool);
                    labels.push(("state", state.to_owned()));
                    (labels, count)
                })
            }),
        )
    }
}
