//! The task that runs foca: one loop owning the socket, the timers and the SWIM state,
//! so nothing is shared and every foca call is followed by sending what it produced.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::{IpAddr, SocketAddr, SocketAddrV4},
    num::{NonZeroU8, NonZeroUsize},
    sync::Arc,
    time::SystemTime,
};

use foca::{
    AccumulatingRuntime, Codec as _, Config, Foca, Header, Member, NoCustomBroadcast,
    OwnedNotification, PeriodicParams, PostcardCodec, State, Timer,
};
use rand::rngs::StdRng;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use super::{
    Counters, Liveness, MemberView, MembershipError, Peer, Settings, Timing, View,
    auth::{self, Opener, Reject, Sealer},
    boot_epoch,
    identity::Identity,
};

/// Gossip datagrams stay below a 1500-byte MTU with room for IP/UDP headers.
const MAX_DATAGRAM: usize = 1400;
/// Members asked to probe indirectly, and to receive each gossip push.
const FANOUT: usize = 3;
/// Times each update is piggybacked; ample for clusters of tens of nodes.
pub(super) const MAX_TRANSMISSIONS: u8 = 8;

type Swim = Foca<Identity, PostcardCodec, StdRng, NoCustomBroadcast>;

pub(super) enum Command {
    Leave(oneshot::Sender<()>),
    HandOver(oneshot::Sender<()>),
    Rejoin(oneshot::Sender<()>),
    SetPeers(Vec<Peer>),
}

enum Event {
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Timers,
    Rejoin,
    Command(Option<Command>),
}

fn swim_config(timing: &Timing) -> Config {
    let fanout = NonZeroUsize::new(FANOUT).expect("non-zero");
    Config {
        probe_period: timing.probe_interval,
        probe_rtt: timing.probe_timeout,
        num_indirect_probes: fanout,
        max_transmissions: NonZeroU8::new(MAX_TRANSMISSIONS).expect("non-zero"),
        suspect_to_down_after: timing.suspicion,
        // Identities are never reused (each run and renewal is a new generation).
        remove_down_after: None,
        // Room for the authentication header of the longest node name.
        max_packet_size: NonZeroUsize::new(MAX_DATAGRAM - auth::overhead(255)).expect("positive"),
        notify_down_members: true,
        periodic_announce: None,
        // Covered by the driver's own join requests to every absent configured peer.
        periodic_announce_to_down_members: None,
        periodic_gossip: Some(PeriodicParams {
            frequency: timing.gossip_interval,
            num_members: fanout,
        }),
    }
}

fn new_swim(identity: Identity, timing: &Timing) -> Swim {
    Foca::new(
        identity,
        swim_config(timing),
        rand::make_rng::<StdRng>(),
        PostcardCodec,
    )
}

pub(super) struct Driver {
    swim: Swim,
    runtime: AccumulatingRuntime<Identity>,
    socket: UdpSocket,
    sealer: Sealer,
    opener: Opener,
    local: Identity,
    /// Every other configured node.
    peers: BTreeMap<String, SocketAddrV4>,
    timers: BTreeMap<(Instant, u64), Timer<Identity>>,
    next_timer: u64,
    timing: Timing,
    counters: Arc<Counters>,
    view: watch::Sender<View>,
    /// Name -> (liveness, since), to keep `since` across publications.
    history: BTreeMap<String, (Liveness, SystemTime)>,
    left: bool,
    joining_since: Instant,
    /// Peers heard from since this generation started: the view settles once all are.
    heard: BTreeSet<String>,
    settled: bool,
    /// Tests cut a member off the network with it, as its link going down would: every
    /// datagram in or out is lost.
    #[cfg(test)]
    pub(super) link_cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Driver {
    pub(super) async fn bind(
        settings: Settings,
        counters: Arc<Counters>,
    ) -> Result<(Self, watch::Receiver<View>), MembershipError> {
        let Settings {
            local,
            peers,
            key,
            timing,
        } = settings;
        let socket = UdpSocket::bind(local.addr)
            .await
            .map_err(|source| MembershipError::Bind {
                addr: local.addr,
                source,
            })?;
        let epoch = boot_epoch();
        let identity = Identity {
            name: local.name.clone(),
            addr: local.addr,
            generation: epoch,
            handing_over: false,
        };
        let swim = new_swim(identity.clone(), &timing);
        let (view, receiver) = watch::channel(View {
            local: local.name.clone(),
            members: BTreeMap::new(),
            settled: false,
        });
        let mut driver = Self {
            swim,
            runtime: AccumulatingRuntime::new(),
            socket,
            sealer: Sealer::new(key.clone(), &local.name, epoch),
            opener: Opener::new(key),
            local: identity,
            peers: peers
                .into_iter()
                .filter(|peer| peer.name != local.name)
                .map(|Peer { name, addr }| (name, addr))
                .collect(),
            timers: BTreeMap::new(),
            next_timer: 0,
            timing,
            counters,
            view,
            history: BTreeMap::new(),
            left: false,
            joining_since: Instant::now(),
            heard: BTreeSet::new(),
            settled: false,
            #[cfg(test)]
            link_cut: Arc::default(),
        };
        driver.publish();
        Ok((driver, receiver))
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut rejoin = interval(self.timing.rejoin_interval);
        rejoin.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buffer = vec![0; 65536];
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                received = self.socket.recv_from(&mut buffer) => Event::Datagram(received),
                () = sleep_until(deadline) => Event::Timers,
                _ = rejoin.tick() => Event::Rejoin,
                command = commands.recv() => Event::Command(command),
            };
            // Leave and rejoin return once what they send is sent and the view shows them.
            let mut done = None;
            match event {
                Event::Datagram(Ok((len, from))) => self.receive(&buffer[..len], from),
                Event::Datagram(Err(error)) => {
                    // ICMP errors from earlier sends surface here; nothing to do.
                    tracing::trace!(%error, "gossip receive error");
                }
                Event::Timers => self.fire_due_timers(),
                Event::Rejoin => self.ask_absent_peers_to_join(),
                Event::Command(Some(Command::Leave(sent))) => {
                    self.leave();
                    done = Some(sent);
                }
                Event::Command(Some(Command::HandOver(sent))) => {
                    self.hand_over();
                    done = Some(sent);
                }
                Event::Command(Some(Command::Rejoin(sent))) => {
                    self.rejoin();
                    done = Some(sent);
                }
                Event::Command(Some(Command::SetPeers(peers))) => self.set_peers(peers),
                Event::Command(None) => return,
            }
            self.flush().await;
            self.publish();
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let timer = self.timers.keys().next().map(|(deadline, _)| *deadline);
        let settle = (!self.settled).then(|| self.joining_since + self.timing.join_timeout);
        // With nothing scheduled, wake up rarely; any event recomputes the deadline.
        let idle = Instant::now() + self.timing.rejoin_interval;
        [timer, settle].into_iter().flatten().min().unwrap_or(idle)
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr) {
        if self.link_is_cut() {
            return;
        }
        let opened = match self.opener.open(datagram) {
            Ok(opened) => opened,
            Err(reject) => {
                let before = self.counters.rejected(reject);
                // An unreadable version means a peer too far ahead: say so once, loudly.
                if matches!(reject, Reject::Version(_)) && before == 0 {
                    tracing::warn!(%from, %reject, "dropped gossip datagram of another protocol version; upgrade or roll back that node so every node runs this release or the next");
                } else {
                    tracing::debug!(%from, %reject, "dropped gossip datagram");
                }
                return;
            }
        };
        let header: Option<Header<Identity>> = PostcardCodec.decode_header(opened.payload).ok();
        let src = header.map(|header| header.src).filter(|src| {
            self.is_peer(opened.sender, from.ip()) && claims(src, opened.sender, from)
        });
        let Some(src) = src else {
            Counters::bump(&self.counters.unknown_sender);
            tracing::debug!(%from, sender = opened.sender, "dropped gossip datagram from an unknown sender");
            return;
        };
        Counters::bump(&self.counters.accepted);
        if !self.settled && !self.heard.contains(opened.sender) {
            self.heard.insert(opened.sender.to_owned());
        }
        // Out until told to rejoin: foca would rejoin by itself on hearing it is down.
        if self.left {
            return;
        }
        self.rejoin_if_cut_off(&src);
        if let Err(error) = self.swim.handle_data(opened.payload, &mut self.runtime) {
            Counters::bump(&self.counters.protocol_errors);
            tracing::debug!(%from, %error, "gossip message refused");
        }
    }

    /// A peer this node holds down speaks while every peer is down to this node: the
    /// partition that cut this node off has healed, and the peers hold it down too.
    /// Rejoining as a new generation before foca answers keeps the verdicts this node
    /// reached alone from reaching the peers: foca would answer the peer that it is down
    /// and, as that peer holds this node down, make the peer rejoin as well (and so every
    /// node of the other side), each rejoin unsettling the views again.
    fn rejoin_if_cut_off(&mut self, sender: &Identity) {
        let alone = self.swim.iter_members().next().is_none();
        let held_down = || {
            self.swim
                .iter_membership_state()
                .any(|member| member.state() == State::Down && member.id() == sender)
        };
        if !alone || !held_down() {
            return;
        }
        let Some(renewed) = foca::Identity::renew(&self.local) else {
            return;
        };
        tracing::info!(
            peer = %sender.name,
            generation = renewed.generation,
            "heard from a peer again after holding every peer down; rejoining as a new generation"
        );
        self.start_generation(renewed);
    }

    #[cfg(test)]
    fn link_is_cut(&self) -> bool {
        self.link_cut.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(not(test))]
    fn link_is_cut(&self) -> bool {
        false
    }

    fn is_peer(&self, name: &str, source: IpAddr) -> bool {
        self.peers
            .get(name)
            .is_some_and(|addr| IpAddr::V4(*addr.ip()) == source)
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        // foca's order for timers that fell due together (indirect probes first).
        due.sort();
        for timer in due {
            if let Err(error) = self.swim.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "gossip timer");
            }
        }
    }

    /// Join requests to every configured peer that is not a member: never heard from,
    /// down, or on the other side of a healed partition.
    fn ask_absent_peers_to_join(&mut self) {
        if self.left {
            return;
        }
        let active: Vec<String> = self
            .swim
            .iter_members()
            .map(|member| member.id().name.clone())
            .collect();
        let absent: Vec<String> = self
            .peers
            .keys()
            .filter(|name| !active.contains(name))
            .cloned()
            .collect();
        self.ask_to_join(absent);
    }

    fn ask_to_join(&mut self, names: Vec<String>) {
        for name in names {
            let Some(&addr) = self.peers.get(&name) else {
                continue;
            };
            // Announcements are accepted by name, whatever the generation.
            let peer = Identity {
                name,
                addr,
                generation: 0,
                handing_over: false,
            };
            if let Err(error) = self.swim.announce(peer, &mut self.runtime) {
                tracing::debug!(%error, "gossip join request");
            }
        }
    }

    /// A new node list (Kubernetes mode follows the Nodes): new peers are asked to join
    /// at once; datagrams from removed ones are dropped from now on.
    fn set_peers(&mut self, peers: Vec<Peer>) {
        let peers: BTreeMap<String, SocketAddrV4> = peers
            .into_iter()
            .filter(|peer| peer.name != self.local.name)
            .map(|Peer { name, addr }| (name, addr))
            .collect();
        if peers == self.peers {
            return;
        }
        tracing::info!(peers = peers.len(), "gossip peers changed");
        self.peers = peers;
        self.history
            .retain(|name, _| name == &self.local.name || self.peers.contains_key(name));
        self.ask_absent_peers_to_join();
    }

    fn leave(&mut self) {
        if self.left {
            return;
        }
        if let Err(error) = self.swim.leave_cluster(&mut self.runtime) {
            tracing::warn!(%error, "leaving the gossip cluster");
        }
        // A second push of the goodbye, to other random members, in case one is lost.
        if let Err(error) = self.swim.gossip(&mut self.runtime) {
            tracing::debug!(%error, "gossiping the departure");
        }
        self.left = true;
        tracing::info!(node = %self.local.name, "left the gossip cluster");
    }

    /// Leaves as this generation's handing-over identity, which wins over the running one
    /// at every peer, so they learn the data path stays.
    fn hand_over(&mut self) {
        if self.left {
            return;
        }
        let identity = Identity {
            handing_over: true,
            ..self.local.clone()
        };
        self.replace_swim(identity);
        self.leave();
    }

    fn rejoin(&mut self) {
        if !self.left {
            return;
        }
        self.left = false;
        let generation = boot_epoch().max(self.local.generation + 1);
        self.start_generation(Identity {
            generation,
            ..self.local.clone()
        });
        tracing::info!(node = %self.local.name, generation, "rejoining the gossip cluster");
    }

    /// Runs as `identity` from a fresh SWIM state, joining every peer again.
    ///
    /// foca drops the timers of the previous identity, including those that would turn
    /// its suspicions into downs. A peer suspected just before the gap (a link outage,
    /// or the cluster declaring this node down), whose refutation never came because the
    /// suspicion itself was lost on the way out, would then stay suspect for good: neither
    /// probes nor messages at the same incarnation clear a suspicion. So the members still
    /// up carry over as alive, to be probed (and suspected, with live timers) afresh, and
    /// those declared down are forgotten and asked to join like the rest. Every peer gets a
    /// join request, so it learns the new generation at once and its answer refreshes the
    /// view; until all have answered (or the join timeout), the view is unsettled.
    fn start_generation(&mut self, identity: Identity) {
        self.replace_swim(identity);
        self.settled = false;
        self.heard.clear();
        self.joining_since = Instant::now();
        let everyone = self.peers.keys().cloned().collect();
        self.ask_to_join(everyone);
    }

    /// Runs as `identity` from a fresh SWIM state that knows the members still up.
    fn replace_swim(&mut self, identity: Identity) {
        let up: Vec<Member<Identity>> = self
            .swim
            .iter_members()
            .map(|member| Member::new(member.id().clone(), member.incarnation(), State::Alive))
            .collect();
        self.swim = new_swim(identity.clone(), &self.timing);
        // Timers of the previous instance would fire into the new one.
        self.timers.clear();
        if let Err(error) = self
            .swim
            .apply_many(up.into_iter(), false, &mut self.runtime)
        {
            tracing::debug!(%error, "carrying the gossip members over");
        }
        self.local = identity;
    }

    /// Sends what foca produced, schedules its timers, logs its notifications.
    async fn flush(&mut self) {
        // Until nothing is left: a notification may start a new generation, whose join
        // requests are produced after this round's sends.
        while self.runtime.backlog() > 0 {
            self.flush_once().await;
        }
    }

    async fn flush_once(&mut self) {
        while let Some((to, payload)) = self.runtime.to_send() {
            let datagram = self.sealer.seal(&payload);
            if self.link_is_cut() {
                Counters::bump(&self.counters.send_errors);
                continue;
            }
            match self
                .socket
                .send_to(&datagram, SocketAddr::V4(to.addr))
                .await
            {
                Ok(_) => Counters::bump(&self.counters.sent),
                Err(error) => {
                    Counters::bump(&self.counters.send_errors);
                    tracing::debug!(to = %to.addr, %error, "gossip send");
                }
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.next_timer += 1;
            self.timers.insert((now + after, self.next_timer), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.notified(notification);
        }
    }

    fn notified(&mut self, notification: OwnedNotification<Identity>) {
        match notification {
            OwnedNotification::Rejoin(identity) => {
                tracing::info!(
                    generation = identity.generation,
                    "declared down by the cluster; rejoining as a new generation"
                );
                self.start_generation(identity);
            }
            OwnedNotification::Defunct if !self.left => {
                tracing::warn!("declared down by the cluster");
            }
            OwnedNotification::Rename(old, new) => {
                tracing::debug!(node = %new.name, old = old.generation, new = new.generation, "member restarted");
            }
            other => tracing::trace!(notification = ?other, "gossip"),
        }
    }

    /// Publishes the view when it changed, logging each member's transitions.
    fn publish(&mut self) {
        let now = SystemTime::now();
        let mut members = BTreeMap::new();
        let own = if self.left {
            Liveness::Down
        } else {
            Liveness::Alive
        };
        members.insert(
            self.local.name.clone(),
            self.member(
                &self.local.name.clone(),
                self.local.addr,
                own,
                0,
                Some(self.local.generation),
                now,
            ),
        );
        let known: Vec<(Identity, Liveness, u16)> = self
            .swim
            .iter_membership_state()
            .filter(|member| self.peers.contains_key(&member.id().name))
            .map(|member| {
                let liveness = match member.state() {
                    State::Alive => Liveness::Alive,
                    State::Suspect => Liveness::Suspect,
                    State::Down if member.id().handing_over => Liveness::HandingOver,
                    State::Down => Liveness::Down,
                };
                (member.id().clone(), liveness, member.incarnation())
            })
            .collect();
        for (identity, liveness, incarnation) in known {
            let view = self.member(
                &identity.name,
                identity.addr,
                liveness,
                incarnation,
                Some(identity.generation),
                now,
            );
            members.insert(identity.name, view);
        }
        let absent: Vec<(String, SocketAddrV4)> = self
            .peers
            .iter()
            .filter(|(name, _)| !members.contains_key(*name))
            .map(|(name, addr)| (name.clone(), *addr))
            .collect();
        for (name, addr) in absent {
            let view = self.member(&name, addr, Liveness::Down, 0, None, now);
            members.insert(name, view);
        }
        self.settle(&members);
        let view = View {
            local: self.local.name.clone(),
            members,
            settled: self.settled,
        };
        self.view.send_if_modified(|current| {
            let changed = *current != view;
            *current = view;
            changed
        });
    }

    fn member(
        &mut self,
        name: &str,
        address: SocketAddrV4,
        liveness: Liveness,
        incarnation: u16,
        generation: Option<u64>,
        now: SystemTime,
    ) -> MemberView {
        let since = match self.history.entry(name.to_owned()) {
            Entry::Occupied(mut entry) if entry.get().0 != liveness => {
                tracing::info!(member = name, from = %entry.get().0, to = %liveness, "gossip: member changed state");
                *entry.get_mut() = (liveness, now);
                now
            }
            Entry::Occupied(entry) => entry.get().1,
            Entry::Vacant(entry) => {
                if name != self.local.name {
                    tracing::info!(member = name, state = %liveness, "gossip: member");
                }
                entry.insert((liveness, now));
                now
            }
        };
        MemberView {
            address,
            liveness,
            incarnation,
            generation,
            since,
        }
    }

    fn settle(&mut self, members: &BTreeMap<String, MemberView>) {
        if self.settled {
            return;
        }
        let heard_from_all = self.peers.keys().all(|name| self.heard.contains(name));
        let waited = self.joining_since.elapsed() >= self.timing.join_timeout;
        if heard_from_all || waited {
            self.settled = true;
            let alive = members
                .values()
                .filter(|member| member.liveness.is_up())
                .count();
            tracing::info!(
                alive,
                nodes = members.len(),
                after_ms = self.joining_since.elapsed().as_millis() as u64,
                "gossip membership settled"
            );
        }
    }
}

/// Whether a SWIM message from `src` is from the identity the datagram was signed as,
/// at the address it came from.
fn claims(src: &Identity, sender: &str, from: SocketAddr) -> bool {
    src.name == sender && SocketAddr::V4(src.addr) == from
}
