//! The IPAM controller: while this agent holds the `xdplb-ipam` Lease ([`lease`]),
//! it gives `LoadBalancer` Services of our class an address from the AddressPools and
//! writes it to `status.loadBalancer.ingress` (`ipMode: VIP`), with the condition
//! [`ALLOCATED_CONDITION`] and events; it keeps the pools' statuses current.
//!
//! Sequence on taking the Lease: the pools and namespaces are listed, then the
//! Services; once the Services' list is complete the allocator is rebuilt from their
//! statuses ([`rebuild`]: older Services keep contested addresses, so nothing is ever
//! handed out twice), and every Service is reconciled. From then on watch events drive
//! [`reconcile`], one at a time (allocation decisions depend on every other Service, so
//! one sequential loop keeps them simple and the allocator consistent).
//!
//! Releasing: when a Service is deleted (watch `Delete`), stops being a LoadBalancer,
//! or moves to another class. No finalizer: a finalizer would block Service deletion
//! whenever no agent leads (upgrades, uninstall), and a missed `Delete` costs nothing,
//! because every (re)list rebuilds the allocator from the statuses that exist — a
//! deleted Service has none.
//!
//! Status writes are server-side apply with the field manager [`FIELD_MANAGER`], so
//! other writers' conditions are kept and dropping a field (a released address) removes
//! it. A Service whose request is invalid or cannot be met keeps the address it holds
//! (none is taken away by a bad annotation, an edited pool or a full pool); it gets a
//! `False` condition and a Warning event `AllocationFailed` naming the problem. Events
//! are sent when the condition changes, not on every pass. An address that no valid
//! pool lists any more (its pool deleted, edited or made invalid) stays too, with a
//! `False` condition saying so as soon as the pools change: nodes do not announce it.

pub mod lease;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use k8s_openapi::{
    api::core::v1::{Namespace, Service},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource as _, ResourceExt as _,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::{Value, json};
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior, interval},
};

use self::lease::{Elector, LeaseSettings};
use crate::{
    apis::{
        address_pool::AddressPool,
        conditions::{Wanted, all_match},
        pool_status::{self, PoolReport},
    },
    ipam::{
        Allocation, Allocator, ClassPolicy, Labels, Request, Responsibility, ServiceKey,
        status_addresses,
    },
    sources::kubernetes::{
        outage::{unreachable, watch_unreachable},
        source,
    },
    telemetry::Telemetry,
};

/// The Service condition the IPAM writes.
pub const ALLOCATED_CONDITION: &str = "xdplb.io/AddressAllocated";
/// The server-side apply field manager of every status the IPAM writes.
pub const FIELD_MANAGER: &str = "xdplb.io/ipam";
/// The events' reporting controller.
pub const REPORTER: &str = "xdplb.io/ipam";
/// `status.loadBalancer.ingress[].ipMode`: kube-proxy keeps routing in-cluster traffic
/// to the VIP itself.
pub const IP_MODE_VIP: &str = "VIP";
/// When a failed status write is tried again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Counters of the controller's work, by outcome.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciliations: Mutex<u64>,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    fn reconciled(&self) {
        *self
            .reconciliations
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// Counts a failure; returns the count for `label` so far.
    fn failed(&self, label: &'static str) -> u64 {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(label).or_default();
        *count += 1;
        *count
    }

    pub fn reconciliations(&self) -> u64 {
        *self
            .reconciliations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Failures so far, by error label.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What [`reconcile`] and its helpers share.
pub struct Context {
    pub client: Client,
    pub policy: ClassPolicy,
    pub allocator: Mutex<Allocator>,
    pub recorder: Recorder,
    /// For pools' `namespaceSelector`.
    pub namespaces: Store<Namespace>,
    pub metrics: Metrics,
    /// Allocations, refusals and releases, for `/metrics` (the agent's, when it runs
    /// the IPAM; see [`Context::with_telemetry`]).
    pub telemetry: Arc<Telemetry>,
}

impl Context {
    /// `instance` names this agent in the events it reports.
    pub fn new(
        client: Client,
        policy: ClassPolicy,
        instance: &str,
        namespaces: Store<Namespace>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            policy,
            allocator: Mutex::new(Allocator::default()),
            namespaces,
            metrics: Metrics::default(),
            telemetry: Arc::new(Telemetry::new()),
        }
    }

    /// Counts into `telemetry` instead of a telemetry of its own.
    pub fn with_telemetry(self, telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry, ..self }
    }

    fn allocator(&self) -> MutexGuard<'_, Allocator> {
        self.allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|namespace| namespace.labels().clone())
            .unwrap_or_default()
    }

    async fn event(&self, service: &Service, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Allocate".to_owned(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &service.object_ref(&()))
            .await
        {
            let failures = self.metrics.failed("event");
            tracing::warn!(%error, reason, failures, "publishing an event failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of Service {service}: {source}")]
    ServiceStatus {
        service: ServiceKey,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of AddressPool {pool}: {source}")]
    PoolStatus {
        pool: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Whether the API server could not be reached (see [`crate::sources::kubernetes::outage`]).
    pub fn unreachable(&self) -> bool {
        match self {
            Self::ServiceStatus { source, .. } | Self::PoolStatus { source, .. } => {
                unreachable(source)
            }
        }
    }

    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::ServiceStatus { .. } => "service_status",
            Self::PoolStatus { .. } => "pool_status",
        }
    }

    /// Whether the API server no longer has the object (404).
    fn is_not_found(&self) -> bool {
        let (Self::ServiceStatus { source, .. } | Self::PoolStatus { source, .. }) = self;
        matches!(source, kube::Error::Api(status) if status.is_not_found())
    }
}

/// What a pass over one Service came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It holds what it asks for, or there is nothing to do for it.
    Settled,
    /// It asks for something that cannot be had now (a full pool, a taken address):
    /// worth another pass when addresses are released or pools change.
    Waiting,
    /// Its request is invalid; only an edit of the Service helps.
    Rejected,
    /// Its address went back to the pools.
    Released,
}

/// Counts the failure and says when to try the Service again.
pub fn error_policy(error: &Error, ctx: &Context) -> Duration {
    let failures = ctx.metrics.failed(error.metric_label());
    if !error.unreachable() {
        tracing::warn!(%error, kind = error.metric_label(), failures, "IPAM reconcile failed; retrying");
    }
    RETRY_AFTER_ERROR
}

/// One pass over `service`.
pub async fn reconcile(service: &Service, ctx: &Context) -> Result<Outcome, Error> {
    ctx.metrics.reconciled();
    let Some(key) = ServiceKey::of(service) else {
        return Ok(Outcome::Settled);
    };
    match ctx.policy.responsibility(service) {
        Responsibility::Ours => allocate(service, key, ctx).await,
        Responsibility::NotLoadBalancer => {
            let released = release(&key, ctx);
            withdraw(
                service,
                &key,
                released,
                "the Service is no longer of type LoadBalancer",
                ctx,
            )
            .await
        }
        Responsibility::OtherClass => {
            let released = release(&key, ctx);
            let clashes = ctx
                .allocator()
                .reserve_foreign(&key, &status_addresses(service));
            for clash in clashes {
                tracing::warn!(service = %key, ours = %clash, "a Service of another load balancer class shows an address one of ours holds: two load balancers announce it");
            }
            withdraw(
                service,
                &key,
                released,
                "the Service belongs to another load balancer class",
                ctx,
            )
            .await
        }
    }
}

/// A deleted Service: its address goes back to the pools. Returns whether it held one.
pub fn forget(service: &Service, ctx: &Context) -> bool {
    let released = ServiceKey::of(service).and_then(|key| release(&key, ctx));
    if let Some(allocation) = &released {
        ctx.telemetry.ipam_released(allocation.pool.as_deref());
    }
    released.is_some()
}

/// Frees what `key` holds; returns the address it held, with its pool.
fn release(key: &ServiceKey, ctx: &Context) -> Option<Allocation> {
    let mut allocator = ctx.allocator();
    let held = allocator.allocation(key);
    allocator.release(key);
    held
}

/// Records what every Service's status holds, forgetting everything else. Services whose
/// address an older one holds get a Warning event; their next [`reconcile`] gives them
/// another address.
pub async fn rebuild(services: &[Arc<Service>], ctx: &Context) {
    let list: Vec<Service> = services.iter().map(|service| (**service).clone()).collect();
    let conflicts = ctx.allocator().rebuild(&list, ctx.policy);
    let held = services
        .iter()
        .filter_map(|service| ServiceKey::of(service))
        .filter(|key| ctx.allocator().allocation(key).is_some())
        .count();
    tracing::info!(
        services = services.len(),
        holding = held,
        conflicts = conflicts.len(),
        "IPAM state rebuilt from Service statuses"
    );
    for conflict in conflicts {
        let Some(service) = services
            .iter()
            .find(|service| ServiceKey::of(service).as_ref() == Some(&conflict.service))
        else {
            continue;
        };
        tracing::warn!(service = %conflict.service, ip = %conflict.ip, error = %conflict.error, "the Service's address is held by another; assigning it a new one");
        let note = format!(
            "{}: {}; assigning another address",
            conflict.error.reason(),
            conflict.error
        );
        ctx.event(service, EventType::Warning, "AllocationFailed", note)
            .await;
    }
}

async fn allocate(service: &Service, key: ServiceKey, ctx: &Context) -> Result<Outcome, Error> {
    let request = match Request::from_service(service) {
        Ok(request) => request,
        Err(error) => {
            refuse(service, &key, None, error.reason(), error.to_string(), ctx).await?;
            return Ok(Outcome::Rejected);
        }
    };
    let labels = ctx.namespace_labels(&key.namespace);
    let result = ctx.allocator().allocate(&request, &labels);
    match result {
        Ok(allocation) => {
            grant(service, &key, &allocation, ctx).await?;
            Ok(Outcome::Settled)
        }
        Err(error) => {
            let pool = request.pool.as_ref().map(|pool| pool.value.as_str());
            refuse(service, &key, pool, error.reason(), error.to_string(), ctx).await?;
            Ok(Outcome::Waiting)
        }
    }
}

fn conditions(service: &Service) -> &[Condition] {
    service
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default()
}

/// Whether the status shows exactly `ip` (or no address), as the IPAM writes it.
fn shows(service: &Service, ip: Option<Ipv4Addr>) -> bool {
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_deref())
        .unwrap_or_default();
    match ip {
        None => ingress.is_empty(),
        Some(ip) => {
            ingress.len() == 1
                && ingress[0].ip.as_deref() == Some(&ip.to_string())
                && ingress[0].ip_mode.as_deref() == Some(IP_MODE_VIP)
        }
    }
}

async fn grant(
    service: &Service,
    key: &ServiceKey,
    allocation: &Allocation,
    ctx: &Context,
) -> Result<(), Error> {
    let ip = allocation.ip;
    let source = match &allocation.pool {
        Some(pool) => format!("{ip} from pool {pool}"),
        None => format!("{ip}, which no valid pool lists any more"),
    };
    let wanted = match &allocation.pool {
        Some(_) => Wanted::new(ALLOCATED_CONDITION, true, "Allocated", source.clone()),
        // Nodes announce only addresses that a valid pool lists (see `super::translate`).
        None => Wanted::new(
            ALLOCATED_CONDITION,
            false,
            "NotInAnyPool",
            format!(
                "{source} (its pool was deleted, edited or made invalid); kept, but no node announces it until a pool lists it again"
            ),
        ),
    };
    if !settle_status(service, key, Some(ip), &wanted, ctx).await? {
        return Ok(());
    }
    if status_addresses(service).first() != Some(&ip) {
        tracing::info!(service = %key, %ip, pool = ?allocation.pool, "address allocated");
        ctx.telemetry.ipam_allocated(allocation.pool.as_deref());
        ctx.event(
            service,
            EventType::Normal,
            "Allocated",
            format!("allocated {source}"),
        )
        .await;
    }
    Ok(())
}

/// A request that cannot be met: the condition says why, the address held stays.
/// `pool` is the pool the request named, if any.
async fn refuse(
    service: &Service,
    key: &ServiceKey,
    pool: Option<&str>,
    reason: &str,
    message: String,
    ctx: &Context,
) -> Result<(), Error> {
    let held = ctx
        .allocator()
        .allocation(key)
        .map(|allocation| allocation.ip);
    let message = match held {
        Some(ip) => format!("{message}; keeping {ip}"),
        None => message,
    };
    let wanted = Wanted::new(ALLOCATED_CONDITION, false, reason, message.clone());
    if !settle_status(service, key, held, &wanted, ctx).await? {
        return Ok(());
    }
    tracing::warn!(service = %key, reason, %message, "no address for the Service");
    ctx.telemetry.ipam_failed(pool, reason);
    ctx.event(
        service,
        EventType::Warning,
        "AllocationFailed",
        format!("{reason}: {message}"),
    )
    .await;
    Ok(())
}

/// A Service that no longer gets an address from us: drops what the IPAM wrote.
async fn withdraw(
    service: &Service,
    key: &ServiceKey,
    released: Option<Allocation>,
    why: &str,
    ctx: &Context,
) -> Result<Outcome, Error> {
    let ours = conditions(service)
        .iter()
        .any(|condition| condition.type_ == ALLOCATED_CONDITION);
    if released.is_none() && !ours {
        return Ok(Outcome::Settled);
    }
    write_status(ctx, key, None, None).await?;
    if let Some(Allocation { ip, pool }) = released {
        tracing::info!(service = %key, %ip, ?pool, "address released");
        ctx.telemetry.ipam_released(pool.as_deref());
        ctx.event(
            service,
            EventType::Normal,
            "Released",
            format!("released {ip}: {why}"),
        )
        .await;
        return Ok(Outcome::Released);
    }
    Ok(Outcome::Settled)
}

/// Writes `ip` and the condition `wanted` into the Service's status unless it already
/// shows both; returns whether it wrote.
async fn settle_status(
    service: &Service,
    key: &ServiceKey,
    ip: Option<Ipv4Addr>,
    wanted: &Wanted,
    ctx: &Context,
) -> Result<bool, Error> {
    let generation = service.metadata.generation;
    if shows(service, ip)
        && all_match(
            std::slice::from_ref(wanted),
            conditions(service),
            generation,
        )
    {
        return Ok(false);
    }
    let condition = wanted.build(conditions(service), generation);
    write_status(ctx, key, ip, Some(&condition)).await?;
    Ok(true)
}

/// Server-side applies the IPAM's part of a Service's status; what is left out (no
/// address, no condition) is removed.
async fn write_status(
    ctx: &Context,
    key: &ServiceKey,
    ip: Option<Ipv4Addr>,
    condition: Option<&Condition>,
) -> Result<(), Error> {
    let mut status = serde_json::Map::new();
    if let Some(ip) = ip {
        status.insert(
            "loadBalancer".to_owned(),
            json!({ "ingress": [{ "ip": ip.to_string(), "ipMode": IP_MODE_VIP }] }),
        );
    }
    if let Some(condition) = condition {
        status.insert("conditions".to_owned(), json!([condition]));
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": key.name, "namespace": key.namespace },
        "status": Value::Object(status),
    });
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::ServiceStatus {
        service: key.clone(),
        source,
    })
}

/// The pools' statuses as last written, to skip writes the store has not caught up with.
#[derive(Debug, Default)]
pub struct PoolStatuses {
    written: BTreeMap<String, PoolReport>,
    /// Pools the API server no longer has (404) though the store still lists them (its
    /// watch has not caught up, or fails): their uids, by name. Not written again until
    /// the store drops them; a new pool of the same name has another uid.
    gone: BTreeMap<String, Option<String>>,
}

impl PoolStatuses {
    /// Writes every pool status that differs from what it says now, skipping deleted
    /// pools; a failed write does not stop the others. Returns the failures.
    pub async fn publish(
        &mut self,
        pools: &[Arc<AddressPool>],
        ctx: &Context,
    ) -> Result<(), Vec<Error>> {
        let reports = pool_status::reports(pools, &ctx.allocator());
        self.written.retain(|name, _| reports.contains_key(name));
        self.gone.retain(|name, uid| {
            pools
                .iter()
                .any(|pool| pool.name_any() == *name && pool.uid() == *uid)
        });
        let mut failures = Vec::new();
        for pool in pools {
            let name = pool.name_any();
            let Some(report) = reports.get(&name) else {
                continue;
            };
            let deleted =
                pool.metadata.deletion_timestamp.is_some() || self.gone.contains_key(&name);
            if deleted || self.written.get(&name) == Some(report) || already_says(pool, report) {
                continue;
            }
            match write_pool_status(pool, report, ctx).await {
                Ok(()) => {
                    self.written.insert(name, report.clone());
                }
                Err(error) if error.is_not_found() => {
                    tracing::info!(pool = %name, "AddressPool deleted; its status is no longer written");
                    self.gone.insert(name, pool.uid());
                }
                Err(error) => failures.push(error),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

fn already_says(pool: &AddressPool, report: &PoolReport) -> bool {
    pool.status.as_ref().is_some_and(|status| {
        status.assigned == report.assigned
            && status.available == report.available
            && all_match(
                &report.conditions,
                &status.conditions,
                pool.metadata.generation,
            )
    })
}

async fn write_pool_status(
    pool: &AddressPool,
    report: &PoolReport,
    ctx: &Context,
) -> Result<(), Error> {
    let name = pool.name_any();
    let existing = pool
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let conditions: Vec<_> = report
        .conditions
        .iter()
        .map(|wanted| wanted.build(existing, pool.metadata.generation))
        .collect();
    let body = json!({
        "apiVersion": "xdplb.io/v1alpha1",
        "kind": "AddressPool",
        "metadata": { "name": name },
        "status": {
            "assigned": report.assigned,
            "available": report.available,
            "conditions": conditions,
        },
    });
    let api: Api<AddressPool> = Api::all(ctx.client.clone());
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
    .map_err(|source| Error::PoolStatus { pool: name, source })
}

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
    ));
    loop {
        if leading.wait_for(|leading| *leading).await.is_err() {
            break;
        }
        tracing::info!("leading the IPAM");
        let work = tokio::spawn(serve_with(
            client.clone(),
            policy,
            identity.clone(),
            Arc::clone(&telemetry),
        ));
        let _ = leading.wait_for(|leading| !*leading).await;
        work.abort();
        let _ = work.await;
        tracing::info!("no longer leading the IPAM");
    }
    let _ = election.await;
}

/// Runs the IPAM until aborted: lists, rebuilds, then follows the watches.
pub async fn serve(client: Client, policy: ClassPolicy, instance: String) {
    serve_with(client, policy, instance, Arc::new(Telemetry::new())).await;
}

/// [`serve`], counting into `telemetry`.
pub async fn serve_with(
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
                            ServiceKey::of(service)?,
                        ))
                    })
                    .collect();
                keys.sort();
                for (_, key) in keys {
                    self.pass(&key).await;
                }
            }
            Ok(watcher::Event::Apply(service)) if self.rebuilt => {
                if let Some(key) = ServiceKey::of(&service) {
                    self.pass(&key).await;
                }
            }
            Ok(watcher::Event::Delete(service)) if self.rebuilt => {
                if let Some(key) = ServiceKey::of(&service) {
                    self.waiting.remove(&key);
                    self.retry.remove(&key);
                }
                if forget(&service, &self.ctx) {
                    tracing::info!(service = ?ServiceKey::of(&service), "deleted Service's address released");
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
                let key = ServiceKey::of(service)?;
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

    async fn publish_pools(&mut self) {
        if !self.rebuilt {
            return;
        }
        let Err(errors) = self.statuses.publish(&self.pools.state(), &self.ctx).await else {
            return;
        };
        // The next tick writes them again.
        for error in errors {
            let failures = self.ctx.metrics.failed(error.metric_label());
            tracing::warn!(%error, failures, "writing an AddressPool status failed");
        }
    }
}
