//! The xdplb node agent: a source's inputs -> desired state -> diff -> dataplane.
//!
//! The modules form layers. A module may import from its own layer and the layers
//! below it, never from a layer above. The `// layer:` comments among the `mod`
//! declarations in this file's source are the order, bottom first, each with what
//! belongs there; `cargo xtask test`'s lint tier reads them from there and fails on an
//! upward import (`xtask/src/layers.rs`).

// layer: core. Pure decisions: the model, its desired state and diff, the election,
// explanations, the IPAM's decisions, the model in the BPF maps' byte layouts (`wire`).
// No I/O: no tokio, aya, kube, k8s_openapi or hyper (the lint tier refuses them here).
pub mod diff;
pub mod election;
pub mod explain;
#[cfg(test)]
mod fixtures;
pub mod ipam;
pub mod model;
pub mod summary;
pub(crate) mod wire;

// layer: apis. The API types the agent owns (the AddressPool custom resource, its
// conditions, what its status should say) and the Kubernetes objects read into the
// core's terms (a Service's request). No I/O. Above the core: an AddressPool compiles
// into the IPAM's `Pool`, a Service into its `Request`, and the CEL rules come from the
// core's unicast rule.
pub mod apis;

// layer: adapters. The outside world: the BPF maps, ARP, the gossip, the local status
// API, metrics, the allocator's heap, the files users hand in.
pub mod api;
pub mod arp;
pub mod dataplane;
pub mod files;
pub mod heap;
pub mod membership;
pub mod status;
pub mod telemetry;

// layer: sources. Where the cluster comes from: the standalone file (`config` is its
// schema) and the Kubernetes API. Above the adapters: a source's `Cluster` carries
// their settings (ARP timing, gossip peers, map capacities).
pub mod config;
pub mod sources;

// layer: controllers. The IPAM controller and its Lease, which watch the API with the
// Kubernetes source's helpers.
pub mod ipam_controller;

// layer: runtime. Start-up and the control loop.
pub mod runtime;
