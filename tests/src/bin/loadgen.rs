//! `loadgen`: the fast ends of the forwarding benchmark (see `testbed::lab::load`), run
//! inside the lab's namespaces. Every tool bounds its own run and prints one JSON report
//! on stdout; receivers print `ready` first, once they listen.
//!
//! ```text
//! loadgen udp-send  --target IP:PORT --sockets N --warmup S --seconds S [--cpu C]
//! loadgen udp-sink  --listen IP:PORT --warmup S --seconds S [--cpu C]
//! loadgen tcp-load  --target IP:PORT --workers N --closer client|server --warmup S
//!                   --seconds S [--cpu C]
//! loadgen tcp-serve --listen IP:PORT --threads N --closer client|server --seconds S
//!                   [--cpu C]
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, Read as _, Write as _},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use serde::Serialize;
use testbed::lab::load::{
    Closer, FIRST_PACKET_WAIT, READY, RequestReport, SendReport, ServeReport, SinkReport,
    TCP_REQUEST, TCP_RESPONSE, UDP_PAYLOAD,
};

/// Datagrams per `sendmmsg`/`recvmmsg` call: enough to make the syscall cost small
/// against the per-packet path cost being measured.
const BATCH: usize = 32;
/// The sink asks for this much receive buffer, so bursts wait in the socket instead of
/// being dropped while the sink is descheduled.
const SINK_BUFFER: libc::c_int = 8 << 20;
/// How long a blocking receive waits before the sink checks its deadline again.
const POLL: Duration = Duration::from_millis(100);
/// Per-request bound on connect, send and receive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound on any tool's run, whatever its arguments say.
const MAX_RUN: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tool = args.next().context("usage: loadgen TOOL --key value ...")?;
    let mut options = Options::parse(args)?;
    if let Some(cpu) = options.optional::<usize>("cpu")? {
        pin(cpu)?;
    }
    match tool.as_str() {
        "udp-send" => print_report(&udp_send(options)?),
        "udp-sink" => print_report(&udp_sink(options)?),
        "tcp-load" => print_report(&tcp_load(options)?),
        "tcp-serve" => print_report(&tcp_serve(options)?),
        other => bail!("unknown tool {other:?}"),
    }
}

/// `--key value` pairs; every one must be used.
struct Options(BTreeMap<String, String>);

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = BTreeMap::new();
        while let Some(key) = args.next() {
            let key = key
                .strip_prefix("--")
                .with_context(|| format!("expected --key, got {key:?}"))?
                .to_owned();
            let value = args
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            options.insert(key, value);
        }
        Ok(Self(options))
    }

    fn optional<T: std::str::FromStr>(&mut self, key: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.0
            .remove(key)
            .map(|value| {
                value
                    .parse()
                    .with_context(|| format!("--{key} {value:?} is not valid"))
            })
            .transpose()
    }

    fn required<T: std::str::FromStr>(&mut self, key: &str) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.optional(key)?
            .with_context(|| format!("--{key} is required"))
    }

    fn closer(&mut self) -> anyhow::Result<Closer> {
        let text: String = self.required("closer")?;
        Closer::parse(&text).with_context(|| format!("--closer {text:?}: client or server"))
    }

    fn duration(&mut self, key: &str) -> anyhow::Result<Duration> {
        let seconds: f64 = self.required(key)?;
        let duration = Duration::try_from_secs_f64(seconds)
            .with_context(|| format!("--{key} {seconds} is no duration"))?;
        ensure!(duration <= MAX_RUN, "--{key} exceeds {MAX_RUN:?}");
        Ok(duration)
    }

    /// Fails on options no tool asked for (a typo would otherwise be ignored).
    fn done(self) -> anyhow::Result<()> {
        ensure!(
            self.0.is_empty(),
            "unknown options: {:?}",
            self.0.keys().collect::<Vec<_>>()
        );
        Ok(())
    }
}

/// Pins the process (this thread and every thread it starts later) to `cpu`.
fn pin(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

fn print_report(report: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}

fn say_ready() -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{READY}")?;
    stdout.flush()?;
    Ok(())
}

/// Floods `target` from `--sockets` connected sockets (one flow each), round robin, one
/// batch per socket in turn.
fn udp_send(mut options: Options) -> anyhow::Result<SendReport> {
    let target: SocketAddrV4 = options.required("target")?;
    let flows: usize = options.required("sockets")?;
    let warmup = options.duration("warmup")?;
    let measure = options.duration("seconds")?;
    options.done()?;
    let sockets = (0..flows.max(1))
        .map(|_| {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(target)?;
            Ok(socket)
        })
        .collect::<io::Result<Vec<_>>>()
        .context("opening the sending sockets")?;
    let payload = [0x5a_u8; UDP_PAYLOAD];
    let started = Instant::now();
    let (measured_from, end) = (started + warmup, started + warmup + measure);
    let (mut packets, mut errors) = (0u64, 0u64);
    let mut counting = false;
    'send: loop {
        for socket in &sockets {
            let now = Instant::now();
            if now >= end {
                break 'send;
            }
            if !counting && now >= measured_from {
                counting = true;
                packets = 0;
            }
            match send_batch(socket, &payload) {
                Ok(sent) => packets += sent as u64,
                Err(_) => errors += 1,
            }
        }
    }
    Ok(SendReport {
        packets,
        seconds: measure.as_secs_f64(),
        errors,
    })
}

/// Sends [`BATCH`] copies of `payload` on the connected `socket` with one `sendmmsg`.
fn send_batch(socket: &UdpSocket, payload: &[u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain old data for which all-zero is a valid value (null
    // pointers, zero lengths).
    let mut messages: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for message in &mut messages {
        message.msg_hdr.msg_iov = &raw mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `messages` holds BATCH initialised headers, each pointing at `iov`, which
    // points at `payload`; all outlive the call, and the kernel only reads through
    // msg_iov (the socket is connected, so there is no msg_name).
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            BATCH as libc::c_uint,
            0,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Counts datagrams on `--listen` for `--seconds`, starting `--warmup` after the first.
fn udp_sink(mut options: Options) -> anyhow::Result<SinkReport> {
    let listen: SocketAddrV4 = options.required("listen")?;
    let warmup = options.duration("warmup")?;
    let measure = options.duration("seconds")?;
    options.done()?;
    let socket = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    set_receive_buffer(&socket)?;
    socket.set_read_timeout(Some(POLL))?;
    say_ready()?;
    let mut batch = ReceiveBatch::new();
    let mut sources = BTreeSet::new();
    let give_up = Instant::now() + FIRST_PACKET_WAIT;
    let first = loop {
        if batch.receive(&socket)? > 0 {
            batch.sources_into(&mut sources);
            break Instant::now();
        }
        ensure!(
            Instant::now() < give_up,
            "no datagram within {FIRST_PACKET_WAIT:?}"
        );
    };
    let (measured_from, end) = (first + warmup, first + warmup + measure);
    let mut packets = 0u64;
    loop {
        let received = batch.receive(&socket)?;
        let now = Instant::now();
        if now >= end {
            break;
        }
        batch.sources_into(&mut sources);
        if now >= measured_from {
            packets += received as u64;
        }
    }
    Ok(SinkReport {
        packets,
        seconds: measure.as_secs_f64(),
        sources,
    })
}

/// `SO_RCVBUFFORCE` (root may exceed `net.core.rmem_max`, which is not per namespace).
fn set_receive_buffer(socket: &UdpSocket) -> anyhow::Result<()> {
    let size = SINK_BUFFER;
    // SAFETY: the option value is a c_int that lives across the call, and its size is
    // passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        result == 0,
        "SO_RCVBUFFORCE: {}",
        io::Error::last_os_error()
    );
    Ok(())
}

/// Buffers for one `recvmmsg` of up to [`BATCH`] datagrams with their sources.
struct ReceiveBatch {
    buffers: [[u8; 64]; BATCH],
    addresses: [libc::sockaddr_in; BATCH],
    received: usize,
}

impl ReceiveBatch {
    fn new() -> Self {
        Self {
            buffers: [[0; 64]; BATCH],
            // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
            addresses: unsafe { mem::zeroed() },
            received: 0,
        }
    }

    /// Receives what is queued, waiting up to the socket's read timeout for the first
    /// datagram; 0 when none came.
    fn receive(&mut self, socket: &UdpSocket) -> anyhow::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            })
            .collect();
        // SAFETY: as in `send_batch`, all-zero headers are valid.
        let mut messages: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for ((message, iov), address) in messages.iter_mut().zip(&mut iovs).zip(&mut self.addresses)
        {
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message.msg_hdr.msg_name = (address as *mut libc::sockaddr_in).cast();
            message.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: every header points at its own live buffer and address slot, with
        // their true sizes; `iovs`, `self.buffers` and `self.addresses` outlive the call.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        self.received = match usize::try_from(received) {
            Ok(received) => received,
            Err(_) => {
                let error = io::Error::last_os_error();
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    0
                } else {
                    return Err(error).context("recvmmsg");
                }
            }
        };
        Ok(self.received)
    }

    fn sources_into(&self, sources: &mut BTreeSet<Ipv4Addr>) {
        for address in &self.addresses[..self.received] {
            sources.insert(Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)));
        }
    }
}

/// `--workers` threads each making one request per new connection, back to back.
fn tcp_load(mut options: Options) -> anyhow::Result<RequestReport> {
    let target: SocketAddrV4 = options.required("target")?;
    let workers: usize = options.required("workers")?;
    let closer = options.closer()?;
    let warmup = options.duration("warmup")?;
    let measure = options.duration("seconds")?;
    options.done()?;
    let started = Instant::now();
    let (measured_from, end) = (started + warmup, started + warmup + measure);
    let outcomes: Vec<(u64, u64, Option<String>)> = thread::scope(|scope| {
        let loops: Vec<_> = (0..workers.max(1))
            .map(|_| scope.spawn(move || request_loop(target, closer, measured_from, end)))
            .collect();
        loops
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or((0, 1, Some("worker panicked".into())))
            })
            .collect()
    });
    Ok(RequestReport {
        requests: outcomes.iter().map(|outcome| outcome.0).sum(),
        seconds: measure.as_secs_f64(),
        errors: outcomes.iter().map(|outcome| outcome.1).sum(),
        first_error: outcomes.into_iter().find_map(|outcome| outcome.2),
    })
}

/// (answered inside the window, failed, first failure).
fn request_loop(
    target: SocketAddrV4,
    closer: Closer,
    measured_from: Instant,
    end: Instant,
) -> (u64, u64, Option<String>) {
    let (mut answered, mut failed, mut first_error) = (0, 0, None);
    loop {
        let result = request(target, closer);
        let now = Instant::now();
        if now >= end {
            break;
        }
        match result {
            Ok(()) if now >= measured_from => answered += 1,
            Ok(()) => {}
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    (answered, failed, first_error)
}

/// Connect, send the request, read the whole response, close (after the server did, if
/// it closes first).
fn request(target: SocketAddrV4, closer: Closer) -> anyhow::Result<()> {
    let mut stream =
        TcpStream::connect_timeout(&target.into(), REQUEST_TIMEOUT).context("connect")?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.write_all(TCP_REQUEST).context("send")?;
    let mut response = vec![0; TCP_RESPONSE.len()];
    match closer {
        Closer::Client => stream.read_exact(&mut response).context("receive")?,
        Closer::Server => {
            response.clear();
            stream.read_to_end(&mut response).context("receive")?;
        }
    }
    ensure!(
        response == TCP_RESPONSE,
        "unexpected response {:?}",
        String::from_utf8_lossy(&response)
    );
    Ok(())
}

/// `--threads` threads accepting on one listener, each answering one request per
/// connection and closing it; reports after `--seconds`.
fn tcp_serve(mut options: Options) -> anyhow::Result<ServeReport> {
    let listen: SocketAddrV4 = options.required("listen")?;
    let threads: usize = options.required("threads")?;
    let closer = options.closer()?;
    let lifetime = options.duration("seconds")?;
    options.done()?;
    let listener =
        Arc::new(TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?);
    let answered = Arc::new(AtomicU64::new(0));
    let sources = Arc::new(Mutex::new(BTreeSet::new()));
    say_ready()?;
    for _ in 0..threads.max(1) {
        let (listener, answered, sources) = (
            Arc::clone(&listener),
            Arc::clone(&answered),
            Arc::clone(&sources),
        );
        // Detached: the accept loops end with the process once the lifetime is over.
        thread::spawn(move || serve_loop(&listener, closer, &answered, &sources));
    }
    thread::sleep(lifetime);
    let sources = sources
        .lock()
        .map_err(|_| anyhow::anyhow!("a server thread panicked"))?
        .clone();
    Ok(ServeReport {
        answered: answered.load(Ordering::Relaxed),
        sources,
    })
}

fn serve_loop(
    listener: &TcpListener,
    closer: Closer,
    answered: &AtomicU64,
    sources: &Mutex<BTreeSet<Ipv4Addr>>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        if let SocketAddr::V4(peer) = peer
            && let Ok(mut sources) = sources.lock()
        {
            sources.insert(*peer.ip());
        }
        if answer(stream, closer).is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads the request up to its newline, answers, and closes, first or once the client
/// has.
fn answer(mut stream: TcpStream, closer: Closer) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = [0u8; 64];
    let mut length = 0;
    while !request[..length].contains(&b'\n') {
        let read = stream.read(&mut request[length..])?;
        if read == 0 || length + read == request.len() {
            return Err(io::ErrorKind::InvalidData.into());
        }
        length += read;
    }
    stream.write_all(TCP_RESPONSE)?;
    if closer == Closer::Client {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
    }
    Ok(())
}
