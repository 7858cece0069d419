//! The controller's life: lead while holding the Lease, list and watch, reconcile
//! every change in one sequential loop.

use std::{
    collections::{BTreeMap, BTreeSet},
    pin::pin,
    sync::Arc,
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{
    Api, Client,
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior, interval},
};

use super::{
    Context, Outcome, PoolStatuses, error_policy, forget,
    lease::{self, Elector, LeaseSettings},
    rebuild, reconcile,
};
use crate::{
    apis::{
        address_pool::AddressPool,
        pool_status::{self},
        service,
    },
    ipam::{ClassPolicy, ServiceKey},
    sources::kubernetes::{outage::watch_unreachable, source},
    telemetry::{PoolAddresses, Telemetry},
};

/// Competes for the Lease until `stop` turns true and runs the IPAM while it leads,
/// counting into `telemetry` (the agent's, so `/metrics` shows the IPAM's work).
pub async fn run(
    client: Client,
    policy: ClassPolicy,
    lease: LeaseSettings,
    stop: watch::Receiver<bool>,
    telemetry: Arc<Telemetry>,
) {
    let identity = lease.identity.clone();
    let (leader, mut leading) = watch::channel(false);
    let election = tokio::spawn(lease::run(
        Elector::new(client.clone(), lease),
        leader,
        stop.clone(),
        Arc::clone(&telemetry),
    ));
    loop {
        if leading.wait_for(|leading| *leading).await.is_err() {
            break;
        }
        tracing::info!("leading the IPAM");
        let work = tokio::spawn(serve(
            client.clone(),
            policy,
            identity.clone(),
            Arc::clone(&telemetry),
        ));
        let _ = leading.wait_for(|leading| !*leading).await;
        work.abort();
        let _ = work.await;
        // The next leader reports the pools; this agent's view would go stale.
        telemetry.ipam_pools(BTreeMap::new());
        tracing::info!("no longer leading the IPAM");
    }
    let _ = election.await;
}

/// Runs the IPAM until aborted: lists, rebuilds, then follows the watches; counts into
/// `telemetry`. [`run`] calls it while this agent leads.
pub async fn serve(
    client: Client,
    policy: ClassPolicy,
    instance: String,
    telemetry: Arc<Telemetry>,
) {
    let (pools, pool_writer) = reflector::store::<AddressPool>();
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let (services, service_writer) = reflector::store::<Service>();
    let mut pool_events = pin!(watch_into(pool_writer, Api::all(client.clone())));
    let mut namespace_events = pin!(watch_into(namespace_writer, Api::all(client.clone())));
    // Pools and namespace labels first: allocating without them would refuse Services
    // for pools that exist.
    until_listed(&mut pool_events, "AddressPools").await;
    until_listed(&mut namespace_events, "Namespaces").await;
    let ctx = Context::new(client.clone(), policy, &instance, namespaces).with_telemetry(telemetry);
    let mut ipam = Ipam {
        ctx,
        pools,
        services,
        statuses: PoolStatuses::default(),
        rebuilt: false,
        waiting: BTreeSet::new(),
        retry: BTreeMap::new(),
    };
    ipam.pools_changed().await;
    let mut service_events = pin!(watch_into(service_writer, Api::all(client)));
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(event) = service_events.next() => ipam.service_event(event).await,
            Some(event) = pool_events.next() => {
                if event.is_ok() {
                    ipam.pools_changed().await;
                }
            }
            Some(event) = namespace_events.next() => {
                if event.is_ok() {
                    ipam.retry_waiting().await;
                }
            }
            _ = tick.tick() => ipam.retry_due().await,
        }
    }
}

/// A watch of `api` feeding `writer`'s store, retried with backoff after errors.
fn watch_into<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector::reflector(writer, source::watch(api))
}

async fn until_listed<K>(
    events: &mut (impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin),
    what: &str,
) {
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => return,
            Ok(_) => {}
            // The outage is the API health's to report.
            Err(error) if watch_unreachable(&error) => {}
            Err(error) => tracing::warn!(%error, what, "listing for the IPAM failed; retrying"),
        }
    }
}

/// The leader's state between events.
struct Ipam {
    ctx: Context,
    pools: Store<AddressPool>,
    services: Store<Service>,
    statuses: PoolStatuses,
    /// The allocator holds the statuses of a complete Service list.
    rebuilt: bool,
    /// Services that wait for addresses to free up or pools to change.
    waiting: BTreeSet<ServiceKey>,
    /// Services whose last pass failed, and when to try again.
    retry: BTreeMap<ServiceKey, Instant>,
}

impl Ipam {
    async fn service_event(&mut self, event: Result<watcher::Event<Service>, watcher::Error>) {
        match event {
            Ok(watcher::Event::InitDone) => {
                let services = self.services.state();
                rebuild(&services, &self.ctx).await;
                self.rebuilt = true;
                self.waiting.clear();
                let mut keys: Vec<(Option<_>, ServiceKey)> = services
                    .iter()
                    .filter_map(|service| {
                        Some((
                            service.metadata.creation_timestamp.clone(),
                            service::key(service)?,
                        ))
                    })
                    .collect();
                keys.sort();
                for (_, key) in keys {
                    self.pass(&key).await;
                }
            }
            Ok(watcher::Event::Apply(service)) if self.rebuilt => {
                if let Some(key) = service::key(&service) {
                    self.pass(&key).await;
                }
            }
            Ok(watcher::Event::Delete(service)) if self.rebuilt => {
                if let Some(key) = service::key(&service) {
                    self.waiting.remove(&key);
                    self.retry.remove(&key);
                }
                if forget(&service, &self.ctx) {
                    tracing::info!(service = ?service::key(&service), "deleted Service's address released");
                    self.retry_waiting().await;
                }
            }
            Ok(_) => return,
            Err(error) => {
                if !watch_unreachable(&error) {
                    tracing::warn!(%error, "watching Services for the IPAM failed; retrying, the allocations stay");
                }
                return;
            }
        }
        self.publish_pools().await;
    }

    async fn pools_changed(&mut self) {
        let (valid, invalid) = pool_status::compile(&self.pools.state());
        for (name, error) in &invalid {
            tracing::warn!(pool = %name, %error, "AddressPool invalid; its addresses are not assigned");
        }
        let before = self.attributions();
        self.ctx.allocator().set_pools(valid);
        if self.rebuilt {
            // A Service whose address changed pools (its pool deleted, edited or made
            // invalid) gets a condition saying so now, not after the next restart.
            let after = self.attributions();
            for (key, pool) in &after {
                if before.get(key) != Some(pool) {
                    self.pass(key).await;
                }
            }
            self.retry_waiting().await;
            self.publish_pools().await;
        }
    }

    /// The pool each address held is attributed to, by the Service holding it.
    fn attributions(&self) -> BTreeMap<ServiceKey, Option<String>> {
        let allocator = self.ctx.allocator();
        self.services
            .state()
            .iter()
            .filter_map(|service| {
                let key = service::key(service)?;
                let pool = allocator.allocation(&key)?.pool;
                Some((key, pool))
            })
            .collect()
    }

    /// A pass over the Service `key` as the store has it now.
    async fn pass(&mut self, key: &ServiceKey) {
        self.retry.remove(key);
        let Some(service) = self
            .services
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
        else {
            return;
        };
        match reconcile(&service, &self.ctx).await {
            Ok(Outcome::Waiting) => {
                self.waiting.insert(key.clone());
            }
            Ok(Outcome::Released) => {
                self.waiting.remove(key);
                self.retry_waiting().await;
            }
            Ok(Outcome::Settled | Outcome::Rejected) => {
                self.waiting.remove(key);
            }
            Err(error) => {
                let after = error_policy(&error, &self.ctx);
                self.retry.insert(key.clone(), Instant::now() + after);
            }
        }
    }

    /// Another pass for every waiting Service, oldest request first (by name).
    async fn retry_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for key in waiting {
            Box::pin(self.pass(&key)).await;
        }
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ServiceKey> = self
            .retry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &due {
            self.pass(key).await;
        }
        // Also retries pool statuses whose write failed; unchanged ones cost nothing.
        self.publish_pools().await;
    }

    /// The pools' statuses, and their addresses in the metrics (which need no write,
    /// so they are current even while status writes fail).
    async fn publish_pools(&mut self) {
        if !self.rebuilt {
            return;
        }
        let usage = self.ctx.allocator().usage();
        self.ctx.telemetry.ipam_pools(
            usage
                .into_iter()
                .map(|(pool, usage)| {
                    let addresses = PoolAddresses {
                        assigned: usage.assigned,
                        available: usage.available,
                    };
                    (pool, addresses)
                })
                .collect(),
        );
        let Err(errors) = self.statuses.publish(&self.pools.state(), &self.ctx).await else {
            return;
        };
        // The next tick writes them again.
        for error in errors {
            let failures = self.ctx.count_error(error.metric_label());
            tracing::warn!(%error, failures, "writing an AddressPool status failed");
        }
    }
}
