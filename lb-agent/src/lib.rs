//! The xdplb node agent: a source's inputs -> desired state -> diff -> dataplane.
//!
//! # Layers
//!
//! The modules form layers; a module may import from its own layer and the layers
//! below it, never from a layer above (`cargo xtask test` checks this, see
//! `xtask/src/layers.rs`, which holds the same table). Bottom to top:
//!
//! 1. **core**: [`model`], [`diff`], [`election`], [`explain`], [`ipam`] (the IPAM's
//!    decisions), [`summary`] and `wire` (the model in the BPF maps' byte layouts).
//!    Pure: no I/O, no tokio, no aya.
//! 2. **apis**: [`apis`], the `AddressPool` custom resource, its conditions and what its
//!    status should say. Types and pure functions over them; they compile into the
//!    core's types (`ipam::Pool`), which is why they sit above it.
//! 3. **adapters**: [`dataplane`] (the BPF maps), [`arp`], [`membership`] (the gossip),
//!    [`api`] and [`status`] (the local status API), [`telemetry`], [`heap`].
//! 4. **sources**: [`sources`] (the [`sources::Source`] the control loop waits on, the
//!    standalone file and the Kubernetes API) and [`config`] (the standalone file's
//!    schema). A source builds a [`sources::Cluster`] that carries the adapters'
//!    settings, which is why sources sit above the adapters.
//! 5. **controllers**: [`ipam_controller`], the IPAM controller and its Lease; it watches
//!    the API with the Kubernetes source's helpers.
//! 6. **runtime**: [`runtime`] (start-up and the control loop) and [`migrate`] (MetalLB
//!    resources to `AddressPool`s, for `lbctl migrate`).

// 1. core
pub mod diff;
pub mod election;
pub mod explain;
pub mod ipam;
pub mod model;
pub mod summary;
pub(crate) mod wire;
// 2. apis
pub mod apis;
// 3. adapters
pub mod api;
pub mod arp;
pub mod dataplane;
pub mod heap;
pub mod membership;
pub mod status;
pub mod telemetry;
// 4. sources
pub mod config;
pub mod sources;
// 5. controllers
pub mod ipam_controller;
// 6. runtime
pub mod migrate;
pub mod runtime;

#[cfg(test)]
mod fixtures;
