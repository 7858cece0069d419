//! The ARP announcer: one thread per interface answering ARP requests for the VIPs this
//! node owns and announcing VIPs it takes over.
//!
//! The owned set arrives through a `watch` channel and is re-checked before every answer,
//! so a VIP handed to another node is never answered for again once the runtime has
//! published the new set.

use std::{
    collections::BTreeSet,
    io,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use pnet_datalink::{
    Channel, ChannelType, DataLinkReceiver, DataLinkSender, MacAddr, NetworkInterface, linux,
};
use tokio::sync::watch;

use super::{
    frame::{self, Request},
    interface::Interface,
    schedule::{Schedule, Settings},
};

/// How long the thread waits for a frame before it checks the owned set, its timers and
/// the stop flag: bounds takeover latency and shutdown time.
const POLL: Duration = Duration::from_millis(20);

/// The announcer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    #[error("opening an AF_PACKET socket for {interface}: {source}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("binding the ARP channel to {interface}: {source}")]
    Channel {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("pnet returned a non-Ethernet channel for {interface}")]
    NotEthernet { interface: String },
    #[error("starting the ARP thread for {interface}: {source}")]
    Thread {
        interface: String,
        #[source]
        source: io::Error,
    },
}

/// A snapshot of the announcer's counters (monotonic since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// ARP requests asking for a VIP owned at the time.
    pub requests_owned: u64,
    /// Unicast replies sent to them.
    pub replies_sent: u64,
    /// Gratuitous ARP frames sent (two per announcement: request and reply form).
    pub gratuitous_sent: u64,
    /// Requests left unanswered: target not owned, or itself an announcement.
    pub requests_ignored: u64,
    /// Frames the socket would not send.
    pub send_errors: u64,
    /// Failed receives (the link went down or away); the thread keeps trying.
    pub receive_errors: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests_owned: AtomicU64,
    replies_sent: AtomicU64,
    gratuitous_sent: AtomicU64,
    requests_ignored: AtomicU64,
    send_errors: AtomicU64,
    receive_errors: AtomicU64,
}

impl Stats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counters {
            requests_owned: load(&self.requests_owned),
            replies_sent: load(&self.replies_sent),
            gratuitous_sent: load(&self.gratuitous_sent),
            requests_ignored: load(&self.requests_ignored),
            send_errors: load(&self.send_errors),
            receive_errors: load(&self.receive_errors),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    stats: Stats,
}

/// A running announcer; stops (and joins its thread) on [`Announcer::stop`] or drop.
#[derive(Debug)]
pub struct Announcer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Opens the ARP channel on `interface` and starts answering for the VIPs in `owned`.
    ///
    /// The socket belongs to the calling thread's network namespace. The thread ends when
    /// the `owned` sender is dropped: with nobody deciding ownership any more, answering
    /// from a stale set could make two nodes answer one VIP.
    pub fn start(
        interface: &Interface,
        settings: Settings,
        owned: watch::Receiver<BTreeSet<Ipv4Addr>>,
    ) -> Result<Self, ArpError> {
        let name = interface.link.name.clone();
        let port = open_channel(interface)?;
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            mac: interface.link.mac,
            port,
            owned_rx: owned,
            owned: BTreeSet::new(),
            schedule: Schedule::new(settings, Instant::now()),
            shared: Arc::clone(&shared),
            receive_failing: false,
        };
        let thread = thread::Builder::new()
            .name(format!("arp-{name}"))
            .spawn(move || worker.run())
            .map_err(|source| ArpError::Thread {
                interface: name,
                source,
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// Stops answering and waits for the thread (at most about one poll interval).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the ARP announcer thread panicked");
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A raw AF_PACKET socket bound to ARP only, wrapped in a pnet channel.
///
/// pnet opens `ETH_P_ALL` sockets for Layer2 channels, which get a copy of every frame
/// the node sends and receives, including all its data traffic. A socket bound to
/// `ETH_P_ARP` gets incoming ARP frames only, and never our own transmissions (outgoing
/// frames reach `ETH_P_ALL` taps only). pnet accepts a ready socket and binds it with the
/// protocol of `Layer3`, which it otherwise ignores on Linux, so the socket stays raw and
/// frames keep their Ethernet header both ways.
fn open_channel(interface: &Interface) -> Result<Port, ArpError> {
    let name = &interface.link.name;
    let arp = libc::ETH_P_ARP as u16;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(arp.to_be()),
        )
    };
    if fd < 0 {
        return Err(ArpError::Socket {
            interface: name.clone(),
            source: io::Error::last_os_error(),
        });
    }
    let config = linux::Config {
        read_timeout: Some(POLL),
        write_timeout: Some(POLL),
        channel_type: ChannelType::Layer3(arp),
        promiscuous: false,
        // pnet owns (and closes) the socket from here on, on failure too.
        socket_fd: Some(fd),
        ..linux::Config::default()
    };
    let target = NetworkInterface {
        name: name.clone(),
        description: String::new(),
        index: interface.link.index,
        mac: Some(interface.link.mac),
        ips: Vec::new(),
        flags: 0,
    };
    match linux::channel(&target, config) {
        Ok(Channel::Ethernet(tx, rx)) => Ok(Port { tx, rx }),
        Ok(_) => Err(ArpError::NotEthernet {
            interface: name.clone(),
        }),
        Err(source) => Err(ArpError::Channel {
            interface: name.clone(),
            source,
        }),
    }
}

/// Both halves of the ARP channel.
struct Port {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
}

struct Worker {
    mac: MacAddr,
    port: Port,
    owned_rx: watch::Receiver<BTreeSet<Ipv4Addr>>,
    owned: BTreeSet<Ipv4Addr>,
    schedule: Schedule,
    shared: Arc<Shared>,
    /// Set while receives fail, so a dead link logs once rather than every poll.
    receive_failing: bool,
}

impl Worker {
    fn run(mut self) {
        // The set present at start is a takeover like any later one.
        self.owned_rx.mark_changed();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if self.sync_owned().is_err() {
                tracing::info!("VIP ownership sender dropped: ARP announcer stops");
                return;
            }
            self.announce_due();
            if let Some(request) = self.receive()
                && self.sync_owned().is_ok()
            {
                self.answer(&request);
            }
        }
    }

    /// Adopts the latest owned set, starting takeover bursts for new VIPs.
    fn sync_owned(&mut self) -> Result<(), watch::error::RecvError> {
        if !self.owned_rx.has_changed()? {
            return Ok(());
        }
        let latest = self.owned_rx.borrow_and_update().clone();
        self.schedule
            .owned_changed(&self.owned, &latest, Instant::now());
        self.owned = latest;
        Ok(())
    }

    fn announce_due(&mut self) {
        for vip in self.schedule.due(&self.owned, Instant::now()) {
            tracing::debug!(%vip, "sending gratuitous ARP");
            for frame in frame::gratuitous(self.mac, vip) {
                self.send(&frame, |stats| &stats.gratuitous_sent);
            }
        }
    }

    /// The next ARP request for us, if one arrives within [`POLL`].
    fn receive(&mut self) -> Option<Request> {
        match self.port.rx.next() {
            Ok(frame) => {
                self.receive_failing = false;
                frame::parse_request(frame, self.mac)
            }
            Err(error) if error.kind() == io::ErrorKind::TimedOut => None,
            Err(error) => {
                Stats::count(&self.shared.stats.receive_errors);
                if !self.receive_failing {
                    tracing::warn!(%error, "ARP receive failed; retrying");
                    self.receive_failing = true;
                }
                // A down link leaves POLLERR raised until a frame arrives after it is back
                // (that receive returns the error and clears it): retry at the poll pace.
                thread::sleep(POLL);
                None
            }
        }
    }

    fn answer(&mut self, request: &Request) {
        let stats = &self.shared.stats;
        if request.is_gratuitous() || !self.owned.contains(&request.target_ip) {
            Stats::count(&stats.requests_ignored);
            return;
        }
        Stats::count(&stats.requests_owned);
        let reply = frame::reply(self.mac, request.target_ip, request);
        self.send(&reply, |stats| &stats.replies_sent);
    }

    /// Sends `frame`, counting it in the `sent` counter or as a send error.
    fn send(&mut self, frame: &frame::Frame, sent: fn(&Stats) -> &AtomicU64) {
        let result = self
            .port
            .tx
            .send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than pnet's buffer")));
        match result {
            Ok(()) => Stats::count(sent(&self.shared.stats)),
            Err(error) => {
                Stats::count(&self.shared.stats.send_errors);
                tracing::warn!(%error, "sending an ARP frame failed");
            }
        }
    }
}
