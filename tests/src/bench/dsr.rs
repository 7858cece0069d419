//! The DSR reply path: what the VIP's owner carries while a pod on another node sends a
//! large reply. Several clients download a file over HTTP at once, through xdplb (node1
//! owns the VIP and tunnels the requests to node2; replies leave node2 straight to the
//! client) and through kube-proxy (node3 DNATs and masquerades, so every reply byte
//! comes back through it), alternating round by round.
//!
//! The owner's load is read from the interface counters of its port on the lab's switch,
//! both directions, per MiB the clients received. Each sample must have taken its path
//! (see [`PathsLab::check_path`]), delivered every byte of every transfer, and, over
//! xdplb, shown the owner's encapsulated packets in its port's counters, so the port
//! cannot miss what it is meant to count.

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    Measurement, list, median,
    paths_lab::{Counters, Path, PathsLab, ServicePort},
};
use crate::{
    lab::{self, Node, PortStats, load::CpuTimes},
    netns::{Process, ensure_success},
};

const GROUP: &str = "dsr";
const HTTP_PORT: u16 = 8080;
/// The file every client downloads, and its size.
const BODY_NAME: &str = "body.bin";
const BODY_MIB: u64 = 64;
const MIB: f64 = 1024.0 * 1024.0;
/// Downloads running at once in a sample.
const TRANSFERS: usize = 4;
const ROUNDS: usize = 3;
/// The bound on each download (curl `--max-time`); at the lab's slowest seen rate a
/// transfer takes well under a tenth of it.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
const PATHS: [Path; 2] = [Path::Xdplb, Path::KubeProxy];
/// The targets: the xdplb owner carries at most this share of the kube-proxy
/// owner's bytes, at no less throughput.
pub const OWNER_BYTES_TARGET: f64 = 0.05;
const THROUGHPUT_TARGET: f64 = 1.0;

pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let bench = Bench::start()?;
    let outcome = bench.measure_all();
    if outcome.is_err() {
        lab::dump_log_tails(bench.paths.scratch(), |_| 30);
    }
    outcome
}

/// What each path's owner carried per MiB delivered, in bytes, from one sample each.
#[derive(Debug, Clone, Copy)]
pub struct OwnerBytesPerMib {
    pub xdplb: f64,
    pub kube_proxy: f64,
}

/// One untimed sample over each path with every check of the bench: the privileged
/// tier's smoke test of this part. Bytes per MiB are a property of the paths (where
/// replies go), not of the machine's speed, so the test may hold them to the target.
pub fn smoke() -> anyhow::Result<OwnerBytesPerMib> {
    let bench = Bench::start()?;
    let outcome = PATHS.map(|path| {
        bench
            .sample(path)
            .with_context(|| format!("over {path}"))
            .map(|sample| Figure::OwnerBytes.of(&sample))
    });
    if outcome.iter().any(Result::is_err) {
        lab::dump_log_tails(bench.paths.scratch(), |_| 30);
    }
    let [xdplb, kube_proxy] = outcome;
    Ok(OwnerBytesPerMib {
        xdplb: xdplb?,
        kube_proxy: kube_proxy?,
    })
}

/// One sample: what the clients received, in how long, and what the owner's port
/// carried meanwhile.
#[derive(Debug, Clone)]
struct Sample {
    delivered_bytes: u64,
    seconds: f64,
    owner: PortStats,
    /// Frames the owner sent with `XDP_TX` that its veth dropped (bridge port ring full).
    xdp_tx_dropped: u64,
    /// Per CPU, the share of the transfer's time it was busy (machine-wide).
    cpu_busy: Vec<f64>,
}

impl Sample {
    fn delivered_mib(&self) -> f64 {
        self.delivered_bytes as f64 / MIB
    }
}

/// A reported figure of a sample, and its xdplb / kube-proxy ratio's target.
#[derive(Debug, Clone, Copy)]
enum Figure {
    OwnerBytes,
    OwnerPackets,
    Throughput,
}

impl Figure {
    const ALL: [Self; 3] = [Self::OwnerBytes, Self::OwnerPackets, Self::Throughput];

    fn of(self, sample: &Sample) -> f64 {
        match self {
            Self::OwnerBytes => sample.owner.bytes() as f64 / sample.delivered_mib(),
            Self::OwnerPackets => sample.owner.packets() as f64 / sample.delivered_mib(),
            Self::Throughput => sample.delivered_mib() / sample.seconds,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::OwnerBytes => "owner port bytes per MiB delivered",
            Self::OwnerPackets => "owner port packets per MiB delivered",
            Self::Throughput => "throughput",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::OwnerBytes => "B/MiB",
            Self::OwnerPackets => "pkt/MiB",
            Self::Throughput => "MiB/s",
        }
    }

    /// The xdplb / kube-proxy ratio with its target, if the issue set one.
    fn ratio(self, ratio: Measurement) -> Measurement {
        match self {
            Self::OwnerBytes => ratio.at_most(
                OWNER_BYTES_TARGET,
                &format!("<= {OWNER_BYTES_TARGET}x kube-proxy"),
            ),
            Self::OwnerPackets => ratio,
            Self::Throughput => ratio.at_least(
                THROUGHPUT_TARGET,
                &format!(">= {THROUGHPUT_TARGET}x kube-proxy"),
            ),
        }
    }
}

/// The pod's HTTP server in front of the shared lab.
///
/// Field order is drop order: the server dies before its namespace.
struct Bench {
    _server: Process,
    paths: PathsLab,
    access_log: PathBuf,
}

impl Bench {
    fn start() -> anyhow::Result<Self> {
        let paths = PathsLab::start(&[ServicePort {
            protocol: "tcp",
            port: HTTP_PORT,
        }])?;
        let root = paths.scratch().join("www");
        fs::create_dir(&root)?;
        // A sparse file: the page cache hands out its zeroes without touching the disk.
        fs::File::create(root.join(BODY_NAME))?.set_len(body_bytes())?;
        let access_log = paths.scratch().join("http.log");
        let server = paths.pod()?.serve_http(HTTP_PORT, &root, &access_log)?;
        Ok(Self {
            _server: server,
            paths,
            access_log,
        })
    }

    fn measure_all(&self) -> anyhow::Result<Vec<Measurement>> {
        for path in PATHS {
            self.sample(path)
                .with_context(|| format!("warm-up over {path}"))?;
        }
        let mut samples: [Vec<Sample>; 2] = Default::default();
        for round in 0..ROUNDS {
            // Each round starts with the other path, so neither always runs first.
            for offset in 0..PATHS.len() {
                let slot = (round + offset) % PATHS.len();
                let path = PATHS[slot];
                let sample = self
                    .sample(path)
                    .with_context(|| format!("round {} over {path}", round + 1))?;
                eprintln!(
                    "dsr round {}: {path}: {:.0} MiB/s, owner port {:.0} B and {:.1} packets \
                     per MiB",
                    round + 1,
                    Figure::Throughput.of(&sample),
                    Figure::OwnerBytes.of(&sample),
                    Figure::OwnerPackets.of(&sample),
                );
                samples[slot].push(sample);
            }
        }
        let [xdplb, kube_proxy] = &samples;
        Ok(Figure::ALL
            .into_iter()
            .flat_map(|figure| report(figure, xdplb, kube_proxy))
            .collect())
    }

    /// [`TRANSFERS`] downloads at once over `path`, checked to have taken that path.
    fn sample(&self, path: Path) -> anyhow::Result<Sample> {
        let owner = self
            .paths
            .owner(path)
            .context("the DSR bench runs over VIP paths only")?;
        let log_start = fs::metadata(&self.access_log)?.len();
        // The port's window encloses the counters' so that every packet the counters
        // see had its chance to cross the port (see [`check_owner_port`]).
        let owner_before = self.owner_traffic(owner)?;
        let counters_before = self.paths.counters()?;
        let cpu_before = CpuTimes::now()?;
        let started = Instant::now();
        let downloads = self.download_all(path)?;
        let seconds = started.elapsed().as_secs_f64();
        let cpus = CpuTimes::now()?.since(&cpu_before);
        let change = self.paths.counters()?.since(&counters_before);
        let owner_traffic = self.owner_traffic(owner)?.since(&owner_before);
        let sources = self.request_sources(log_start)?;
        self.paths
            .check_path(path, &change, TRANSFERS as u64, &sources)?;
        check_owner_port(path, &change, &owner_traffic)?;
        Ok(Sample {
            delivered_bytes: downloads.iter().sum(),
            seconds,
            owner: owner_traffic.port,
            xdp_tx_dropped: owner_traffic.xdp_tx_dropped,
            cpu_busy: cpus.iter().map(|&(busy, _softirq)| busy).collect(),
        })
    }

    fn owner_traffic(&self, owner: &Node) -> anyhow::Result<OwnerTraffic> {
        Ok(OwnerTraffic {
            port: self.paths.lab.switch_port_stats(owner)?,
            xdp_tx_dropped: owner.xdp_tx_errors()?,
        })
    }

    /// Starts every download, then waits for all; each must deliver the whole body.
    fn download_all(&self, path: Path) -> anyhow::Result<Vec<u64>> {
        let url = format!("http://{}:{HTTP_PORT}/{BODY_NAME}", path.destination());
        let children: Vec<Child> = (0..TRANSFERS)
            .map(|_| self.start_download(&url))
            .collect::<anyhow::Result<_>>()?;
        children
            .into_iter()
            .map(|child| finish_download(child, &url))
            .collect()
    }

    fn start_download(&self, url: &str) -> anyhow::Result<Child> {
        self.paths
            .lab
            .client
            .command("curl")
            .args(["--silent", "--show-error", "--fail", "--max-time"])
            .arg(TRANSFER_TIMEOUT.as_secs().to_string())
            .args(["--output", "/dev/null", "--write-out", "%{size_download}"])
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting curl in the client namespace")
    }

    /// The client addresses of the requests logged since byte `start` of the access
    /// log; there must be one request per download.
    fn request_sources(&self, start: u64) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
        let log = fs::read(&self.access_log)?;
        let start = usize::try_from(start)?;
        let text = String::from_utf8_lossy(log.get(start..).unwrap_or_default());
        let requests: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(&format!("GET /{BODY_NAME} ")))
            .collect();
        ensure!(
            requests.len() == TRANSFERS,
            "the pod logged {} requests for {TRANSFERS} downloads:\n{text}",
            requests.len()
        );
        requests
            .iter()
            .map(|line| {
                let source = line.split_whitespace().next().unwrap_or_default();
                source
                    .parse()
                    .with_context(|| format!("no client address in {line:?}"))
            })
            .collect()
    }
}

fn body_bytes() -> u64 {
    BODY_MIB * 1024 * 1024
}

/// Waits for one download (bounded by curl's `--max-time`) and returns its size, which
/// must be the body's.
fn finish_download(child: Child, url: &str) -> anyhow::Result<u64> {
    let output = child.wait_with_output().context("waiting for curl")?;
    ensure_success(format_args!("curl {url}"), &output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let size: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("curl {url} printed no size: {text:?}"))?;
    if size != body_bytes() {
        bail!("curl {url} received {size} bytes of {}", body_bytes());
    }
    Ok(size)
}

/// What the owner's wire carried, and what its veth dropped before the wire.
#[derive(Debug, Clone, Copy)]
struct OwnerTraffic {
    port: PortStats,
    xdp_tx_dropped: u64,
}

impl OwnerTraffic {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            port: self.port.since(&earlier.port),
            xdp_tx_dropped: self.xdp_tx_dropped.saturating_sub(earlier.xdp_tx_dropped),
        }
    }
}

/// Over xdplb, every packet the owner encapsulated must show in its port's counters
/// (veth counts XDP_TX frames on the receiving port) unless the veth dropped it:
/// otherwise the counters would miss the owner's share and flatter xdplb.
fn check_owner_port(path: Path, change: &Counters, owner: &OwnerTraffic) -> anyhow::Result<()> {
    if path == Path::Xdplb {
        let accounted = owner.port.from_node_packets + owner.xdp_tx_dropped;
        ensure!(
            accounted >= change.encapsulated,
            "node1 encapsulated {} packets but its switch port received {} from it and its \
             veth dropped {}",
            change.encapsulated,
            owner.port.from_node_packets,
            owner.xdp_tx_dropped
        );
    }
    Ok(())
}

/// `figure` per path and xdplb / kube-proxy, each the median over the rounds (ratios
/// taken within a round, then the median).
fn report(figure: Figure, xdplb: &[Sample], kube_proxy: &[Sample]) -> Vec<Measurement> {
    let how = format!(
        "{TRANSFERS} parallel HTTP downloads of {BODY_MIB} MiB from a pod on node2 (curl, \
         python http.server), median of {ROUNDS} interleaved rounds"
    );
    let values =
        |samples: &[Sample]| -> Vec<f64> { samples.iter().map(|s| figure.of(s)).collect() };
    let mut measurements: Vec<Measurement> = PATHS
        .into_iter()
        .zip([xdplb, kube_proxy])
        .map(|(path, samples)| {
            let values = values(samples);
            let detail = match figure {
                Figure::Throughput => format!("{how}: {}; {}", list(&values), cpu_load(samples)),
                Figure::OwnerPackets => {
                    format!("{how}: {}; {}", list(&values), xdp_tx_drops(samples))
                }
                Figure::OwnerBytes => format!("{how}: {}", list(&values)),
            };
            let name = format!("{}: {path}", figure.name());
            Measurement::new(GROUP, &name, median(&values), figure.unit(), &detail)
        })
        .collect();
    let ratios: Vec<f64> = values(xdplb)
        .iter()
        .zip(values(kube_proxy))
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    let name = format!("{}: xdplb / kube-proxy", figure.name());
    let detail = format!("per-round ratios {}", list(&ratios));
    measurements.push(figure.ratio(Measurement::new(
        GROUP,
        &name,
        median(&ratios),
        "x",
        &detail,
    )));
    measurements
}

/// How busy each CPU was during the transfers, averaged over `samples`: on this small
/// machine the transfers' own processes and every softirq hop share the cores.
fn cpu_load(samples: &[Sample]) -> String {
    let cpus = samples.first().map_or(0, |sample| sample.cpu_busy.len());
    let load: Vec<String> = (0..cpus)
        .map(|cpu| {
            let total: f64 = samples.iter().map(|sample| sample.cpu_busy[cpu]).sum();
            format!("CPU{cpu} {:.0}% busy", total / samples.len() as f64)
        })
        .collect();
    load.join(", ")
}

/// The owner's `XDP_TX` frames its veth dropped, in all `samples`: packets the switch
/// port never carried (their TCP senders retransmit).
fn xdp_tx_drops(samples: &[Sample]) -> String {
    let dropped: u64 = samples.iter().map(|sample| sample.xdp_tx_dropped).sum();
    format!("{dropped} XDP_TX frames dropped by the owner's veth (bridge port ring full)")
}
