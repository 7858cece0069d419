//! The kernel side of the agent: loading, attaching and the typed maps.

pub mod loader;
pub mod maps;
