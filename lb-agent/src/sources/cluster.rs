//! What a source says about the cluster at one moment: the core's [`Inputs`] and what
//! the election needs besides them. The standalone file and the Kubernetes API both
//! produce a [`Cluster`]; everything after it is the same code.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use crate::{
    arp,
    config::Standalone,
    election::{AnnounceInterfaces, Announcers},
    membership::Peer,
    model::Inputs,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// `mtu` is ignored (see [`Self::inputs`]); `down` is empty: liveness is the
    /// gossip's.
    pub inputs: Inputs,
    /// The MTU the source sets; `None`: the interface's.
    pub mtu: Option<u32>,
    /// Node labels, by node name.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Nodes Kubernetes does not report Ready.
    pub unready: BTreeSet<String>,
    /// The preferred owner of each VIP that names one.
    pub owners: BTreeMap<Ipv4Addr, String>,
    /// VIPs whose address pool restricts which nodes may announce them.
    pub announcers: BTreeMap<Ipv4Addr, Announcers>,
    /// VIPs whose address pool restricts the interfaces they are announced on.
    pub announce_interfaces: BTreeMap<Ipv4Addr, AnnounceInterfaces>,
    /// Each node's announce interface, as the node published it, by node name.
    pub node_interfaces: BTreeMap<String, String>,
    /// VIPs whose address pool sets its own gratuitous ARP timing instead of the node's.
    pub garp: BTreeMap<Ipv4Addr, arp::Settings>,
}

impl Cluster {
    pub fn from_standalone(config: &Standalone) -> Self {
        let file = config.config();
        Self {
            inputs: config.inputs(file.node_settings.mtu.unwrap_or(0)),
            mtu: file.node_settings.mtu,
            labels: file
                .peers
                .iter()
                .map(|peer| (peer.name.clone(), peer.labels.clone()))
                .collect(),
            unready: BTreeSet::new(),
            owners: config
                .owners()
                .into_iter()
                .map(|(vip, owner)| (vip, owner.to_owned()))
                .collect(),
            announcers: BTreeMap::new(),
            announce_interfaces: BTreeMap::new(),
            node_interfaces: BTreeMap::new(),
            garp: BTreeMap::new(),
        }
    }

    /// The inputs with the MTU resolved: the source's, else `link_mtu`.
    pub fn inputs(&self, link_mtu: u32) -> Inputs {
        Inputs {
            mtu: self.mtu.unwrap_or(link_mtu),
            ..self.inputs.clone()
        }
    }

    /// Every node (this one included) at its address on the gossip port.
    pub fn gossip_peers(&self, port: u16) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .inputs
            .peers
            .iter()
            .map(|node| Peer {
                name: node.name.clone(),
                addr: SocketAddrV4::new(node.address, port),
            })
            .collect();
        if !peers.iter().any(|peer| peer.name == self.inputs.node.name) {
            peers.push(Peer {
                name: self.inputs.node.name.clone(),
                addr: SocketAddrV4::new(self.inputs.node.address, port),
            });
        }
        peers
    }

    /// This node in the gossip.
    pub fn local_peer(&self, port: u16) -> Peer {
        let node = &self.inputs.node;
        Peer {
            name: node.name.clone(),
            addr: SocketAddrV4::new(node.address, port),
        }
    }
}
