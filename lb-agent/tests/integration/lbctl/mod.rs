//! The lbctl binary as a user runs it: against the agent's socket, against a cluster's
//! API server, and converting MetalLB's configuration.

mod agent;
mod cluster;
mod migrate;
