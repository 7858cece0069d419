//! Helpers for the privileged tests: network namespaces and packet building.

pub mod bench;
pub mod cpu;
pub mod fixture;
pub mod fuzz;
pub mod lab;
pub mod netns;
pub mod packets;
