//! Membership as the control loop sees it: the gossip, or every known node alive.

use std::time::{Duration, SystemTime};

use tokio::{sync::watch, time::timeout};

use super::RuntimeError;
use crate::{
    membership::{self, GossipKey, Membership, View},
    sources::{Cluster, Settings},
};

/// Membership: the gossip, or every known node alive when `gossip` is not configured.
pub(super) enum Members {
    Gossip(Membership),
    Static,
}

impl Members {
    pub(super) async fn start(
        settings: &Settings,
        cluster: &Cluster,
    ) -> Result<Self, RuntimeError> {
        let Some(gossip) = &settings.gossip else {
            if cluster.inputs.peers.len() > 1 {
                tracing::warn!(
                    "no `gossip` configured: every peer counts as alive and VIPs never fail over"
                );
            }
            return Ok(Self::Static);
        };
        let key_file =
            GossipKey::from_file(&gossip.key_file).map_err(|source| RuntimeError::Key {
                path: gossip.key_file.clone(),
                source,
            })?;
        if let Some(warning) = key_file.warning() {
            tracing::warn!(path = %gossip.key_file.display(), "{warning}");
        }
        let key = key_file.key;
        let peers = cluster.gossip_peers(gossip.port);
        let local = cluster.local_peer(gossip.port);
        let timing = gossip.timing();
        tracing::info!(
            address = %local.addr,
            key = %key.fingerprint(),
            probe_ms = timing.probe_interval.as_millis() as u64,
            suspicion_ms = timing.suspicion.as_millis() as u64,
            worst_case_detection_ms = timing.worst_case_detection(peers.len()).as_millis() as u64,
            "gossip started"
        );
        let membership = Membership::start(membership::Settings {
            local,
            peers,
            key,
            timing,
        })
        .await?;
        Ok(Self::Gossip(membership))
    }

    pub(super) fn view(&self, cluster: &Cluster) -> View {
        match self {
            Self::Gossip(membership) => membership
                .view()
                .borrow()
                .clone()
                .expire_handovers(SystemTime::now()),
            Self::Static => View::all_alive(&cluster.inputs.node.name, &cluster.gossip_peers(0)),
        }
    }

    pub(super) fn has_handovers(&self) -> bool {
        match self {
            Self::Gossip(membership) => membership.view().borrow().has_handovers(),
            Self::Static => false,
        }
    }

    pub(super) fn receiver(&self) -> Option<watch::Receiver<View>> {
        match self {
            Self::Gossip(membership) => Some(membership.view()),
            Self::Static => None,
        }
    }

    /// Waits until the view can be trusted, at most the join timeout and a little more.
    pub(super) async fn settled(&self, settings: &Settings) {
        let (Self::Gossip(membership), Some(gossip)) = (self, &settings.gossip) else {
            return;
        };
        let limit = gossip.timing().join_timeout + Duration::from_secs(1);
        let mut view = membership.view();
        let _ = timeout(limit, view.wait_for(|view| view.settled)).await;
    }

    /// Follows a new node list.
    pub(super) async fn set_peers(&self, settings: &Settings, cluster: &Cluster) {
        if let (Self::Gossip(membership), Some(gossip)) = (self, &settings.gossip) {
            membership
                .set_peers(cluster.gossip_peers(gossip.port))
                .await;
        }
    }
}
