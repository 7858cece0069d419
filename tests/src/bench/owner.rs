//! Owner forwarding capacity as a NIC with driver-mode XDP would feed it (issue 13 §1):
//! frames arrive at the owner's XDP program as `xdp_frame`s, before any skb exists (see
//! [`rig`]). Everything runs on one pinned CPU (the generator's `XDP_TX` and every veth
//! hop after it run in that CPU's softirq), the generator offers as much as the path
//! takes, and each sample reports what the sink counted per second of the run.
//!
//! Paths, interleaved round by round, each starting with another path:
//!
//! - **floor**: the sink as owner: generator + one veth hop + sink.
//! - **reflector**: a MAC swap and `XDP_TX` back to the generator's port, where the
//!   sink counts: the least any XDP owner does.
//! - **xdplb flow hit**: the agent's `xdp_lb` as owner, [`HIT_FLOWS`] client flows
//!   already in its flow table, encapsulated in IPIP and redirected to the backend node.
//! - **xdplb new flow**: the same with every frame a new client flow (the flow table,
//!   an LRU, churns).
//! - **kube-proxy (iptables)**: a pass-only XDP program (veth takes XDP frames only with
//!   one attached), then the kernel: kube-proxy's nat rules DNAT to a pod on the backend
//!   node and MASQUERADE, its filter chain sees every forwarded packet, conntrack tracks
//!   the [`HIT_FLOWS`] flows. Nothing answers, so the UDP flows stay unreplied in
//!   conntrack: their packets leave kube-proxy's forward chain at its end (then the
//!   FORWARD policy accepts them) rather than by its `RELATED,ESTABLISHED` rule, after
//!   the same three rule checks. Without DNAT they would go nowhere (the owner has no
//!   route for the VIP), so the backend sink's count proves the translation.
//!
//! kube-proxy's nftables mode is not measured separately: its DNAT and masquerade
//! chains, like iptables' nat table, are consulted on a connection's first packet only;
//! every later packet costs conntrack's lookup and NAT rewrite in both modes, and this
//! host's `iptables` is already `iptables-nft` (the rules run in nf_tables). The modes
//! differ in the first packet's rule lookup with many services, which one service here
//! would not show.
//!
//! The owner's cost per packet is the path's time per delivered packet minus the floor's
//! in the same round. Each sample checks where the frames went: the sink's counter on
//! the expected interface (and none elsewhere), `xdp_lb`'s reason counters, and the
//! iptables rule counters.

pub mod rig;

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::{Context as _, Result, ensure};
use lb_common::reasons;

use self::rig::{Arrivals, OwnerProgram, POD, Rig, TARGET_PORT, VIP};
use super::{Measurement, median, rule_packets};
use crate::cpu::OnOneCpu;

const GROUP: &str = "owner";
const ROUNDS: usize = 5;
const WARM_UP: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(1);
/// Frames per BPF_PROG_TEST_RUN call: the run is bounded by calls of this many frames.
const PER_CALL: u32 = 100_000;
/// Client flows of the flow-hit and kube-proxy paths.
const HIT_FLOWS: u32 = 64;
/// The share of generated frames that must reach the sink.
const MIN_DELIVERED: f64 = 0.9;
const FLOW_HIT_VS_KUBE_PROXY: f64 = 3.0;
const OWNER_COST_VS_REFLECTOR: f64 = 2.0;
/// The chain of the DNAT rule, and kube-proxy's filter chain for forwarded packets
/// (whose jump from FORWARD counts every one).
const SEP_CHAIN: &str = "KUBE-SEP-OWNER";
const FORWARD_CHAIN: &str = "KUBE-FORWARD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Floor,
    Reflector,
    FlowHit,
    NewFlow,
    KubeProxy,
}

impl Path {
    const ALL: [Self; 5] = [
        Self::Floor,
        Self::Reflector,
        Self::FlowHit,
        Self::NewFlow,
        Self::KubeProxy,
    ];

    fn owner(self) -> OwnerProgram {
        match self {
            Self::Floor => OwnerProgram::Sink,
            Self::Reflector => OwnerProgram::Reflector,
            Self::FlowHit | Self::NewFlow => OwnerProgram::XdpLb,
            Self::KubeProxy => OwnerProgram::Pass,
        }
    }

    /// The generator's flow count (0: every frame a new flow).
    fn flows(self) -> u32 {
        match self {
            Self::NewFlow => 0,
            _ => HIT_FLOWS,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Floor => "generator + sink (floor)",
            Self::Reflector => "reflector (MAC swap, XDP_TX)",
            Self::FlowHit => "xdplb flow hit",
            Self::NewFlow => "xdplb new flow",
            Self::KubeProxy => "kube-proxy (iptables)",
        })
    }
}

/// One sample: frames generated and delivered, and the run's length.
#[derive(Debug, Clone, Copy)]
struct Sample {
    generated: u64,
    delivered: u64,
    elapsed: Duration,
}

impl Sample {
    fn mpps(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn ns_per_packet(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.delivered as f64
    }
}

/// Counters that tell which path the frames took, besides the sink's.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    arrivals: Arrivals,
    encapsulated: u64,
    flow_hits: u64,
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
    if rig.live_frames_refused()? {
        // Not an error: the other parts still run; the report shows no owner rows.
        eprintln!(
            "owner: NOT MEASURED: this kernel refuses BPF_PROG_TEST_RUN's live-frames mode \
             (EPERM), so nothing can feed the owner XDP frames"
        );
        return Ok(Vec::new());
    }
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
                "owner round {}: {path}: {:.3} Mpps ({:.0} ns/packet)",
                round + 1,
                taken.mpps(),
                taken.ns_per_packet()
            );
            samples.entry(path).or_default().push(taken);
        }
    }
    Ok(report(&samples))
}

/// One run of `path` for `window`, checked to have taken that path.
fn sample(rig: &mut Rig, path: Path, window: Duration) -> Result<Sample> {
    rig.attach_owner(path.owner())?;
    rig.set_flows(path.flows())?;
    let before = counters(rig)?;
    let run = rig.generate_for(window, PER_CALL)?;
    let change = counters(rig)?.since(&before);
    let delivered = match path {
        Path::Floor => change.arrivals.owner,
        Path::Reflector => change.arrivals.generator,
        _ => change.arrivals.backend,
    };
    ensure!(
        delivered as f64 >= MIN_DELIVERED * run.frames as f64,
        "{delivered} of {} generated frames arrived ({:?})",
        run.frames,
        change.arrivals
    );
    ensure!(
        change.arrivals.generator + change.arrivals.owner + change.arrivals.backend == delivered,
        "frames arrived elsewhere too: {:?}",
        change.arrivals
    );
    check_path(path, &change, delivered)?;
    Ok(Sample {
        generated: run.frames,
        delivered,
        elapsed: run.elapsed,
    })
}

/// `xdp_lb`'s counters and the iptables rules agree with `path`.
fn check_path(path: Path, change: &Counters, delivered: u64) -> Result<()> {
    let (xdplb, kernel) = match path {
        Path::FlowHit | Path::NewFlow => (true, false),
        Path::KubeProxy => (false, true),
        Path::Floor | Path::Reflector => (false, false),
    };
    if xdplb {
        ensure!(
            change.encapsulated >= delivered,
            "xdp_lb encapsulated {} frames for {delivered} delivered",
            change.encapsulated
        );
        let (hits, misses) = (change.flow_hits, change.flow_misses);
        let as_expected = match path {
            Path::NewFlow => hits == 0 && misses == change.encapsulated,
            // The new-flow path churns the flow table, so a round's first frames may miss.
            _ => misses <= u64::from(HIT_FLOWS) && hits + misses == change.encapsulated,
        };
        ensure!(
            as_expected,
            "over {path}: {hits} flow hits, {misses} misses"
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
            change.forwarded >= delivered && change.dnat <= u64::from(HIT_FLOWS),
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
        arrivals: rig.arrivals()?,
        encapsulated: reasons[reasons::TX_ENCAP as usize],
        flow_hits: reasons[reasons::FLOW_CACHE_HIT as usize],
        flow_misses: reasons[reasons::FLOW_CACHE_MISS as usize],
        dnat: rule_packets(&rig.owner.netns, "nat", SEP_CHAIN, "DNAT")?,
        forwarded: rule_packets(&rig.owner.netns, "filter", "FORWARD", FORWARD_CHAIN)?,
    })
}

impl Counters {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            arrivals: self.arrivals.since(earlier.arrivals),
            encapsulated: self.encapsulated - earlier.encapsulated,
            flow_hits: self.flow_hits - earlier.flow_hits,
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

/// What a ratio compares an xdplb path with.
#[derive(Debug, Clone, Copy)]
enum Against {
    /// Delivered Mpps against the kube-proxy path's.
    KubeProxyMpps,
    /// The owner's ns/packet against the reflector's.
    ReflectorCost,
}

/// Per path: delivered Mpps and, beside the floor, the owner's ns/packet; then the
/// ratios the targets are set on. Every figure is the median over the rounds, ratios
/// taken within a round first.
fn report(samples: &BTreeMap<Path, Vec<Sample>>) -> Vec<Measurement> {
    let mut out: Vec<Measurement> = Path::ALL
        .into_iter()
        .flat_map(|path| path_rows(samples, path))
        .collect();
    for against in [Against::KubeProxyMpps, Against::ReflectorCost] {
        for path in [Path::FlowHit, Path::NewFlow] {
            out.push(ratio_row(samples, path, against));
        }
    }
    out
}

fn runs(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> &[Sample] {
    samples.get(&path).map_or(&[][..], Vec::as_slice)
}

/// Per round: `path`'s ns/packet minus the floor's.
fn owner_cost(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Vec<f64> {
    runs(samples, path)
        .iter()
        .zip(runs(samples, Path::Floor))
        .map(|(run, floor)| run.ns_per_packet() - floor.ns_per_packet())
        .collect()
}

fn path_rows(samples: &BTreeMap<Path, Vec<Sample>>, path: Path) -> Vec<Measurement> {
    let runs = runs(samples, path);
    let mpps: Vec<f64> = runs.iter().map(Sample::mpps).collect();
    let ns: Vec<f64> = runs.iter().map(Sample::ns_per_packet).collect();
    let share: Vec<f64> = runs
        .iter()
        .map(|run| run.delivered as f64 / run.generated as f64)
        .collect();
    let detail = format!(
        "{} s runs on one pinned CPU, median of {ROUNDS} interleaved rounds: {} Mpps, {} \
         ns/packet for the whole path, delivered/generated {}",
        WINDOW.as_secs_f64(),
        list(&mpps),
        list(&ns),
        list(&share)
    );
    let name = format!("Mpps: {path}");
    let mut rows = vec![Measurement::new(
        GROUP,
        &name,
        median(&mpps),
        "Mpps",
        &detail,
    )];
    if path != Path::Floor {
        let cost = owner_cost(samples, path);
        let detail = format!(
            "path ns/packet minus the floor's, per round {}",
            list(&cost)
        );
        let name = format!("owner ns/packet: {path}");
        rows.push(Measurement::new(GROUP, &name, median(&cost), "ns", &detail));
    }
    rows
}

/// `path` against the kube-proxy path or the reflector; the targets are on the
/// flow hit.
fn ratio_row(samples: &BTreeMap<Path, Vec<Sample>>, path: Path, against: Against) -> Measurement {
    let per_round: Vec<f64> = match against {
        Against::KubeProxyMpps => runs(samples, path)
            .iter()
            .zip(runs(samples, Path::KubeProxy))
            .map(|(ours, theirs)| ours.mpps() / theirs.mpps())
            .collect(),
        Against::ReflectorCost => owner_cost(samples, path)
            .iter()
            .zip(owner_cost(samples, Path::Reflector))
            .map(|(ours, reflector)| ours / reflector)
            .collect(),
    };
    let name = match against {
        Against::KubeProxyMpps => format!("{path} / kube-proxy (Mpps)"),
        Against::ReflectorCost => format!("{path}: owner cost / reflector's"),
    };
    let detail = format!("per-round ratios {}", list(&per_round));
    let measurement = Measurement::new(GROUP, &name, median(&per_round), "x", &detail);
    match (path, against) {
        (Path::FlowHit, Against::KubeProxyMpps) => measurement.at_least(
            FLOW_HIT_VS_KUBE_PROXY,
            &format!(">= {FLOW_HIT_VS_KUBE_PROXY}x kube-proxy"),
        ),
        (Path::FlowHit, Against::ReflectorCost) => measurement.at_most(
            OWNER_COST_VS_REFLECTOR,
            &format!("<= {OWNER_COST_VS_REFLECTOR}x the reflector's"),
        ),
        _ => measurement,
    }
}

fn list(values: &[f64]) -> String {
    let shown: Vec<String> = values.iter().map(|value| format!("{value:.2}")).collect();
    format!("[{}]", shown.join(", "))
}
