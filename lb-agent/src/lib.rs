//! The xdplb node agent: a source's inputs -> desired state -> diff -> dataplane.
//!
//! The sources are [`config`] (the standalone file) and [`k8s`] (the Kubernetes API), both
//! feeding [`runtime`]; [`model::desired_state`] and [`diff::diff`] are pure;
//! [`dataplane`] writes the result into the BPF maps.

pub mod api;
pub mod arp;
pub mod config;
pub mod dataplane;
pub mod diff;
pub mod election;
pub mod explain;
pub mod heap;
pub mod ipam;
pub mod k8s;
pub mod membership;
pub mod migrate;
pub mod model;
pub mod runtime;
pub mod status;
pub mod summary;
pub mod telemetry;

#[cfg(test)]
mod fixtures;
