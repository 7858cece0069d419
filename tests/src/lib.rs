//! Helpers for the privileged tests: network namespaces and packet building.

pub mod fixture;
pub mod lab;
pub mod netns;
pub mod packets;
