//! The agent's local API: the socket's protocol and the HTTP endpoints (metrics,
//! health), through the real servers on a test double of the runtime.

mod http;
mod socket;
