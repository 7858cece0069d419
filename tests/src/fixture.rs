//! A freshly loaded data plane for the packet fixtures: its own maps, a private network
//! namespace for the FIB lookups, BPF_PROG_TEST_RUN on both programs, and counter
//! deltas per step.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf, TestRunResult,
    programs::{TestRun, TestRunOptions},
};
use lb_agent::{
    dataplane::{loader, maps::Maps},
    model::capacities::Capacities,
};
use lb_common::{
    express::next_epoch,
    maglev::{self, Backend},
    maps::{MAX_BACKENDS_DEFAULT, NODE_RING_SIZE, POD_RING_SIZE},
    reasons,
    types::{
        BACKEND_ACTIVE, BackendStats, BackendValue, DataplaneConfig, FlowKey, FlowValue, NodeRing,
        PROTO_TCP, PROTO_UDP, PeerValue, PodRing, ReplyKey, ReplyValue, ServiceKey, ServiceSlot,
        ServiceValue, VipStats, VipValue,
    },
};

pub use self::frames::{
    FROM_PEER, NEXT_HOP_MAC, PEER_MAC, REQUEST, RESPONSE, TO_CLIENT, https_frame, https_from_peer,
    https_packet, tunnelled, xdp_md,
};
use crate::{netns::Netns, packets::NODE_MAC};

mod frames;

/// XDP verdicts (`enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// `TC_ACT_OK`.
pub const TC_ACT_OK: u32 = 0;

/// This node's LAN address.
pub const NODE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Another node: a tunnel peer and backend node.
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A third node.
pub const PEER2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 8, 240);
pub const VIP_STATS_INDEX: u32 = 3;
pub const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 50), 40000);
/// A local pod behind the services.
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
pub const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
pub const MTU: u32 = 1500;
pub const ICMP_RATE: u32 = 100;
/// TCP 443 -> 8443 (ring slot 0) and UDP 53 -> 5353 (ring slot 1) on [`VIP`].
pub const HTTPS: u16 = 443;
pub const HTTPS_TARGET: u16 = 8443;
pub const DNS: u16 = 53;
pub const DNS_TARGET: u16 = 5353;
pub const HTTPS_SLOT: u32 = 0;
pub const DNS_SLOT: u32 = 1;

/// Room for any frame the programs can produce from a test input.
const OUT_LEN: usize = 4096;

/// An address as the maps store it: the packet's bytes.
pub fn wire(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// A port as the maps store it: the packet's bytes.
pub fn wire_port(port: u16) -> u16 {
    port.to_be()
}

/// A VIP service socket.
pub fn vip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(VIP, port)
}

/// The flow-cache key of a client flow to a VIP socket.
pub fn flow_key(client: SocketAddrV4, vip: SocketAddrV4, proto: u8) -> FlowKey {
    FlowKey {
        client: wire(*client.ip()),
        vip: wire(*vip.ip()),
        client_port: wire_port(client.port()),
        vip_port: wire_port(vip.port()),
        proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// The `SERVICES` key of a VIP socket.
pub fn service_key(socket: SocketAddrV4, proto: u8) -> ServiceKey {
    ServiceKey {
        vip: wire(*socket.ip()),
        port: wire_port(socket.port()),
        proto,
        _pad: 0,
    }
}

/// One program run: its verdict and the frame as it left.
#[derive(Debug)]
pub struct Run {
    pub action: u32,
    pub frame: Vec<u8>,
}

/// A loaded object with its maps and a network namespace of its own.
pub struct Dataplane {
    ebpf: Ebpf,
    pub maps: Maps,
    pub netns: Netns,
    seen: [u64; reasons::COUNT as usize],
}

impl Dataplane {
    /// A loaded data plane with empty maps.
    pub fn empty() -> Result<Self> {
        let netns = Netns::new("fx")?;
        let mut ebpf = loader::load(&Capacities::default())?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            netns,
            seen: [0; reasons::COUNT as usize],
        })
    }

    /// The loaded object, for the benchmark that drives its programs directly (many
    /// repeats, timed by the kernel).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded `xdp_lb`, for the benchmark that attaches it to an interface.
    pub fn xdp_lb_mut(&mut self) -> Result<&mut aya::programs::Xdp> {
        Ok(loader::xdp_program(&mut self.ebpf)?)
    }

    /// This node ([`NODE`]) serving [`VIP`]: HTTPS and DNS, both delivered to [`POD`] here.
    pub fn with_services() -> Result<Self> {
        let mut dataplane = Self::empty()?;
        dataplane.configure(MTU, ICMP_RATE)?;
        dataplane.add_vip(VIP, 0)?;
        dataplane.add_service(vip(HTTPS), PROTO_TCP, HTTPS_TARGET, HTTPS_SLOT, 0)?;
        dataplane.add_service(vip(DNS), PROTO_UDP, DNS_TARGET, DNS_SLOT, 0)?;
        for slot in [HTTPS_SLOT, DNS_SLOT] {
            dataplane.set_node_ring(slot, &[NODE])?;
            dataplane.set_pod_ring(slot, &[POD])?;
        }
        Ok(dataplane)
    }

    /// This node's settings, with [`NODE_MAC`] as its interface's MAC address.
    pub fn configure(&mut self, mtu: u32, icmp_rate_per_sec: u32) -> Result<()> {
        let config = DataplaneConfig {
            node_addr: wire(NODE),
            mtu,
            icmp_rate_per_sec,
            mac: NODE_MAC,
            _pad: [0; 2],
        };
        self.maps.config.set(0, &config)?;
        self.changed()
    }

    /// Replaces the interface MAC address of the current settings.
    pub fn set_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        let config = DataplaneConfig {
            mac,
            ..self.maps.config.get(0)?
        };
        self.maps.config.set(0, &config)?;
        self.changed()
    }

    /// Advances the epoch, as the agent does after every change it writes, so express
    /// entries decided before stop standing. Every change below ends with it; a test
    /// that writes a map itself calls it when the change should reach express flows.
    pub fn changed(&mut self) -> Result<()> {
        let next = next_epoch(self.maps.epoch.get(0)?);
        Ok(self.maps.epoch.set(0, &next)?)
    }

    pub fn add_vip(&mut self, addr: Ipv4Addr, flags: u32) -> Result<()> {
        let value = VipValue {
            stats_index: VIP_STATS_INDEX,
            flags,
        };
        self.maps.vips.insert(&wire(addr), &value)?;
        self.changed()
    }

    /// Adds the service, or changes it, in the service slot it has or else the lowest
    /// free one: the slot first, then `SERVICES`, as the agent does (the agent also
    /// keeps a packet from reading one write of the slot half done, which a test with
    /// no packet in flight need not).
    pub fn add_service(
        &mut self,
        socket: SocketAddrV4,
        proto: u8,
        target_port: u16,
        ring_slot: u32,
        flags: u16,
    ) -> Result<()> {
        let key = service_key(socket, proto);
        let slot = match self.maps.services.get(&key)? {
            Some(existing) => existing.slot,
            None => self.free_service_slot()?,
        };
        let value = ServiceValue {
            ring_slot,
            target_port: wire_port(target_port),
            flags,
            stats_index: VIP_STATS_INDEX,
            slot,
        };
        self.maps
            .service_slots
            .set(slot, &ServiceSlot { key, value })?;
        self.maps.services.insert(&key, &value)?;
        self.changed()
    }

    /// Removes the service from `SERVICES`, then clears its slot, as the agent does.
    pub fn remove_service(&mut self, socket: SocketAddrV4, proto: u8) -> Result<()> {
        let key = service_key(socket, proto);
        let slot = self.service_slot(socket, proto)?;
        self.maps.services.remove(&key)?;
        self.maps.service_slots.set(slot, &ServiceSlot::default())?;
        self.changed()
    }

    /// The service slot of a service (it must exist).
    pub fn service_slot(&self, socket: SocketAddrV4, proto: u8) -> Result<u32> {
        let value = self.maps.services.get(&service_key(socket, proto))?;
        Ok(value
            .with_context(|| format!("{socket} is no service"))?
            .slot)
    }

    /// The lowest service slot no service holds.
    fn free_service_slot(&self) -> Result<u32> {
        let entries = self.maps.services.entries()?;
        let slots = self.maps.service_slots.len();
        lowest_free(entries.iter().map(|(_, value)| value.slot), slots)
            .context("every service slot is in use")
    }

    /// Fills a node ring (equal weights) and marks its nodes active.
    pub fn set_node_ring(&mut self, slot: u32, nodes: &[Ipv4Addr]) -> Result<()> {
        let table = self.ring(nodes, NODE_RING_SIZE)?;
        let ring = NodeRing {
            backends: table.try_into().expect("table of NODE_RING_SIZE"),
        };
        self.maps.node_rings.set(slot, &ring)?;
        self.changed()
    }

    /// Fills a pod ring (equal weights) and marks its pods active.
    pub fn set_pod_ring(&mut self, slot: u32, pods: &[Ipv4Addr]) -> Result<()> {
        let table = self.ring(pods, POD_RING_SIZE)?;
        let ring = PodRing {
            backends: table.try_into().expect("table of POD_RING_SIZE"),
        };
        self.maps.pod_rings.set(slot, &ring)?;
        self.changed()
    }

    fn ring(&mut self, addrs: &[Ipv4Addr], size: usize) -> Result<Vec<u32>> {
        for addr in addrs {
            self.set_backend(*addr, BACKEND_ACTIVE)?;
        }
        Ok(equal_ring(addrs, size))
    }

    /// Adds `addr` in the next free slot, or sets the state of the one it has.
    pub fn set_backend(&mut self, addr: Ipv4Addr, state: u32) -> Result<()> {
        let slot = match self.maps.backends.get(&wire(addr))? {
            Some(existing) => existing.slot,
            None => self.free_backend_slot()?,
        };
        self.maps
            .backends
            .insert(&wire(addr), &BackendValue { state, slot })?;
        self.changed()
    }

    /// The slot `addr` holds (it must be a backend).
    pub fn backend_slot(&self, addr: Ipv4Addr) -> Result<u32> {
        let value = self.maps.backends.get(&wire(addr))?;
        Ok(value.with_context(|| format!("{addr} is no backend"))?.slot)
    }

    /// The lowest slot no backend holds.
    fn free_backend_slot(&self) -> Result<u32> {
        let entries = self.maps.backends.entries()?;
        lowest_free(
            entries.iter().map(|(_, value)| value.slot),
            MAX_BACKENDS_DEFAULT,
        )
        .context("every backend slot is in use")
    }

    pub fn remove_backend(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.maps.backends.remove(&wire(addr))?;
        self.changed()
    }

    pub fn add_peer(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.maps
            .peers
            .insert(&wire(addr), &PeerValue { flags: 0 })?;
        self.changed()
    }

    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>> {
        Ok(self.maps.flows.get(key)?)
    }

    pub fn vip_stats(&self) -> Result<VipStats> {
        Ok(self.maps.vip_stats.total(VIP_STATS_INDEX)?)
    }

    pub fn backend_stats(&self, addr: Ipv4Addr) -> Result<BackendStats> {
        Ok(self.maps.backends.totals(&wire(addr))?)
    }

    /// Runs `xdp_lb` on `frame` as received by the namespace's loopback device.
    pub fn xdp(&mut self, frame: &[u8]) -> Result<Run> {
        self.run_xdp(frame, None)
    }

    /// Runs `xdp_lb` on `frame` as received by interface `ifindex` of the namespace.
    pub fn xdp_on(&mut self, frame: &[u8], ifindex: u32) -> Result<Run> {
        self.run_xdp(frame, Some(ifindex))
    }

    fn run_xdp(&mut self, frame: &[u8], ifindex: Option<u32>) -> Result<Run> {
        let ctx = ifindex.map(|ifindex| xdp_md(frame.len(), ifindex));
        // The FIB lookups happen in the namespace of the calling thread.
        let _inside = self.netns.enter()?;
        run_once(loader::xdp_program(&mut self.ebpf)?, frame, ctx.as_deref())
    }

    /// Runs `tc_reply` on `frame`.
    pub fn tc(&mut self, frame: &[u8]) -> Result<Run> {
        run_once(loader::tc_program(&mut self.ebpf)?, frame, None)
    }

    /// Checks that exactly `expected` (reason, count) were counted since the last check;
    /// every other reason must not have moved.
    pub fn expect_reasons(&mut self, expected: &[(u32, u64)]) -> Result<()> {
        let totals = self.maps.reason_totals()?;
        let moved: Vec<(&str, u64)> = totals
            .iter()
            .zip(&self.seen)
            .zip(reasons::NAMES)
            .filter(|((now, before), _)| now != before)
            .map(|((now, before), name)| (name, now - before))
            .collect();
        self.seen = totals;
        let mut wanted: Vec<(u32, u64)> = expected.to_vec();
        wanted.sort_unstable();
        let wanted: Vec<(&str, u64)> = wanted
            .iter()
            .map(|(reason, count)| (reasons::NAMES[*reason as usize], *count))
            .collect();
        ensure!(
            moved == wanted,
            "reason counters moved {moved:?}, expected {wanted:?}"
        );
        Ok(())
    }

    /// Adds a veth pair (`name` up with `addr/24`, its peer up), so `peer_ip` is
    /// reachable through it; with `peer_mac`, a permanent neighbour entry for it too.
    /// Returns the interface index of `name`.
    pub fn add_link(
        &self,
        name: &str,
        addr: Ipv4Addr,
        peer_ip: Ipv4Addr,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<u32> {
        self.netns.run(&format!(
            "ip link add {name} type veth peer name {name}p && \
             ip addr add {addr}/24 dev {name} && \
             ip link set {name} up && ip link set {name}p up && \
             sysctl -qw net.ipv4.conf.{name}.forwarding=1"
        ))?;
        if let Some(mac) = peer_mac {
            self.set_neighbour(name, peer_ip, mac)?;
        }
        Ok(self
            .netns
            .run(&format!("cat /sys/class/net/{name}/ifindex"))?
            .trim()
            .parse()?)
    }

    /// Makes `mac` the neighbour entry of `ip` on interface `link`.
    pub fn set_neighbour(&self, link: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        let mac = mac.map(|byte| format!("{byte:02x}")).join(":");
        self.netns.run(&format!(
            "ip neigh replace {ip} lladdr {mac} dev {link} nud permanent"
        ))?;
        Ok(())
    }

    /// The MAC address of interface `name` in the namespace.
    pub fn mac(&self, name: &str) -> Result<[u8; 6]> {
        let text = self
            .netns
            .run(&format!("cat /sys/class/net/{name}/address"))?;
        crate::packets::parse_mac(&text)
    }
}

/// The lowest index below `size` that is not `used`.
fn lowest_free(used: impl Iterator<Item = u32>, size: u32) -> Option<u32> {
    let used: Vec<u32> = used.collect();
    (0..size).find(|index| !used.contains(index))
}

/// The Maglev table of `addrs` at equal weights, each known by its address bytes, as
/// the agent builds a pod ring: `size` slots of addresses as the maps store them.
pub fn equal_ring(addrs: &[Ipv4Addr], size: usize) -> Vec<u32> {
    let ids: Vec<[u8; 4]> = addrs.iter().map(Ipv4Addr::octets).collect();
    let backends: Vec<Backend<'_>> = addrs
        .iter()
        .zip(&ids)
        .map(|(addr, id)| Backend {
            id,
            addr: wire(*addr),
            weight: 1,
        })
        .collect();
    maglev::build(&backends, size)
}

/// One BPF_PROG_TEST_RUN of `program` on `frame`, with `ctx` as its context if given.
fn run_once<P>(program: &P, frame: &[u8], ctx: Option<&[u8]>) -> Result<Run>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; OUT_LEN];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx,
        ..TestRunOptions::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(Run {
        action: result.return_value,
        frame: out,
    })
}

/// The REPLY_FLOWS key of replies from `pod` to `client`: the reply's tuple, laid out as
/// the flow-cache key of a flow from `pod` to `client` would be.
pub fn reply_key(pod: SocketAddrV4, client: SocketAddrV4, proto: u8) -> ReplyKey {
    let reply = flow_key(pod, client, proto);
    ReplyKey {
        pod: reply.client,
        client: reply.vip,
        pod_port: reply.client_port,
        client_port: reply.vip_port,
        proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// The REPLY_FLOWS value that turns replies back into ones from `vip`.
pub fn reply_value(vip: SocketAddrV4) -> ReplyValue {
    ReplyValue {
        vip: wire(*vip.ip()),
        vip_port: wire_port(vip.port()),
        _pad: 0,
        stats_index: VIP_STATS_INDEX,
    }
}
