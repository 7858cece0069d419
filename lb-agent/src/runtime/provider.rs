//! The agent's state shared between the control loop and the local API.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use super::reconcile::{Plan, Reconciler};
use crate::{
    arp::Announcer,
    dataplane::kernel::KernelDataplane,
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
