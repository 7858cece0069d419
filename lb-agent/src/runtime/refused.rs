//! An agent that refuses the pinned data path, because a newer release pinned maps of
//! a layout this one does not know (a downgrade; [`loader::check_pins`]). It changes
//! nothing: the programs keep forwarding with the maps as they are, the agent does not
//! join the cluster (peers take its VIPs as from any stopped agent), and it serves the
//! local API only to say why, `/readyz` failing, until SIGTERM or SIGINT.

use std::{net::SocketAddrV4, sync::Arc};

use super::{
    RuntimeError,
    control_loop::{handler, serve_api},
};
use crate::{
    dataplane::loader::{self, LoadError, PinDir},
    model::Protocol,
    sources::{Cluster, Settings},
    status::{AgentStatus, Explanation, FlowList, ProviderError, StatusProvider},
    telemetry::Telemetry,
};

/// What a refused agent reports.
struct Refused {
    status: AgentStatus,
}

impl Refused {
    fn error(&self) -> ProviderError {
        ProviderError::Refused(self.status.refused.clone().unwrap_or_default())
    }
}

impl StatusProvider for Refused {
    fn status(&self) -> AgentStatus {
        self.status.clone()
    }

    fn flows(&self, _limit: usize) -> Result<FlowList, ProviderError> {
        Err(self.error())
    }

    fn explain(
        &self,
        _client: SocketAddrV4,
        _vip: SocketAddrV4,
        _protocol: Protocol,
    ) -> Result<Explanation, ProviderError> {
        Err(self.error())
    }
}

/// Logs the refusal, serves it until the agent is stopped, then returns it as the
/// agent's error.
pub(super) async fn serve(
    settings: &Settings,
    cluster: &Cluster,
    interface: &str,
    refusal: LoadError,
    telemetry: Arc<Telemetry>,
) -> Result<(), RuntimeError> {
    tracing::error!(
        error = %refusal,
        "refusing the pinned data path: it keeps forwarding as it is, untouched; this agent takes no part in the cluster and only answers `lbctl status` until stopped"
    );
    let node = &cluster.inputs.node;
    let pins = PinDir::new(&settings.pin_dir);
    let status = AgentStatus {
        node: node.name.clone(),
        address: node.address,
        interface: interface.to_owned(),
        xdp_mode: loader::pinned_xdp_mode(&pins, interface).map(str::to_owned),
        ready: false,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        vips: Vec::new(),
        members: Vec::new(),
        reasons: Default::default(),
        arp: None,
        gossip: None,
        warnings: Vec::new(),
        refused: Some(refusal.to_string()),
    };
    let servers = serve_api(&settings.api, Arc::new(Refused { status }), &telemetry).await;
    let mut terminate = handler(tokio::signal::unix::SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = handler(tokio::signal::unix::SignalKind::interrupt(), "SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    for server in servers {
        server.abort();
    }
    Err(refusal.into())
}
