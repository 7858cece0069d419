//! Keeping a thread on one CPU: per-CPU maps (token buckets, next-hop caches, counters)
//! and caches are only comparable from run to run on the same CPU.

use anyhow::{Context as _, Result};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// Pins the calling thread to the CPU it runs on until dropped.
pub struct OnOneCpu {
    original: CpuSet,
}

impl OnOneCpu {
    pub fn pin() -> Result<Self> {
        let original = sched_getaffinity(Pid::from_raw(0))?;
        // SAFETY: sched_getcpu has no preconditions; it only reads the current CPU.
        let cpu = unsafe { libc::sched_getcpu() };
        let mut only = CpuSet::new();
        only.set(usize::try_from(cpu).context("sched_getcpu failed")?)?;
        sched_setaffinity(Pid::from_raw(0), &only)?;
        Ok(Self { original })
    }
}

impl Drop for OnOneCpu {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.original);
    }
}
