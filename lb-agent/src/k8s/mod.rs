//! Kubernetes mode: the API types the agent owns and its client side.

pub mod client;
mod conditions;
pub mod crd;
pub mod ipam_controller;
pub mod lease;
pub mod outage;
pub mod pool_status;
pub mod settings;
pub mod settle;
pub mod slice;
pub mod source;
pub mod translate;
