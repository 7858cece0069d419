//! Client traffic generated in-process from inside a namespace: HTTP requests on fresh
//! connections at a fixed pace (to time a failover to a few milliseconds, which
//! starting a `curl` per request could not), and long-lived line-echo connections (to
//! see whether an established connection breaks or stalls).
//!
//! Both run on a tokio runtime in a thread that entered the namespace, so every socket
//! they open belongs to it, while the caller's `work` (kill a node, restart an agent)
//! runs on the calling thread. Both stop when `work` returns or panics, and after
//! [`MAX_RUN`] at the latest.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
    task::JoinSet,
    time::{MissedTickBehavior, interval, sleep_until, timeout},
};

use crate::netns::Netns;

/// Upper bound on any traffic loop, whatever `work` does.
const MAX_RUN: Duration = Duration::from_secs(60);
/// How long opening the echo connections may take.
const ECHO_OPEN: Duration = Duration::from_secs(15);
/// An echo that takes longer than this ends its connection's run as an error.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// How often a new request starts, and how long each may take before it counts as
/// failed. Requests overlap when `timeout` exceeds `every`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub every: Duration,
    pub timeout: Duration,
}

impl Pace {
    /// A new request every 20 ms, each given 300 ms: an outage (failover, fault) is
    /// resolved to ~20 ms.
    pub const OUTAGE: Self = Self {
        every: Duration::from_millis(20),
        timeout: Duration::from_millis(300),
    };
    /// A new request every 20 ms, each given 2 s: across a restart, where an answer that
    /// is slow but comes counts as served.
    pub const RESTART: Self = Self {
        every: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    };
}

/// One HTTP GET on a fresh connection.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Instant,
    pub finished: Instant,
    /// The pod that answered (the body of the lab's web pages), or what went wrong.
    pub result: Result<Ipv4Addr, String>,
}

/// Every request of a loop, in the order they started.
#[derive(Debug, Clone, Default)]
pub struct Requests(pub Vec<Attempt>);

impl Requests {
    pub fn failures(&self) -> Vec<&Attempt> {
        self.0
            .iter()
            .filter(|attempt| attempt.result.is_err())
            .collect()
    }

    /// When the first answer came to a request started at or after `since`: where an
    /// outage ends for a client retrying every `Pace::every`.
    pub fn first_answer_after(&self, since: Instant) -> Option<Instant> {
        self.0
            .iter()
            .filter(|attempt| attempt.started >= since && attempt.result.is_ok())
            .map(|attempt| attempt.finished)
            .min()
    }

    /// The longest time any request took, failed or not.
    pub fn slowest(&self) -> Duration {
        self.0
            .iter()
            .map(|attempt| attempt.finished - attempt.started)
            .max()
            .unwrap_or_default()
    }

    /// Answered requests per pod.
    pub fn per_pod(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut counts = BTreeMap::new();
        for pod in self
            .0
            .iter()
            .filter_map(|attempt| attempt.result.as_ref().ok())
        {
            *counts.entry(*pod).or_default() += 1;
        }
        counts
    }
}

/// Sends `GET /` to `target` from `netns` at `pace` while `work` runs.
pub fn requests_during<T>(
    netns: &Netns,
    target: SocketAddrV4,
    pace: Pace,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Requests)> {
    requests_during_at_most(netns, target, pace, MAX_RUN, work)
}

/// [`requests_during`] for work that takes longer than [`MAX_RUN`]: the loop stops
/// after `limit` at the latest.
pub fn requests_during_at_most<T>(
    netns: &Netns,
    target: SocketAddrV4,
    pace: Pace,
    limit: Duration,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Requests)> {
    let stop = Arc::new(AtomicBool::new(false));
    thread::scope(|scope| {
        let loop_stop = Arc::clone(&stop);
        let requests = scope.spawn(move || {
            in_netns(netns, async move {
                request_loop(target, pace, limit, &loop_stop).await
            })
        });
        let outcome = StopOnDrop(&stop).run(work);
        let requests = requests
            .join()
            .map_err(|_| anyhow!("the request loop panicked"))??;
        Ok((outcome?, Requests(requests)))
    })
}

/// One long-lived connection's run.
#[derive(Debug, Clone)]
pub struct EchoReport {
    pub local_port: u16,
    /// The pod that echoed (the same for every line, or the connection would be broken).
    pub pod: Option<Ipv4Addr>,
    /// When each echo arrived.
    pub echoed: Vec<Instant>,
    /// The longest wait for an echo: the connection's worst stall.
    pub max_wait: Duration,
    /// Why the connection stopped early (reset, closed, wrong echo, stalled too long).
    pub error: Option<String>,
}

/// Opens `connections` TCP connections from `netns` to the line-echo service at
/// `target`, checks one echo on each, then runs `work` while every connection sends a
/// line each `every` and waits for its echo.
pub fn echo_during<T>(
    netns: &Netns,
    target: SocketAddrV4,
    connections: usize,
    every: Duration,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<EchoReport>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (opened, all_open) = mpsc::channel();
    thread::scope(|scope| {
        let loop_stop = Arc::clone(&stop);
        let reports = scope.spawn(move || {
            in_netns(netns, async move {
                echo_loop(target, connections, every, opened, loop_stop).await
            })
        });
        let outcome = StopOnDrop(&stop).run(|| {
            all_open
                .recv_timeout(ECHO_OPEN)
                .context("the echo connections did not open in time")??;
            work()
        });
        let reports = reports
            .join()
            .map_err(|_| anyhow!("the echo loop panicked"))??;
        Ok((outcome?, reports))
    })
}

/// Sets the flag once `work` is done, or unwinding: a loop stops even when `work`
/// panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl StopOnDrop<'_> {
    fn run<T>(self, work: impl FnOnce() -> T) -> T {
        work()
    }
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `future` to completion on a fresh runtime inside `netns`.
fn in_netns<T>(
    netns: &Netns,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let _inside = netns.enter()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime")?
        .block_on(future)
}

async fn request_loop(
    target: SocketAddrV4,
    pace: Pace,
    limit: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Attempt>> {
    let deadline = Instant::now() + limit;
    let mut ticker = interval(pace.every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut running = JoinSet::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        ticker.tick().await;
        running.spawn(attempt(target, pace.timeout));
    }
    let mut attempts = Vec::new();
    while let Some(attempt) = running.join_next().await {
        attempts.push(attempt.context("a request task failed")?);
    }
    attempts.sort_by_key(|attempt| attempt.started);
    Ok(attempts)
}

async fn attempt(target: SocketAddrV4, limit: Duration) -> Attempt {
    let started = Instant::now();
    let result = match timeout(limit, http_get(target)).await {
        Ok(result) => result.map_err(|error| format!("{error:#}")),
        Err(_) => Err(format!("no answer within {limit:?}")),
    };
    Attempt {
        started,
        finished: Instant::now(),
        result,
    }
}

/// `GET /` over HTTP/1.0; the body of a lab web page names the pod that served it.
async fn http_get(target: SocketAddrV4) -> anyhow::Result<Ipv4Addr> {
    let mut stream = TcpStream::connect(target).await.context("connect")?;
    let request = format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", target.ip());
    stream.write_all(request.as_bytes()).await.context("send")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.context("receive")?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "status {:?}",
        head.lines().next().unwrap_or_default()
    );
    body.trim()
        .parse()
        .with_context(|| format!("the body {body:?} names no pod"))
}

async fn echo_loop(
    target: SocketAddrV4,
    connections: usize,
    every: Duration,
    opened: mpsc::Sender<anyhow::Result<()>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<EchoReport>> {
    let mut streams = Vec::with_capacity(connections);
    for index in 0..connections {
        match open_echo(target).await {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                let error = error.context(format!("echo connection {index} to {target}"));
                let _ = opened.send(Err(anyhow!("{error:#}")));
                return Err(error);
            }
        }
    }
    let _ = opened.send(Ok(()));
    let mut running = JoinSet::new();
    for (stream, pod) in streams {
        running.spawn(converse(stream, pod, every, Arc::clone(&stop)));
    }
    let mut reports = Vec::with_capacity(connections);
    while let Some(report) = running.join_next().await {
        reports.push(report.context("an echo task failed")?);
    }
    reports.sort_by_key(|report| report.local_port);
    Ok(reports)
}

type EchoStream = BufReader<TcpStream>;

/// Connects and checks a first echo; returns the stream and the pod behind it.
async fn open_echo(target: SocketAddrV4) -> anyhow::Result<(EchoStream, Ipv4Addr)> {
    let stream = timeout(ECHO_WAIT, TcpStream::connect(target))
        .await
        .context("connect timed out")?
        .context("connect")?;
    // Every line goes out at once, as an interactive protocol's would, not held back
    // by Nagle behind an unacknowledged one.
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let pod = exchange(&mut stream, 0).await?;
    Ok((stream, pod))
}

async fn converse(
    mut stream: EchoStream,
    pod: Ipv4Addr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> EchoReport {
    let local_port = stream
        .get_ref()
        .local_addr()
        .map_or(0, |address| address.port());
    let deadline = Instant::now() + MAX_RUN;
    let mut report = EchoReport {
        local_port,
        pod: Some(pod),
        echoed: Vec::new(),
        max_wait: Duration::ZERO,
        error: None,
    };
    let mut sequence = 1;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sent = Instant::now();
        match exchange(&mut stream, sequence).await {
            Ok(echoed_by) if echoed_by == pod => {}
            Ok(other) => {
                report.error = Some(format!("line {sequence} echoed by {other}, not {pod}"));
                break;
            }
            Err(error) => {
                report.error = Some(format!("line {sequence}: {error:#}"));
                break;
            }
        }
        report.echoed.push(Instant::now());
        report.max_wait = report.max_wait.max(sent.elapsed());
        sequence += 1;
        sleep_until((sent + every).into()).await;
    }
    report
}

/// Sends line `sequence` and returns the pod that echoed it.
async fn exchange(stream: &mut EchoStream, sequence: u32) -> anyhow::Result<Ipv4Addr> {
    stream
        .get_mut()
        .write_all(format!("{sequence}\n").as_bytes())
        .await
        .context("send")?;
    let mut line = String::new();
    let read = timeout(ECHO_WAIT, stream.read_line(&mut line))
        .await
        .with_context(|| format!("no echo within {ECHO_WAIT:?}"))?
        .context("receive")?;
    if read == 0 {
        bail!("connection closed by the other end");
    }
    let (pod, echoed) = line
        .trim_end()
        .split_once(' ')
        .with_context(|| format!("malformed echo {line:?}"))?;
    ensure!(
        echoed == sequence.to_string(),
        "sent {sequence}, echo was {line:?}"
    );
    pod.parse()
        .with_context(|| format!("the echo {line:?} names no pod"))
}
