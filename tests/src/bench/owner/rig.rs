//! The owner-capacity rig: two network namespaces joined by one veth pair, the owner's
//! LAN port facing the generator, which stands for the LAN and everything on it:
//!
//! ```text
//! generator ns  gen0 <-> own0  owner ns
//! ```
//!
//! A few frames are injected once; then they circulate. `bench_generate` on gen0 turns
//! each frame the owner sends back into a fresh client request and sends it out again
//! (`XDP_TX`); the owner's program on own0 gets it as an `xdp_frame` with no skb, as
//! from a NIC driver, and sends it towards a backend node, which is on the same LAN:
//! back out of own0 to the generator. Everything runs in the softirq of the CPU the
//! frames were injected on. The generator counts what comes back by kind and drops
//! everything once its budget is spent, so every run ends by itself.
//! Interface indexes are fixed; the owner namespace is the fixture [`Dataplane`]'s,
//! with the agent's own object.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
    util::nr_cpus,
};
use lb_common::{
    maps::{
        BENCH_ARRIVED_AS_SENT, BENCH_ARRIVED_ENCAPSULATED, BENCH_ARRIVED_OTHER,
        BENCH_ARRIVED_TRANSLATED, BENCH_BACKEND_ADDR, BENCH_FLOOR_CACHE, BENCH_FLOOR_CACHE_PROGRAM,
        BENCH_FLOOR_ENCAP_PROGRAM, BENCH_FLOOR_FLOW_PROGRAM, BENCH_FLOOR_FLOWS, BENCH_FRAME_LEN,
        BENCH_GEN_ARRIVALS, BENCH_GEN_BUDGET, BENCH_GEN_FRAME, BENCH_GEN_MAC, BENCH_GEN_PORT_BASE,
        BENCH_GEN_PORTS, BENCH_GEN_SETTINGS, BENCH_GENERATE_PROGRAM, BENCH_OWNER_ADDR,
        BENCH_OWNER_MAC, BENCH_PASS_PROGRAM, BENCH_TX_PROGRAM,
    },
    types::{BenchCacheSlot, BenchGenSettings, FlowKey, FlowValue, PROTO_UDP},
};
use pnet_datalink::{Channel, Config};

use crate::{
    bench::BENCH_OBJECT,
    fixture::{Dataplane, ICMP_RATE, MTU, NODE, flow_key},
    netns::Netns,
    packets::{self, L2},
};

/// The owner's LAN port.
pub const OWNER_LAN: &str = "own0";
const GENERATOR_PORT: &str = "gen0";
pub const GEN_IFINDEX: u32 = 10;
pub const OWNER_LAN_IFINDEX: u32 = 11;
/// The generator's address on the owner's LAN (the clients are routed behind it).
pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The backend node, on the same LAN: its MAC is the generator's.
pub const BACKEND_NODE: Ipv4Addr = Ipv4Addr::from_octets(BENCH_BACKEND_ADDR);
/// A pod on the backend node, whose /24 the owner routes there (the kube-proxy path).
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const POD_RANGE: &str = "10.244.1.0/24";
/// The service: UDP to the VIP, port 53 -> 5353.
pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 8, 240), 53);
pub const TARGET_PORT: u16 = 5353;
/// The first client address; flow `n` comes from this + n / BENCH_GEN_PORTS.
pub const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
const SERVICE_SLOT: u32 = 0;
/// More frames than any path here moves per second (the per-CPU budget is this times
/// the run's length): the bound that ends a run whatever happens to the rig.
const MAX_FRAMES_PER_SEC: f64 = 20e6;
/// How long a run's frames may take to die out once the budget is withdrawn.
const DRAIN: Duration = Duration::from_secs(1);

/// What the owner runs on its LAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerProgram {
    /// MAC swap and `XDP_TX` back to the generator's port.
    Reflector,
    /// The agent's `xdp_lb`, as the agent configures it for the service.
    XdpLb,
    /// Parse and `XDP_PASS`: the kernel forwards (veth takes XDP frames only when an
    /// XDP program is attached).
    Pass,
    /// The owner floors: IPIP to [`BACKEND_NODE`] from constants, with no lookup, after
    /// one `BENCH_FLOOR_FLOWS` (LRU hash) lookup, or after one `BENCH_FLOOR_CACHE`
    /// (direct-mapped array) lookup. [`Rig::fill_floor_tables`] fills both tables.
    FloorEncap,
    FloorFlow,
    FloorCache,
}

impl OwnerProgram {
    /// The programs of the bench object (all but `xdp_lb`).
    const IN_BENCH_OBJECT: [(Self, &'static str); 5] = [
        (Self::Reflector, BENCH_TX_PROGRAM),
        (Self::Pass, BENCH_PASS_PROGRAM),
        (Self::FloorEncap, BENCH_FLOOR_ENCAP_PROGRAM),
        (Self::FloorFlow, BENCH_FLOOR_FLOW_PROGRAM),
        (Self::FloorCache, BENCH_FLOOR_CACHE_PROGRAM),
    ];

    /// The floors, which send every frame on encapsulated as `xdp_lb` does.
    pub const FLOORS: [Self; 3] = [Self::FloorEncap, Self::FloorFlow, Self::FloorCache];
}

/// Frames that came back to the generator, by what the owner made of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// As sent: reflected.
    pub as_sent: u64,
    /// In IPIP towards the backend node: `xdp_lb`'s.
    pub encapsulated: u64,
    /// To another destination: the kernel's DNAT.
    pub translated: u64,
    /// ARP, IPv6 and the like (dropped).
    pub other: u64,
}

impl Arrivals {
    pub fn since(self, earlier: Self) -> Self {
        Self {
            as_sent: self.as_sent - earlier.as_sent,
            encapsulated: self.encapsulated - earlier.encapsulated,
            translated: self.translated - earlier.translated,
            other: self.other - earlier.other,
        }
    }

    pub fn total(self) -> u64 {
        self.as_sent + self.encapsulated + self.translated + self.other
    }
}

/// One run: what came back during the measured window, and the window's length.
#[derive(Debug, Clone, Copy)]
pub struct Circulation {
    pub arrivals: Arrivals,
    pub elapsed: Duration,
}

/// A program's runs and the time the kernel counted in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramRuns {
    pub time: Duration,
    pub count: u64,
}

impl ProgramRuns {
    /// Mean nanoseconds per run since `earlier`.
    pub fn ns_per_run_since(self, earlier: Self) -> f64 {
        let runs = self.count.saturating_sub(earlier.count).max(1);
        (self.time.saturating_sub(earlier.time)).as_nanos() as f64 / runs as f64
    }
}

/// The namespaces and loaded programs. Field order is drop order: the owner's
/// attachment goes before the objects, the objects before the namespaces.
pub struct Rig {
    attached: Option<(OwnerProgram, XdpLinkId)>,
    bench: Ebpf,
    pub owner: Dataplane,
    pub generator: Netns,
    destination: SocketAddrV4,
}

impl Rig {
    /// The namespaces, the link and the programs; the generator on gen0, nothing on
    /// own0 yet; the owner's `xdp_lb` configured to send the service to
    /// [`BACKEND_NODE`].
    pub fn new() -> Result<Self> {
        let generator = Netns::new("og")?;
        let owner = Dataplane::empty()?;
        link(&owner, &generator)?;
        let mut bench = load_bench_object()?;
        {
            let _inside = generator.enter()?;
            // Detached when `bench` drops: its programs own their links.
            xdp_mut(&mut bench, BENCH_GENERATE_PROGRAM)?.attach(GENERATOR_PORT, XdpMode::Driver)?;
        }
        let mut rig = Self {
            attached: None,
            bench,
            owner,
            generator,
            destination: VIP,
        };
        rig.configure_xdp_lb()?;
        rig.set_destination(VIP)?;
        Ok(rig)
    }

    fn configure_xdp_lb(&mut self) -> Result<()> {
        let owner = &mut self.owner;
        owner.configure(MTU, ICMP_RATE)?;
        let mac = owner.mac(OWNER_LAN)?;
        owner.set_mac(mac)?;
        owner.add_vip(*VIP.ip(), 0)?;
        owner.add_service(VIP, PROTO_UDP, TARGET_PORT, SERVICE_SLOT, 0)?;
        owner.set_node_ring(SERVICE_SLOT, &[BACKEND_NODE])
    }

    /// The request every generated frame starts from: client -> `to`, UDP without
    /// checksum, [`BENCH_FRAME_LEN`] bytes, addressed from gen0 to own0.
    pub fn template(&self, to: SocketAddrV4) -> Result<[u8; BENCH_FRAME_LEN]> {
        let l2 = L2 {
            src: mac_in(&self.generator, GENERATOR_PORT)?,
            dst: self.owner.mac(OWNER_LAN)?,
            vlan: None,
        };
        let client = SocketAddrV4::new(CLIENT_BASE, BENCH_GEN_PORT_BASE);
        let headers = l2.ipv4(&packets::udp_no_checksum(client, to, &[])).len();
        let payload = vec![0u8; BENCH_FRAME_LEN - headers];
        l2.ipv4(&packets::udp_no_checksum(client, to, &payload))
            .try_into()
            .map_err(|_| anyhow::anyhow!("the template is not {BENCH_FRAME_LEN} bytes"))
    }

    /// Where the generated requests go: [`VIP`] unless a path asks otherwise.
    pub fn set_destination(&mut self, to: SocketAddrV4) -> Result<()> {
        let template = self.template(to)?;
        let mut map: Array<&mut MapData, [u8; BENCH_FRAME_LEN]> = Array::try_from(
            self.bench
                .map_mut(BENCH_GEN_FRAME)
                .context("no template map")?,
        )?;
        map.set(0, template, 0)?;
        self.destination = to;
        Ok(())
    }

    /// Puts the generator's first `flows` client flows (as `bench_generate` numbers
    /// them) to [`VIP`] in both floor tables, with [`BACKEND_NODE`] as their backend.
    /// Fails if two of them share a slot of the direct-mapped cache, where one would
    /// miss.
    pub fn fill_floor_tables(&mut self, flows: u32) -> Result<()> {
        let node = u32::from_ne_bytes(BACKEND_NODE.octets());
        let keys: Vec<_> = (0..flows)
            .map(|flow| flow_key(generated_client(flow), VIP, PROTO_UDP))
            .collect();
        let mut table: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(
            self.bench
                .map_mut(BENCH_FLOOR_FLOWS)
                .context("no floor flow table")?,
        )?;
        let value = FlowValue {
            node,
            ..FlowValue::default()
        };
        for key in &keys {
            table.insert(key, value, 0)?;
        }
        let mut cache: Array<&mut MapData, BenchCacheSlot> = Array::try_from(
            self.bench
                .map_mut(BENCH_FLOOR_CACHE)
                .context("no floor cache")?,
        )?;
        let mut taken = std::collections::BTreeSet::new();
        for key in keys {
            let index = BenchCacheSlot::index(&key);
            ensure!(
                taken.insert(index),
                "two of the {flows} flows share cache slot {index}"
            );
            cache.set(index, BenchCacheSlot { key, node }, 0)?;
        }
        Ok(())
    }

    /// One BPF_PROG_TEST_RUN of `which` (not `xdp_lb`) on `frame`: the action and the
    /// frame it leaves, to check what an owner program sends without timing it.
    pub fn test_run(&mut self, which: OwnerProgram, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        ensure!(
            which != OwnerProgram::XdpLb,
            "xdp_lb has fixtures of its own"
        );
        let mut out = vec![0u8; 2 * BENCH_FRAME_LEN];
        let result =
            owner_program(&mut self.bench, &mut self.owner, which)?.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// What the generator does with the frames that come back.
    pub fn set_generator(&mut self, settings: BenchGenSettings) -> Result<()> {
        let mut map: Array<&mut MapData, BenchGenSettings> = Array::try_from(
            self.bench
                .map_mut(BENCH_GEN_SETTINGS)
                .context("no settings map")?,
        )?;
        Ok(map.set(0, settings, 0)?)
    }

    /// Puts `wanted` on the owner's LAN port in place of whatever was there.
    pub fn attach_owner(&mut self, wanted: OwnerProgram) -> Result<()> {
        if self.attached.as_ref().map(|(program, _)| *program) == Some(wanted) {
            return Ok(());
        }
        self.detach_owner()?;
        let _inside = self.owner.netns.enter()?;
        let program = owner_program(&mut self.bench, &mut self.owner, wanted)?;
        let link = program.attach(OWNER_LAN, XdpMode::Driver)?;
        self.attached = Some((wanted, link));
        Ok(())
    }

    fn detach_owner(&mut self) -> Result<()> {
        let Some((program, link)) = self.attached.take() else {
            return Ok(());
        };
        Ok(owner_program(&mut self.bench, &mut self.owner, program)?.detach(link)?)
    }

    /// Injects `in_flight` frames from the calling thread, which should be pinned (the
    /// circulation runs in its CPU's softirq), lets them circulate for `warm_up`, counts
    /// what comes back over `window`, then withdraws the budget and waits until the
    /// frames have died out.
    pub fn circulate(
        &mut self,
        in_flight: usize,
        warm_up: Duration,
        window: Duration,
    ) -> Result<Circulation> {
        let bound = (warm_up + window + DRAIN).as_secs_f64() * MAX_FRAMES_PER_SEC;
        self.set_budget(bound as u64)?;
        let result = self.inject(in_flight).and_then(|()| {
            thread::sleep(warm_up);
            let (before, started) = (self.arrivals()?, Instant::now());
            thread::sleep(window);
            let (after, elapsed) = (self.arrivals()?, started.elapsed());
            Ok(Circulation {
                arrivals: after.since(before),
                elapsed,
            })
        });
        self.set_budget(0)?;
        self.wait_until_still()?;
        result
    }

    fn set_budget(&mut self, frames: u64) -> Result<()> {
        let mut map: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(
            self.bench
                .map_mut(BENCH_GEN_BUDGET)
                .context("no budget map")?,
        )?;
        let cpus = nr_cpus().map_err(|(_, error)| error)?;
        Ok(map.set(0, PerCpuValues::try_from(vec![frames; cpus])?, 0)?)
    }

    /// Sends `count` copies of the template out of gen0 through a packet socket: the
    /// owner's program gets these first ones from an skb, every later pass as a frame.
    fn inject(&self, count: usize) -> Result<()> {
        let template = self.template(self.destination)?;
        let _inside = self.generator.enter()?;
        let interface = pnet_datalink::interfaces()
            .into_iter()
            .find(|interface| interface.name == GENERATOR_PORT)
            .context("no gen0 in the generator's namespace")?;
        let Channel::Ethernet(mut tx, _rx) = pnet_datalink::channel(&interface, Config::default())
            .context("opening a packet socket on gen0")?
        else {
            bail!("unexpected channel type on gen0");
        };
        for _ in 0..count {
            tx.send_to(&template, None)
                .context("the packet socket sent nothing")??;
        }
        Ok(())
    }

    /// Waits (bounded by [`DRAIN`]) until nothing arrives at the generator any more.
    fn wait_until_still(&self) -> Result<()> {
        let deadline = Instant::now() + DRAIN;
        let mut last = self.arrivals()?;
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = self.arrivals()?;
            if now == last {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "frames still circulate {DRAIN:?} after the budget was withdrawn"
            );
            last = now;
        }
    }

    /// The kernel's run-time totals (kept only while [`aya::sys::enable_stats`] is held)
    /// of the owner's program and the generator's.
    pub fn program_runs(&mut self) -> Result<[ProgramRuns; 2]> {
        let owner = match &self.attached {
            Some((program, _)) => *program,
            None => bail!("no owner program attached"),
        };
        let owner = owner_program(&mut self.bench, &mut self.owner, owner)?.info()?;
        let generator = xdp_mut(&mut self.bench, BENCH_GENERATE_PROGRAM)?.info()?;
        Ok([owner, generator].map(|info| ProgramRuns {
            time: info.run_time(),
            count: info.run_count(),
        }))
    }

    /// What has come back to the generator so far.
    pub fn arrivals(&self) -> Result<Arrivals> {
        let map = self
            .bench
            .map(BENCH_GEN_ARRIVALS)
            .context("no arrival counters")?;
        let counts: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let total = |kind: u32| -> Result<u64> { Ok(counts.get(&kind, 0)?.iter().sum()) };
        Ok(Arrivals {
            as_sent: total(BENCH_ARRIVED_AS_SENT)?,
            encapsulated: total(BENCH_ARRIVED_ENCAPSULATED)?,
            translated: total(BENCH_ARRIVED_TRANSLATED)?,
            other: total(BENCH_ARRIVED_OTHER)?,
        })
    }
}

/// The client of the generator's flow `flow`: `bench_generate`'s numbering.
fn generated_client(flow: u32) -> SocketAddrV4 {
    let address = u32::from(CLIENT_BASE) + flow / BENCH_GEN_PORTS;
    // Truncation intended: the remainder is below BENCH_GEN_PORTS (16384).
    let port = BENCH_GEN_PORT_BASE + (flow % BENCH_GEN_PORTS) as u16;
    SocketAddrV4::new(Ipv4Addr::from(address), port)
}

/// The bench object with the generator and the owner programs loaded.
fn load_bench_object() -> Result<Ebpf> {
    let mut object = Ebpf::load(BENCH_OBJECT)?;
    let owners = OwnerProgram::IN_BENCH_OBJECT.map(|(_, name)| name);
    for name in std::iter::once(BENCH_GENERATE_PROGRAM).chain(owners) {
        xdp_mut(&mut object, name)?.load()?;
    }
    Ok(object)
}

/// `which`, from the bench object or (`xdp_lb`) the owner's.
fn owner_program<'a>(
    bench: &'a mut Ebpf,
    owner: &'a mut Dataplane,
    which: OwnerProgram,
) -> Result<&'a mut Xdp> {
    let in_bench = OwnerProgram::IN_BENCH_OBJECT
        .into_iter()
        .find(|(program, _)| *program == which);
    match in_bench {
        Some((_, name)) => xdp_mut(bench, name),
        None => owner.xdp_lb_mut(),
    }
}

fn xdp_mut<'a>(object: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program = object
        .program_mut(name)
        .with_context(|| format!("{name} missing from the bench object"))?;
    Ok(program.try_into()?)
}

/// The veth pair with fixed indexes, MACs (the floors write them from constants),
/// addresses, forwarding on the owner (in and out of the same port, as a one-armed node
/// on a flat LAN does), and permanent neighbours: the generator answers no ARP.
fn link(owner: &Dataplane, generator: &Netns) -> Result<()> {
    ensure!(
        NODE.octets() == BENCH_OWNER_ADDR,
        "the floors' outer source is not the owner node's address"
    );
    let mac = |octets: [u8; 6]| octets.map(|octet| format!("{octet:02x}")).join(":");
    let quiet = "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1";
    generator.run(&format!("sysctl -qw {quiet}"))?;
    owner.netns.run(&format!(
        "sysctl -qw {quiet} && \
         ip link add {OWNER_LAN} index {OWNER_LAN_IFINDEX} address {own_mac} type veth \
           peer name {GENERATOR_PORT} index {GEN_IFINDEX} address {gen_mac} netns {gen} && \
         ip addr add {NODE}/24 dev {OWNER_LAN} && ip link set {OWNER_LAN} up && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
           net.ipv4.conf.{OWNER_LAN}.rp_filter=0 net.ipv4.conf.all.send_redirects=0 \
           net.ipv4.conf.{OWNER_LAN}.send_redirects=0 && \
         ip route add {POD_RANGE} via {BACKEND_NODE} && \
         ip route add {CLIENT_BASE}/10 via {GEN_ADDR}",
        gen = generator.name(),
        own_mac = mac(BENCH_OWNER_MAC),
        gen_mac = mac(BENCH_GEN_MAC),
    ))?;
    generator.run(&format!(
        "ip addr add {GEN_ADDR}/24 dev {GENERATOR_PORT} && ip link set {GENERATOR_PORT} up"
    ))?;
    let generator_mac = mac_in(generator, GENERATOR_PORT)?;
    owner.set_neighbour(OWNER_LAN, BACKEND_NODE, generator_mac)?;
    owner.set_neighbour(OWNER_LAN, GEN_ADDR, generator_mac)?;
    let index = owner
        .netns
        .run(&format!("cat /sys/class/net/{OWNER_LAN}/ifindex"))?;
    ensure!(
        index.trim() == OWNER_LAN_IFINDEX.to_string(),
        "veth did not take the interface index asked for"
    );
    Ok(())
}

fn mac_in(netns: &Netns, interface: &str) -> Result<[u8; 6]> {
    packets::parse_mac(&netns.run(&format!("cat /sys/class/net/{interface}/address"))?)
}
