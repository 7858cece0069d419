//! Which address each Service of ours holds, and the choice of new ones.
//!
//! The allocator tracks addresses, not pools: an address is held by one Service, or
//! shared by Services with the same sharing key on different ports, and never handed
//! out twice whatever the pools say (overlapping, edited, deleted). It is rebuilt from
//! the Services' statuses after a restart, so the statuses are the only state.
//!
//! Rules, MetalLB's unless noted:
//! - A requested address must lie in a pool the Service may use; `autoAssign` does not
//!   matter then, nor for a Service that names its pool.
//! - Otherwise the pools with `autoAssign` that admit the Service are tried in
//!   [`Pool::preference`] order; within a pool, an address already shared under the
//!   Service's sharing key comes first (so two Services with one key meet on one
//!   address without naming it; MetalLB would take the lowest compatible address),
//!   then the lowest free one.
//! - Sharing needs the same sharing key, no common port/protocol, and the same
//!   [`Locality`].
//! - A Service keeps its address as long as its request does not name another address
//!   or pool (xdplb's rule): a pool edited, deleted or made invalid, or a namespace
//!   relabelled, never takes an address away, and a request that cannot be met leaves
//!   the current address in place. Addresses held outside every pool report no pool.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    pool::{Labels, Pool, Refusal},
    request::{Locality, PortSpec, Request, ServiceKey},
};

/// An address held by a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// The pool the address belongs to; `None` once no valid pool lists it any more.
    pub pool: Option<String>,
}

/// Why a Service gets no (new) address; its event and condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("address pool `{pool}` does not exist or is invalid")]
    UnknownPool { pool: String },
    #[error("{0}")]
    PoolNotAllowed(Refusal),
    #[error(
        "no address pool with autoAssign may serve this Service{}",
        refusal_list(refusals)
    )]
    NoMatchingPool { refusals: Vec<Refusal> },
    #[error("no address left in {}", pool_list(pools))]
    PoolExhausted { pools: Vec<String> },
    #[error("{ip} is not in any address pool")]
    NotInAnyPool { ip: Ipv4Addr },
    #[error("{ip} is not in the requested pool `{pool}`")]
    NotInRequestedPool { ip: Ipv4Addr, pool: String },
    #[error("{ip} is already used by {}{}", service_list(holders), in_use_hint(*other_class))]
    AddressInUse {
        ip: Ipv4Addr,
        holders: Vec<ServiceKey>,
        /// Held by a Service another load balancer serves.
        other_class: bool,
    },
    #[error(
        "{ip} is shared under sharing key `{existing}` by {}, not `{requested}`",
        service_list(holders)
    )]
    SharingKeyMismatch {
        ip: Ipv4Addr,
        requested: String,
        existing: String,
        holders: Vec<ServiceKey>,
    },
    #[error("{ip}: port {port} is already used by {holder}")]
    PortConflict {
        ip: Ipv4Addr,
        port: PortSpec,
        holder: ServiceKey,
    },
    #[error(
        "{ip}: Services sharing an address need the same externalTrafficPolicy, and with Local the same selector, as {}",
        service_list(holders)
    )]
    TrafficPolicyMismatch {
        ip: Ipv4Addr,
        holders: Vec<ServiceKey>,
    },
}

impl AllocationError {
    /// The event's and condition's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownPool { .. } => "UnknownPool",
            Self::PoolNotAllowed(_) => "PoolNotAllowed",
            Self::NoMatchingPool { .. } => "NoMatchingPool",
            Self::PoolExhausted { .. } => "PoolExhausted",
            Self::NotInAnyPool { .. } => "NotInAnyPool",
            Self::NotInRequestedPool { .. } => "NotInRequestedPool",
            Self::AddressInUse { .. } => "AddressInUse",
            Self::SharingKeyMismatch { .. } => "SharingKeyMismatch",
            Self::PortConflict { .. } => "PortConflict",
            Self::TrafficPolicyMismatch { .. } => "TrafficPolicyMismatch",
        }
    }
}

fn service_list(services: &[ServiceKey]) -> String {
    let names: Vec<String> = services.iter().map(ToString::to_string).collect();
    names.join(", ")
}

fn pool_list(pools: &[String]) -> String {
    let names: Vec<String> = pools.iter().map(|pool| format!("`{pool}`")).collect();
    format!("pool {}", names.join(", "))
}

fn refusal_list(refusals: &[Refusal]) -> String {
    let reasons: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    }
}

fn in_use_hint(other_class: bool) -> &'static str {
    if other_class {
        ", a Service of another load balancer class"
    } else {
        "; Services share an address only with the same sharing key (xdplb.io/sharing-key) on different ports"
    }
}

/// A Service whose status shows addresses, as a rebuild reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A Service of ours: what the first address its status shows commits it to (its
    /// request read leniently), and that address.
    Ours { holding: Request, address: Ipv4Addr },
    /// A Service of another class: every address its status shows.
    Foreign {
        service: ServiceKey,
        addresses: Vec<Ipv4Addr>,
    },
}

/// A Service whose status names an address the rebuild could not give it, because an
/// older Service (or one of another class) holds it incompatibly. The Service needs a
/// new address; the holder keeps its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildConflict {
    pub service: ServiceKey,
    pub ip: Ipv4Addr,
    pub error: AllocationError,
}

/// A pool's counts for its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Addresses of the pool held by any Service, ours or another class's.
    pub assigned: u64,
    pub available: u64,
}

/// Who holds one address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holding {
    pool: Option<String>,
    sharing_key: Option<String>,
    locality: Locality,
    users: BTreeMap<ServiceKey, BTreeSet<PortSpec>>,
}

#[derive(Clone, Debug, Default)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    services: BTreeMap<ServiceKey, Ipv4Addr>,
    addresses: BTreeMap<Ipv4Addr, Holding>,
    /// Addresses Services of other classes hold: never given to ours.
    foreign: BTreeMap<ServiceKey, BTreeSet<Ipv4Addr>>,
}

impl Allocator {
    /// An allocator that holds nothing yet; see [`Allocator::rebuild`].
    pub fn new(pools: impl IntoIterator<Item = Pool>) -> Self {
        Self {
            pools: by_name(pools),
            ..Self::default()
        }
    }

    /// Replaces the valid pools. Every held address stays held; each is attributed to
    /// its pool if that still lists it, else to the first pool by name that does.
    pub fn set_pools(&mut self, pools: impl IntoIterator<Item = Pool>) {
        self.pools = by_name(pools);
        let pools = &self.pools;
        for (&ip, holding) in &mut self.addresses {
            let still = holding
                .pool
                .as_ref()
                .and_then(|name| pools.get(name))
                .is_some_and(|pool| pool.addresses.contains(ip));
            if !still {
                holding.pool = containing(pools, ip).map(|pool| pool.name.clone());
            }
        }
    }

    /// Forgets everything and records the addresses `holders` hold: those of other
    /// classes first, since their statuses are not ours to change, then ours in the
    /// order given (oldest first: older Services win conflicts).
    pub fn rebuild(&mut self, holders: Vec<Holder>) -> Vec<RebuildConflict> {
        self.services.clear();
        self.addresses.clear();
        self.foreign.clear();
        let mut ours = Vec::new();
        for holder in holders {
            match holder {
                Holder::Ours { holding, address } => ours.push((holding, address)),
                Holder::Foreign { service, addresses } => {
                    self.foreign
                        .insert(service, addresses.into_iter().collect());
                }
            }
        }
        let mut conflicts = Vec::new();
        for (holding, ip) in ours {
            match self.shareable(ip, &holding) {
                Ok(()) => {
                    let pool = self.recorded_pool(ip);
                    self.assign(&holding, ip, pool);
                }
                Err(error) => conflicts.push(RebuildConflict {
                    service: holding.service,
                    ip,
                    error,
                }),
            }
        }
        conflicts
    }

    /// Gives `request`'s Service an address, keeping the one it holds unless the request
    /// names another address or pool. On error nothing changes: the Service keeps what
    /// it held. `namespace_labels` are the labels of the Service's namespace, for
    /// `namespaceSelector`.
    pub fn allocate(
        &mut self,
        request: &Request,
        namespace_labels: &Labels,
    ) -> Result<Allocation, AllocationError> {
        let current = self.services.get(&request.service).copied();
        let (ip, pool) = match current.filter(|&ip| self.still_requested(request, ip)) {
            Some(ip) => {
                self.shareable(ip, request)?;
                (ip, self.recorded_pool(ip))
            }
            None => self.choose(request, namespace_labels)?,
        };
        self.assign(request, ip, pool.clone());
        Ok(Allocation { ip, pool })
    }

    /// Frees what `service` holds: its address (returned) and any addresses recorded for
    /// it as a Service of another class.
    pub fn release(&mut self, service: &ServiceKey) -> Option<Ipv4Addr> {
        self.foreign.remove(service);
        self.release_own(service)
    }

    /// Records the status addresses of a Service another load balancer serves (replacing
    /// what was recorded for it), so ours never get them. Returns our Services that
    /// already hold one of them: two announcers for one address, to be reported.
    pub fn reserve_foreign(
        &mut self,
        service: &ServiceKey,
        addresses: &[Ipv4Addr],
    ) -> Vec<ServiceKey> {
        let addresses: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
        let clashes = addresses
            .iter()
            .flat_map(|&ip| self.holders(ip))
            .filter(|holder| holder != service)
            .collect();
        if addresses.is_empty() {
            self.foreign.remove(service);
        } else {
            self.foreign.insert(service.clone(), addresses);
        }
        clashes
    }

    pub fn allocation(&self, service: &ServiceKey) -> Option<Allocation> {
        let &ip = self.services.get(service)?;
        Some(Allocation {
            ip,
            pool: self.recorded_pool(ip),
        })
    }

    /// Our Services holding `ip`.
    pub fn holders(&self, ip: Ipv4Addr) -> Vec<ServiceKey> {
        self.addresses
            .get(&ip)
            .map(|holding| holding.users.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Assigned and available counts of every valid pool.
    pub fn usage(&self) -> BTreeMap<String, PoolUsage> {
        let taken: BTreeSet<Ipv4Addr> = self
            .addresses
            .keys()
            .copied()
            .chain(self.foreign.values().flatten().copied())
            .collect();
        self.pools
            .values()
            .map(|pool| {
                let assigned = taken
                    .iter()
                    .filter(|&&ip| pool.addresses.contains(ip))
                    .count();
                let assigned = u64::try_from(assigned).unwrap_or(u64::MAX);
                let usage = PoolUsage {
                    assigned,
                    available: pool.addresses.len().saturating_sub(assigned),
                };
                (pool.name.clone(), usage)
            })
            .collect()
    }

    /// Whether `ip`, which the Service holds, is still what its request asks for.
    fn still_requested(&self, request: &Request, ip: Ipv4Addr) -> bool {
        let address_ok = request
            .address
            .as_ref()
            .is_none_or(|address| address.value == ip);
        let pool_ok = request
            .pool
            .as_ref()
            .is_none_or(|pool| self.recorded_pool(ip).as_ref() == Some(&pool.value));
        address_ok && pool_ok
    }

    fn choose(
        &self,
        request: &Request,
        namespace_labels: &Labels,
    ) -> Result<(Ipv4Addr, Option<String>), AllocationError> {
        let admits = |pool: &Pool| {
            pool.admits(
                &request.service.namespace,
                namespace_labels,
                &request.labels,
            )
        };
        if let Some(address) = &request.address {
            return self.choose_address(request, address.value, admits);
        }
        if let Some(wanted) = &request.pool {
            let pool = self.pool(&wanted.value)?;
            admits(pool).map_err(AllocationError::PoolNotAllowed)?;
            let ip = self
                .pick(pool, request)
                .ok_or_else(|| AllocationError::PoolExhausted {
                    pools: vec![pool.name.clone()],
                })?;
            return Ok((ip, Some(pool.name.clone())));
        }
        let mut refusals = Vec::new();
        let mut candidates: Vec<&Pool> = Vec::new();
        for pool in self.pools.values().filter(|pool| pool.auto_assign) {
            match admits(pool) {
                Ok(()) => candidates.push(pool),
                Err(refusal) => refusals.push(refusal),
            }
        }
        if candidates.is_empty() {
            return Err(AllocationError::NoMatchingPool { refusals });
        }
        candidates.sort_by(|a, b| a.preference(b));
        candidates
            .iter()
            .find_map(|pool| Some((self.pick(pool, request)?, Some(pool.name.clone()))))
            .ok_or_else(|| AllocationError::PoolExhausted {
                pools: candidates.iter().map(|pool| pool.name.clone()).collect(),
            })
    }

    fn choose_address(
        &self,
        request: &Request,
        ip: Ipv4Addr,
        admits: impl Fn(&Pool) -> Result<(), Refusal>,
    ) -> Result<(Ipv4Addr, Option<String>), AllocationError> {
        let pool = match &request.pool {
            Some(wanted) => {
                let pool = self.pool(&wanted.value)?;
                if !pool.addresses.contains(ip) {
                    return Err(AllocationError::NotInRequestedPool {
                        ip,
                        pool: pool.name.clone(),
                    });
                }
                admits(pool).map_err(AllocationError::PoolNotAllowed)?;
                pool
            }
            None => {
                let mut listing: Vec<&Pool> = self
                    .pools
                    .values()
                    .filter(|pool| pool.addresses.contains(ip))
                    .collect();
                listing.sort_by(|a, b| a.preference(b));
                let mut refusal = None;
                let admitted = listing.iter().copied().find(|pool| match admits(pool) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                });
                match (admitted, refusal) {
                    (Some(pool), _) => pool,
                    (None, Some(why)) => return Err(AllocationError::PoolNotAllowed(why)),
                    (None, None) => return Err(AllocationError::NotInAnyPool { ip }),
                }
            }
        };
        self.shareable(ip, request)?;
        // Sharers of an address keep the pool its first holder got it from.
        let shared_from = self
            .addresses
            .get(&ip)
            .filter(|holding| holding.users.keys().any(|user| *user != request.service))
            .and_then(|holding| holding.pool.clone());
        Ok((ip, Some(shared_from.unwrap_or_else(|| pool.name.clone()))))
    }

    fn pool(&self, name: &str) -> Result<&Pool, AllocationError> {
        self.pools
            .get(name)
            .ok_or_else(|| AllocationError::UnknownPool {
                pool: name.to_owned(),
            })
    }

    /// The address of `pool` for `request`: one already shared under its sharing key,
    /// else the lowest free one.
    fn pick(&self, pool: &Pool, request: &Request) -> Option<Ipv4Addr> {
        let joinable = request.sharing_key.as_ref().and_then(|key| {
            self.addresses
                .iter()
                .filter(|(ip, holding)| {
                    pool.addresses.contains(**ip)
                        && holding.sharing_key.as_ref() == Some(&key.value)
                })
                .map(|(&ip, _)| ip)
                .find(|&ip| self.shareable(ip, request).is_ok())
        });
        joinable.or_else(|| pool.addresses.iter().find(|&ip| self.is_free(ip, request)))
    }

    fn is_free(&self, ip: Ipv4Addr, request: &Request) -> bool {
        self.foreign_holders(ip).is_empty()
            && self
                .addresses
                .get(&ip)
                .is_none_or(|holding| holding.users.keys().all(|user| *user == request.service))
    }

    fn foreign_holders(&self, ip: Ipv4Addr) -> Vec<ServiceKey> {
        self.foreign
            .iter()
            .filter(|(_, addresses)| addresses.contains(&ip))
            .map(|(service, _)| service.clone())
            .collect()
    }

    /// Whether `request`'s Service may hold `ip` next to its current holders.
    fn shareable(&self, ip: Ipv4Addr, request: &Request) -> Result<(), AllocationError> {
        let foreign = self.foreign_holders(ip);
        if !foreign.is_empty() {
            return Err(AllocationError::AddressInUse {
                ip,
                holders: foreign,
                other_class: true,
            });
        }
        let Some(holding) = self.addresses.get(&ip) else {
            return Ok(());
        };
        let others: Vec<(&ServiceKey, &BTreeSet<PortSpec>)> = holding
            .users
            .iter()
            .filter(|(user, _)| **user != request.service)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let holders: Vec<ServiceKey> = others.iter().map(|(user, _)| (*user).clone()).collect();
        match (&holding.sharing_key, &request.sharing_key) {
            (Some(existing), Some(requested)) if *existing != requested.value => {
                return Err(AllocationError::SharingKeyMismatch {
                    ip,
                    requested: requested.value.clone(),
                    existing: existing.clone(),
                    holders,
                });
            }
            (Some(_), Some(_)) => {}
            _ => {
                return Err(AllocationError::AddressInUse {
                    ip,
                    holders,
                    other_class: false,
                });
            }
        }
        if holding.locality != request.locality {
            return Err(AllocationError::TrafficPolicyMismatch { ip, holders });
        }
        for (holder, ports) in others {
            if let Some(&port) = ports.intersection(&request.ports).next() {
                return Err(AllocationError::PortConflict {
                    ip,
                    port,
                    holder: holder.clone(),
                });
            }
        }
        Ok(())
    }

    fn recorded_pool(&self, ip: Ipv4Addr) -> Option<String> {
        match self.addresses.get(&ip) {
            Some(holding) => holding.pool.clone(),
            None => containing(&self.pools, ip).map(|pool| pool.name.clone()),
        }
    }

    /// Records that `request`'s Service holds `ip` (and nothing else). The caller has
    /// checked that it may.
    fn assign(&mut self, request: &Request, ip: Ipv4Addr, pool: Option<String>) {
        let _previous = self.release_own(&request.service);
        let holding = self.addresses.entry(ip).or_insert_with(|| Holding {
            pool,
            sharing_key: None,
            locality: request.locality.clone(),
            users: BTreeMap::new(),
        });
        // A sole holder may change its key; sharers already agree on it.
        holding.sharing_key = request.sharing_key.as_ref().map(|key| key.value.clone());
        holding.locality = request.locality.clone();
        holding
            .users
            .insert(request.service.clone(), request.ports.clone());
        self.services.insert(request.service.clone(), ip);
    }

    fn release_own(&mut self, service: &ServiceKey) -> Option<Ipv4Addr> {
        let ip = self.services.remove(service)?;
        if let Some(holding) = self.addresses.get_mut(&ip) {
            holding.users.remove(service);
            if holding.users.is_empty() {
                self.addresses.remove(&ip);
            }
        }
        Some(ip)
    }
}

fn by_name(pools: impl IntoIterator<Item = Pool>) -> BTreeMap<String, Pool> {
    pools
        .into_iter()
        .map(|pool| (pool.name.clone(), pool))
        .collect()
}

/// The first pool by name that lists `ip`.
fn containing(pools: &BTreeMap<String, Pool>, ip: Ipv4Addr) -> Option<&Pool> {
    pools.values().find(|pool| pool.addresses.contains(ip))
}

#[cfg(test)]
mod tests;
