//! The Kubernetes source: watches the API (Services, EndpointSlices, Nodes, AddressPools)
//! and translates it into the [`Cluster`](super::Cluster) the control loop runs.

pub mod access;
pub mod client;
pub mod kubeconfig;
pub mod outage;
pub mod preflight;
pub mod settings;
pub mod settle;
pub mod slice;
pub mod source;
pub mod translate;
