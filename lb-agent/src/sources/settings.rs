//! How the agent runs on this node: the start-only settings every source has (the
//! standalone file's, or the settings file Kubernetes mode mounts from a ConfigMap).
//! Changing them needs a restart.

use std::path::PathBuf;

use crate::{
    arp,
    config::{ApiConfig, GossipConfig, NodeSettings},
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

impl From<&NodeSettings> for Settings {
    /// The start-only settings of a settings file's node-local keys.
    fn from(settings: &NodeSettings) -> Self {
        Self {
            interface: settings.interface.clone(),
            arp_interface: settings.arp.interface.clone(),
            arp: settings.arp.settings(),
            gossip: settings.gossip.clone(),
            api: settings.api.clone(),
            pin_dir: settings.pin_dir.clone(),
            capacities: settings.capacities,
        }
    }
}

impl Settings {
    /// The interface ARP is announced on, if configured.
    pub fn announce_interface(&self) -> Option<&str> {
        self.arp_interface.as_deref().or(self.interface.as_deref())
    }
}
