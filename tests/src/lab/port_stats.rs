//! Interface counters of a node's port on the lab's switch: what the node's wire
//! carried, seen from the bridge, so neither the node's XDP nor its TC programs can hide
//! traffic from them. veth counts the XDP frames a peer sends with `XDP_TX` in the
//! receiving port's counters too, so the owner's encapsulated packets are included.

use anyhow::Context as _;

use super::{LAN_IFACE, Lab, Node};

/// Bytes and packets through one switch port, both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// From the node (the port's receive side).
    pub from_node_bytes: u64,
    pub from_node_packets: u64,
    /// To the node (the port's transmit side).
    pub to_node_bytes: u64,
    pub to_node_packets: u64,
}

impl PortStats {
    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.from_node_bytes + self.to_node_bytes
    }

    /// Packets both ways.
    pub fn packets(&self) -> u64 {
        self.from_node_packets + self.to_node_packets
    }

    /// What the port carried between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            from_node_bytes: self.from_node_bytes.saturating_sub(earlier.from_node_bytes),
            from_node_packets: self
                .from_node_packets
                .saturating_sub(earlier.from_node_packets),
            to_node_bytes: self.to_node_bytes.saturating_sub(earlier.to_node_bytes),
            to_node_packets: self.to_node_packets.saturating_sub(earlier.to_node_packets),
        }
    }
}

impl Lab {
    /// The counters of `node`'s port on the bridge, read in the `lan` namespace.
    pub fn switch_port_stats(&self, node: &Node) -> anyhow::Result<PortStats> {
        let names = ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"];
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("/sys/class/net/{}/statistics/{name}", node.switch_port))
            .collect();
        let text = self.lan.run(&format!("cat {}", paths.join(" ")))?;
        let values: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("counters of {}: {text:?}", node.switch_port))?;
        let [
            from_node_bytes,
            from_node_packets,
            to_node_bytes,
            to_node_packets,
        ] = values[..]
        else {
            anyhow::bail!(
                "expected {} counters of {}, got {text:?}",
                names.len(),
                node.switch_port
            );
        };
        Ok(PortStats {
            from_node_bytes,
            from_node_packets,
            to_node_bytes,
            to_node_packets,
        })
    }
}

impl Node {
    /// Frames the node's XDP program sent with `XDP_TX` that its LAN veth dropped
    /// because the bridge port's XDP ring was full (`ethtool -S`,
    /// `rx_queue_*_xdp_tx_errors`): they never reach the switch port's counters.
    pub fn xdp_tx_errors(&self) -> anyhow::Result<u64> {
        let stats = self.netns.run(&format!("ethtool -S {LAN_IFACE}"))?;
        stats
            .lines()
            .filter_map(|line| line.trim().split_once(':'))
            .filter(|(name, _)| name.ends_with("_xdp_tx_errors"))
            .map(|(name, value)| {
                value
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("{name} of {}: {value:?}", self.name))
            })
            .sum()
    }
}
