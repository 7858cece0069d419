//! HTTP for Prometheus and Kubernetes probes:
//!
//! - `GET /metrics`: OpenMetrics text ([`crate::telemetry`]), values read at scrape time;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 once the data path is attached and the first state applied,
//!   503 before (readiness).
//!
//! Listens on [`DEFAULT_LISTEN`] (`0.0.0.0:9477`) unless configured otherwise: the
//! agent runs in the host network namespace, so Prometheus scrapes each node's address.
//! Nothing here changes the agent or reveals more than the metrics.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{ApiError, accept_failed};
use crate::{status::StatusProvider, telemetry::Telemetry};

/// Where the agent serves HTTP unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9477";

/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";

/// A bound HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl HttpServer {
    pub async fn bind(address: SocketAddr) -> Result<Self, ApiError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ApiError::Listen { address, source })?;
        Ok(Self { listener })
    }

    /// The bound address (the actual port when bound to port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers connections until the task is dropped.
    pub async fn serve(self, provider: Arc<dyn StatusProvider>, telemetry: Arc<Telemetry>) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed("http", &error).await;
                    continue;
                }
            };
            let provider = Arc::clone(&provider);
            let telemetry = Arc::clone(&telemetry);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    route(request, Arc::clone(&provider), Arc::clone(&telemetry))
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "http connection failed");
                }
            });
        }
    }
}

async fn route(
    request: Request<Incoming>,
    provider: Arc<dyn StatusProvider>,
    telemetry: Arc<Telemetry>,
) -> Result<Reply, Infallible> {
    let path = request.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /healthz or /readyz\n",
        ));
    }
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    Ok(match path {
        "/metrics" => metrics(provider, telemetry).await,
        "/readyz" => readiness(provider).await,
        _ => reply(StatusCode::OK, TEXT, "ok\n"),
    })
}

/// Runs a provider call on a blocking thread (it may read BPF maps).
async fn blocking<T: Send + 'static>(
    provider: Arc<dyn StatusProvider>,
    call: impl FnOnce(&dyn StatusProvider) -> T + Send + 'static,
) -> Option<T> {
    let result = tokio::task::spawn_blocking(move || call(provider.as_ref())).await;
    result
        .inspect_err(|error| tracing::error!(%error, "http handler failed"))
        .ok()
}

fn internal_error() -> Reply {
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        TEXT,
        "the agent failed to answer; see its log\n",
    )
}

async fn metrics(provider: Arc<dyn StatusProvider>, telemetry: Arc<Telemetry>) -> Reply {
    let Some(status) = blocking(provider, |provider| provider.status()).await else {
        return internal_error();
    };
    match telemetry.render(status) {
        Ok(text) => reply(StatusCode::OK, crate::telemetry::CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "rendering metrics failed");
            internal_error()
        }
    }
}

async fn readiness(provider: Arc<dyn StatusProvider>) -> Reply {
    match blocking(provider, |provider| provider.ready()).await {
        Some(true) => reply(StatusCode::OK, TEXT, "ready\n"),
        Some(false) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: the data path is not attached or its first state is not applied yet\n",
        ),
        None => internal_error(),
    }
}
