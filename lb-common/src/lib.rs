//! Shared between the xdplb kernel programs (`lb-ebpf`) and user space (`lb-agent`).
//!
//! Everything a BPF map holds is defined here once, as `#[repr(C)]` structs with
//! explicit padding and compile-time size checks, so both sides agree byte for byte.
//! The pure logic both sides must compute identically (flow hash, checksums, the VIP
//! prefilter's slot) lives here too and is tested on the host; the Maglev table builder
//! needs an allocator and is only compiled for user space.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;

pub mod checksum;
pub mod express;
pub mod hash;
pub mod layout;
#[cfg(feature = "user")]
pub mod maglev;
pub mod maps;
pub mod reasons;
pub mod types;
pub mod vip_filter;
