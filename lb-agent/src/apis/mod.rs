//! The API types the agent owns (the `AddressPool` custom resource and its status
//! conditions) and what their status should say; and the Kubernetes objects the IPAM
//! reads, in its terms (a pool's label selectors, a Service's request). No I/O.

pub mod address_pool;
pub(crate) mod conditions;
mod label_selector;
pub mod pool_status;
pub mod service;
