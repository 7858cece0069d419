//! Keeping the BPF maps in step with the desired state.
//!
//! One [`Engine`] holds the update logic (ordering, ring-slot switching, statistics
//! slots) over a [`MapStore`]: the kernel's maps ([`kernel::KernelDataplane`]) or
//! in-memory tables that check every update for ordering hazards
//! ([`memory::MemoryDataplane`]), so the host tests exercise the same code the agent runs.

mod adoption;
mod carry;
pub mod engine;
mod index_pool;
pub mod kernel;
mod layout;
pub mod loader;
pub mod maps;
pub mod memory;
mod migrations;
mod service_slots;
pub mod store;
pub mod sysctl;

pub use engine::Engine;
pub use store::MapStore;

use crate::{diff::Changes, model::State, wire};

/// A data path that can be brought to a state and read back.
pub trait Dataplane {
    /// Applies `changes` so that no packet sees a half-updated service: tables are
    /// complete before anything points at them and unreferenced before they go.
    fn apply(&mut self, changes: &Changes) -> Result<(), DataplaneError>;

    /// The state the maps hold, read back from them.
    fn read(&self) -> Result<State, DataplaneError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Map(#[from] maps::MapsError),
    #[error(
        "too many {what}: {needed} needed, capacity is {capacity} (see `capacities` in the configuration)"
    )]
    Capacity {
        what: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error("no free ring slot: all {slots} are in use")]
    NoFreeRingSlot { slots: u32 },
    #[error("port {port} has no VIP entry")]
    UnknownVip { port: String },
    #[error("port {port} refers to service {service}, which has no rings")]
    UnknownService { port: String, service: String },
    #[error("service {service} is removed but port entries still refer to it")]
    StillReferenced { service: String },
    #[error("{map} holds an entry this agent did not write: {detail}")]
    Foreign { map: &'static str, detail: String },
    #[error("{map}: index {index} is out of range")]
    OutOfRange { map: &'static str, index: u32 },
    #[error("unsafe update order: {0}")]
    Hazard(String),
}

impl From<wire::Foreign> for DataplaneError {
    fn from(wire::Foreign { map, detail }: wire::Foreign) -> Self {
        Self::Foreign { map, detail }
    }
}

impl DataplaneError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Map(_) => "map",
            Self::Capacity { .. } => "capacity",
            Self::NoFreeRingSlot { .. } => "no_ring_slot",
            Self::UnknownVip { .. } => "unknown_vip",
            Self::UnknownService { .. } => "unknown_service",
            Self::StillReferenced { .. } => "still_referenced",
            Self::Foreign { .. } => "foreign_entry",
            Self::OutOfRange { .. } => "out_of_range",
            Self::Hazard(_) => "hazard",
        }
    }
}
