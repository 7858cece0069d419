//! The control loop: on every membership change, interface change, SIGHUP or new
//! cluster state, one reconcile pass ([`Agent::step`]); and the handover on SIGTERM.

use std::{
    sync::{Arc, PoisonError},
    time::Duration,
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
    task::JoinHandle,
    time::{MissedTickBehavior, interval},
};

use super::{
    Agent, RuntimeError, announce,
    interface::interface_problem,
    members::Members,
    provider::AgentState,
    reconcile::{self, plan},
};
use crate::{
    api::{ApiError, http::HttpServer, socket::SocketServer},
    config::ApiConfig,
    dataplane::DataplaneError,
    membership::View,
    sources::{Cluster, Source},
    status::StatusProvider,
    telemetry::{Component, OwnershipChange, Telemetry},
};

/// How often a failed map update and a missing ARP announcer are retried.
const RETRY: Duration = Duration::from_secs(1);
/// How often the announce interface is looked at.
const LINK_POLL: Duration = Duration::from_millis(250);

impl<S: Source> Agent<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn start_api(&mut self) {
        let api = self.lock().settings.api.clone();
        let provider: Arc<dyn StatusProvider> = self.shared.clone();
        self.servers = serve_api(&api, provider, &self.telemetry).await;
    }

    pub(super) async fn run(&mut self) -> Result<(), RuntimeError> {
        let mut terminate = handler(SignalKind::terminate(), "SIGTERM")?;
        let mut interrupt = handler(SignalKind::interrupt(), "SIGINT")?;
        let mut hangup = handler(SignalKind::hangup(), "SIGHUP")?;
        let mut retry = interval(RETRY);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut link = interval(LINK_POLL);
        link.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut view = self.members.receiver();
        loop {
            tokio::select! {
                _ = terminate.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
                _ = hangup.recv() => {
                    if let Some(cluster) = self.source.reload() {
                        self.apply_cluster(cluster).await;
                    }
                }
                () = view_changed(&mut view) => self.step(),
                cluster = self.source.next() => self.apply_cluster(cluster).await,
                _ = retry.tick() => {
                    // A handover's grace period ends without a view change.
                    if self.retry || self.members.has_handovers() {
                        self.step();
                    }
                    self.ensure_announcer();
                }
                _ = link.tick() => self.check_interface().await,
            }
        }
    }

    /// One reconcile pass over the current cluster, view and interface state.
    pub(super) fn step(&mut self) {
        let view = self.members.view(&self.lock().cluster);
        let shared = Arc::clone(&self.shared);
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = plan(
            &state.cluster,
            &view,
            state.mtu,
            state.interface_problem.as_deref(),
        );
        for change in self.owners.update(&next.elections) {
            log_owner_change(&change, &state.cluster.inputs.node.name, &self.telemetry);
        }
        state.set_plan(next);
        // An unsettled view (a start or rejoin) must not pull peers out of the rings.
        if view.settled {
            self.retry = !applied(state.apply(), &self.telemetry);
        }
        let owned = state.plan.owned_vips(state.settings.arp);
        drop(state);
        let gained = self
            .seen_view
            .as_ref()
            .map(|before| announce::gained(before, &view))
            .unwrap_or_default();
        self.seen_view = Some(view);
        let reannounce = !gained.is_empty();
        if reannounce {
            tracing::info!(members = ?gained, vips = owned.len(), "membership gained members (a partition may have healed): announcing every owned VIP again");
        }
        let keys = owned.keys().copied().collect();
        if announce::publish(&self.owned, owned, reannounce) {
            self.source.announced(&keys);
        }
    }

    /// Runs `cluster` from now on. This node's identity (name and address) cannot change
    /// under a running gossip and data path: it stays as it started, the rest applies.
    async fn apply_cluster(&mut self, mut cluster: Arc<Cluster>) {
        let running = Arc::clone(&self.lock().cluster);
        if cluster.inputs.node != running.inputs.node {
            if self.new_identity.as_ref() != Some(&cluster.inputs.node) {
                tracing::error!(
                    running = ?running.inputs.node,
                    new = ?cluster.inputs.node,
                    "this node's name or address changed: restart the agent to use it; running with the old one"
                );
                self.new_identity = Some(cluster.inputs.node.clone());
            }
            Arc::make_mut(&mut cluster).inputs.node = running.inputs.node.clone();
        }
        if running == cluster {
            return;
        }
        let peers_changed = cluster.inputs.peers != running.inputs.peers;
        if peers_changed && self.source.live_peers() {
            let settings = Arc::clone(&self.lock().settings);
            self.members.set_peers(&settings, &cluster).await;
        }
        self.lock().cluster = cluster;
        self.step();
    }

    /// Leaves the gossip while the announce interface is unusable and rejoins when it is
    /// back, so peers take over this node's VIPs and stop sending it traffic.
    async fn check_interface(&mut self) {
        let problem = interface_problem(&self.announce_interface);
        let previous = {
            let mut state = self.lock();
            if state.interface_problem == problem {
                return;
            }
            std::mem::replace(&mut state.interface_problem, problem.clone())
        };
        match (&previous, &problem) {
            (None, Some(why)) => {
                tracing::warn!(interface = %self.announce_interface, problem = %why, "announce interface unusable: leaving the gossip so peers take over");
                if let Members::Gossip(membership) = &self.members {
                    membership.leave().await;
                }
            }
            (Some(_), None) => {
                tracing::info!(interface = %self.announce_interface, "announce interface usable again: rejoining the gossip");
                if let Members::Gossip(membership) = &self.members {
                    membership.rejoin().await;
                }
                self.ensure_announcer();
            }
            _ => {}
        }
        self.step();
    }

    /// At start: an announce interface that is unusable already keeps this node out of
    /// the gossip, as if it had failed later.
    pub(super) async fn leave_if_unusable(&self) {
        let problem = self.lock().interface_problem.clone();
        if let (Some(why), Members::Gossip(membership)) = (problem, &self.members) {
            tracing::warn!(interface = %self.announce_interface, problem = %why, "announce interface unusable: leaving the gossip so peers take over");
            membership.leave().await;
        }
    }

    fn ensure_announcer(&mut self) {
        let mut state = self.lock();
        if state.announcer.is_none() && state.interface_problem.is_none() {
            let owned = self.owned.subscribe();
            state.start_announcer(&self.announce_interface, owned);
        }
    }

    /// SIGTERM: stop announcing, leave the gossip, keep the data path.
    pub(super) async fn hand_over(&mut self) {
        tracing::info!("stopping: handing over to the other nodes");
        self.owned.send_modify(|owned| owned.vips.clear());
        if let Some(announcer) = self.lock().announcer.take() {
            announcer.stop();
            tracing::info!("ARP announcements stopped");
        }
        if let Members::Gossip(membership) = std::mem::replace(&mut self.members, Members::Static) {
            membership.hand_over().await;
        }
        for server in self.servers.drain(..) {
            server.abort();
            let _ = server.await;
        }
        let pin_dir = self.lock().settings.pin_dir.clone();
        tracing::info!(pin_dir = %pin_dir.display(), "handed over: the programs stay attached and pinned for the next agent");
    }
}

/// Starts the local API's servers (the socket for `lbctl`, HTTP for metrics and probes);
/// one that cannot start is logged and left out.
pub(super) async fn serve_api(
    api: &ApiConfig,
    provider: Arc<dyn StatusProvider>,
    telemetry: &Arc<Telemetry>,
) -> Vec<JoinHandle<()>> {
    let mut servers = Vec::new();
    match SocketServer::bind(&api.socket) {
        Ok(server) => {
            tracing::info!(socket = %api.socket.display(), "local API listening");
            servers.push(tokio::spawn(server.serve(Arc::clone(&provider))));
        }
        Err(error) => api_failed(&error),
    }
    match HttpServer::bind(api.listen).await {
        Ok(server) => {
            // The bound address: the port the kernel chose, if `listen` left it 0.
            let listen = server.local_addr().unwrap_or(api.listen);
            tracing::info!(%listen, "metrics and health checks listening");
            servers.push(tokio::spawn(server.serve(provider, Arc::clone(telemetry))));
        }
        Err(error) => api_failed(&error),
    }
    servers
}

fn api_failed(error: &ApiError) {
    tracing::error!(%error, "the local API is unavailable; the data path is not affected");
}

/// Records the outcome of an update of the BPF maps; whether it succeeded.
fn applied(outcome: Result<Option<Duration>, DataplaneError>, telemetry: &Telemetry) -> bool {
    match outcome {
        Ok(Some(took)) => {
            telemetry.observe_map_sync(took);
            tracing::debug!(took_us = took.as_micros() as u64, "maps updated");
            true
        }
        Ok(None) => true,
        Err(error) => {
            let kind = error.metric_label();
            telemetry.count_error(Component::Dataplane, kind);
            tracing::error!(%error, kind, "updating the BPF maps failed; retrying in a second");
            false
        }
    }
}

fn log_owner_change(change: &reconcile::OwnerChange, local: &str, telemetry: &Telemetry) {
    let show = |owner: &Option<String>| owner.clone().unwrap_or_else(|| "none".to_owned());
    tracing::info!(vip = %change.vip, from = %show(&change.from), to = %show(&change.to), "VIP owner changed");
    if change.to.as_deref() == Some(local) {
        tracing::info!(vip = %change.vip, "this node now owns the VIP");
        telemetry.ownership_changed(change.vip, OwnershipChange::Acquired);
    } else if change.from.as_deref() == Some(local) {
        tracing::info!(vip = %change.vip, "this node released the VIP");
        telemetry.ownership_changed(change.vip, OwnershipChange::Released);
    }
}

/// Waits for the next change of `view`, forever when there is none.
async fn view_changed(view: &mut Option<watch::Receiver<View>>) {
    match view {
        Some(view) => {
            if view.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

pub(super) fn handler(kind: SignalKind, name: &'static str) -> Result<Signal, RuntimeError> {
    signal(kind).map_err(|source| RuntimeError::Signal {
        signal: name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_map_update_is_counted_and_retried() {
        let telemetry = Telemetry::new();
        assert!(applied(Ok(Some(Duration::from_millis(1))), &telemetry));
        assert!(applied(Ok(None), &telemetry));
        let full = DataplaneError::NoFreeRingSlot { slots: 8 };
        assert!(!applied(Err(full), &telemetry));
        // The next of that kind is the second.
        assert_eq!(
            telemetry.count_error(Component::Dataplane, "no_ring_slot"),
            2
        );
    }
}
