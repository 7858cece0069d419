//! A network partition of the lab LAN: some nodes' switch ports move to a second bridge,
//! so they hear only each other while their links stay up (unlike a pulled cable, the
//! agents on both sides keep an interface that is up and go on announcing). Healing
//! moves the ports back. The client stays on the main bridge, with the other nodes.

use anyhow::Context as _;

use super::{BRIDGE, Lab, Node};

/// The bridge of the cut-off side.
const SPLIT_BRIDGE: &str = "br1";

/// Ports moved to [`SPLIT_BRIDGE`]; healed on drop if [`Partition::heal`] was not called.
#[derive(Debug)]
pub struct Partition<'lab> {
    lab: &'lab Lab,
    /// (switch port, node MAC) of every cut-off node.
    ports: Vec<(String, String)>,
    healed: bool,
}

impl Lab {
    /// Cuts `nodes` off from the client and the other nodes (they still hear each other).
    pub fn partition(&self, nodes: &[&Node]) -> anyhow::Result<Partition<'_>> {
        let ports = nodes
            .iter()
            .map(|node| Ok((node.switch_port.clone(), node.mac()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.lan.run(&format!(
            "ip link add {SPLIT_BRIDGE} type bridge && ip link set {SPLIT_BRIDGE} up"
        ))?;
        let partition = Partition {
            lab: self,
            ports,
            healed: false,
        };
        partition.move_ports(SPLIT_BRIDGE)?;
        Ok(partition)
    }
}

impl Partition<'_> {
    /// Puts every cut-off port back on the main bridge.
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.healed = true;
        self.move_ports(BRIDGE)?;
        self.lab
            .lan
            .run(&format!("ip link del {SPLIT_BRIDGE}"))
            .map(drop)
    }

    /// Enslaves the ports to `bridge` with the lab's switch settings: no unknown-unicast
    /// flooding to node ports, each node's MAC known statically.
    fn move_ports(&self, bridge: &str) -> anyhow::Result<()> {
        let script: String = self
            .ports
            .iter()
            .map(|(port, mac)| {
                format!(
                    "ip link set dev {port} master {bridge} && bridge link set dev {port} \
                     flood off && bridge fdb replace {mac} dev {port} master static && "
                )
            })
            .collect();
        self.lab
            .lan
            .run(&format!("{script}true"))
            .with_context(|| format!("moving {:?} to {bridge}", self.ports))
            .map(drop)
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        if !self.healed {
            let _ = self.move_ports(BRIDGE);
            let _ = self.lab.lan.run(&format!("ip link del {SPLIT_BRIDGE}"));
        }
    }
}
