//! The ARP announcer: one thread per interface answering ARP requests for the VIPs this
//! node owns and announcing VIPs it takes over.
//!
//! The owned set arrives through a `watch` channel and is re-checked before every answer,
//! so a VIP handed to another node is never answered for again once the runtime has
//! published the new set. Each owned VIP carries its gratuitous ARP [`Settings`] (its
//! address pool's, or the node's). The runtime can also ask for every owned VIP to be
//! announced again ([`Owned::reannounce`]), as when a partition heals.
//!
//! While the link is down nothing can be answered or sent, and the thread waits for it.
//! When it is back, every owned VIP gets a fresh takeover burst: what was due meanwhile
//! was lost, and the LAN may have learnt the VIPs elsewhere. The kernel also leaves a
//! pending `ENETDOWN` on the socket at link down, which it would report on the first
//! send after the link returns, losing that frame; the thread takes it first.

use std::{
    ffi::c_int,
    io, mem,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, IntoRawFd as _, OwnedFd, RawFd},
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
    schedule::{Owned, OwnedVips, Schedule},
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
    #[error("duplicating the ARP socket of {interface}: {source}")]
    Duplicate {
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

/// A raw `AF_PACKET` socket for ARP frames, not yet bound to `interface`.
fn arp_socket(interface: &str) -> Result<OwnedFd, ArpError> {
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
            interface: interface.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a socket just opened and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether this process may open the announcer's socket at all (CAP_NET_RAW): a
/// node that cannot answer ARP must not take part in the election, so the agent checks
/// this before it joins the gossip rather than retrying later.
pub fn check_socket_permission(interface: &str) -> Result<(), ArpError> {
    arp_socket(interface).map(drop)
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
    /// Failed receives other than the link going down; the thread keeps trying.
    pub receive_errors: u64,
    /// Times the link went down or away: the thread pauses, and re-announces every owned
    /// VIP when it is back.
    pub link_outages: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests_owned: AtomicU64,
    replies_sent: AtomicU64,
    gratuitous_sent: AtomicU64,
    requests_ignored: AtomicU64,
    send_errors: AtomicU64,
    receive_errors: AtomicU64,
    link_outages: AtomicU64,
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
            link_outages: load(&self.link_outages),
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
    /// Opens the ARP channel on `interface` and starts answering for the VIPs in `owned`,
    /// each announced with the settings it comes with (its address pool's, or the
    /// node's), and all of them again whenever [`Owned::reannounce`] changes.
    ///
    /// The socket belongs to the calling thread's network namespace. The thread ends when
    /// the `owned` sender is dropped: with nobody deciding ownership any more, answering
    /// from a stale set could make two nodes answer one VIP.
    pub fn start(interface: &Interface, owned: watch::Receiver<Owned>) -> Result<Self, ArpError> {
        let name = interface.link.name.clone();
        let port = open_channel(interface)?;
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            mac: interface.link.mac,
            port,
            owned_rx: owned,
            owned: OwnedVips::new(),
            schedule: Schedule::default(),
            shared: Arc::clone(&shared),
            receive_failing: false,
            outage: false,
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
    let fd = arp_socket(name)?.into_raw_fd();
    let link = LinkState::new(fd, name);
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
    // pnet takes the socket over (and closes it) whether it succeeds or not, so the
    // duplicate's outcome is looked at only afterwards.
    let (tx, rx) = match linux::channel(&target, config) {
        Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => {
            return Err(ArpError::NotEthernet {
                interface: name.clone(),
            });
        }
        Err(source) => {
            return Err(ArpError::Channel {
                interface: name.clone(),
                source,
            });
        }
    };
    let link = link.map_err(|source| ArpError::Duplicate {
        interface: name.clone(),
        source,
    })?;
    Ok(Port { tx, rx, link })
}

/// Both halves of the ARP channel, and what the kernel says about its link.
struct Port {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    link: LinkState,
}

/// The announce link's state and the ARP socket's pending error, through a duplicate of
/// the socket (the same socket, so in the namespace the channel was opened in).
struct LinkState {
    socket: OwnedFd,
    name: [libc::c_char; libc::IFNAMSIZ],
}

impl LinkState {
    /// Interface names are at most 15 bytes (checked by link selection); a longer one is
    /// cut, and then never found, so the link reads as down.
    fn new(socket: RawFd, name: &str) -> io::Result<Self> {
        // SAFETY: `socket` was just opened by the caller and is still open; it is only
        // borrowed here to duplicate it.
        let socket = unsafe { BorrowedFd::borrow_raw(socket) }.try_clone_to_owned()?;
        let mut ifname = [0; libc::IFNAMSIZ];
        for (to, from) in ifname[..libc::IFNAMSIZ - 1].iter_mut().zip(name.bytes()) {
            *to = from as libc::c_char;
        }
        Ok(Self {
            socket,
            name: ifname,
        })
    }

    /// Up and running (with carrier), so frames go out; a link that is gone is not.
    fn usable(&self) -> bool {
        // SAFETY: `ifreq` is plain old data, valid when zeroed.
        let mut request: libc::ifreq = unsafe { mem::zeroed() };
        request.ifr_name = self.name;
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of the `ifreq` passed,
        // which lives across the call.
        let result =
            unsafe { libc::ioctl(self.socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
        if result < 0 {
            return false;
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote the flags member.
        let flags = c_int::from(unsafe { request.ifr_ifru.ifru_flags });
        let wanted = libc::IFF_UP | libc::IFF_RUNNING;
        flags & wanted == wanted
    }

    /// Takes the error pending on the socket, which the kernel would otherwise report on
    /// the next send or receive (failing it) and which keeps `poll` signalling an error.
    fn take_error(&self) -> Option<io::Error> {
        let mut error: c_int = 0;
        let mut len = mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes at most `len` bytes to `error`, which lives across the call.
        let result = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut error).cast(),
                &mut len,
            )
        };
        (result == 0 && error != 0).then(|| io::Error::from_raw_os_error(error))
    }
}

/// Errors that mean the link is down or gone rather than this frame being refused.
fn is_link_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV)
    )
}

struct Worker {
    mac: MacAddr,
    port: Port,
    owned_rx: watch::Receiver<Owned>,
    owned: OwnedVips,
    schedule: Schedule,
    shared: Arc<Shared>,
    /// Set while receives fail, so a failing socket logs once rather than every poll.
    receive_failing: bool,
    /// Set from the link going down (or a send finding it down) until it is usable again:
    /// one warning per outage, and a fresh burst at its end.
    outage: bool,
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
            if !self.link_usable() {
                thread::sleep(POLL);
                continue;
            }
            self.announce_due();
            if let Some(request) = self.receive()
                && self.sync_owned().is_ok()
            {
                self.answer(&request);
            }
        }
    }

    /// Adopts the latest owned set, starting takeover bursts for new VIPs (for all when
    /// a re-announcement was asked for).
    fn sync_owned(&mut self) -> Result<(), watch::error::RecvError> {
        if self.owned_rx.has_changed()? {
            let latest = self.owned_rx.borrow_and_update().clone();
            self.schedule.follow(&latest, Instant::now());
            self.owned = latest.vips;
        }
        Ok(())
    }

    /// Whether frames can be sent and received now, ending or starting an outage.
    fn link_usable(&mut self) -> bool {
        let usable = self.port.link.usable();
        if !usable {
            self.outage_began(None);
        } else if self.outage {
            self.outage = false;
            // The ENETDOWN the kernel left at link down would fail the first frame.
            self.port.link.take_error();
            self.schedule.restart(Instant::now());
            tracing::info!(
                vips = self.owned.len(),
                "ARP link usable again: announcing every owned VIP"
            );
        }
        usable
    }

    /// Notes that the link is down or gone (seen by `error`, if given), once per outage.
    fn outage_began(&mut self, error: Option<&io::Error>) {
        if self.outage {
            return;
        }
        self.outage = true;
        Stats::count(&self.shared.stats.link_outages);
        match error {
            Some(error) => {
                tracing::warn!(%error, "ARP link down: answers and announcements wait for it");
            }
            None => tracing::warn!("ARP link down: answers and announcements wait for it"),
        }
    }

    fn announce_due(&mut self) {
        for vip in self.schedule.due(Instant::now()) {
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
                // pnet reports a pending socket error only as an unexpected poll event.
                if let Some(pending) = self.port.link.take_error()
                    && is_link_error(&pending)
                {
                    self.outage_began(Some(&pending));
                    return None;
                }
                Stats::count(&self.shared.stats.receive_errors);
                if !self.receive_failing {
                    tracing::warn!(%error, "ARP receive failed; retrying");
                    self.receive_failing = true;
                }
                thread::sleep(POLL);
                None
            }
        }
    }

    fn answer(&mut self, request: &Request) {
        let stats = &self.shared.stats;
        if request.is_gratuitous() || !self.owned.contains_key(&request.target_ip) {
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
                if is_link_error(&error) {
                    // Down now, or down and back between two checks (the kernel's
                    // pending error): either way the burst is sent again once it is up.
                    self.outage_began(Some(&error));
                } else {
                    tracing::warn!(%error, "sending an ARP frame failed");
                }
            }
        }
    }
}
