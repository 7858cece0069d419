#![no_std]
//! Kernel programs live in the `lb-ebpf` binary; this library target exists so
//! `lb-agent`'s build script can depend on the crate and be rebuilt when it changes.
