//! Address management for `LoadBalancer` Services: pure decisions over plain values, so
//! the Kubernetes controller and the tests share them.
//!
//! - [`addresses`]: a pool's CIDRs and ranges as one ordered set.
//! - [`pool`]: an `AddressPool` compiled for use, who may use it, overlaps.
//! - [`request`]: what a Service asks for, from its spec and annotations.
//! - [`allocator`]: who holds which address, choosing new ones, rebuilding after a
//!   restart, per-pool counts.

pub mod addresses;
pub mod allocator;
pub mod pool;
pub mod request;
pub mod selector;

pub use allocator::{Allocation, Allocator, Holder};
pub use pool::{Labels, Pool, PoolError, overlaps};
pub use request::{ClassPolicy, Request, Responsibility, ServiceKey};

#[cfg(test)]
mod tests;
