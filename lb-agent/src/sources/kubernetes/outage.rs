//! One view of whether the Kubernetes API server can be reached, shared by everything
//! the agent asks it (the source's watches and events, the Lease, the IPAM): they all
//! use one [`kube::Client`], whose every request passes through [`ApiHealth::layer`].
//!
//! An outage is logged twice: a warning at the first request that cannot reach the API
//! server, an info line at the first answer after it. In between, every such request is
//! counted (`xdplb_kubernetes_unreachable_total`) and nothing else is logged about it:
//! callers skip their own message for an error [`unreachable`] recognises, and the
//! agent's log filter drops kube's own per-request ERROR line ([`log_filter`]). Errors
//! the API server answers with (403, 409, 410, ...) are no outage; their callers log
//! them as before.

use std::{
    fmt::Display,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use futures::{FutureExt as _, future::BoxFuture};
use kube::runtime::watcher;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing_subscriber::EnvFilter;

use crate::telemetry::Telemetry;

/// Silences kube's request tracing, which logs every failed request at ERROR (about a
/// hundred lines in a 45 s outage); [`ApiHealth`] reports outages instead.
const QUIET_CLIENT_LOG: &str = "kube_client::client::builder=off";

/// The agent's log filter for `RUST_LOG` (`None` or invalid: `info`): as asked, with
/// kube's per-request lines off unless `RUST_LOG` names `kube_client` itself.
pub fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let quiet = |wanted: &str| match wanted.contains("kube_client") {
        true => wanted.to_owned(),
        false => format!("{wanted},{QUIET_CLIENT_LOG}"),
    };
    rust_log
        .and_then(|wanted| EnvFilter::try_new(quiet(wanted)).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet("info")))
}

/// Whether `error` means the request never reached the API server (no connection, a
/// connection lost, a timeout), which [`ApiHealth`] has logged already.
pub fn unreachable(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Service(_) | kube::Error::HyperError(_))
}

/// [`unreachable`] for a watch's error.
pub fn watch_unreachable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => unreachable(error),
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => false,
    }
}

/// Whether the API server answers, as the agent's requests found it.
#[derive(Debug)]
pub struct ApiHealth {
    telemetry: Arc<Telemetry>,
    outage: Mutex<Option<Outage>>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failed: u64,
}

impl ApiHealth {
    /// Counts into `telemetry`, whose counter shows from now on (at zero).
    pub fn new(telemetry: Arc<Telemetry>) -> Arc<Self> {
        telemetry.count_kubernetes_unreachable(0);
        Arc::new(Self {
            telemetry,
            outage: Mutex::new(None),
        })
    }

    /// The layer that reports every request of a client to `self`.
    pub fn layer(self: &Arc<Self>) -> ObserveLayer {
        ObserveLayer(Arc::clone(self))
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request that never reached the API server.
    fn failed(&self, error: &dyn Display) {
        self.telemetry.count_kubernetes_unreachable(1);
        let mut outage = self.outage();
        match outage.as_mut() {
            Some(outage) => outage.failed += 1,
            None => {
                tracing::warn!(%error, "the Kubernetes API server cannot be reached; running on the last known state and retrying (logged again when it answers)");
                *outage = Some(Outage {
                    since: Instant::now(),
                    failed: 1,
                });
            }
        }
    }

    /// An answer of the API server, whatever its status.
    fn answered(&self) {
        if let Some(outage) = self.outage().take() {
            tracing::info!(
                after = ?outage.since.elapsed(),
                failed_requests = outage.failed,
                "the Kubernetes API server answers again"
            );
        }
    }
}

/// See [`ApiHealth::layer`].
#[derive(Clone, Debug)]
pub struct ObserveLayer(Arc<ApiHealth>);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            health: Arc::clone(&self.0),
        }
    }
}

/// A client's service whose requests report to an [`ApiHealth`].
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    health: Arc<ApiHealth>,
}

impl<S, Request> Service<Request> for Observed<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Error: Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let health = Arc::clone(&self.health);
        self.inner
            .call(request)
            .inspect(move |result| match result {
                Ok(_) => health.answered(),
                Err(error) => health.failed(error),
            })
            .boxed()
    }
}
