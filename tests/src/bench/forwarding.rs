//! Forwarding in the lab, three ways to one pod in the same run, interleaved round by
//! round so machine noise hits all three alike: xdplb, kube-proxy and straight to the
//! pod (the paths and their checks are [`super::paths_lab`]'s).
//!
//! Senders run on CPU 0 and receivers on CPU 1 (see [`Pinning::split`]); veth hands each
//! frame to its peer on the sending CPU, so every hop of a path costs the sender's core.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context as _, ensure};

use super::{
    Measurement, list, median,
    paths_lab::{POD, Path, PathsLab, ServicePort},
};
use crate::lab::{
    self,
    load::{self, Closer, CpuTimes, Pinning, Route, TcpRun, UdpRun, Window},
};

/// Over veth, every hop of a path runs on the sender's core and each XDP program first
/// copies the skb into a page: these figures measure veth and the kernel around it, not
/// the owner a NIC would feed (the owner part measures that), so they carry no targets.
const GROUP: &str = "forwarding over veth";
const UDP_PORT: u16 = 9000;
const TCP_PORT: u16 = 9080;
/// Server-closes-first requests get a service port of their own: the pod's TIME_WAIT
/// sockets they leave behind (60 s, renewed by every SYN a PAWS check rejects) must not
/// meet the client-closes samples, whose connections the pod never holds in TIME_WAIT.
/// On one port, node3's `--random-fully` source ports keep landing on them, and
/// kube-proxy's client-closes figure dropped from ~20k to ~1.5k req/s.
const TCP_SERVER_CLOSES_PORT: u16 = 9082;
const ROUNDS: usize = 3;
const WINDOW: Window = Window {
    warmup: Duration::from_millis(500),
    measure: Duration::from_secs(2),
};
/// One short unrecorded round first: checks every path and warms ARP and caches.
const WARM_UP: Window = Window {
    warmup: Duration::from_millis(200),
    measure: Duration::from_millis(500),
};
/// UDP flows (one socket each, distinct source ports).
const UDP_FLOWS: usize = 32;
/// Concurrent request loops, and server threads.
const TCP_WORKERS: usize = 4;

/// The three paths, in the order a first round runs them.
const PATHS: [Path; 3] = [Path::Xdplb, Path::KubeProxy, Path::Direct];

/// The pod's port for `traffic` over `path`. Direct traffic goes to another port than
/// the service's target port: node2 keeps a flow entry for every client port xdplb
/// delivered, and its TC program would rewrite replies of a direct connection that
/// reuses such a port to come from the VIP (no real client talks to both).
fn pod_port(path: Path, traffic: Traffic) -> u16 {
    match path {
        Path::Xdplb | Path::KubeProxy => traffic.port(),
        Path::Direct => traffic.port() + 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Traffic {
    Udp,
    /// New connection per request; the client closes first and keeps the TIME_WAIT, so
    /// every path is measured on its forwarding cost alone.
    Tcp,
    /// The same with the server closing first (HTTP/1.0 style): the pod keeps the
    /// TIME_WAIT, which is where masquerading many connections behind one node address
    /// starts to reuse 4-tuples the pod still holds (PAWS rejects, 1 s SYN retries).
    /// On its own port, see [`TCP_SERVER_CLOSES_PORT`].
    TcpServerCloses,
}

impl Traffic {
    const ALL: [Self; 3] = [Self::Udp, Self::Tcp, Self::TcpServerCloses];

    fn port(self) -> u16 {
        match self {
            Self::Udp => UDP_PORT,
            Self::Tcp => TCP_PORT,
            Self::TcpServerCloses => TCP_SERVER_CLOSES_PORT,
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp | Self::TcpServerCloses => "tcp",
        }
    }

    fn closer(self) -> Closer {
        match self {
            Self::TcpServerCloses => Closer::Server,
            Self::Udp | Self::Tcp => Closer::Client,
        }
    }

    fn figure(self) -> &'static str {
        match self {
            Self::Udp => "UDP pps",
            Self::Tcp => "TCP req/s",
            Self::TcpServerCloses => "TCP req/s (server closes first)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Udp => "pps",
            Self::Tcp | Self::TcpServerCloses => "req/s",
        }
    }

    fn how(self) -> String {
        match self {
            Self::Udp => format!(
                "{}-byte UDP payloads (64-byte frames) in {UDP_FLOWS} flows, counted by the \
                 pod's sink",
                load::UDP_PAYLOAD
            ),
            Self::Tcp | Self::TcpServerCloses => format!(
                "{TCP_WORKERS} concurrent loops of connect, {}-byte request, {}-byte \
                 response, close ({} first)",
                load::TCP_REQUEST.len(),
                load::TCP_RESPONSE.len(),
                self.closer().as_str()
            ),
        }
    }
}

pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let bench = Bench::start()?;
    let outcome = bench.measure_all();
    if outcome.is_err() {
        lab::dump_log_tails(bench.paths.scratch(), |_| 30);
    }
    outcome
}

/// One sample: the rate, what the sender offered (UDP), and what each CPU did.
#[derive(Debug, Clone)]
struct Sample {
    rate: f64,
    offered: Option<f64>,
    errors: u64,
    cpus: Vec<(f64, f64)>,
}

struct Bench {
    paths: PathsLab,
    pinning: Pinning,
}

impl Bench {
    fn start() -> anyhow::Result<Self> {
        let ports = Traffic::ALL.map(|traffic| ServicePort {
            protocol: traffic.protocol(),
            port: traffic.port(),
        });
        let bench = Self {
            paths: PathsLab::start(&ports)?,
            pinning: Pinning::split(),
        };
        bench.configure_client()?;
        Ok(bench)
    }

    /// The client reaches the pod directly too, and has enough ports for tens of
    /// thousands of short connections, reusing its own TIME_WAIT ports after a second
    /// as busy clients are set up to.
    fn configure_client(&self) -> anyhow::Result<()> {
        self.paths.route_pod_range()?;
        self.paths.lab.client.run(
            "echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range \
             && echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse",
        )?;
        Ok(())
    }

    fn measure_all(&self) -> anyhow::Result<Vec<Measurement>> {
        for traffic in Traffic::ALL {
            for path in PATHS {
                self.sample(path, traffic, WARM_UP)
                    .with_context(|| format!("warm-up: {} over {path}", traffic.figure()))?;
            }
        }
        let mut samples: BTreeMap<(Traffic, Path), Vec<Sample>> = BTreeMap::new();
        for round in 0..ROUNDS {
            for traffic in Traffic::ALL {
                // Each round starts with another path, so no path always runs first.
                for offset in 0..PATHS.len() {
                    let path = PATHS[(round + offset) % PATHS.len()];
                    let sample = self.sample(path, traffic, WINDOW).with_context(|| {
                        format!("round {}: {} over {path}", round + 1, traffic.figure())
                    })?;
                    eprintln!(
                        "forwarding round {}: {} over {path}: {:.0}",
                        round + 1,
                        traffic.figure(),
                        sample.rate
                    );
                    samples.entry((traffic, path)).or_default().push(sample);
                }
            }
        }
        Ok(Traffic::ALL
            .into_iter()
            .flat_map(|traffic| report(traffic, &samples))
            .collect())
    }

    /// One run of `traffic` over `path`, checked to have taken that path.
    fn sample(&self, path: Path, traffic: Traffic, window: Window) -> anyhow::Result<Sample> {
        let pod = self.paths.pod()?;
        let port = pod_port(path, traffic);
        // Service ports equal target ports, so the client and the pod use the same one.
        let route = Route {
            sender: &self.paths.lab.client,
            receiver: &pod.netns,
            target: SocketAddrV4::new(path.destination(), port),
            listen: SocketAddrV4::new(POD, port),
        };
        let before = self.paths.counters()?;
        let cpu_before = CpuTimes::now()?;
        let (sample, delivered, sources) = match traffic {
            Traffic::Udp => {
                let run = load::udp_flood(route, UDP_FLOWS, window, self.pinning)?;
                udp_sample(run)
            }
            Traffic::Tcp | Traffic::TcpServerCloses => {
                let run =
                    load::tcp_requests(route, TCP_WORKERS, traffic.closer(), window, self.pinning)?;
                tcp_sample(run)?
            }
        };
        let cpus = CpuTimes::now()?.since(&cpu_before);
        let change = self.paths.counters()?.since(&before);
        self.paths.check_path(path, &change, delivered, &sources)?;
        Ok(Sample { cpus, ..sample })
    }
}

/// The sample, the datagrams counted and their sources.
fn udp_sample(run: UdpRun) -> (Sample, u64, BTreeSet<Ipv4Addr>) {
    let sample = Sample {
        rate: run.received_pps(),
        offered: Some(run.sent_pps()),
        errors: run.sent.errors,
        cpus: Vec::new(),
    };
    (sample, run.received.packets, run.received.sources)
}

/// The sample, the requests the server answered and the peers it saw.
fn tcp_sample(run: TcpRun) -> anyhow::Result<(Sample, u64, BTreeSet<Ipv4Addr>)> {
    ensure!(
        run.client.requests > 0,
        "no request was answered: {} errors, first {:?}",
        run.client.errors,
        run.client.first_error
    );
    let sample = Sample {
        rate: run.requests_per_second(),
        offered: None,
        errors: run.client.errors,
        cpus: Vec::new(),
    };
    Ok((sample, run.server.answered, run.server.sources))
}

/// Absolute figures per path and the ratios of xdplb against the other two, each the
/// median over the rounds (ratios are taken within a round, then the median).
fn report(traffic: Traffic, samples: &BTreeMap<(Traffic, Path), Vec<Sample>>) -> Vec<Measurement> {
    let of = |path: Path| samples.get(&(traffic, path)).map_or(&[][..], Vec::as_slice);
    let window = format!(
        "{} s after {} s warm-up, median of {ROUNDS} interleaved rounds",
        WINDOW.measure.as_secs_f64(),
        WINDOW.warmup.as_secs_f64()
    );
    let mut measurements: Vec<Measurement> = PATHS
        .into_iter()
        .map(|path| {
            let runs = of(path);
            let rates: Vec<f64> = runs.iter().map(|sample| sample.rate).collect();
            let detail = format!(
                "{}; {window}: {}; {}",
                traffic.how(),
                list(&rates),
                limits(runs)
            );
            Measurement::new(
                GROUP,
                &format!("{}: {path}", traffic.figure()),
                median(&rates),
                traffic.unit(),
                &detail,
            )
        })
        .collect();
    let xdplb = of(Path::Xdplb);
    for other in [Path::KubeProxy, Path::Direct] {
        let ratios: Vec<f64> = xdplb
            .iter()
            .zip(of(other))
            .map(|(ours, theirs)| ours.rate / theirs.rate)
            .collect();
        let name = format!("{}: xdplb / {other}", traffic.figure());
        let detail = format!("per-round ratios {}", list(&ratios));
        measurements.push(Measurement::new(
            GROUP,
            &name,
            median(&ratios),
            "x",
            &detail,
        ));
    }
    measurements
}

/// What the sender offered, failures, and how busy each CPU was (averaged over runs).
fn limits(runs: &[Sample]) -> String {
    let mut parts = Vec::new();
    let offered: Vec<f64> = runs.iter().filter_map(|sample| sample.offered).collect();
    if !offered.is_empty() {
        parts.push(format!("sender offered {}", list(&offered)));
    }
    let errors: u64 = runs.iter().map(|sample| sample.errors).sum();
    if errors > 0 {
        parts.push(format!("{errors} failed sends/requests"));
    }
    let cpus = runs.first().map_or(0, |sample| sample.cpus.len());
    let load: Vec<String> = (0..cpus)
        .map(|cpu| {
            let average = |pick: fn(&(f64, f64)) -> f64| {
                runs.iter()
                    .map(|sample| pick(&sample.cpus[cpu]))
                    .sum::<f64>()
                    / runs.len() as f64
            };
            format!(
                "CPU{cpu} {:.0}% busy ({:.0}% softirq)",
                average(|load| load.0),
                average(|load| load.1)
            )
        })
        .collect();
    if !load.is_empty() {
        parts.push(load.join(", "));
    }
    parts.join("; ")
}
