//! Per-interface IPv4 settings the data path relies on.
//!
//! * `forwarding=1`: packets the XDP program DNATs to a pod are forwarded by the kernel
//!   from the LAN interface to the pod's interface, and `bpf_fib_lookup` (an input lookup)
//!   answers only when forwarding is on for the ingress device.
//! * `accept_local=1`: when no neighbour entry for a peer exists yet, the tunnelled
//!   packet is handed to the kernel to forward (and resolve the neighbour); its outer
//!   source is this node's own address, which the input path drops as a martian unless
//!   local sources are accepted.
//!
//! Only the LAN interface's own settings change, never the global ones.

use std::{fs, io, path::PathBuf};

/// A setting that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SysctlError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The settings enabled on the LAN interface, in the order they are applied.
pub const REQUIRED: [&str; 2] = ["forwarding", "accept_local"];

/// Sets every [`REQUIRED`] setting of `interface` to 1; returns the ones that changed.
pub fn prepare_interface(interface: &str) -> Result<Vec<&'static str>, SysctlError> {
    let mut changed = Vec::new();
    for name in REQUIRED {
        let path = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{interface}/{name}"));
        let error = |source| SysctlError {
            path: path.clone(),
            source,
        };
        let current = fs::read_to_string(&path).map_err(error)?;
        if current.trim() != "1" {
            fs::write(&path, "1").map_err(error)?;
            changed.push(name);
        }
    }
    Ok(changed)
}
