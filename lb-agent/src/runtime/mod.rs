//! The running agent: membership, election, data path, ARP and the local API, kept in
//! step by one control loop.
//!
//! Start: load (or adopt) the pinned maps, join the gossip and wait until the view has
//! settled, apply the desired state, then attach the programs (or swap them into the
//! pinned links a previous agent left), start ARP for the owned VIPs and the API.
//!
//! The state comes from a [`Source`]: the standalone file ([`FileSource`]) or the
//! Kubernetes API (`crate::sources::kubernetes::source::KubeSource`); both produce a [`Cluster`], and
//! everything after that is this one loop.
//!
//! Loop, on every membership change, interface change, SIGHUP or new cluster state:
//! [`reconcile::plan`] (inputs and elections) -> [`reconcile::Reconciler`] (diff and
//! apply) -> owned VIPs to the ARP announcer, all announced again when membership gained
//! a member ([`announce`]: a partition may have healed). Every ownership change is logged
//! with its time:
//!
//! ```text
//! 2026-11-21T20:15:03.412Z INFO VIP owner changed vip=172.16.200.20 from=node1 to=node2
//! 2026-11-21T20:15:03.412Z INFO this node now owns the VIP vip=172.16.200.20
//! ```
//!
//! SIGTERM or SIGINT hand over gracefully: ARP stops, the node leaves the gossip as
//! handing over (peers re-elect at once but keep its endpoints, see
//! [`crate::membership::HANDOVER_GRACE`]), the programs stay attached and pinned (traffic
//! keeps flowing) and the process exits 0; the next agent adopts the pins. After SIGKILL
//! the pins stay too.

mod announce;
mod provider;
pub mod reconcile;

use std::{
    io,
    sync::{Arc, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
    task::JoinHandle,
    time::{MissedTickBehavior, interval, timeout},
};

use self::{
    provider::{AgentState, Shared},
    reconcile::{Owners, Plan, Reconciler, plan},
};
use crate::{
    api::{ApiError, http::HttpServer, socket::SocketServer},
    arp::{self, Announcer, SysPaths},
    dataplane::{
        DataplaneError,
        kernel::KernelDataplane,
        loader::{self, LoadError, PinDir, Took},
        maps::Maps,
        sysctl::{self, SysctlError},
    },
    membership::{self, GossipKey, KeyError, Membership, MembershipError, View},
    model::{Tables, desired_state_with},
    sources::{Cluster, Settings, Source},
    status::Ownership,
    telemetry::{OwnershipChange, Telemetry},
};

/// How often a failed map update and a missing ARP announcer are retried.
const RETRY: Duration = Duration::from_secs(1);
/// How often the announce interface is looked at.
const LINK_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("choosing the LAN interface: {0}")]
    Interface(#[from] arp::InterfaceError),
    #[error(
        "reading the MTU of {interface} from {path} (set `mtu:` in the file to skip this): {detail}"
    )]
    Mtu {
        interface: String,
        path: String,
        detail: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error("adopting the BPF maps: {0}")]
    Adopt(#[source] DataplaneError),
    #[error("writing the BPF maps: {0}")]
    Apply(#[source] DataplaneError),
    #[error("preparing interface {interface}: {source}")]
    Sysctl {
        interface: String,
        #[source]
        source: SysctlError,
    },
    #[error("attaching to interface {interface}: {source}")]
    Attach {
        interface: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error("the ARP announcer cannot open its socket (the agent needs CAP_NET_RAW)")]
    ArpSocket(#[source] arp::ArpError),
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: io::Error,
    },
}

impl From<LoadError> for RuntimeError {
    fn from(error: LoadError) -> Self {
        Self::Load(Box::new(error))
    }
}

/// The interface the programs attach to: the configured one, else the default route's.
pub fn lan_interface(settings: &Settings) -> Result<String, RuntimeError> {
    match &settings.interface {
        Some(name) => Ok(name.clone()),
        None => Ok(arp::interface::choose(&SysPaths::live(), None)?.name),
    }
}

/// The MTU the source sets, else the interface's.
pub fn mtu(cluster: &Cluster, interface: &str) -> Result<u32, RuntimeError> {
    match cluster.mtu {
        Some(mtu) => Ok(mtu),
        None => link_mtu(interface),
    }
}

fn link_mtu(interface: &str) -> Result<u32, RuntimeError> {
    let path = format!("/sys/class/net/{interface}/mtu");
    let failed = |detail: String| RuntimeError::Mtu {
        interface: interface.to_owned(),
        path: path.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|error| failed(error.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| failed(format!("{text:?} is not an MTU")))
}

/// The MAC address VIP frames are handled for: the one ARP gives clients for the VIPs
/// (with a bridge or a VLAN device in between, not the attach interface's own). Read at
/// start; unreadable (no such interface yet), the data path handles every destination.
fn announce_mac(interface: &str) -> [u8; 6] {
    match arp::interface::mac(&SysPaths::live(), interface) {
        Ok(mac) => {
            tracing::info!(%interface, %mac, "handling VIP frames sent to this MAC address");
            mac.octets()
        }
        Err(error) => {
            tracing::warn!(%interface, %error, "no MAC address: handling VIP frames whatever their destination, so frames flooded to other nodes are forwarded here too");
            [0; 6]
        }
    }
}

/// Membership: the gossip, or every known node alive when `gossip` is not configured.
enum Members {
    Gossip(Membership),
    Static,
}

impl Members {
    async fn start(settings: &Settings, cluster: &Cluster) -> Result<Self, RuntimeError> {
        let Some(gossip) = &settings.gossip else {
            if cluster.inputs.peers.len() > 1 {
                tracing::warn!(
                    "no `gossip` configured: every peer counts as alive and VIPs never fail over"
                );
            }
            return Ok(Self::Static);
        };
        let key = GossipKey::from_file(&gossip.key_file)?;
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

    fn view(&self, cluster: &Cluster) -> View {
        match self {
            Self::Gossip(membership) => membership
                .view()
                .borrow()
                .clone()
                .expire_handovers(SystemTime::now()),
            Self::Static => View::all_alive(&cluster.inputs.node.name, &cluster.gossip_peers(0)),
        }
    }

    fn has_handovers(&self) -> bool {
        match self {
            Self::Gossip(membership) => membership.view().borrow().has_handovers(),
            Self::Static => false,
        }
    }

    fn receiver(&self) -> Option<watch::Receiver<View>> {
        match self {
            Self::Gossip(membership) => Some(membership.view()),
            Self::Static => None,
        }
    }

    /// Waits until the view can be trusted, at most the join timeout and a little more.
    async fn settled(&self, settings: &Settings) {
        let (Self::Gossip(membership), Some(gossip)) = (self, &settings.gossip) else {
            return;
        };
        let limit = gossip.timing().join_timeout + Duration::from_secs(1);
        let mut view = membership.view();
        let _ = timeout(limit, view.wait_for(|view| view.settled)).await;
    }

    /// Follows a new node list.
    async fn set_peers(&self, settings: &Settings, cluster: &Cluster) {
        if let (Self::Gossip(membership), Some(gossip)) = (self, &settings.gossip) {
            membership
                .set_peers(cluster.gossip_peers(gossip.port))
                .await;
        }
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

fn handler(kind: SignalKind, name: &'static str) -> Result<Signal, RuntimeError> {
    signal(kind).map_err(|source| RuntimeError::Signal {
        signal: name,
        source,
    })
}

/// Why the announce interface cannot be used, if it cannot.
fn interface_problem(interface: &str) -> Option<String> {
    arp::interface::choose(&SysPaths::live(), Some(interface))
        .err()
        .map(|error| error.to_string())
}

/// The running agent's tasks and state.
struct Agent<S> {
    source: S,
    members: Members,
    shared: Arc<Shared>,
    telemetry: Arc<Telemetry>,
    owned: watch::Sender<arp::Owned>,
    /// The membership view of the last [`Agent::step`], for the members gained since.
    seen_view: Option<View>,
    owners: Owners,
    announce_interface: String,
    /// The last apply failed: retry on the next tick.
    retry: bool,
    servers: Vec<JoinHandle<()>>,
    /// The identity the source gives this node when it differs from the running one
    /// (reported once).
    new_identity: Option<crate::model::Node>,
}

/// Runs the agent on `source` until SIGTERM or SIGINT, then hands over.
pub async fn run<S: Source>(source: S) -> Result<(), RuntimeError> {
    run_with(source, Arc::new(Telemetry::new())).await
}

/// [`run`], recording into `telemetry`, which others (the IPAM) may share: `/metrics`
/// shows what they count too.
pub async fn run_with<S: Source>(
    mut source: S,
    telemetry: Arc<Telemetry>,
) -> Result<(), RuntimeError> {
    let settings = source.settings().clone();
    let interface = lan_interface(&settings)?;
    arp::announcer::check_socket_permission(&interface).map_err(RuntimeError::ArpSocket)?;
    let cluster = source.first().await;
    // The interface's MTU, for when the source drops `mtu`; the source's otherwise.
    let mtu = link_mtu(&interface).or_else(|error| cluster.mtu.ok_or(error))?;
    let members = Members::start(&settings, &cluster).await?;
    let pins = PinDir::new(&settings.pin_dir);
    let (mut ebpf, reconciler) = open_dataplane(&settings, &cluster, mtu, &pins)?;
    members.settled(&settings).await;
    let announce_interface = settings
        .announce_interface()
        .map_or_else(|| interface.clone(), str::to_owned);
    source.publish_interface(&announce_interface);
    let reconciler = reconciler.with_mac(announce_mac(&announce_interface));
    let view = members.view(&cluster);
    let problem = interface_problem(&announce_interface);
    let first = plan(&cluster, &view, mtu, problem.as_deref());
    let mut state = AgentState::new(settings, cluster, interface.clone(), mtu, reconciler, first);
    state.interface_problem = problem;
    // Tables first, then attach: the first packet already sees the whole configuration.
    if let Some(took) = state.apply().map_err(RuntimeError::Apply)? {
        telemetry.observe_map_sync(took);
    }
    attach(&mut ebpf, &interface, &pins, &mut state)?;
    let (owned, owned_rx) = watch::channel(arp::Owned::default());
    state.start_announcer(&announce_interface, owned_rx);
    let shared = Arc::new(Shared::new(
        state,
        match &members {
            Members::Gossip(membership) => Some(membership.counters()),
            Members::Static => None,
        },
        members.receiver(),
    ));
    let mut agent = Agent {
        source,
        members,
        shared,
        telemetry,
        owned,
        seen_view: None,
        owners: Owners::default(),
        announce_interface,
        retry: false,
        servers: Vec::new(),
        new_identity: None,
    };
    agent.start_api().await;
    agent.leave_if_unusable().await;
    agent.step();
    let result = agent.run().await;
    agent.hand_over().await;
    // The programs stay attached through the pinned links; only this process's handles go.
    drop(ebpf);
    result
}

/// Loads the object with its maps pinned (a previous agent's, if any) and an engine
/// whose bookkeeping matches what the maps hold.
fn open_dataplane(
    settings: &Settings,
    cluster: &Cluster,
    mtu: u32,
    pins: &PinDir,
) -> Result<(aya::Ebpf, Reconciler<KernelDataplane>), RuntimeError> {
    let capacities = settings.capacities;
    let loader::Loaded {
        mut ebpf,
        adopted_maps,
    } = loader::load_pinned(&capacities, pins)?;
    let maps = Maps::take(&mut ebpf).map_err(|error| RuntimeError::Adopt(error.into()))?;
    // The tables built here to name the ports are the first pass's too.
    let mut tables = Tables::default();
    let named_by = desired_state_with(&cluster.inputs(mtu), &mut tables);
    let dataplane =
        KernelDataplane::adopt(maps, capacities, &named_by).map_err(RuntimeError::Adopt)?;
    let reconciler = Reconciler::new(dataplane)
        .map_err(RuntimeError::Adopt)?
        .with_tables(tables);
    if adopted_maps > 0 {
        let held = reconciler.applied();
        tracing::info!(
            pin_dir = %pins.root().display(),
            maps = adopted_maps,
            vips = held.vips.len(),
            services = held.rings.len(),
            "adopted the pinned maps of a previous agent"
        );
    }
    Ok((ebpf, reconciler))
}

fn attach(
    ebpf: &mut aya::Ebpf,
    interface: &str,
    pins: &PinDir,
    state: &mut AgentState,
) -> Result<(), RuntimeError> {
    let changed = sysctl::prepare_interface(interface).map_err(|source| RuntimeError::Sysctl {
        interface: interface.to_owned(),
        source,
    })?;
    if !changed.is_empty() {
        tracing::info!(%interface, settings = ?changed, "enabled IPv4 settings the data path needs");
    }
    let attachment =
        loader::attach(ebpf, interface, pins).map_err(|source| RuntimeError::Attach {
            interface: interface.to_owned(),
            source: Box::new(source),
        })?;
    let mode = loader::mode_name(attachment.xdp_mode);
    if attachment.xdp == Took::Replaced && attachment.tc == Took::Replaced {
        tracing::info!(%interface, xdp_mode = mode, pin_dir = %pins.root().display(), "adopted the data path: this agent's programs replaced the previous ones in the pinned links, without a gap");
    } else {
        tracing::info!(%interface, xdp_mode = mode, pin_dir = %pins.root().display(), xdp = ?attachment.xdp, tc = ?attachment.tc, "data path attached");
    }
    let node = &state.cluster.inputs.node;
    tracing::info!(node = %node.name, address = %node.address, mtu = state.mtu, "node");
    let owners = state
        .plan
        .elections
        .iter()
        .filter_map(|(vip, election)| Some((*vip, election.owner.as_deref()?)))
        .collect();
    for line in crate::summary::vip_lines(&state.plan.inputs, &owners) {
        tracing::info!("{line}");
    }
    state.xdp_mode = Some(mode);
    state.ready = true;
    Ok(())
}

impl<S: Source> Agent<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn start_api(&mut self) {
        let api = self.lock().settings.api.clone();
        let provider: Arc<dyn crate::status::StatusProvider> = self.shared.clone();
        match SocketServer::bind(&api.socket) {
            Ok(server) => {
                tracing::info!(socket = %api.socket.display(), "local API listening");
                self.servers
                    .push(tokio::spawn(server.serve(Arc::clone(&provider))));
            }
            Err(error) => api_failed(&error),
        }
        match HttpServer::bind(api.listen).await {
            Ok(server) => {
                tracing::info!(listen = %api.listen, "metrics and health checks listening");
                self.servers.push(tokio::spawn(
                    server.serve(provider, Arc::clone(&self.telemetry)),
                ));
            }
            Err(error) => api_failed(&error),
        }
    }

    async fn run(&mut self) -> Result<(), RuntimeError> {
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
    fn step(&mut self) {
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
            match state.apply() {
                Ok(Some(took)) => {
                    self.telemetry.observe_map_sync(took);
                    tracing::debug!(took_us = took.as_micros() as u64, "maps updated");
                    self.retry = false;
                }
                Ok(None) => self.retry = false,
                Err(error) => {
                    tracing::error!(%error, kind = error.metric_label(), "updating the BPF maps failed; retrying in a second");
                    self.retry = true;
                }
            }
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
    async fn leave_if_unusable(&self) {
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
    async fn hand_over(&mut self) {
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

fn api_failed(error: &ApiError) {
    tracing::error!(%error, "the local API is unavailable; the data path is not affected");
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

/// The status of a VIP's election, for the API.
fn ownership(election: &crate::election::Election) -> Ownership {
    use crate::status::CandidateStatus;
    let eligible = election
        .verdicts
        .iter()
        .filter(|verdict| verdict.ineligible.is_none())
        .count();
    let reason = match &election.owner {
        None => "no eligible node".to_owned(),
        Some(owner) if election.preferred.as_ref() == Some(owner) => {
            "preferred by `owner:` in the configuration".to_owned()
        }
        Some(_) if eligible == 0 => {
            "no Ready node is eligible: highest score among the nodes that are not Ready".to_owned()
        }
        Some(_) => format!("highest score among {eligible} eligible members"),
    };
    Ownership {
        owner: election.owner.clone(),
        reason: Some(reason),
        candidates: election
            .verdicts
            .iter()
            .map(|verdict| CandidateStatus {
                node: verdict.node.clone(),
                eligible: verdict.ineligible.is_none(),
                reason: verdict.ineligible.as_ref().map(ToString::to_string),
                score: Some(verdict.score),
            })
            .collect(),
    }
}

impl AgentState {
    fn set_plan(&mut self, plan: Plan) {
        self.ownership = plan
            .elections
            .iter()
            .map(|(vip, election)| (*vip, ownership(election)))
            .collect();
        self.plan = plan;
    }

    fn apply(&mut self) -> Result<Option<Duration>, DataplaneError> {
        self.reconciler.reconcile(&self.plan.inputs)
    }

    fn start_announcer(&mut self, interface: &str, owned: watch::Receiver<arp::Owned>) {
        let started = arp::interface::select(&SysPaths::live(), Some(interface))
            .map_err(|error| error.to_string())
            .and_then(|selected| {
                Announcer::start_per_vip(&selected, owned).map_err(|error| error.to_string())
            });
        match started {
            Ok(announcer) => {
                tracing::info!(%interface, "ARP announcer started");
                self.announcer = Some(announcer);
                self.announcer_error = None;
            }
            Err(error) => {
                // Retried every second; said once per distinct reason.
                if self.announcer_error.as_ref() != Some(&error) {
                    tracing::error!(%interface, %error, "ARP announcer not running; retrying every second");
                    self.announcer_error = Some(error);
                }
            }
        }
    }
}
