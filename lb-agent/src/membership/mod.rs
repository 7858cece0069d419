//! Cluster membership: which nodes are alive, by SWIM gossip over UDP on the LAN.
//!
//! Agents run [`foca`] (SWIM with suspicion and the usual extensions) on the node's LAN
//! address, port 7947 by default (beside MetalLB's memberlist on 7946 during a
//! migration). Every datagram is authenticated and replay-checked ([`auth`]); whatever
//! fails is dropped and counted in [`Counters`]. No API server is involved, so an
//! API-server outage changes nothing for failover.
//!
//! The result is a [`View`] on a `tokio::sync::watch` channel: every configured node with
//! its [`Liveness`], incarnation and since when it is in that state.
//!
//! # Failure detection time
//!
//! With probe interval `P`, probe timeout `R` (< `P`) and suspicion timeout `S`: a node
//! probes one peer per interval, walking its peers in a fresh random order each round. A
//! dead node is noticed when the first probe to it fails, at the end of that interval;
//! it is then Suspect, and Down `S` later unless it refutes. The first node to declare it
//! Down gossips that within one gossip interval `G`. Each of the other `N − 1` nodes
//! probes a given peer at least once every `2(N − 2) + 1` intervals, so the worst case is
//! `(2(N − 2) + 2)·P + S + G` ([`Timing::worst_case_detection`]); on average the first
//! of the `N − 1` probers gets there much sooner, about `P/(N − 1) + P + S`.
//! With the defaults (`P` = 100 ms, `R` = 40 ms, `S` = 300 ms, `G` = 100 ms) that is at
//! most 800 ms for three nodes and typically 450–550 ms (measured by this module's
//! tests). A graceful stop (SIGTERM) announces the departure as handing over
//! ([`Membership::hand_over`]): peers learn it within one round trip, elect other VIP
//! owners, but keep the node's endpoints, since its pinned data path keeps serving until
//! the next agent rejoins (as [`Liveness::HandingOver`], for at most [`HANDOVER_GRACE`]).
//!
//! A node whose announce interface is missing or down leaves the gossip (see
//! [`Membership::leave`]); peers then treat it as down, which is what it is for traffic.
//! It rejoins as a new generation when the interface is back ([`Membership::rejoin`]),
//! forgetting what it knew of the cluster before the outage and learning it again from
//! the peers' answers to its join requests, within a round trip. The same happens when
//! the cluster declared it down (a partition it did not notice), and when a node that
//! held every peer down hears from one of them again (it was the one cut off: only it
//! rejoins, so its stale verdicts never make the other side rejoin too). Pre-outage
//! knowledge is stale, and a suspicion it raised as its link failed, lost on the way
//! out, would otherwise never be refuted nor time out. Absent peers get a join request
//! every [`Timing::rejoin_interval`], so the two sides of a healed partition meet within
//! one.

pub mod auth;
#[cfg(test)]
mod compat;
mod driver;
mod identity;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, oneshot, watch};

pub use self::auth::{GossipKey, KeyError, Reject};
use self::driver::{Command, Driver};
use crate::election::Liveness;

/// How long peers keep a handing-over node's endpoints when no new agent rejoins.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(5);

/// One node in the [`View`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its gossip address (the node's LAN address).
    pub address: SocketAddrV4,
    pub liveness: Liveness,
    /// SWIM incarnation, raised by the node to refute suspicion (0 for this node and for
    /// nodes never heard from).
    pub incarnation: u16,
    /// The member's boot epoch plus renewals; `None` for a node never heard from.
    pub generation: Option<u64>,
    /// When it entered `liveness`.
    pub since: SystemTime,
}

/// Every configured node as this agent sees it, itself included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// This node's name.
    pub local: String,
    pub members: BTreeMap<String, MemberView>,
    /// Whether the view can be trusted for election: the agent has heard from every
    /// peer, or waited the join timeout. Until then a starting agent must not claim VIPs
    /// that live peers hold.
    pub settled: bool,
}

impl View {
    /// Every node alive, settled: for a cluster without gossip (static membership).
    pub fn all_alive(local: &str, nodes: &[Peer]) -> Self {
        let now = SystemTime::now();
        let members = nodes
            .iter()
            .map(|peer| {
                let member = MemberView {
                    address: peer.addr,
                    liveness: Liveness::Alive,
                    incarnation: 0,
                    generation: None,
                    since: now,
                };
                (peer.name.clone(), member)
            })
            .collect();
        Self {
            local: local.to_owned(),
            members,
            settled: true,
        }
    }

    /// Names of the nodes whose data path does not serve.
    #[cfg(test)]
    pub fn down(&self) -> std::collections::BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, member)| !member.liveness.serves())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The view at `now`: members handing over for [`HANDOVER_GRACE`] or longer are down,
    /// since no new agent took over from them.
    pub fn expire_handovers(mut self, now: SystemTime) -> Self {
        for member in self.members.values_mut() {
            let expired = now
                .duration_since(member.since)
                .is_ok_and(|handing_over| handing_over >= HANDOVER_GRACE);
            if member.liveness == Liveness::HandingOver && expired {
                member.liveness = Liveness::Down;
                member.since += HANDOVER_GRACE;
            }
        }
        self
    }

    /// Whether a member is handing over, so the view changes when the grace period ends.
    pub fn has_handovers(&self) -> bool {
        self.members
            .values()
            .any(|member| member.liveness == Liveness::HandingOver)
    }

    pub fn liveness(&self, name: &str) -> Liveness {
        self.members
            .get(name)
            .map_or(Liveness::Down, |member| member.liveness)
    }
}

/// A node of the gossip: its name and gossip socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub addr: SocketAddrV4,
}

/// The protocol's clocks. See the module documentation for what they imply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// One probe per interval.
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking others to probe indirectly.
    pub probe_timeout: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspicion: Duration,
    /// Updates are also pushed to a few random members this often.
    pub gossip_interval: Duration,
    /// Configured peers that are not members (never heard from, down, partitioned) are
    /// sent a join request this often, so restarted nodes and healed partitions merge.
    pub rejoin_interval: Duration,
    /// The longest a starting agent waits to hear from every peer before it trusts its
    /// view ([`View::settled`]).
    pub join_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            suspicion: Duration::from_millis(300),
            gossip_interval: Duration::from_millis(100),
            rejoin_interval: Duration::from_millis(200),
            join_timeout: Duration::from_secs(1),
        }
    }
}

impl Timing {
    /// The longest it takes for some node of a `nodes`-node cluster to declare a dead
    /// node down and gossip it: `(2(N − 2) + 2)·P + S + G`.
    pub fn worst_case_detection(&self, nodes: usize) -> Duration {
        let rounds = 2 * nodes.saturating_sub(2) as u32 + 2;
        self.probe_interval * rounds + self.suspicion + self.gossip_interval
    }
}

/// Everything the gossip needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node; its address is where the gossip socket binds.
    pub local: Peer,
    /// The other nodes.
    pub peers: Vec<Peer>,
    pub key: GossipKey,
    pub timing: Timing,
}

/// Datagrams sent, accepted and dropped, by reason.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub accepted: AtomicU64,
    pub truncated: AtomicU64,
    pub malformed: AtomicU64,
    pub wrong_key: AtomicU64,
    pub forged: AtomicU64,
    pub replayed: AtomicU64,
    /// A protocol version this agent cannot read.
    pub version: AtomicU64,
    /// Authenticated, but from a name that is not a peer, from another address than the
    /// peer's, or claiming another identity inside.
    pub unknown_sender: AtomicU64,
    /// Authenticated and from a peer, but refused by the SWIM layer.
    pub protocol_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused datagram under its reason; returns that reason's count before.
    fn rejected(&self, reject: Reject) -> u64 {
        let counter = match reject {
            Reject::Truncated => &self.truncated,
            Reject::Malformed => &self.malformed,
            Reject::WrongKey => &self.wrong_key,
            Reject::Forged => &self.forged,
            Reject::Replayed => &self.replayed,
            Reject::Version(_) => &self.version,
        };
        counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Dropped datagrams per reason label, for the metrics.
    pub fn dropped(&self) -> [(&'static str, u64); 8] {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            ("truncated", load(&self.truncated)),
            ("malformed", load(&self.malformed)),
            ("wrong_key", load(&self.wrong_key)),
            ("forged", load(&self.forged)),
            ("replayed", load(&self.replayed)),
            ("version", load(&self.version)),
            ("unknown_sender", load(&self.unknown_sender)),
            ("protocol_error", load(&self.protocol_errors)),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("binding the gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the gossip thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the gossip thread ended while starting")]
    Ended,
}

/// This agent's boot epoch: microseconds since the Unix epoch.
pub fn boot_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// The running gossip, on a thread of its own: probes, acks and timers never wait for
/// the agent's work (a translation or a full map rewrite takes the agent's thread for
/// tens to hundreds of milliseconds, long enough for peers to suspect a node whose
/// gossip waited behind it). Dropping it stops the gossip without a goodbye (as a crash
/// would); [`Membership::hand_over`] leaves the cluster first.
#[derive(Debug)]
pub struct Membership {
    view: watch::Receiver<View>,
    counters: Arc<Counters>,
    /// Closing it ends the gossip thread at its next event.
    commands: mpsc::Sender<Command>,
    #[cfg(test)]
    link_cut: Arc<std::sync::atomic::AtomicBool>,
}

/// What the gossip thread hands back once its socket is bound.
struct Started {
    view: watch::Receiver<View>,
    #[cfg(test)]
    link_cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Membership {
    /// Binds the gossip socket and starts joining the peers.
    pub async fn start(settings: Settings) -> Result<Self, MembershipError> {
        let counters = Arc::new(Counters::default());
        let (commands, receiver) = mpsc::channel(4);
        let (started, bound) = oneshot::channel();
        let driver_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("gossip".into())
            .spawn(move || gossip_thread(settings, driver_counters, receiver, started))
            .map_err(MembershipError::Thread)?;
        let started = bound.await.map_err(|_| MembershipError::Ended)??;
        Ok(Self {
            view: started.view,
            counters,
            commands,
            #[cfg(test)]
            link_cut: started.link_cut,
        })
    }

    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Declares this node down to the cluster (peers re-elect at once) and stops taking
    /// part until [`Membership::rejoin`]. Returns once the goodbye is sent.
    pub async fn leave(&self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Joins again as a new generation after [`Membership::leave`]. Returns once the join
    /// requests are sent; the view is unsettled until every peer has answered (or the
    /// join timeout), and counts the peers that were up before as up meanwhile.
    pub async fn rejoin(&self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Rejoin(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Replaces the nodes of the gossip (this node may be among them).
    pub async fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self.commands.send(Command::SetPeers(peers)).await;
    }

    /// Leaves the cluster as handing over (the data path stays and keeps serving; peers
    /// keep its endpoints but elect other owners) and stops.
    pub async fn hand_over(self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::HandOver(done)).await.is_ok() {
            let _ = sent.await;
        }
    }
}

/// Runs the gossip on a single-threaded runtime of its own until the commands close.
/// The socket is bound here: a tokio socket belongs to the runtime that created it.
fn gossip_thread(
    settings: Settings,
    counters: Arc<Counters>,
    commands: mpsc::Receiver<Command>,
    started: oneshot::Sender<Result<Started, MembershipError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(MembershipError::Thread(error)));
            return;
        }
    };
    runtime.block_on(async move {
        match Driver::bind(settings, counters).await {
            Ok((driver, view)) => {
                let handed = Started {
                    view,
                    #[cfg(test)]
                    link_cut: Arc::clone(&driver.link_cut),
                };
                if started.send(Ok(handed)).is_ok() {
                    driver.run(commands).await;
                }
            }
            Err(error) => {
                let _ = started.send(Err(error));
            }
        }
    });
}
