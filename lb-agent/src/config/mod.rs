//! The standalone configuration file: static nodes, services and endpoints for running
//! the agent without Kubernetes (Proxmox or VM setups, the lab, tests).
//!
//! ```yaml
//! node: node1                 # this node; one of the peers
//! interface: eth0             # LAN interface (default: the default route's)
//! peers:                      # every node, this one included
//!   - { name: node1, address: 10.0.0.11 }
//!   - { name: node2, address: 10.0.0.12 }
//! gossip:                     # membership and failover (see `GossipConfig`)
//!   keyFile: /etc/xdplb/gossip.key
//! services:
//!   - name: web
//!     vip: 172.16.200.20
//!     owner: node1
//!     ports:
//!       - { port: 80, protocol: TCP, targetPort: 8080 }
//!       - { port: 443, protocol: TCP, targetPort: 8443 }
//!     endpoints:
//!       - { address: 10.42.0.7, node: node1 }
//!       - { address: 10.42.1.5, node: node2 }
//!       - { address: 10.42.1.6, node: node2 }
//!   - name: dns
//!     vip: 172.16.200.53
//!     owner: node1
//!     ports:
//!       - { port: 53, protocol: UDP, targetPort: 5353 }
//!       - { port: 53, protocol: TCP, targetPort: 5353 }
//!     endpoints:
//!       - { address: 10.42.1.9, node: node2 }
//! ```
//!
//! Every key is documented on the struct field that holds it: the file's own keys on
//! [`Config`], [`PeerConfig`], [`ServiceConfig`], [`PortConfig`] and [`EndpointConfig`];
//! the node-local keys, which the Kubernetes mode's settings file has too, on
//! [`NodeSettings`], [`Capacities`], [`GossipConfig`], [`ArpConfig`] and [`ApiConfig`].
//! Keys are spelled as in Kubernetes (camelCase); unknown keys are errors, so a typo
//! never silently falls back to a default. To use a default, leave the key out
//! (`~`/`null` is not accepted as "default").
//!
//! Every node gets the same file except for `node` (and possibly `interface`, `mtu`,
//! `pinDir` and `api`); agents given the same peers, services and endpoints compute the
//! same tables and elect the same VIP owners.
//!
//! The running agent re-reads the file on SIGHUP and when it changes on disk; a file
//! that fails these checks is logged and ignored, and the agent keeps running what it
//! has. `interface`, `pinDir`, `capacities`, `gossip`, `arp` and `api` are read at start
//! only: changing them needs a restart (the agent says so in its log).
//!
//! [`parse`] rejects an invalid file before anything touches the kernel, with the line
//! and the field path of each problem, e.g.
//! `line 21, column 31: services[1].ports[0].protocol: unknown variant `SCTP`, expected `TCP` or `UDP``
//! for the example above with `protocol: SCTP` on its line 21.
//!
//! Here: the file as a whole ([`parse`], [`Standalone`]). Its own keys are in `schema`,
//! the node-local keys in `node`; the YAML document in `document`, its top level read as
//! those two in `top_level`, the problems as reported in `error`; the checks across
//! fields in `validate` (placed in the text by `locate`); the file as the core's inputs
//! in `inputs`, and what a reload may change in `reload`.
//!
//! [`Capacities`]: crate::model::capacities::Capacities

pub mod bounds;
mod document;
mod error;
pub mod host;
mod inputs;
mod locate;
mod node;
mod reload;
mod schema;
mod top_level;
mod validate;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use self::{
    error::{ConfigError, Issue, Location},
    node::{ApiConfig, ArpConfig, DEFAULT_PIN_DIR, GossipConfig, NodeSettings},
    reload::ReloadRefusal,
    schema::{Config, EndpointConfig, PeerConfig, PortConfig, ServiceConfig},
};
use crate::{files, model::Node};

/// A file that passed every check, and the node it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standalone {
    config: Config,
    node: Node,
}

/// Parses and validates a configuration file's text.
pub fn parse(text: &str) -> Result<Standalone, ConfigError> {
    let document = document::document(text)?;
    if document.as_mapping().is_some_and(|top| top.is_empty()) {
        return Err(ConfigError::Syntax(Issue {
            location: Some(Location { line: 1, column: 1 }),
            field: None,
            message: "the file is empty; it needs at least `node` and `peers`".to_owned(),
        }));
    }
    let (own, node_settings) = top_level::read::<schema::OwnKeys>(&document)?;
    let config = own.with(node_settings);
    validate::validate(&config)
        .map(|node| Standalone { config, node })
        .map_err(|problems| ConfigError::invalid(problems, &document))
}

/// Parses another settings file of the agent (the Kubernetes mode's), whose top level
/// holds `Own`'s keys beside the node-local ones, with this file's checks of the
/// node-local keys and its error reporting: the line, column and field path of each
/// problem.
pub fn parse_with_node_settings<Own: DeserializeOwned>(
    text: &str,
) -> Result<(Own, NodeSettings), ConfigError> {
    let document = document::document(text)?;
    let (own, node_settings) = top_level::read::<Own>(&document)?;
    validate::validate_node_settings(&node_settings)
        .map_err(|problems| ConfigError::invalid(problems, &document))?;
    Ok((own, node_settings))
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Standalone, ConfigError> {
    let text = files::read_text(path, files::CONFIG_LIMIT).map_err(ConfigError::Read)?;
    parse(&text)
}

/// [`load`] for a process that keeps running on the result: the same outcome, without
/// the parse's transient memory staying resident.
///
/// The parse builds a span tree of the whole file (for locating problems), about 20
/// times the file's size: ~65 MiB for 1,000 services x 50 endpoints. Freed, that memory
/// stays in the process whenever longer-lived allocations end up between its pieces,
/// as the configuration itself and everything computed after it do: the agent's resident
/// memory stayed at the parse's peak. So the parse runs on a thread of its own, whose
/// allocations the C allocator takes from an arena of that thread; the configuration is
/// copied on this thread, the thread's copy dropped, which leaves that arena with nothing
/// live, and the free memory is given back to the kernel.
pub fn load_apart(path: &Path) -> Result<Standalone, ConfigError> {
    let parsed = std::thread::scope(|scope| scope.spawn(|| load(path)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let kept = parsed.clone();
    drop(parsed);
    crate::heap::release_free_memory();
    Ok(kept)
}

impl Standalone {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node, with its address from `peers`.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

#[cfg(test)]
mod tests;
