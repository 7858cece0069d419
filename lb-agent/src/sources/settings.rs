//! How the agent runs on this node: the start-only settings every source has (the
//! standalone file's, or the settings file Kubernetes mode mounts from a ConfigMap).
//! Changing them needs a restart.

use std::path::PathBuf;

use crate::{
    arp,
    config::{ApiConfig, GossipConfig, Standalone},
    model::capacities::Capacities,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The LAN interface; `None`: the default route's.
    pub interface: Option<String>,
    /// Where ARP is announced; `None`: [`Self::interface`].
    pub arp_interface: Option<String>,
    pub arp: arp::Settings,
    /// `None`: static membership, every peer alive.
    pub gossip: Option<GossipConfig>,
    pub api: ApiConfig,
    pub pin_dir: PathBuf,
    pub capacities: Capacities,
}

impl Settings {
    pub fn from_standalone(config: &Standalone) -> Self {
        let file = config.config();
        Self {
            interface: file.interface.clone(),
            arp_interface: file.arp.interface.clone(),
            arp: file.arp.settings(),
            gossip: file.gossip.clone(),
            api: file.api.clone(),
            pin_dir: file.pin_dir.clone(),
            capacities: config.capacities(),
        }
    }

    /// The interface ARP is announced on, if configured.
    pub fn announce_interface(&self) -> Option<&str> {
        self.arp_interface.as_deref().or(self.interface.as_deref())
    }
}
