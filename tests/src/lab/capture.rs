//! Packet captures with tcpdump inside a namespace, read back as parsed IPv4 headers, ARP
//! frames or raw frames, so tests can assert where packets did (and did not) go and
//! replay what they saw.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::Signal;

use super::{shell_quote, wait_for};
use crate::netns::{Netns, Process, ensure_success};

const START: Duration = Duration::from_secs(10);
const STOP: Duration = Duration::from_secs(5);
/// Lets packets already on the wire reach the capture before it stops.
const GRACE: Duration = Duration::from_millis(300);

/// A running tcpdump, writing to a pcap file until [`Capture::stop`].
#[derive(Debug)]
pub struct Capture {
    process: Process,
    pcap: PathBuf,
    log: PathBuf,
}

/// The innermost IPv4 header of a captured packet (the inner one of an IPIP packet), with
/// ports for TCP and UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Outer (source, destination) when the packet is IPv4-in-IPv4.
    pub tunnel: Option<(Ipv4Addr, Ipv4Addr)>,
    pub src: Ipv4Addr,
    pub src_port: Option<u16>,
    pub dst: Ipv4Addr,
    pub dst_port: Option<u16>,
    /// tcpdump's line, for failure messages.
    pub line: String,
}

impl Capture {
    /// Captures packets matching the pcap `filter` in both directions on `iface` in
    /// `netns`, into `<dir>/<name>.pcap`; returns once tcpdump listens.
    pub fn start(
        netns: &Netns,
        iface: &str,
        filter: &str,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        let pcap = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.tcpdump.log"));
        // -Z root: Debian's tcpdump otherwise drops to a user that cannot write `dir`.
        let script = format!(
            "exec tcpdump -i {iface} -n -U --immediate-mode -Z root -w {} {} 2>{}",
            shell_quote(pcap.display()),
            shell_quote(filter),
            shell_quote(log.display())
        );
        let mut process = netns.spawn("sh", &["-c", &script])?;
        wait_for(
            &format!("tcpdump on {iface} in {}", netns.name()),
            START,
            || {
                let output = fs::read_to_string(&log).unwrap_or_default();
                if process.has_exited()? {
                    bail!("tcpdump exited: {output}");
                }
                Ok(output.contains("listening on").then_some(()))
            },
        )?;
        Ok(Self { process, pcap, log })
    }

    /// Stops the capture and returns every IPv4 packet it saw.
    pub fn stop(mut self) -> anyhow::Result<Vec<Packet>> {
        self.finish()?;
        let output = Command::new("tcpdump")
            .args(["-n", "-q", "-t", "-r"])
            .arg(&self.pcap)
            .output()
            .context("running tcpdump -r")?;
        let what = format_args!(
            "tcpdump -r {} (capture log {})",
            self.pcap.display(),
            self.log.display()
        );
        ensure_success(what, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(Packet::parse)
            .collect())
    }

    /// Stops the capture and returns every frame it saw, Ethernet header first.
    pub fn stop_frames(mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        self.finish()?;
        let pcap =
            fs::read(&self.pcap).with_context(|| format!("reading {}", self.pcap.display()))?;
        pcap_frames(&pcap).with_context(|| format!("parsing {}", self.pcap.display()))
    }

    /// Stops the capture and returns every ARP frame it saw.
    pub fn stop_arp(self) -> anyhow::Result<Vec<ArpFrame>> {
        Ok(self
            .stop_frames()?
            .iter()
            .filter_map(|frame| ArpFrame::parse(frame))
            .collect())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        thread::sleep(GRACE);
        self.process.signal(Signal::SIGINT)?;
        wait_for("tcpdump to exit", STOP, || {
            Ok(self.process.has_exited()?.then_some(()))
        })
    }
}

/// An Ethernet/IPv4 ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet source.
    pub from: [u8; 6],
    /// `true` for a reply (operation 2), `false` for a request.
    pub reply: bool,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    const ETHERTYPE: [u8; 2] = [0x08, 0x06];
    /// Hardware Ethernet, protocol IPv4, lengths 6 and 4.
    const IPV4_OVER_ETHERNET: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];

    /// `None` for anything but an untagged Ethernet/IPv4 ARP request or reply.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let (ethernet, arp) = frame.split_at_checked(14)?;
        if ethernet[12..14] != Self::ETHERTYPE || arp.get(..6)? != Self::IPV4_OVER_ETHERNET {
            return None;
        }
        let arp = arp.get(..28)?;
        let reply = match arp[6..8] {
            [0, 1] => false,
            [0, 2] => true,
            _ => return None,
        };
        let ip = |at: usize| Ipv4Addr::new(arp[at], arp[at + 1], arp[at + 2], arp[at + 3]);
        Some(Self {
            from: ethernet[6..12].try_into().ok()?,
            reply,
            sender_mac: arp[8..14].try_into().ok()?,
            sender_ip: ip(14),
            target_ip: ip(24),
        })
    }

    /// The sender MAC as `ip link` prints it.
    pub fn sender_mac_text(&self) -> String {
        mac_text(self.sender_mac)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// The frames of a classic pcap file (either byte order, micro- or nanosecond stamps)
/// with Ethernet link type, which is what tcpdump writes for a veth.
fn pcap_frames(pcap: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    const HEADER: usize = 24;
    const RECORD: usize = 16;
    const LINKTYPE_ETHERNET: u32 = 1;
    let magic = pcap.get(..4).context("shorter than a pcap header")?;
    let read: fn([u8; 4]) -> u32 = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        _ => bail!("not a pcap file (magic {magic:02x?})"),
    };
    let word = |at: usize| -> anyhow::Result<u32> {
        let bytes = pcap.get(at..at + 4).context("truncated pcap")?;
        Ok(read(bytes.try_into()?))
    };
    ensure!(
        word(20)? == LINKTYPE_ETHERNET,
        "link type {} is not Ethernet",
        word(20)?
    );
    let mut frames = Vec::new();
    let mut at = HEADER;
    while at < pcap.len() {
        let captured = usize::try_from(word(at + 8)?)?;
        let start = at + RECORD;
        let frame = pcap
            .get(start..start + captured)
            .context("truncated pcap record")?;
        frames.push(frame.to_vec());
        at = start + captured;
    }
    Ok(frames)
}

impl Packet {
    /// Parses `tcpdump -n -q -t` output such as
    /// `IP 10.0.0.11 > 10.0.0.12: IP 10.0.0.100.41001 > 172.16.200.20.80: tcp 0`
    /// (headers separated by `: `, innermost last); `None` for non-IPv4 lines.
    fn parse(line: &str) -> Option<Self> {
        let headers: Vec<Header> = line
            .split(": ")
            .map_while(|part| part.strip_prefix("IP "))
            .map(header)
            .collect::<Option<_>>()?;
        let &(src, src_port, dst, dst_port) = headers.last()?;
        let tunnel = (headers.len() > 1).then(|| (headers[0].0, headers[0].2));
        Some(Self {
            tunnel,
            src,
            src_port,
            dst,
            dst_port,
            line: line.to_owned(),
        })
    }
}

/// Source, source port, destination, destination port.
type Header = (Ipv4Addr, Option<u16>, Ipv4Addr, Option<u16>);

/// `SRC > DST` with optional ports.
fn header(text: &str) -> Option<Header> {
    let (src, dst) = text.split_once(" > ")?;
    let (src, src_port) = endpoint(src)?;
    let (dst, dst_port) = endpoint(dst)?;
    Some((src, src_port, dst, dst_port))
}

/// `a.b.c.d` or `a.b.c.d.port`.
fn endpoint(text: &str) -> Option<(Ipv4Addr, Option<u16>)> {
    if let Ok(addr) = text.parse() {
        return Some((addr, None));
    }
    let (addr, port) = text.rsplit_once('.')?;
    Some((addr.parse().ok()?, Some(port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_innermost_header_of_ipip() {
        let packet = Packet::parse(
            "IP 10.0.0.11 > 10.0.0.12: IP 10.0.0.100.41001 > 172.16.200.20.80: tcp 0",
        )
        .unwrap();
        assert_eq!(packet.src, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(packet.src_port, Some(41001));
        assert_eq!(packet.dst, Ipv4Addr::new(172, 16, 200, 20));
        assert_eq!(packet.dst_port, Some(80));
        assert_eq!(
            packet.tunnel,
            Some((Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)))
        );
    }

    #[test]
    fn reads_arp_frames_from_a_pcap_file() {
        // A little-endian microsecond pcap holding one ARP reply: 02:..:02 says
        // 172.16.200.20 is at its MAC, to 02:..:01 (10.0.0.100).
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        pcap.extend([0; 8]);
        pcap.extend(65535u32.to_le_bytes());
        pcap.extend(1u32.to_le_bytes());
        let local = [2, 0, 0, 0, 0, 1];
        let owner = [2, 0, 0, 0, 0, 2];
        let mut frame = [local, owner].concat();
        frame.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        frame.extend(owner);
        frame.extend([172, 16, 200, 20]);
        frame.extend(local);
        frame.extend([10, 0, 0, 100]);
        pcap.extend([0; 8]);
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend(&frame);

        let frames = pcap_frames(&pcap).unwrap();
        assert_eq!(frames, vec![frame]);
        let arp = ArpFrame::parse(&frames[0]).unwrap();
        assert!(arp.reply);
        assert_eq!(arp.from, owner);
        assert_eq!(arp.sender_mac_text(), "02:00:00:00:00:02");
        assert_eq!(arp.sender_ip, Ipv4Addr::new(172, 16, 200, 20));
        assert_eq!(arp.target_ip, CLIENT);
        assert!(ArpFrame::parse(&frames[0][..30]).is_none());
    }

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    #[test]
    fn parses_portless_protocols_and_skips_non_ip() {
        let packet = Packet::parse(
            "IP 10.0.0.100 > 172.16.200.20: ICMP echo request, id 7, seq 1, length 64",
        )
        .unwrap();
        assert_eq!(
            (packet.src_port, packet.dst_port, packet.tunnel),
            (None, None, None)
        );
        assert_eq!(packet.dst, Ipv4Addr::new(172, 16, 200, 20));
        assert!(
            Packet::parse("ARP, Request who-has 10.0.0.12 tell 10.0.0.11, length 28").is_none()
        );
    }
}
