//! The agent's local API: a Unix socket that `lbctl` talks to ([`socket`], speaking
//! [`protocol`]), and HTTP for Prometheus and Kubernetes probes ([`http`]). Both serve
//! whatever [`crate::status::StatusProvider`] the runtime hands them:
//!
//! ```ignore
//! let provider: Arc<dyn StatusProvider> = runtime.clone();
//! let socket = SocketServer::bind(Path::new(socket::DEFAULT_PATH))?;
//! let http = HttpServer::bind(http::DEFAULT_LISTEN.parse()?).await?;
//! tokio::spawn(socket.serve(provider.clone()));
//! tokio::spawn(http.serve(provider, telemetry.clone()));
//! ```
//!
//! Dropping (or aborting) a server's task closes its listener; the socket server also
//! removes its socket file.

pub mod http;
pub mod protocol;
pub mod socket;

use std::{io, net::SocketAddr, path::PathBuf, time::Duration};

/// A server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} exists and is not a socket; remove it or choose another path for the API socket"
    )]
    NotASocket { path: PathBuf },
    #[error("another agent already serves {path}; stop it first")]
    InUse { path: PathBuf },
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// After a failed `accept` (out of file descriptors, usually): log it and back off a
/// little, so the loop does not spin while the condition lasts.
async fn accept_failed(server: &str, error: &io::Error) {
    tracing::warn!(%error, server, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
