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

mod driver;
pub mod lease;
mod pools;
mod reconcile;

pub use self::{
    driver::{run, serve},
    pools::PoolStatuses,
    reconcile::{forget, rebuild, reconcile},
};

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{
    Client, Resource as _, ResourceExt as _,
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};

use crate::{
    ipam::{Allocator, ClassPolicy, Labels, ServiceKey},
    sources::kubernetes::outage::unreachable,
    telemetry::{Component, Telemetry},
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

/// What [`reconcile`] and its helpers share.
pub struct Context {
    pub client: Client,
    pub policy: ClassPolicy,
    pub allocator: Mutex<Allocator>,
    pub recorder: Recorder,
    /// For pools' `namespaceSelector`.
    pub namespaces: Store<Namespace>,
    /// Allocations, refusals, releases and errors, for `/metrics` (the agent's, when it
    /// runs the IPAM; see [`Context::with_telemetry`]).
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
            telemetry: Arc::new(Telemetry::new()),
        }
    }

    /// Counts into `telemetry` instead of a telemetry of its own.
    pub fn with_telemetry(self, telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry, ..self }
    }

    /// Counts an error of the controller of kind `kind`; returns the count of that kind.
    fn count_error(&self, kind: &'static str) -> u64 {
        self.telemetry.count_error(Component::IpamController, kind)
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
            let failures = self.count_error("event");
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
    let failures = ctx.count_error(error.metric_label());
    if !error.unreachable() {
        tracing::warn!(%error, kind = error.metric_label(), failures, "IPAM reconcile failed; retrying");
    }
    RETRY_AFTER_ERROR
}
