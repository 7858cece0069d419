//! Packet captures with tcpdump inside a namespace, read back as parsed IPv4 headers so
//! tests can assert where packets did (and did not) go.

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
use crate::netns::{Netns, Process};

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
        thread::sleep(GRACE);
        self.process.signal(Signal::SIGINT)?;
        wait_for("tcpdump to exit", STOP, || {
            Ok(self.process.has_exited()?.then_some(()))
        })?;
        let output = Command::new("tcpdump")
            .args(["-n", "-q", "-t", "-r"])
            .arg(&self.pcap)
            .output()
            .context("running tcpdump -r")?;
        ensure!(
            output.status.success(),
            "tcpdump -r {} failed: {} (capture log {})",
            self.pcap.display(),
            String::from_utf8_lossy(&output.stderr).trim(),
            self.log.display()
        );
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(Packet::parse)
            .collect())
    }
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
