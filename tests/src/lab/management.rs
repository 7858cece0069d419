//! A management network beside the lab LAN: a second bridge (`brm`, in the `lan`
//! namespace) with a `mgmt0` on every node (10.1.0.(10+i)/24) and one monitoring
//! namespace (10.1.0.2). A partition of the LAN (partition.rs moves LAN ports only)
//! leaves it whole, so a Prometheus there keeps scraping both sides of a split, as an
//! operator's out-of-band monitoring would. No default route anywhere: nothing leaves
//! the lab.

use std::net::Ipv4Addr;

use super::{Lab, namespace};
use crate::netns::{Netns, veth};

const MGMT_BRIDGE: &str = "brm";
const MGMT_IFACE: &str = "mgmt0";
/// The monitoring namespace's address on the management network.
pub const MONITOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// Node `index`'s (1-based) address on the management network.
pub fn management_addr(index: usize) -> Ipv4Addr {
    let last = u8::try_from(10 + index).expect("lab node indices are small");
    Ipv4Addr::new(10, 1, 0, last)
}

impl Lab {
    /// Builds the management network and returns its monitoring namespace (deleted,
    /// with its processes, when dropped; the bridge and the nodes' ends go with the
    /// lab's namespaces).
    pub fn management_network(&self) -> anyhow::Result<Netns> {
        self.lan.run(&format!(
            "ip link add {MGMT_BRIDGE} type bridge && ip link set {MGMT_BRIDGE} up"
        ))?;
        for (slot, node) in self.nodes.iter().enumerate() {
            plug(
                &self.lan,
                &node.netns,
                &format!("m{}", slot + 1),
                management_addr(slot + 1),
            )?;
        }
        let monitor = namespace("monitor")?;
        plug(&self.lan, &monitor, "m0", MONITOR_ADDR)?;
        Ok(monitor)
    }
}

fn plug(lan: &Netns, host: &Netns, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    veth(host, MGMT_IFACE, lan, port)?;
    lan.run(&format!("ip link set {port} master {MGMT_BRIDGE}"))?;
    host.run(&format!("ip addr add {addr}/24 dev {MGMT_IFACE}"))?;
    Ok(())
}
