//! Where the running agent's [`Cluster`] comes from: the [`Source`] the control loop
//! waits on. [`file::FileSource`] is the standalone file;
//! [`kubernetes::source::KubeSource`] watches the Kubernetes API.

pub mod cluster;
pub mod file;
pub mod kubernetes;
pub mod settings;

use std::{collections::BTreeSet, future::Future, net::Ipv4Addr, sync::Arc};

pub use self::{cluster::Cluster, settings::Settings};

/// What the control loop needs from a source of cluster state.
pub trait Source {
    /// Settings read at start; they never change while the agent runs.
    fn settings(&self) -> &Settings;

    /// The cluster as the source first knows it; waits until it does. Shared: a source
    /// that keeps the cluster it published (to compare the next one with) and the loop
    /// running it hold one copy.
    fn first(&mut self) -> impl Future<Output = Arc<Cluster>>;

    /// Waits for the next cluster to apply. Cancel-safe: the loop `select!`s on it.
    fn next(&mut self) -> impl Future<Output = Arc<Cluster>>;

    /// SIGHUP: the cluster to apply now, if reading the source again gives one.
    fn reload(&mut self) -> Option<Arc<Cluster>>;

    /// Whether the node list follows the source while running (then the gossip's peers
    /// follow it too); otherwise the gossip keeps the nodes it started with.
    fn live_peers(&self) -> bool;

    /// The VIPs this node announces from now on.
    fn announced(&mut self, owned: &BTreeSet<Ipv4Addr>);

    /// The interface this node announces VIPs on, once known at start: a source that
    /// restricts VIPs to interfaces (the Kubernetes pools) tells the other nodes. The
    /// standalone file has no such restriction, so by default nothing is done.
    fn publish_interface(&mut self, _interface: &str) {}
}
