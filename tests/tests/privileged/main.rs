//! The privileged tests, one binary: BPF_PROG_TEST_RUN fixtures and frame fuzzing of the
//! kernel programs, the agent against the real BPF maps, and the lab's namespaces for
//! the end-to-end, ARP, failover, fault, restart and `lbctl` tests. They need root and
//! run one at a time:
//!
//! ```text
//! cargo build --bins && cargo test -p testbed --test privileged -- --test-threads=1
//! ```
//!
//! A module filter runs one part, e.g. `cargo test -p testbed --test privileged
//! failover:: -- --test-threads=1`. The container tests are `#[ignore]`d here; the
//! container tier runs them with `-- --ignored containers::` once the image is built.

mod agent_maps;
mod agent_restart;
mod arp;
mod containers;
mod dsr_bench;
mod e2e_dsr;
mod failover;
mod faults;
mod fixtures;
mod fuzz_frames;
mod kubernetes_check;
mod lbctl_lab;
mod monitoring;
mod owner_rig;
mod restarts;
