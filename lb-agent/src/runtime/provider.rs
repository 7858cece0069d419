//! The agent's state shared between the control loop and the local API.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;

use super::reconcile::{Plan, Reconciler};
use crate::{
    arp::{self, Announcer, SysPaths},
    dataplane::{DataplaneError, kernel::KernelDataplane},
    membership::{Counters, View},
    model::Protocol,
    sources::{Cluster, Settings},
    status::{
        self, AgentStatus, Explanation, FlowList, MapsView, MemberStatus, Ownership, ProviderError,
        StatusProvider,
    },
};

/// What the control loop owns; the API reads it under the same lock.
pub(super) struct AgentState {
    pub settings: Arc<Settings>,
    /// What the source says now.
    pub cluster: Arc<Cluster>,
    /// The LAN interface the programs are attached to.
    pub interface: String,
    /// The interface's MTU; the source's `mtu` overrides it in the inputs.
    pub mtu: u32,
    pub reconciler: Reconciler<KernelDataplane>,
    pub plan: Plan,
    pub ownership: BTreeMap<Ipv4Addr, Ownership>,
    pub xdp_mode: Option<&'static str>,
    /// Attached, with the first state applied.
    pub ready: bool,
    pub interface_problem: Option<String>,
    pub announcer: Option<Announcer>,
    /// Why the announcer could not start, last time it was tried.
    pub announcer_error: Option<String>,
}

impl AgentState {
    pub fn new(
        settings: Settings,
        cluster: Arc<Cluster>,
        interface: String,
        mtu: u32,
        reconciler: Reconciler<KernelDataplane>,
        plan: Plan,
    ) -> Self {
        let mut state = Self {
            settings: Arc::new(settings),
            cluster,
            interface,
            mtu,
            reconciler,
            plan: plan.clone(),
            ownership: BTreeMap::new(),
            xdp_mode: None,
            ready: false,
            interface_problem: None,
            announcer: None,
            announcer_error: None,
        };
        state.set_plan(plan);
        state
    }
}

/// [`AgentState`] behind a lock, plus what the API reads without it.
pub(super) struct Shared {
    pub state: Mutex<AgentState>,
    gossip: Option<Arc<Counters>>,
    view: Option<watch::Receiver<View>>,
}

impl Shared {
    pub fn new(
        state: AgentState,
        gossip: Option<Arc<Counters>>,
        view: Option<watch::Receiver<View>>,
    ) -> Self {
        Self {
            state: Mutex::new(state),
            gossip,
            view,
        }
    }

    fn members(&self, cluster: &Cluster) -> Vec<MemberStatus> {
        let view = match &self.view {
            Some(view) => view.borrow().clone(),
            None => View::all_alive(&cluster.inputs.node.name, &cluster.gossip_peers(0)),
        };
        MemberStatus::from_view(&view)
    }

    fn with_view<T>(&self, read: impl FnOnce(status::View<'_>) -> T) -> T {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let view = status::View {
            inputs: &state.plan.inputs,
            state: state.reconciler.applied(),
            interface: &state.interface,
            xdp_mode: state.xdp_mode,
            ready: state.ready,
            maps: Some(state.reconciler.dataplane() as &dyn MapsView),
            ownership: &state.ownership,
            members: self.members(&state.cluster),
            arp: state
                .announcer
                .as_ref()
                .map(|announcer| announcer.counters().into()),
            gossip: self.gossip.as_deref().map(Into::into),
        };
        read(view)
    }
}

impl StatusProvider for Shared {
    fn status(&self) -> AgentStatus {
        self.with_view(|view| view.status())
    }

    fn flows(&self, limit: usize) -> Result<FlowList, ProviderError> {
        self.with_view(|view| view.flows(limit))
    }

    fn explain(
        &self,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    ) -> Result<Explanation, ProviderError> {
        self.with_view(|view| view.explain(client, vip, protocol))
    }

    fn members(&self) -> Vec<MemberStatus> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.members(&state.cluster)
    }

    fn ready(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
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
    pub(super) fn set_plan(&mut self, plan: Plan) {
        self.ownership = plan
            .elections
            .iter()
            .map(|(vip, election)| (*vip, ownership(election)))
            .collect();
        self.plan = plan;
    }

    pub(super) fn apply(&mut self) -> Result<Option<Duration>, DataplaneError> {
        self.reconciler.reconcile(&self.plan.inputs)
    }

    pub(super) fn start_announcer(&mut self, interface: &str, owned: watch::Receiver<arp::Owned>) {
        let started = arp::interface::select(&SysPaths::live(), Some(interface))
            .map_err(|error| error.to_string())
            .and_then(|selected| {
                Announcer::start(&selected, owned).map_err(|error| error.to_string())
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
