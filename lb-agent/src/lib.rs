//! The xdplb node agent: a source's inputs -> desired state -> diff -> dataplane.
//!
//! [`config`] is today's only source (the standalone file); [`model::desired_state`] and
//! [`diff::diff`] are pure; [`dataplane`] writes the result into the BPF maps.

pub mod config;
pub mod dataplane;
pub mod diff;
pub mod model;
pub mod summary;

#[cfg(test)]
mod fixtures;
