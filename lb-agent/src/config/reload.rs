//! What a re-read file may change in the running agent: the settings read at start only
//! stay as they were (the agent says which changed), and a file for another node, or
//! this node at another address, is refused.

use std::net::Ipv4Addr;

use super::{Config, NodeSettings, Standalone};

/// Why a changed file cannot be applied without a restart.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadRefusal {
    #[error("`node` changed from {from} to {to}: restart the agent to apply the new file")]
    NodeRenamed { from: String, to: String },
    #[error(
        "this node's address changed from {from} to {to}: restart the agent to apply the new file"
    )]
    AddressChanged { from: Ipv4Addr, to: Ipv4Addr },
}

impl ReloadRefusal {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NodeRenamed { .. } => "node_renamed",
            Self::AddressChanged { .. } => "address_changed",
        }
    }
}

impl Standalone {
    /// `new` as the running agent can apply it: the settings read at start only are
    /// kept from `self`, and listed (by key) when `new` changes them. A new node name or
    /// address cannot be applied at all.
    pub fn reloaded(
        &self,
        new: Standalone,
    ) -> Result<(Standalone, Vec<&'static str>), ReloadRefusal> {
        if new.node.name != self.node.name {
            return Err(ReloadRefusal::NodeRenamed {
                from: self.node.name.clone(),
                to: new.node.name,
            });
        }
        if new.node.address != self.node.address {
            return Err(ReloadRefusal::AddressChanged {
                from: self.node.address,
                to: new.node.address,
            });
        }
        let (running, mut config) = (&self.config, new.config);
        let gossip_peers = |config: &Config| {
            config
                .peers
                .iter()
                .map(|peer| (peer.name.clone(), peer.address))
                .collect::<Vec<_>>()
        };
        let mut kept = Vec::new();
        if running.node_settings.gossip.is_some() && gossip_peers(running) != gossip_peers(&config)
        {
            // The data path takes the new peers; the gossip keeps its list until then.
            kept.push("peers (gossip)");
        }
        kept.extend(keep_start_only(
            &running.node_settings,
            &mut config.node_settings,
        ));
        Ok((
            Standalone {
                config,
                node: new.node,
            },
            kept,
        ))
    }
}

/// Gives `new` the values `running` has of the keys read at start only (all but `mtu`
/// and `icmpRatePerSecond`); returns those of them `new` changed.
fn keep_start_only(running: &NodeSettings, new: &mut NodeSettings) -> Vec<&'static str> {
    let changed = [
        ("interface", new.interface != running.interface),
        ("pinDir", new.pin_dir != running.pin_dir),
        ("capacities", new.capacities != running.capacities),
        ("gossip", new.gossip != running.gossip),
        ("arp", new.arp != running.arp),
        ("api", new.api != running.api),
    ];
    *new = NodeSettings {
        mtu: new.mtu,
        icmp_rate_per_second: new.icmp_rate_per_second,
        ..running.clone()
    };
    changed
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
}
