//! Packet fuzzing of `xdp_lb` and `tc_reply` through BPF_PROG_TEST_RUN: seeded frame
//! families, a scenario with real maps, and an oracle every frame's run must satisfy.

pub mod check;
pub mod families;
pub mod frames;
pub mod rng;
pub mod scenario;
pub mod tally;
