//! Owner forwarding capacity as a NIC with driver-mode XDP would feed it (issue 13 §1):
//! frames reach the owner's XDP program as `xdp_frame`s, before any skb exists. A
//! few frames circulate between a generator and the owner (see [`rig`]), all in one
//! CPU's softirq, so a run's rate is the inverse of one round trip's CPU cost: the
//! generator's side plus the owner's.
//!
//! Paths, interleaved round by round, each round starting with another path:
//!
//! - **two reflectors**: the generator swaps MACs and sends the frame back as it came,
//!   and so does the owner: both sides cost the same, so the owner's side is half the
//!   round trip. This is the reflector's cost, the least any XDP owner costs here.
//! - **reflector**: the generator regenerates each frame (the template, the next
//!   client flow), the owner reflects it. Minus the reflector's cost: the generator's
//!   side, which every path below shares.
//! - **floors**: what any owner doing what the flow hit does (IPIP to a backend node)
//!   costs at least, each parsing as the reflector does: the encapsulation alone, with
//!   its headers from constants and no map access; the same after one lookup in an LRU
//!   hash keyed and made like `xdp_lb`'s flow table (Katran's pattern), filled with the
//!   [`HIT_FLOWS`] flows, the backend node taken from the entry; and the same after one
//!   lookup in a direct-mapped array, as a flow cache without LRU would make.
//! - **xdplb flow hit**: the agent's `xdp_lb` as owner, [`HIT_FLOWS`] client flows
//!   already in its flow table, encapsulated in IPIP towards a backend node on the LAN.
//! - **xdplb new flow**: the same with every frame a new client flow (the flow table,
//!   an LRU, churns).
//! - **kube-proxy (iptables)**: a pass-only XDP program (veth takes XDP frames only with
//!   one attached), then the kernel: kube-proxy's nat rules DNAT to a pod on the backend
//!   node and MASQUERADE, its filter chain sees every forwarded packet, conntrack tracks
//!   the [`HIT_FLOWS`] flows. Nothing answers, so the UDP flows stay unreplied in
//!   conntrack: their packets leave kube-proxy's forward chain at its end (then the
//!   FORWARD policy accepts them) rather than by its `RELATED,ESTABLISHED` rule, after
//!   the same three rule checks. The kernel hands the forwarded packet to veth as an
//!   skb, which the generator's XDP then has to turn back into a frame: a cost a NIC's
//!   transmit path would have in its own form, counted here on the owner's side.
//! - **kernel forwarding, no NAT**: the same pass program and kernel with kube-proxy's
//!   rules loaded, but the requests go to the pod itself, so no rule translates them:
//!   what the kernel path costs before kube-proxy's NAT, including that conversion.
//!
//! kube-proxy's nftables mode is not measured separately: its DNAT and masquerade
//! chains, like iptables' nat table, are consulted on a connection's first packet only;
//! every later packet costs conntrack's lookup and NAT rewrite in both modes, and this
//! host's `iptables` is already `iptables-nft` (the rules run in nf_tables). The modes
//! differ in the first packet's rule lookup with many services, which one service here
//! would not show.
//!
//! The owner's cost per packet is the path's round trip minus the generator's side, all
//! within one round. Each sample checks what came back (IPIP, reflected or translated
//! frames only, as the path should produce), `xdp_lb`'s reason counters, and the
//! iptables rule counters.

pub mod rig;

use std::{collections::BTreeMap, fmt, net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, Result, ensure};
use lb_common::{reasons, types::BenchGenSettings};

use self::rig::{Arrivals, Circulation, OwnerProgram, POD, Rig, TARGET_PORT, VIP};
use super::{Measurement, list, median, rule_packets};
use crate::cpu::OnOneCpu;

const GROUP: &str = "owner";
const ROUNDS: usize = 5;
const WARM_UP: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(1);
/// Frames circulating at once: enough that each NAPI poll moves a batch, few enough
/// that veth's 256-entry rings never fill.
const IN_FLIGHT: usize = 32;
/// Client flows of the flow-hit and kube-proxy paths.
const HIT_FLOWS: u32 = 64;
/// Fewer round trips than this in a window means the frames died out: a broken path.
const MIN_ROUND_TRIPS: u64 = 10_000;
const FLOW_HIT_VS_KUBE_PROXY: f64 = 3.0;
const OWNER_COST_VS_REFLECTOR: f64 = 2.0;
/// The chain of the DNAT rule, and kube-proxy's filter chain for forwarded packets
/// (whose jump from FORWARD counts every one).
const SEP_CHAIN: &str = "KUBE-SEP-OWNER";
const FORWARD_CHAIN: &str = "KUBE-FORWARD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    TwoReflectors,
    Reflector,
    FloorEncap,
    FloorFlow,
    FloorCache,
    FlowHit,
    NewFlow,
    KubeProxy,
    KernelForward,
}

impl Path {
    const ALL: [Self; 9] = [
        Self::TwoReflectors,
        Self::Reflector,
        Self::FloorEncap,
        Self::FloorFlow,
        Self::FloorCache,
        Self::FlowHit,
        Self::NewFlow,
        Self::KubeProxy,
        Self::KernelForward,
    ];
    const FLOORS: [Self; 3] = [Self::FloorEncap, Self::FloorFlow, Self::FloorCache];
    /// The paths whose owner does real work, as opposed to the calibration.
    const OWNERS: [Self; 8] = [
        Self::Reflector,
        Self::FloorEncap,
        Self::FloorFlow,
        Self::FloorCache,
        Self::FlowHit,
        Self::NewFlow,
        Self::KubeProxy,
        Self::KernelForward,
    ];

    fn owner(self) -> OwnerProgram {
        match self {
            Self::TwoReflectors | Self::Reflector => OwnerProgram::Reflector,
            Self::FlowHit | Self::NewFlow => OwnerProgram::XdpLb,
            Self::KubeProxy | Self::KernelForward => OwnerProgram::Pass,
            Self::FloorEncap => OwnerProgram::FloorEncap,
            Self::FloorFlow => OwnerProgram::FloorFlow,
            Self::FloorCache => OwnerProgram::FloorCache,
        }
    }

    /// Where the generator sends its requests.
    fn destination(self) -> SocketAddrV4 {
        match self {
            Self::KernelForward => SocketAddrV4::new(POD, TARGET_PORT),
            _ => VIP,
        }
    }

    fn generator(self) -> BenchGenSettings {
        BenchGenSettings {
            flows: if self == Self::NewFlow { 0 } else { HIT_FLOWS },
            reflect: u32::from(self == Self::TwoReflectors),
        }
    }

    /// The frames of this path, as the generator sorts what comes back.
    fn delivered(self, arrivals: Arrivals) -> u64 {
        match self {
            Self::TwoReflectors | Self::Reflector | Self::KernelForward => arrivals.as_sent,
            Self::FlowHit | Self::NewFlow => arrivals.encapsulated,
            Self::FloorEncap | Self::FloorFlow | Self::FloorCache => arrivals.encapsulated,
            Self::KubeProxy => arrivals.translated,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TwoReflectors => "two reflectors (calibration)",
            Self::Reflector => "reflector (MAC swap, XDP_TX)",
            Self::FloorEncap => "floor: IPIP from constants",
            Self::FloorFlow => "floor: IPIP + LRU flow lookup",
            Self::FloorCache => "floor: IPIP + direct-mapped lookup",
            Self::FlowHit => "xdplb flow hit",
            Self::NewFlow => "xdplb new flow",
            Self::KubeProxy => "kube-proxy (iptables)",
            Self::KernelForward => "kernel forwarding, no NAT",
        })
    }
}

/// One sample: round trips completed over the run's window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    round_trips: u64,
    elapsed: Duration,
}

impl Sample {
    fn mpps(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn ns_per_round_trip(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.round_trips as f64
    }
}

/// The owner's counters that tell which path the frames took.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    encapsulated: u64,
    /// Packets sent from their flow's express entry.
    express_hits: u64,
    /// Flow-cache hits that found the service in the cache too.
    flow_hits: u64,
    /// Flow-cache hits that looked the service up in `SERVICES`.
    slow_hits: u64,
    flow_misses: u64,
    /// Packets of new connections the DNAT rule translated.
    dnat: u64,
    /// Packets the kernel forwarded through kube-proxy's filter chain.
    forwarded: u64,
}

pub fn run() -> Result<Vec<Measurement>> {
    let _pinned = OnOneCpu::pin()?;
    let mut rig = Rig::new()?;
    install_kube_proxy(&rig)?;
    rig.fill_floor_tables(HIT_FLOWS)?;
    for path in Path::ALL {
        sample(&mut rig, path, WARM_UP).with_context(|| format!("warm-up over {path}"))?;
    }
    let mut samples: BTreeMap<Path, Vec<Sample>> = BTreeMap::new();
    for round in 0..ROUNDS {
        for offset in 0..Path::ALL.len() {
            let path = Path::ALL[(round + offset) % Path::ALL.len()];
            let taken = sample(&mut rig, path, WINDOW)
                .with_context(|| format!("round {}: {path}", round + 1))?;
            eprintln!(
                "owner round {}: {path}: {:.3} M round trips/s ({:.0} ns each)",
                round + 1,
                taken.mpps(),
                taken.ns_per_round_trip()
            );
            samples.entry(path).or_default().push(taken);
        }
    }
    let mut rows = report(&samples);
    rows.extend(program_rows(&mut rig)?);
    Ok(rows)
}

/// One more run per path with the kernel's run-time statistics on: how much of each
/// side is the XDP program itself, the rest being veth and the frame's handling. Kept
/// out of the rounds above because the statistics read a clock around every run.
fn program_rows(rig: &mut Rig) -> Result<Vec<Measurement>> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling the kernel's BPF run-time statistics")?;
    let mut rows = Vec::new();
    for path in Path::ALL {
        rig.attach_owner(path.owner())?;
        let before = rig.program_runs()?;
        sample(rig, path, WARM_UP)?;
        let after = rig.program_runs()?;
        let [owner, generator] = [0, 1].map(|side| after[side].ns_per_run_since(before[side]));
        let detail = format!(
            "the kernel's BPF run-time statistics over one {} s run (a clock read around \
             every run included); the generator's program in the same run: {generator:.0} ns",
            WARM_UP.as_secs_f64()
        );
        let name = format!("owner XDP program ns/run: {path}");
        rows.push(Measurement::new(GROUP, &name, owner, "ns", &detail));
    }
    Ok(rows)
}

/// One run of `path` for `window`, checked to have taken that path.
fn sample(rig: &mut Rig, path: Path, window: Duration) -> Result<Sample> {
    rig.attach_owner(path.owner())?;
    rig.set_generator(path.generator())?;
    rig.set_destination(path.destination())?;
    let before = counters(rig)?;
    let Circulation { arrivals, elapsed } = rig.circulate(IN_FLIGHT, WARM_UP, window)?;
    let change = counters(rig)?.since(&before);
    let round_trips = path.delivered(arrivals);
    ensure!(
        round_trips >= MIN_ROUND_TRIPS,
        "only {round_trips} frames came back in {elapsed:?}: the frames died out ({arrivals:?})"
    );
    ensure!(
        arrivals.total() - arrivals.other == round_trips,
        "frames came back in another form than this path's: {arrivals:?}"
    );
    check_path(path, &change, round_trips)?;
    Ok(Sample {
        round_trips,
        elapsed,
    })
}

/// `xdp_lb`'s counters and the iptables rules agree with `path`. The counters run over
/// the whole circulation (warm-up and draining included), so they cover at least the
/// window's frames.
fn check_path(path: Path, change: &Counters, delivered: u64) -> Result<()> {
    let (xdplb, kernel) = match path {
        Path::FlowHit | Path::NewFlow => (true, false),
        Path::KubeProxy | Path::KernelForward => (false, true),
        Path::TwoReflectors | Path::Reflector => (false, false),
        Path::FloorEncap | Path::FloorFlow | Path::FloorCache => (false, false),
    };
    let translations = if path == Path::KubeProxy {
        u64::from(HIT_FLOWS)
    } else {
        0
    };
    if xdplb {
        ensure!(
            change.encapsulated >= delivered,
            "xdp_lb encapsulated {} frames for {delivered} delivered",
            change.encapsulated
        );
        let (express, slow, misses) = (change.express_hits, change.slow_hits, change.flow_misses);
        let hits = express + change.flow_hits;
        // Every hit finds its service in the flow cache: the path measured is flow first.
        let as_expected = slow == 0
            && hits + misses == change.encapsulated
            && match path {
                // The injected frames are copies of one flow; only they may hit.
                Path::NewFlow => hits <= IN_FLIGHT as u64,
                // The new-flow path churns the flow table, so a round's first frames may
                // miss. The rest are express hits but for the full path each flow takes
                // once its next hop has aged, a few times a second.
                _ => misses <= u64::from(HIT_FLOWS) && express * 10 >= change.encapsulated * 9,
            };
        ensure!(
            as_expected,
            "over {path}: {express} express hits, {} flow hits, {slow} through SERVICES, \
             {misses} misses",
            change.flow_hits
        );
    } else {
        ensure!(
            change.encapsulated == 0,
            "xdp_lb encapsulated {} frames over {path}",
            change.encapsulated
        );
    }
    if kernel {
        ensure!(
            change.forwarded >= delivered && change.dnat <= translations,
            "the kernel forwarded {} packets and translated {} new connections for \
             {delivered} delivered",
            change.forwarded,
            change.dnat
        );
    } else {
        ensure!(
            change.forwarded == 0 && change.dnat == 0,
            "the kernel forwarded {} packets over {path}",
            change.forwarded
        );
    }
    Ok(())
}

fn counters(rig: &Rig) -> Result<Counters> {
    let reasons = rig.owner.maps.reason_totals()?;
    Ok(Counters {
        encapsulated: reasons[reasons::TX_ENCAP as usize] + reasons[reasons::TX_EXPRESS as usize],
        express_hits: reasons[reasons::TX_EXPRESS as usize],
        flow_hits: reasons[reasons::FLOW_FAST_HIT as usize],
        slow_hits: reasons[reasons::FLOW_CACHE_HIT as usize],
        flow_misses: reasons[reasons::FLOW_CACHE_MISS as usize],
        dnat: rule_packets(&rig.owner.netns, "nat", SEP_CHAIN, "DNAT")?,
        forwarded: rule_packets(&rig.owner.netns, "filter", "FORWARD", FORWARD_CHAIN)?,
    })
}

impl Counters {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            encapsulated: self.encapsulated - earlier.encapsulated,
            express_hits: self.express_hits - earlier.express_hits,
            flow_hits: self.flow_hits - earlier.flow_hits,
            slow_hits: self.slow_hits - earlier.slow_hits,
            flow_misses: self.flow_misses - earlier.flow_misses,
            dnat: self.dnat - earlier.dnat,
            forwarded: self.forwarded - earlier.forwarded,
        }
    }
}

/// The owner as a kube-proxy node (iptables mode) serving the VIP with one pod on the
/// backend node: the nat chains kube-proxy writes for an external address of a
/// `Cluster`-policy service (mark for masquerade, DNAT, MASQUERADE) and its filter
/// chain for forwarded traffic, which every forwarded packet traverses.
fn install_kube_proxy(rig: &Rig) -> Result<()> {
    let (vip, port) = (VIP.ip(), VIP.port());
    let nat = [
        "-N KUBE-SERVICES".to_owned(),
        "-N KUBE-EXT-OWNER".to_owned(),
        "-N KUBE-SVC-OWNER".to_owned(),
        format!("-N {SEP_CHAIN}"),
        "-N KUBE-MARK-MASQ".to_owned(),
        "-N KUBE-POSTROUTING".to_owned(),
        "-A PREROUTING -j KUBE-SERVICES".to_owned(),
        "-A POSTROUTING -j KUBE-POSTROUTING".to_owned(),
        format!("-A KUBE-SERVICES -d {vip}/32 -p udp --dport {port} -j KUBE-EXT-OWNER"),
        "-A KUBE-EXT-OWNER -j KUBE-MARK-MASQ".to_owned(),
        "-A KUBE-EXT-OWNER -j KUBE-SVC-OWNER".to_owned(),
        format!("-A KUBE-SVC-OWNER -j {SEP_CHAIN}"),
        format!("-A {SEP_CHAIN} -p udp -m udp -j DNAT --to-destination {POD}:{TARGET_PORT}"),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".to_owned(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_owned(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".to_owned(),
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully".to_owned(),
    ]
    .map(|rule| format!("iptables -w -t nat {rule}"));
    let filter = [
        format!("-N {FORWARD_CHAIN}"),
        format!("-A FORWARD -j {FORWARD_CHAIN}"),
        format!("-A {FORWARD_CHAIN} -m conntrack --ctstate INVALID -j DROP"),
        format!("-A {FORWARD_CHAIN} -m mark --mark 0x4000/0x4000 -j ACCEPT"),
        format!("-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ]
    .map(|rule| format!("iptables -w -t filter {rule}"));
    let script: Vec<String> = nat.into_iter().chain(filter).collect();
    rig.owner
        .netns
        .run(&script.join(" && "))
        .context("installing kube-proxy's rules on the owner (is iptables installed?)")?;
    Ok(())
}

/// Per path: round trips per second; per owner path, the owner's ns/packet and what one
/// core of it would forward; then the ratios the targets are set on. Every figure is
/// the median over the rounds, ratios taken within a round first.
fn report(samples: &BTreeMap<Path, Vec<Sample>>) -> Vec<Measurement> {
    let mut out: Vec<Measurement> = Path::ALL
        .into_iter()
        .map(|path| round_trip_row(samples, path))
        .collect();
    out.extend(
        Path::OWNERS
            .into_iter()
            .flat_map(|path| owner_rows(samples, path)),
    );
    for path in [Path::FlowHit, Path::NewFlow] {
        out.push(versus_kube_proxy(samples, path));
        out.push(versus_reflector(samples, path));
    }
    out.extend(Path::FLOORS.map(|floor| versus_reflector(samples, floor)));
    out.push(beyond_flow_floor(samples));
    out
}

fn runs(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> &[Sample] {
    samples.get(&path).map_or(&[][..], Vec::as_slice)
}

fn round_trip_ns(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Vec<f64> {
    runs(samples, path)
        .iter()
        .map(Sample::ns_per_round_trip)
        .collect()
}

/// Per round: the owner's side of `path`'s round trip. The two-reflector loop costs
/// twice a reflector; the generator's side is the reflector path's round trip minus one
/// reflector; the owner's side is the rest of the round trip.
fn owner_cost(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Vec<f64> {
    let reflector = round_trip_ns(samples, Path::TwoReflectors)
        .into_iter()
        .map(|both| both / 2.0);
    let generator = round_trip_ns(samples, Path::Reflector)
        .into_iter()
        .zip(reflector.clone())
        .map(|(round_trip, reflector)| round_trip - reflector);
    round_trip_ns(samples, path)
        .into_iter()
        .zip(generator)
        .map(|(round_trip, generator)| round_trip - generator)
        .collect()
}

fn round_trip_row(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Measurement {
    let mpps: Vec<f64> = runs(samples, path).iter().map(Sample::mpps).collect();
    let detail = format!(
        "{IN_FLIGHT} frames circulating between the generator and the owner in one CPU's \
         softirq for {} s, median of {ROUNDS} interleaved rounds: {} M round trips/s, {} ns \
         each",
        WINDOW.as_secs_f64(),
        list(&mpps),
        list(&round_trip_ns(samples, path))
    );
    let name = format!("round trips (M/s): {path}");
    Measurement::new(GROUP, &name, median(&mpps), "Mpps", &detail)
}

/// The owner's ns/packet, and the Mpps one core spends on nothing else would forward.
fn owner_rows(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> [Measurement; 2] {
    let cost = owner_cost(samples, path);
    let capacity: Vec<f64> = cost.iter().map(|ns| 1e3 / ns).collect();
    let detail = format!(
        "the owner's side of the round trip, per round {}",
        list(&cost)
    );
    let cost_row = Measurement::new(
        GROUP,
        &format!("owner ns/packet: {path}"),
        median(&cost),
        "ns",
        &detail,
    );
    let detail = format!(
        "1000 / the owner's ns/packet, per round {}",
        list(&capacity)
    );
    let capacity_row = Measurement::new(
        GROUP,
        &format!("owner Mpps per core: {path}"),
        median(&capacity),
        "Mpps",
        &detail,
    );
    [cost_row, capacity_row]
}

/// Per round, the owner's cost on `numerator` over its cost on `denominator`.
fn cost_ratio(
    samples: &BTreeMap<Path, Vec<Sample>>,
    numerator: Path,
    denominator: Path,
) -> Vec<f64> {
    owner_cost(samples, numerator)
        .iter()
        .zip(owner_cost(samples, denominator))
        .map(|(top, bottom)| top / bottom)
        .collect()
}

fn ratio_row(name: &str, what: &str, per_round: &[f64]) -> Measurement {
    let detail = format!("{what}, per-round ratios {}", list(per_round));
    Measurement::new(GROUP, name, median(per_round), "x", &detail)
}

/// What one owner core forwards on `path` over what it forwards for kube-proxy.
fn versus_kube_proxy(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Measurement {
    let row = ratio_row(
        &format!("{path} / kube-proxy (owner Mpps per core)"),
        "owner Mpps per core",
        &cost_ratio(samples, Path::KubeProxy, path),
    );
    if path != Path::FlowHit {
        return row;
    }
    let target = format!(">= {FLOW_HIT_VS_KUBE_PROXY}x kube-proxy");
    row.at_least(FLOW_HIT_VS_KUBE_PROXY, &target)
}

/// What the flow hit costs the owner beyond the flow-lookup floor: `xdp_lb`'s work past
/// one flow-table lookup and the encapsulation.
fn beyond_flow_floor(samples: &BTreeMap<Path, Vec<Sample>>) -> Measurement {
    let beyond: Vec<f64> = owner_cost(samples, Path::FlowHit)
        .iter()
        .zip(owner_cost(samples, Path::FloorFlow))
        .map(|(hit, floor)| hit - floor)
        .collect();
    let name = format!(
        "{}: owner ns/packet beyond {}",
        Path::FlowHit,
        Path::FloorFlow
    );
    let detail = format!("per-round differences {}", list(&beyond));
    Measurement::new(GROUP, &name, median(&beyond), "ns", &detail)
}

/// The owner's cost on `path` over the reflector's (a floor's is labelled as one, with
/// no target).
fn versus_reflector(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Measurement {
    let row = ratio_row(
        &format!("{path}: owner cost / reflector's"),
        "owner ns/packet",
        &cost_ratio(samples, path, Path::Reflector),
    );
    if path != Path::FlowHit {
        return row;
    }
    let target = format!("<= {OWNER_COST_VS_REFLECTOR}x the reflector's");
    row.at_most(OWNER_COST_VS_REFLECTOR, &target)
}
