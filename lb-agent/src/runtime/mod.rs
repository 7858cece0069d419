//! The running agent: membership, election, data path, ARP and the local API, kept in
//! step by one control loop.
//!
//! Start: load (or adopt) the pinned maps, join the gossip and wait until the view has
//! settled, apply the desired state, then attach the programs (or swap them into the
//! pinned links a previous agent left), start ARP for the owned VIPs and the API.
//!
//! The state comes from a [`Source`]: the standalone file
//! ([`crate::sources::file::FileSource`]) or the Kubernetes API
//! ([`crate::sources::kubernetes::source::KubeSource`]); both produce a [`Cluster`], and
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
//!
//! Here: start-up ([`run`]). The loop is in `control_loop`, membership as the loop sees
//! it in `members`, the LAN interface's helpers in [`interface`], the state the loop and
//! the API share in `provider`.

mod announce;
mod control_loop;
pub mod interface;
mod members;
mod provider;
pub mod reconcile;
mod refused;

use std::{io, sync::Arc};

use tokio::{sync::watch, task::JoinHandle};

use self::{
    interface::{announce_mac, interface_problem, lan_interface, link_mtu},
    members::Members,
    provider::{AgentState, Shared},
    reconcile::{Owners, Reconciler, plan},
};
use crate::{
    arp,
    dataplane::{
        DataplaneError,
        kernel::KernelDataplane,
        loader::{self, LoadError, PinDir, Took},
        maps::Maps,
        sysctl::{self, SysctlError},
    },
    membership::{KeyError, MembershipError, View},
    model::{Tables, desired_state_with},
    sources::{Cluster, Settings, Source},
    telemetry::Telemetry,
};

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
    #[error("the gossip key file {}: {source}", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: KeyError,
    },
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

/// Runs the agent on `source` until SIGTERM or SIGINT, then hands over; records into
/// `telemetry`, which others (the source, the IPAM) may share: `/metrics` shows what
/// they count too.
pub async fn run<S: Source>(mut source: S, telemetry: Arc<Telemetry>) -> Result<(), RuntimeError> {
    let settings = source.settings().clone();
    let interface = lan_interface(&settings)?;
    arp::announcer::check_socket_permission(&interface).map_err(RuntimeError::ArpSocket)?;
    let cluster = source.first().await;
    let pins = PinDir::new(&settings.pin_dir);
    if let Err(refusal) = loader::check_pins(&settings.capacities, &pins) {
        return match refusal {
            LoadError::Incompatible { .. } => {
                refused::serve(&settings, &cluster, &interface, refusal, telemetry).await
            }
            other => Err(other.into()),
        };
    }
    // The interface's MTU, for when the source drops `mtu`; the source's otherwise.
    let mtu = link_mtu(&interface).or_else(|error| cluster.mtu.ok_or(error))?;
    let members = Members::start(&settings, &cluster).await?;
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
