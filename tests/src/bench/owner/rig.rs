//! The owner-capacity rig: three network namespaces joined by two veth pairs,
//!
//! ```text
//! generator ns  gen0 <-> own0  owner ns  own1 <-> be0  backend-node ns
//! ```
//!
//! The generator runs `bench_generate` with BPF_PROG_TEST_RUN in live-frames mode as if
//! it had arrived on gen0; its `XDP_TX` hands each frame, as an `xdp_frame` with no skb,
//! to whatever XDP program the owner has on own0, as a NIC driver would. `bench_sink`
//! on gen0 and be0 (and on own0 for the floor) counts what arrives per interface.
//! Interface indexes are fixed so the sink's per-index counters tell the ends apart.
//! The owner namespace is the fixture [`Dataplane`]'s, with the agent's own object.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    maps::{
        BENCH_FRAME_LEN, BENCH_GEN_FLOWS, BENCH_GEN_FRAME, BENCH_GEN_PORT_BASE,
        BENCH_GENERATE_PROGRAM, BENCH_PASS_PROGRAM, BENCH_SINK_COUNTS, BENCH_SINK_PROGRAM,
        BENCH_TX_PROGRAM,
    },
    types::PROTO_UDP,
};

use crate::{
    bench::BENCH_OBJECT,
    fixture::{Dataplane, ICMP_RATE, MTU, NODE, xdp_md},
    netns::Netns,
    packets::{self, L2},
};

/// The owner's side towards the generator (the LAN port) and towards the backend node.
pub const OWNER_LAN: &str = "own0";
pub const OWNER_BACKEND: &str = "own1";
/// Interface indexes, below `BENCH_SINK_SLOTS`.
pub const GEN_IFINDEX: u32 = 10;
pub const OWNER_LAN_IFINDEX: u32 = 11;
pub const OWNER_BACKEND_IFINDEX: u32 = 12;
pub const BACKEND_IFINDEX: u32 = 13;
/// The generator's address on the owner's LAN (the clients are routed behind it).
pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The owner's address towards the backend node, and the backend node's.
pub const OWNER_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const BACKEND_NODE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
/// A pod on the backend node, whose /24 the owner routes there (the kube-proxy path).
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const POD_RANGE: &str = "10.244.1.0/24";
/// The service: UDP to the VIP, port 53 -> 5353.
pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 8, 240), 53);
pub const TARGET_PORT: u16 = 5353;
/// The first client address; flow `n` comes from this + n / BENCH_GEN_PORTS.
pub const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Frames per live-frames batch: below veth's 256-entry rings, so a batch fits the
/// peer's ring before the batch's softirq drains it.
const BATCH: u32 = 64;
const SERVICE_SLOT: u32 = 0;

/// What the owner runs on its LAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerProgram {
    /// The sink: the generator+sink floor.
    Sink,
    /// MAC swap and `XDP_TX` back to the generator's port.
    Reflector,
    /// The agent's `xdp_lb`, as the agent configures it for the service.
    XdpLb,
    /// Parse and `XDP_PASS`: the kernel forwards (veth takes XDP frames only when an
    /// XDP program is attached).
    Pass,
}

/// One generator run: frames generated and how long the run took.
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    pub frames: u64,
    pub elapsed: Duration,
}

/// Frames the sink counted on each end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    pub generator: u64,
    pub owner: u64,
    pub backend: u64,
}

impl Arrivals {
    pub fn since(self, earlier: Self) -> Self {
        Self {
            generator: self.generator - earlier.generator,
            owner: self.owner - earlier.owner,
            backend: self.backend - earlier.backend,
        }
    }
}

/// The namespaces and loaded programs. Field order is drop order: the owner's
/// attachment goes before the objects, the objects before the namespaces.
pub struct Rig {
    attached: Option<(OwnerProgram, XdpLinkId)>,
    bench: Ebpf,
    pub owner: Dataplane,
    pub generator: Netns,
    pub backend: Netns,
}

impl Rig {
    /// The namespaces, links and programs; the sink on gen0 and be0, nothing on own0
    /// yet; the owner's `xdp_lb` configured to send the service to [`BACKEND_NODE`].
    pub fn new() -> Result<Self> {
        let generator = Netns::new("og")?;
        let backend = Netns::new("ob")?;
        let owner = Dataplane::empty()?;
        link(&owner, &generator, &backend)?;
        let mut bench = load_bench_object()?;
        // Detached when `bench` drops: its programs own their links.
        attach_sink(&mut bench, &generator, "gen0")?;
        attach_sink(&mut bench, &backend, "be0")?;
        let mut rig = Self {
            attached: None,
            bench,
            owner,
            generator,
            backend,
        };
        rig.configure_xdp_lb()?;
        rig.set_template()?;
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

    /// The frame every generated one starts from: client -> VIP, UDP without checksum,
    /// [`BENCH_FRAME_LEN`] bytes, addressed from gen0 to own0.
    fn set_template(&mut self) -> Result<()> {
        let l2 = L2 {
            src: mac_in(&self.generator, "gen0")?,
            dst: self.owner.mac(OWNER_LAN)?,
            vlan: None,
        };
        let client = SocketAddrV4::new(CLIENT_BASE, BENCH_GEN_PORT_BASE);
        let headers = l2.ipv4(&packets::udp_no_checksum(client, VIP, &[])).len();
        let payload = vec![0u8; BENCH_FRAME_LEN - headers];
        let frame = l2.ipv4(&packets::udp_no_checksum(client, VIP, &payload));
        let template: [u8; BENCH_FRAME_LEN] = frame
            .try_into()
            .map_err(|_| anyhow::anyhow!("the template is not {BENCH_FRAME_LEN} bytes"))?;
        let mut map: Array<&mut MapData, [u8; BENCH_FRAME_LEN]> = Array::try_from(
            self.bench
                .map_mut(BENCH_GEN_FRAME)
                .context("no template map")?,
        )?;
        Ok(map.set(0, template, 0)?)
    }

    /// Flows the generator cycles through (0: every frame a new flow).
    pub fn set_flows(&mut self, flows: u32) -> Result<()> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(
            self.bench
                .map_mut(BENCH_GEN_FLOWS)
                .context("no flows map")?,
        )?;
        Ok(map.set(0, flows, 0)?)
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

    /// Generates `frames` frames (in calls of at most `per_call`) on gen0 from the
    /// calling thread, which should be pinned: the whole path runs on its CPU.
    pub fn generate(&self, frames: u64, per_call: u32) -> Result<Generated> {
        let program = xdp(&self.bench, BENCH_GENERATE_PROGRAM)?;
        let template = [0u8; BENCH_FRAME_LEN];
        let ctx = xdp_md(BENCH_FRAME_LEN, GEN_IFINDEX);
        // The ingress interface is looked up in the calling thread's namespace.
        let _inside = self.generator.enter()?;
        let started = Instant::now();
        let mut done = 0u64;
        while done < frames {
            let count = u32::try_from((frames - done).min(u64::from(per_call)))?;
            program.test_run(TestRunOptions {
                data_in: Some(&template),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::default()
            })?;
            done += u64::from(count);
        }
        Ok(Generated {
            frames: done,
            elapsed: started.elapsed(),
        })
    }

    /// Whether this kernel refuses live-frames mode: 6.18.44-fc (the Firecracker guest
    /// kernel this was written on) answers every live-frames run with EPERM, whatever
    /// the batch size, context or namespace, while the same program runs in the
    /// ordinary mode. Sends one frame when it is not refused.
    pub fn live_frames_refused(&self) -> Result<bool> {
        match self.generate(1, 1) {
            Ok(_) => Ok(false),
            Err(error) if is_eperm(&error) => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// Generates in calls of `per_call` frames until `window` has passed.
    pub fn generate_for(&self, window: Duration, per_call: u32) -> Result<Generated> {
        let mut total = Generated {
            frames: 0,
            elapsed: Duration::ZERO,
        };
        while total.elapsed < window {
            let run = self.generate(u64::from(per_call), per_call)?;
            total.frames += run.frames;
            total.elapsed += run.elapsed;
        }
        Ok(total)
    }

    /// What the sink has counted so far on each end.
    pub fn arrivals(&self) -> Result<Arrivals> {
        let map = self
            .bench
            .map(BENCH_SINK_COUNTS)
            .context("no sink counters")?;
        let counts: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let total = |ifindex: u32| -> Result<u64> { Ok(counts.get(&ifindex, 0)?.iter().sum()) };
        Ok(Arrivals {
            generator: total(GEN_IFINDEX)?,
            owner: total(OWNER_LAN_IFINDEX)?,
            backend: total(BACKEND_IFINDEX)?,
        })
    }
}

fn is_eperm(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EPERM)
    })
}

/// The bench object with the generator, the sink and the two references loaded.
fn load_bench_object() -> Result<Ebpf> {
    let mut object = Ebpf::load(BENCH_OBJECT)?;
    for name in [
        BENCH_GENERATE_PROGRAM,
        BENCH_SINK_PROGRAM,
        BENCH_TX_PROGRAM,
        BENCH_PASS_PROGRAM,
    ] {
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
    match which {
        OwnerProgram::Sink => xdp_mut(bench, BENCH_SINK_PROGRAM),
        OwnerProgram::Reflector => xdp_mut(bench, BENCH_TX_PROGRAM),
        OwnerProgram::Pass => xdp_mut(bench, BENCH_PASS_PROGRAM),
        OwnerProgram::XdpLb => owner.xdp_lb_mut(),
    }
}

/// The sink on `interface` of `netns`, in native mode.
fn attach_sink(bench: &mut Ebpf, netns: &Netns, interface: &str) -> Result<()> {
    let _inside = netns.enter()?;
    xdp_mut(bench, BENCH_SINK_PROGRAM)?.attach(interface, XdpMode::Driver)?;
    Ok(())
}

fn xdp_mut<'a>(object: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program = object
        .program_mut(name)
        .with_context(|| format!("{name} missing from the bench object"))?;
    Ok(program.try_into()?)
}

fn xdp<'a>(object: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    let program = object
        .program(name)
        .with_context(|| format!("{name} missing from the bench object"))?;
    Ok(program.try_into()?)
}

/// The two veth pairs with fixed indexes, addresses, forwarding on the owner, and
/// permanent neighbours: the sinks drop ARP, so nothing would resolve otherwise.
fn link(owner: &Dataplane, generator: &Netns, backend: &Netns) -> Result<()> {
    owner.netns.run(&format!(
        "ip link add {OWNER_LAN} index {OWNER_LAN_IFINDEX} type veth \
           peer name gen0 index {GEN_IFINDEX} netns {gen} && \
         ip link add {OWNER_BACKEND} index {OWNER_BACKEND_IFINDEX} type veth \
           peer name be0 index {BACKEND_IFINDEX} netns {be} && \
         ip addr add {NODE}/24 dev {OWNER_LAN} && \
         ip addr add {OWNER_BACKEND_ADDR}/24 dev {OWNER_BACKEND} && \
         ip link set {OWNER_LAN} up && ip link set {OWNER_BACKEND} up && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
           net.ipv4.conf.{OWNER_LAN}.rp_filter=0 && \
         ip route add {POD_RANGE} via {BACKEND_NODE} && \
         ip route add {CLIENT_BASE}/10 via {GEN_ADDR}",
        gen = generator.name(),
        be = backend.name(),
    ))?;
    generator.run(&format!(
        "ip addr add {GEN_ADDR}/24 dev gen0 && ip link set gen0 up"
    ))?;
    backend.run(&format!(
        "ip addr add {BACKEND_NODE}/24 dev be0 && ip link set be0 up"
    ))?;
    owner.set_neighbour(OWNER_BACKEND, BACKEND_NODE, mac_in(backend, "be0")?)?;
    owner.set_neighbour(OWNER_LAN, GEN_ADDR, mac_in(generator, "gen0")?)?;
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
