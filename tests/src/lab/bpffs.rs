//! A BPF filesystem private to one lab, for the agents' pinned maps and links.
//!
//! `ip netns exec` gives every command a fresh sysfs, on which `/sys/fs/bpf` is no BPF
//! filesystem; one an agent mounted there itself would live only in that command's
//! mount namespace and vanish with the agent, taking the pins a restarted agent must
//! adopt with it. So the lab mounts its own instance in the caller's mount namespace,
//! under its scratch directory, before any agent starts (the namespaces of later
//! commands inherit it), and points each agent's `pinDir` below it. Unmounting drops
//! every pin at once: nothing of a lab survives it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A mounted BPF filesystem, unmounted (with everything pinned in it) on drop.
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    /// Mounts a new BPF filesystem instance at `path` (created if missing).
    pub fn mount(path: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        mount(
            Some("bpf"),
            path,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .with_context(|| format!("mounting a BPF filesystem on {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file pinned below the mount point, sorted.
    pub fn pins(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut pins = Vec::new();
        let mut pending = vec![self.path.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    pins.push(path);
                }
            }
        }
        pins.sort();
        Ok(pins)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Lazy: a process that still has the directory open cannot keep the mount alive.
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}
