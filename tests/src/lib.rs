//! Helpers for the privileged tests: network namespaces and packet building.

pub mod netns;
