//! The agent's Kubernetes side against the API double (`support::kube_api`): its client,
//! the source's watches and translation, the IPAM controller and its Lease.

mod client;
mod ipam;
mod lease;
mod source;
mod translate;
