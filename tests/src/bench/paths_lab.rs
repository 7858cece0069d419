//! The lab the forwarding and DSR benches share: one pod on node2, reached two ways.
//!
//! - **xdplb:** client -> VIP on node1 (XDP, IPIP) -> node2 (XDP decap + DNAT) -> pod;
//!   replies leave node2 straight to the client (TC rewrites the source to the VIP).
//! - **kube-proxy:** client -> another VIP on node3, which runs no xdplb but kube-proxy's
//!   iptables rules (DNAT to the pod, MASQUERADE) -> node2 -> pod; replies go back through
//!   node3, whose conntrack undoes both translations.
//!
//! A bench may add a third path of its own, straight to the pod ([`Path::Direct`]). The
//! pod lives on node2, never on an owner. [`PathsLab::check_path`] holds each sample to
//! the path it claims: node1's `tx_encap` and node2's `pass_decap_dnat` counters, node3's
//! DNAT rule counter and the source addresses the pod saw must all tell the same story.

use std::{collections::BTreeSet, fmt, fs, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context as _, ensure};
use lb_agent::{api::socket::Client, status::AgentStatus};
use tempfile::TempDir;

use super::rule_packets;
use crate::{
    lab::{self, BpfFs, CLIENT_ADDR, LAN_IFACE, Lab, Node, Pod, wait_for},
    netns::Process,
};

/// The only pod, on node2 (10.42.1.0/24).
pub(crate) const POD: Ipv4Addr = Ipv4Addr::new(10, 42, 1, 5);
/// node1 owns it (xdplb).
const XDPLB_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
/// node3 serves it (kube-proxy).
const KUBE_PROXY_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 21);
const AGENT_READY: Duration = Duration::from_secs(30);
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// The chain holding node3's DNAT rules, whose counters prove kube-proxy's path.
const SEP_CHAIN: &str = "KUBE-SEP-BENCH";

/// A service port both VIPs serve, forwarded to the same port on the pod.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServicePort {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub port: u16,
}

impl ServicePort {
    /// The agent config's entry (the same target port).
    fn agent_yaml(self) -> String {
        format!(
            "      - {{ port: {port}, protocol: {protocol}, targetPort: {port} }}\n",
            port = self.port,
            protocol = self.protocol.to_uppercase(),
        )
    }

    /// kube-proxy's rules for it: the service match and the DNAT to the pod.
    fn kube_proxy_rules(self) -> [String; 2] {
        let (protocol, port) = (self.protocol, self.port);
        [
            format!(
                "-A KUBE-SERVICES -d {KUBE_PROXY_VIP}/32 -p {protocol} --dport {port} \
                 -j KUBE-EXT-BENCH"
            ),
            format!(
                "-A {SEP_CHAIN} -p {protocol} -m {protocol} --dport {port} \
                 -j DNAT --to-destination {POD}:{port}"
            ),
        ]
    }
}

/// How the client reaches the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Path {
    Xdplb,
    KubeProxy,
    /// Routed by node2 without any load balancer: the floor of the lab itself.
    Direct,
}

impl Path {
    /// Where the client sends.
    pub fn destination(self) -> Ipv4Addr {
        match self {
            Self::Xdplb => XDPLB_VIP,
            Self::KubeProxy => KUBE_PROXY_VIP,
            Self::Direct => POD,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xdplb => "xdplb",
            Self::KubeProxy => "kube-proxy",
            Self::Direct => "direct to pod",
        })
    }
}

/// Counters that prove which path traffic took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    /// node1's XDP `tx_encap` and `tx_express` verdicts.
    pub encapsulated: u64,
    /// node2's XDP `pass_decap_dnat` verdicts.
    pub decapsulated: u64,
    /// Packets node3's DNAT rules matched.
    pub dnat: u64,
}

impl Counters {
    pub fn since(self, earlier: &Self) -> Self {
        Self {
            encapsulated: self.encapsulated.saturating_sub(earlier.encapsulated),
            decapsulated: self.decapsulated.saturating_sub(earlier.decapsulated),
            dnat: self.dnat.saturating_sub(earlier.dnat),
        }
    }
}

/// The lab: node1 and node2 run agents, node3 runs kube-proxy's rules.
///
/// Field order is drop order: agents first, then the namespaces, then the pins, then
/// the scratch directory with the logs.
pub(crate) struct PathsLab {
    agents: Vec<Process>,
    pub lab: Lab,
    bpffs: BpfFs,
    scratch: TempDir,
}

impl PathsLab {
    /// The lab with both VIPs serving `ports`, agents ready, kube-proxy's rules loaded
    /// and the client resolving each VIP to its node.
    pub fn start(ports: &[ServicePort]) -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("xdplb-bench-").tempdir()?;
        let bpffs = BpfFs::mount(&scratch.path().join("bpffs"))?;
        let lab = Lab::new(&[&[], &[POD], &[]])?;
        let mut paths = Self {
            agents: Vec::new(),
            lab,
            bpffs,
            scratch,
        };
        paths.start_agents(ports)?;
        paths.configure_kube_proxy(ports)?;
        paths.route_vips()?;
        Ok(paths)
    }

    /// Node `index`, 1-based.
    pub fn node(&self, index: usize) -> &Node {
        &self.lab.nodes[index - 1]
    }

    pub fn pod(&self) -> anyhow::Result<&Pod> {
        self.lab.pod(POD)
    }

    /// The scratch directory: agent configs and logs, and room for the bench's own.
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// The owner of `path`'s VIP, where every request arrives first.
    pub fn owner(&self, path: Path) -> Option<&Node> {
        match path {
            Path::Xdplb => Some(self.node(1)),
            Path::KubeProxy => Some(self.node(3)),
            Path::Direct => None,
        }
    }

    fn socket(&self, node: &Node) -> PathBuf {
        self.scratch.path().join(format!("{}.sock", node.name))
    }

    /// Agents on node1 (the VIP's static owner) and node2 (the pod's node); none on
    /// node3, which is not an xdplb node.
    fn start_agents(&mut self, ports: &[ServicePort]) -> anyhow::Result<()> {
        let agent = lab::workspace_binary("lb-agent")?;
        for index in [1, 2] {
            let node = self.node(index);
            let config = self.scratch.path().join(format!("{}.yaml", node.name));
            fs::write(&config, self.agent_config(node, ports))?;
            let log = self.scratch.path().join(format!("agent-{}.log", node.name));
            let process = node.start_agent(&agent, &config, &log)?;
            self.agents.push(process);
        }
        for index in [1, 2] {
            let node = self.node(index);
            wait_for(
                &format!("the agent on {} to report ready", node.name),
                AGENT_READY,
                || Ok(self.status(node).ok().filter(|status| status.ready)),
            )?;
        }
        Ok(())
    }

    fn agent_config(&self, node: &Node, ports: &[ServicePort]) -> String {
        let peer = |index: usize| {
            let peer = self.node(index);
            format!("  - {{ name: {}, address: {} }}\n", peer.name, peer.addr)
        };
        let ports: String = ports.iter().map(|port| port.agent_yaml()).collect();
        format!(
            "node: {name}\ninterface: {LAN_IFACE}\npinDir: {pins}\napi:\n  socket: {socket}\n\
             peers:\n{node1}{node2}services:\n  - name: bench\n    vip: {XDPLB_VIP}\n    \
             owner: {owner}\n    ports:\n{ports}    endpoints:\n      \
             - {{ address: {POD}, node: {pod_node} }}\n",
            name = node.name,
            pins = self.bpffs.path().join(&node.name).display(),
            socket = self.socket(node).display(),
            node1 = peer(1),
            node2 = peer(2),
            owner = self.node(1).name,
            pod_node = self.node(2).name,
        )
    }

    /// node3 as a kube-proxy node (iptables mode) serving [`KUBE_PROXY_VIP`] with the pod
    /// as its one endpoint: the chains kube-proxy writes for an external address of a
    /// `Cluster`-policy service, which marks the packets for MASQUERADE, and a route to
    /// node2's pod range as the CNI would set it.
    fn configure_kube_proxy(&self, ports: &[ServicePort]) -> anyhow::Result<()> {
        let chains = [
            "-N KUBE-SERVICES".to_owned(),
            "-N KUBE-EXT-BENCH".to_owned(),
            "-N KUBE-SVC-BENCH".to_owned(),
            format!("-N {SEP_CHAIN}"),
            "-N KUBE-MARK-MASQ".to_owned(),
            "-N KUBE-POSTROUTING".to_owned(),
            "-A PREROUTING -j KUBE-SERVICES".to_owned(),
            "-A POSTROUTING -j KUBE-POSTROUTING".to_owned(),
            "-A KUBE-EXT-BENCH -j KUBE-MARK-MASQ".to_owned(),
            "-A KUBE-EXT-BENCH -j KUBE-SVC-BENCH".to_owned(),
            format!("-A KUBE-SVC-BENCH -j {SEP_CHAIN}"),
        ];
        let masquerade = [
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".to_owned(),
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_owned(),
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".to_owned(),
            "-A KUBE-POSTROUTING -j MASQUERADE --random-fully".to_owned(),
        ];
        let script: Vec<String> = chains
            .into_iter()
            .chain(ports.iter().flat_map(|port| port.kube_proxy_rules()))
            .chain(masquerade)
            .map(|rule| format!("iptables -w -t nat {rule}"))
            .collect();
        let node3 = self.node(3);
        node3
            .netns
            .run(&script.join(" && "))
            .context("installing kube-proxy's rules on node3 (is iptables installed?)")?;
        node3.netns.run(&format!(
            "ip route add {} via {}",
            pod_range(),
            self.node(2).addr
        ))?;
        Ok(())
    }

    /// Each VIP resolves to its node's MAC.
    fn route_vips(&self) -> anyhow::Result<()> {
        for path in [Path::Xdplb, Path::KubeProxy] {
            let (vip, owner) = (path.destination(), self.owner(path));
            let owner = owner.context("a VIP path has an owner")?;
            self.lab.route_vips(&format!("{vip}/32"), &[vip], owner)?;
        }
        Ok(())
    }

    /// Lets the client reach the pod without a load balancer ([`Path::Direct`]).
    pub fn route_pod_range(&self) -> anyhow::Result<()> {
        self.lab
            .client
            .run(&format!(
                "ip route add {} via {}",
                pod_range(),
                self.node(2).addr
            ))
            .map(drop)
    }

    fn status(&self, node: &Node) -> anyhow::Result<AgentStatus> {
        Ok(Client::connect(&self.socket(node), API_TIMEOUT)?.status()?)
    }

    fn reason(&self, node: &Node, reason: &str) -> anyhow::Result<u64> {
        let status = self.status(node)?;
        Ok(status.reasons.get(reason).copied().unwrap_or(0))
    }

    /// Packets that matched node3's DNAT rules (the first of each connection).
    fn dnat_packets(&self) -> anyhow::Result<u64> {
        rule_packets(&self.node(3).netns, "nat", SEP_CHAIN, "DNAT")
    }

    pub fn counters(&self) -> anyhow::Result<Counters> {
        Ok(Counters {
            encapsulated: self.reason(self.node(1), "tx_encap")?
                + self.reason(self.node(1), "tx_express")?,
            decapsulated: self.reason(self.node(2), "pass_decap_dnat")?,
            dnat: self.dnat_packets()?,
        })
    }

    /// The counters' `change` and the pod's view agree with `path`, for `delivered`
    /// packets or requests (each of which crossed the path at least once).
    pub fn check_path(
        &self,
        path: Path,
        change: &Counters,
        delivered: u64,
        sources: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<()> {
        ensure!(delivered > 0, "nothing reached the pod");
        let (expected_sources, tunnelled, translated) = match path {
            Path::Xdplb => (CLIENT_ADDR, true, false),
            Path::KubeProxy => (self.node(3).addr, false, true),
            Path::Direct => (CLIENT_ADDR, false, false),
        };
        ensure!(
            *sources == BTreeSet::from([expected_sources]),
            "over {path} the pod saw sources {sources:?}, expected only {expected_sources}"
        );
        if tunnelled {
            ensure!(
                change.encapsulated >= delivered && change.decapsulated >= delivered,
                "over {path} node1 encapsulated {} and node2 decapsulated {} packets for \
                 {delivered} delivered",
                change.encapsulated,
                change.decapsulated
            );
        } else {
            ensure!(
                change.encapsulated == 0 && change.decapsulated == 0,
                "over {path} node1 encapsulated {} and node2 decapsulated {} packets",
                change.encapsulated,
                change.decapsulated
            );
        }
        ensure!(
            (change.dnat > 0) == translated,
            "over {path} node3's DNAT rules matched {} packets",
            change.dnat
        );
        Ok(())
    }
}

/// node2's pod range, 10.42.1.0/24.
fn pod_range() -> String {
    let [a, b, c, _] = POD.octets();
    format!("{a}.{b}.{c}.0/24")
}
