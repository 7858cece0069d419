//! lb-agent's integration tests, one binary (`cargo test -p lb-agent --test integration`):
//! the library's public API and the two binaries, driven from outside as a user, the
//! API server or a deployment would. One folder per area; `support/` holds the doubles
//! they share (the runtime behind the local API, the Kubernetes API server, lbctl runs).
//!
//! Filter by area as by any test path: `cargo test -p lb-agent --test integration
//! kubernetes::`.

mod api;
mod bad_input;
mod config;
mod deploy;
mod kubernetes;
mod lbctl;
mod support;
