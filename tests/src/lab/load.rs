//! Load for the forwarding benchmark: the `loadgen` binary run inside the lab's
//! namespaces, one tool on each end of a path, and the reports they print.
//!
//! The receiving end (UDP sink, TCP server) starts first, says `ready` on stdout, and
//! prints its JSON report when its bounded lifetime ends; the sending end (UDP sender,
//! TCP request loop) runs in between for the same window. Each end can be pinned to one
//! CPU, so on a small machine the sender and the receiver do not compete for a core and
//! the sender's core does the sending plus every softirq hop of the path (veth hands
//! frames to its peer on the transmitting CPU).

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv4Addr, SocketAddrV4},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::workspace_binary;
use crate::netns::{Netns, ensure_success};

/// What the receiving end prints once it is listening.
pub const READY: &str = "ready";
/// Bytes of UDP payload in each datagram: 18 bytes make the smallest Ethernet frame (64
/// bytes with the FCS), the packet size of per-packet benchmarks.
pub const UDP_PAYLOAD: usize = 18;
/// The request a TCP client sends on each new connection, and the answer it expects.
pub const TCP_REQUEST: &[u8] = b"GET /bench\n";
pub const TCP_RESPONSE: &[u8] = b"200 ok from pod\n";
/// Longest the UDP sink waits for a first datagram before giving up.
pub const FIRST_PACKET_WAIT: Duration = Duration::from_secs(5);
/// How much longer the receiving end lives than the sending end's window.
const RECEIVER_MARGIN: Duration = Duration::from_secs(2);

/// Which end of a TCP request connection closes first, and so keeps the connection's
/// TIME_WAIT state: with the server closing first (HTTP/1.0 style), a node that
/// masquerades many clients' connections behind its own address reuses source ports
/// the pod still holds in TIME_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closer {
    Client,
    Server,
}

impl Closer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Client, Self::Server]
            .into_iter()
            .find(|closer| closer.as_str() == text)
    }
}

/// The sending end runs `warmup + measure`; only `measure` counts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

impl Window {
    pub fn total(self) -> Duration {
        self.warmup + self.measure
    }
}

/// The CPU each end is pinned to (`None`: not pinned).
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    pub sender: Option<usize>,
    pub receiver: Option<usize>,
}

impl Pinning {
    /// Sender on CPU 0 and receiver on CPU 1 when the machine has two CPUs or more.
    pub fn split() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if cpus >= 2 {
            Self {
                sender: Some(0),
                receiver: Some(1),
            }
        } else {
            Self {
                sender: None,
                receiver: None,
            }
        }
    }
}

/// The UDP sender's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendReport {
    /// Datagrams handed to the kernel during the measured part of the window.
    pub packets: u64,
    pub seconds: f64,
    /// Failed sends (e.g. a queued ICMP error returned by a connected socket).
    pub errors: u64,
}

/// The UDP sink's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkReport {
    /// Datagrams received during the measured window, which starts `warmup` after the
    /// first datagram.
    pub packets: u64,
    pub seconds: f64,
    /// Every source address seen, warm-up included.
    pub sources: BTreeSet<Ipv4Addr>,
}

/// The TCP server's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeReport {
    /// Requests answered over the server's whole life.
    pub answered: u64,
    /// Every peer address of an accepted connection.
    pub sources: BTreeSet<Ipv4Addr>,
}

/// The TCP request loop's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestReport {
    /// Requests answered correctly that finished inside the measured window.
    pub requests: u64,
    pub seconds: f64,
    /// Failed requests over the whole run, and the first failure.
    pub errors: u64,
    pub first_error: Option<String>,
}

/// One run of the UDP sender against the UDP sink.
#[derive(Debug, Clone)]
pub struct UdpRun {
    pub sent: SendReport,
    pub received: SinkReport,
}

impl UdpRun {
    pub fn received_pps(&self) -> f64 {
        self.received.packets as f64 / self.received.seconds
    }

    pub fn sent_pps(&self) -> f64 {
        self.sent.packets as f64 / self.sent.seconds
    }
}

/// One run of the TCP request loop against the TCP server.
#[derive(Debug, Clone)]
pub struct TcpRun {
    pub client: RequestReport,
    pub server: ServeReport,
}

impl TcpRun {
    pub fn requests_per_second(&self) -> f64 {
        self.client.requests as f64 / self.client.seconds
    }
}

/// Where load goes: from a namespace to `target`, received in another namespace on
/// `listen` (the same socket address for direct traffic, the pod's after a translation).
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub sender: &'a Netns,
    pub receiver: &'a Netns,
    pub target: SocketAddrV4,
    pub listen: SocketAddrV4,
}

/// `flows` UDP flows of small datagrams along `route` for `window`, counted by a sink.
pub fn udp_flood(
    route: Route<'_>,
    flows: usize,
    window: Window,
    pinning: Pinning,
) -> anyhow::Result<UdpRun> {
    let Route {
        sender,
        receiver,
        target,
        listen,
    } = route;
    let sink = Receiver::start(
        receiver,
        pinning.receiver,
        &[
            "udp-sink",
            "--listen",
            &listen.to_string(),
            "--warmup",
            &secs(window.warmup),
            "--seconds",
            &secs(window.measure),
        ],
    )?;
    let sent: SendReport = run_sender(
        sender,
        pinning.sender,
        &[
            "udp-send",
            "--target",
            &target.to_string(),
            "--sockets",
            &flows.to_string(),
            "--warmup",
            &secs(window.warmup),
            "--seconds",
            // The sink's window starts at the first datagram it gets, a little after
            // the sender starts: keep sending a little past it.
            &secs(window.measure + Duration::from_millis(300)),
        ],
    )?;
    let received: SinkReport = sink.report()?;
    Ok(UdpRun { sent, received })
}

/// `workers` concurrent loops of one request per new connection along `route` for
/// `window`, answered by a server; `closer` closes each connection first.
pub fn tcp_requests(
    route: Route<'_>,
    workers: usize,
    closer: Closer,
    window: Window,
    pinning: Pinning,
) -> anyhow::Result<TcpRun> {
    let lifetime = window.total() + RECEIVER_MARGIN;
    let Route {
        sender: client,
        receiver: server,
        target,
        listen,
    } = route;
    let serving = Receiver::start(
        server,
        pinning.receiver,
        &[
            "tcp-serve",
            "--listen",
            &listen.to_string(),
            "--threads",
            &workers.to_string(),
            "--closer",
            closer.as_str(),
            "--seconds",
            &secs(lifetime),
        ],
    )?;
    let requests: RequestReport = run_sender(
        client,
        pinning.sender,
        &[
            "tcp-load",
            "--target",
            &target.to_string(),
            "--workers",
            &workers.to_string(),
            "--closer",
            closer.as_str(),
            "--warmup",
            &secs(window.warmup),
            "--seconds",
            &secs(window.measure),
        ],
    )?;
    let served: ServeReport = serving.report()?;
    Ok(TcpRun {
        client: requests,
        server: served,
    })
}

fn secs(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

/// `loadgen [--cpu N] ARGS` inside `netns`.
fn loadgen(netns: &Netns, cpu: Option<usize>, args: &[&str]) -> anyhow::Result<Command> {
    let binary = workspace_binary("loadgen")?;
    let mut command = netns.command(&binary.to_string_lossy());
    command.args(args);
    if let Some(cpu) = cpu {
        command.args(["--cpu", &cpu.to_string()]);
    }
    Ok(command)
}

/// Runs the sending end to completion (it bounds its own run) and parses its report.
fn run_sender<T: DeserializeOwned>(
    netns: &Netns,
    cpu: Option<usize>,
    args: &[&str],
) -> anyhow::Result<T> {
    let output = loadgen(netns, cpu, args)?
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running loadgen {}", args.join(" ")))?;
    ensure_success(
        format_args!("loadgen {} in {}", args.join(" "), netns.name()),
        &output,
    )?;
    parse_report(&String::from_utf8_lossy(&output.stdout), args)
}

fn parse_report<T: DeserializeOwned>(text: &str, args: &[&str]) -> anyhow::Result<T> {
    serde_json::from_str(text.trim())
        .with_context(|| format!("parsing the report of loadgen {}: {text:?}", args.join(" ")))
}

/// The receiving end: listening once started, killed on drop if still running.
struct Receiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
    args: Vec<String>,
}

impl Receiver {
    fn start(netns: &Netns, cpu: Option<usize>, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = loadgen(netns, cpu, args)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting loadgen {}", args.join(" ")))?;
        let stdout = child.stdout.take().context("loadgen's stdout is piped")?;
        let mut receiver = Self {
            stdout: BufReader::new(stdout),
            child,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        // The first line is `ready`, or nothing if the process died while starting
        // (its lifetime is bounded, so this read is too).
        let mut line = String::new();
        receiver.stdout.read_line(&mut line)?;
        ensure!(
            line.trim() == READY,
            "loadgen {} did not start: {line:?}",
            receiver.args.join(" ")
        );
        Ok(receiver)
    }

    /// Waits for the end of the receiver's bounded life and parses its report.
    fn report<T: DeserializeOwned>(mut self) -> anyhow::Result<T> {
        let mut text = String::new();
        self.stdout.read_to_string(&mut text)?;
        let status = self.child.wait()?;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if !status.success() {
            bail!("loadgen {} ended with {status}", args.join(" "));
        }
        parse_report(&text, &args)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Jiffies each CPU spent busy and in softirq between two [`CpuTimes::now`] snapshots
/// (from `/proc/stat`, which the namespaces share): what the path cost each core.
#[derive(Debug, Clone, Default)]
pub struct CpuTimes(Vec<CpuTime>);

#[derive(Debug, Clone, Copy, Default)]
struct CpuTime {
    busy: u64,
    softirq: u64,
    total: u64,
}

impl CpuTimes {
    pub fn now() -> anyhow::Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        stat.lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(parse_cpu_line)
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Per CPU since `earlier`: (busy %, softirq %) of the elapsed time.
    pub fn since(&self, earlier: &Self) -> Vec<(f64, f64)> {
        self.0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| {
                let total = now.total.saturating_sub(then.total).max(1) as f64;
                (
                    100.0 * now.busy.saturating_sub(then.busy) as f64 / total,
                    100.0 * now.softirq.saturating_sub(then.softirq) as f64 / total,
                )
            })
            .collect()
    }
}

/// `cpuN user nice system idle iowait irq softirq steal ...`
fn parse_cpu_line(line: &str) -> anyhow::Result<CpuTime> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing /proc/stat line {line:?}"))?;
    ensure!(fields.len() >= 7, "short /proc/stat line {line:?}");
    let idle = fields[3] + fields[4];
    let total: u64 = fields.iter().take(8).sum();
    Ok(CpuTime {
        busy: total - idle,
        softirq: fields[6],
        total,
    })
}
