//! The ARP announcer on a namespace LAN (client, node1, node2 on one bridge), checked with
//! the client kernel's own ARP: what it resolves, what it caches, and what it captured.
//!
//! Needs root; run with `cargo test -p testbed --test privileged arp:: --
//! --test-threads=1`.

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use lb_agent::arp::{
    Announcer, Counters, Interface, InterfaceError, Owned, Refusal, Settings, SysPaths, interface,
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tempfile::TempDir;
use testbed::{
    lab::{CLIENT_ADDR, Capture, LAN_IFACE, Lab, Node},
    netns::Netns,
    packets::parse_mac,
};
use tokio::sync::watch;

const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 21);
const VIP_CIDR: &str = "172.16.200.0/24";
const BROADCAST: Mac = [0xff; 6];
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// What the client's capture and its pcap file are called.
const CAPTURE_NAME: &str = "client";

type Mac = [u8; 6];

fn skip_unless_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: network namespaces and AF_PACKET sockets need root");
    }
    !root
}

#[test]
fn owned_vip_resolves_to_the_announcing_node_and_others_do_not() -> anyhow::Result<()> {
    let Some((lab, node1)) =
        vip_resolved_to_node1("owned_vip_resolves_to_the_announcing_node_and_others_do_not")?
    else {
        return Ok(());
    };
    let answered = node1.counters();
    ensure!(
        answered.requests_owned >= 1 && answered.replies_sent == answered.requests_owned,
        "counters after the owned request: {answered:?}"
    );

    ensure!(
        resolve(&lab.client, OTHER_VIP)?.is_none(),
        "unowned {OTHER_VIP} resolved"
    );
    let ignored = node1.counters();
    ensure!(
        ignored.requests_ignored >= 1 && ignored.replies_sent == answered.replies_sent,
        "the request for {OTHER_VIP} was not seen and ignored: {ignored:?}"
    );
    ensure!(ignored.send_errors == 0, "{ignored:?}");
    Ok(())
}

#[test]
fn vip_removed_from_the_owned_set_is_not_answered_any_more() -> anyhow::Result<()> {
    let Some((lab, node1)) =
        vip_resolved_to_node1("vip_removed_from_the_owned_set_is_not_answered_any_more")?
    else {
        return Ok(());
    };

    node1.own(&[]);
    let before = node1.counters();
    forget_neighbours(&lab)?;
    ensure!(
        resolve(&lab.client, VIP)?.is_none(),
        "{VIP} still resolves after leaving the owned set"
    );
    let after = node1.counters();
    ensure!(
        after.replies_sent == before.replies_sent
            && after.requests_ignored > before.requests_ignored,
        "counters before {before:?}, after {after:?}"
    );
    Ok(())
}

#[test]
fn takeover_moves_the_client_cache_by_gratuitous_arp_alone() -> anyhow::Result<()> {
    let Some((scratch, lab)) =
        lan_with_scratch("takeover_moves_the_client_cache_by_gratuitous_arp_alone")?
    else {
        return Ok(());
    };
    lab.client.run(&format!(
        "echo 1 > /proc/sys/net/ipv4/conf/{LAN_IFACE}/arp_accept"
    ))?;
    let client_mac = mac_of(&lab.client)?;
    let node1 = Speaker::start(lab.node("node1")?, Settings::default(), &[VIP])?;
    let node2 = Speaker::start(lab.node("node2")?, Settings::default(), &[])?;
    ensure!(
        resolve(&lab.client, VIP)? == Some(node1.mac),
        "{VIP} never resolved to node1"
    );

    let capture = capture_client_arp(&lab, scratch.path())?;
    node1.own(&[]);
    node2.own(&[VIP]);
    let moved = Instant::now();
    let took = wait_until(
        "the client to cache node2's MAC",
        Duration::from_secs(2),
        || Ok(neighbour(&lab.client, VIP)? == Some(node2.mac)),
    )?;
    eprintln!("client cache moved to node2 after {took:?}");
    ensure!(
        took <= Duration::from_secs(1),
        "the client cache moved after {took:?}"
    );
    // The rest of the takeover burst: 3 repeats 500 ms apart.
    thread::sleep(Duration::from_millis(1800).saturating_sub(moved.elapsed()));
    let frames = stop_capture(capture, scratch.path())?;

    let requests_from_client: Vec<_> = frames
        .iter()
        .filter(|frame| frame.operation == ARP_REQUEST && frame.sender_mac == client_mac)
        .collect();
    ensure!(
        requests_from_client.is_empty(),
        "the client asked: {requests_from_client:?}"
    );
    let from_node2 = gratuitous_from(&frames, node2.mac);
    let requests: Vec<_> = from_node2
        .iter()
        .filter(|frame| frame.operation == ARP_REQUEST && frame.target_mac == [0; 6])
        .collect();
    let replies: Vec<_> = from_node2
        .iter()
        .filter(|frame| frame.operation == ARP_REPLY && frame.target_mac == node2.mac)
        .collect();
    ensure!(
        requests.len() == 4 && replies.len() == 4 && from_node2.len() == 8,
        "node2's gratuitous ARP (want 4 request + 4 reply forms): {from_node2:#?}"
    );
    let span = requests[3].time - requests[0].time;
    eprintln!("takeover rounds spanned {span:?}");
    ensure!(
        (Duration::from_millis(1450)..=Duration::from_millis(1800)).contains(&span),
        "takeover rounds spanned {span:?}, want 3 x 500 ms"
    );
    let first = from_node2[0].time;
    let late_node1: Vec<_> = gratuitous_from(&frames, node1.mac)
        .into_iter()
        .filter(|frame| frame.time >= first)
        .collect();
    ensure!(
        late_node1.is_empty(),
        "node1 kept announcing after losing {VIP}: {late_node1:?}"
    );
    ensure!(
        node2.counters().gratuitous_sent == 8,
        "{:?}",
        node2.counters()
    );
    Ok(())
}

#[test]
fn disjoint_owners_each_answer_only_their_own_vip() -> anyhow::Result<()> {
    let Some((scratch, lab)) = lan_with_scratch("disjoint_owners_each_answer_only_their_own_vip")?
    else {
        return Ok(());
    };
    let client_mac = mac_of(&lab.client)?;
    let node1_node = lab.node("node1")?;
    let node1 = Speaker::start(node1_node, Settings::default(), &[VIP])?;
    let node2 = Speaker::start(lab.node("node2")?, Settings::default(), &[OTHER_VIP])?;

    let capture = capture_client_arp(&lab, scratch.path())?;
    for target in [VIP, OTHER_VIP, node1_node.addr] {
        // Forwarding node1 answers pings to VIPs with ICMP errors, resolving the client
        // first; the client caches node1's address from that request unless flushed.
        forget_neighbours(&lab)?;
        ensure!(
            resolve(&lab.client, target)?.is_some(),
            "{target} did not resolve"
        );
    }
    let frames = stop_capture(capture, scratch.path())?;

    // The node's own address is the kernel's to answer; the announcer stays out of it.
    for (target, owner) in [
        (VIP, node1.mac),
        (OTHER_VIP, node2.mac),
        (node1_node.addr, node1.mac),
    ] {
        let answers: Vec<_> = frames
            .iter()
            .filter(|frame| {
                frame.operation == ARP_REPLY
                    && frame.destination == client_mac
                    && frame.target_ip == CLIENT_ADDR
                    && frame.sender_ip == target
            })
            .collect();
        ensure!(
            answers.len() == 1 && answers[0].sender_mac == owner,
            "answers for {target} (want one from {}): {answers:#?}",
            mac_text(owner)
        );
    }
    for (name, speaker) in [("node1", &node1), ("node2", &node2)] {
        let counters = speaker.counters();
        ensure!(
            counters.replies_sent == 1 && counters.requests_ignored >= 1,
            "{name}: {counters:?}"
        );
    }
    Ok(())
}

#[test]
fn refresh_keeps_announcing_owned_vips() -> anyhow::Result<()> {
    if skip_unless_root("refresh_keeps_announcing_owned_vips") {
        return Ok(());
    }
    let lab = client_lan()?;
    let settings = Settings {
        garp_repeats: 0,
        garp_interval: Duration::from_millis(500),
        refresh: Some(Duration::from_millis(200)),
    };
    let node1 = Speaker::start(lab.node("node1")?, settings, &[VIP, OTHER_VIP])?;
    thread::sleep(Duration::from_millis(1100));
    // Two VIPs, two frames each, at 0 ms and then every 200 ms: 6 rounds by 1.1 s, give
    // or take one for polling.
    let sent = node1.counters().gratuitous_sent;
    ensure!(
        (20..=28).contains(&sent),
        "{sent} gratuitous frames in 1.1 s, want about 24"
    );
    Ok(())
}

/// After a flap the takeover burst is sent again at once, so the LAN relearns the VIP
/// without asking, and requests are answered again.
#[test]
fn answers_and_announces_again_after_a_link_flap() -> anyhow::Result<()> {
    let Some((scratch, lab)) = lan_with_scratch("answers_and_announces_again_after_a_link_flap")?
    else {
        return Ok(());
    };
    let node = lab.node("node1")?;
    let node1 = Speaker::start(node, Settings::default(), &[VIP])?;
    let capture = capture_client_arp(&lab, scratch.path())?;
    node.netns.run(&format!("ip link set {LAN_IFACE} down"))?;
    thread::sleep(Duration::from_millis(100));
    let up = SystemTime::now().duration_since(UNIX_EPOCH)?;
    node.netns.run(&format!("ip link set {LAN_IFACE} up"))?;
    // The takeover burst started before the flap would next be due 500 ms after it
    // started: anything well before that comes from the link returning.
    thread::sleep(Duration::from_millis(300));
    let frames = stop_capture(capture, scratch.path())?;
    let after_up: Vec<_> = gratuitous_from(&frames, node1.mac)
        .into_iter()
        .filter(|frame| frame.sender_ip == VIP && frame.time >= up)
        .collect();
    let first = after_up
        .first()
        .with_context(|| format!("no gratuitous ARP for {VIP} after the link came back"))?;
    let delay = first.time - up;
    eprintln!("first gratuitous ARP {delay:?} after the link came back");
    ensure!(
        delay <= Duration::from_millis(200),
        "the first gratuitous ARP came {delay:?} after the link"
    );
    // Both forms of the first round: the first frame sent after the link returned was not
    // lost to the error the kernel left on the socket when it went down.
    let operations: BTreeSet<u16> = after_up
        .iter()
        .filter(|frame| frame.time - first.time < Duration::from_millis(100))
        .map(|frame| frame.operation)
        .collect();
    ensure!(
        operations == BTreeSet::from([ARP_REQUEST, ARP_REPLY]),
        "the first round after the link came back: {after_up:#?}"
    );
    let counters = node1.counters();
    ensure!(
        counters.link_outages == 1 && counters.send_errors == 0,
        "one outage and no frame sent into it: {counters:?}"
    );
    let mac = wait_for_resolution(&lab.client, VIP, Duration::from_secs(5))?;
    ensure!(mac == node1.mac, "{VIP} resolved to {}", mac_text(mac));
    Ok(())
}

#[test]
fn stop_is_prompt_and_a_dropped_owner_set_ends_the_announcer() -> anyhow::Result<()> {
    let Some((lab, node1)) =
        vip_resolved_to_node1("stop_is_prompt_and_a_dropped_owner_set_ends_the_announcer")?
    else {
        return Ok(());
    };
    let Speaker {
        announcer, owned, ..
    } = node1;
    drop(owned);
    forget_neighbours(&lab)?;
    ensure!(
        resolve(&lab.client, VIP)?.is_none(),
        "{VIP} answered after the owner set's sender was dropped"
    );

    let node1 = Speaker::start(lab.node("node1")?, Settings::default(), &[VIP])?;
    let started = Instant::now();
    node1.announcer.stop();
    let took = started.elapsed();
    eprintln!("stop took {took:?}");
    ensure!(took < Duration::from_millis(100), "stop took {took:?}");
    drop(announcer);
    Ok(())
}

/// Interface selection against the kernel's own sysfs for a namespace holding one link of
/// each kind.
#[test]
fn interface_selection_classifies_real_links() -> anyhow::Result<()> {
    if skip_unless_root("interface_selection_classifies_real_links") {
        return Ok(());
    }
    let netns = Netns::new("arp-links")?;
    netns.run(
        "ip link add eth0 type veth peer name eth0p \
         && ip addr add 10.0.0.11/24 dev eth0 \
         && ip link set eth0 up && ip link set eth0p up \
         && ip link add br9 type bridge && ip link set br9 up \
         && ip link add m0 type veth peer name m0p && ip link set m0 master br9 \
         && ip link set m0 up && ip link set m0p up \
         && ip link add x0 type veth peer name x0p && ip link set x0 arp off \
         && ip link set x0 up && ip link set x0p up \
         && ip link add cali9 type veth peer name cali9p \
         && ip link set cali9 up && ip link set cali9p up \
         && ip link add d0 type veth peer name d0p \
         && ip link add c0 type veth peer name c0p && ip link set c0 up \
         && ip link add n0 type veth peer name n0p && ip link set n0 up && ip link set n0p up",
    )?;
    let eth0_index: u32 = netns
        .run("cat /sys/class/net/eth0/ifindex")?
        .trim()
        .parse()?;
    let eth0_mac = mac_of_link(&netns, "eth0")?;

    let _inside = netns.enter()?;
    let sysfs = NamespaceSysfs::mount()?;
    let paths = sysfs.paths();
    let chosen = interface::select(&paths, Some("eth0"))?;
    ensure!(
        chosen.link.name == "eth0"
            && chosen.link.index == eth0_index
            && chosen.link.mac.octets() == eth0_mac
            && chosen.ipv4 == Ipv4Addr::new(10, 0, 0, 11),
        "eth0 chosen as {chosen:?}"
    );
    let expected = [
        (
            "m0",
            Refusal::BridgeMember {
                bridge: "br9".to_owned(),
            },
        ),
        ("x0", Refusal::NoArp),
        ("cali9", Refusal::Cni { prefix: "cali" }),
        ("lo", Refusal::Loopback),
        (
            "d0",
            Refusal::Down {
                state: "administratively down".to_owned(),
            },
        ),
        (
            "c0",
            Refusal::Down {
                state: "operstate lowerlayerdown".to_owned(),
            },
        ),
        ("n0", Refusal::NoIpv4),
        ("nope0", Refusal::Missing),
    ];
    for (name, reason) in expected {
        match interface::select(&paths, Some(name)) {
            Err(InterfaceError::Refused { reason: got, .. }) if got == reason => {}
            other => bail!("{name}: want {reason:?}, got {other:?}"),
        }
    }
    ensure!(
        interface::select(&paths, Some("br9"))
            .is_err_and(|error| error.to_string() == "skipping br9: has no IPv4 address"),
        "the bridge itself passes the link checks and fails only for lack of an address"
    );
    // The namespace's real route table has routes but no default one.
    match interface::select(&paths, None) {
        Err(InterfaceError::NoDefaultRoute { .. }) => Ok(()),
        other => bail!("without a default route: {other:?}"),
    }
}

/// A client and two nodes on the lab bridge, VIPs routed onto the LAN by the client.
fn client_lan() -> anyhow::Result<Lab> {
    let lab = Lab::new(&[&[], &[]])?;
    lab.client
        .run(&format!("ip route add {VIP_CIDR} dev {LAN_IFACE}"))?;
    Ok(lab)
}

/// The client LAN with node1 announcing `VIP`, once the client resolved it to node1;
/// `None` (the test skipped) when not root.
fn vip_resolved_to_node1(test: &str) -> anyhow::Result<Option<(Lab, Speaker)>> {
    if skip_unless_root(test) {
        return Ok(None);
    }
    let lab = client_lan()?;
    let node1 = Speaker::start(lab.node("node1")?, Settings::default(), &[VIP])?;
    ensure!(
        resolve(&lab.client, VIP)? == Some(node1.mac),
        "{VIP} did not resolve to node1 {}",
        mac_text(node1.mac)
    );
    Ok(Some((lab, node1)))
}

/// The client LAN and a directory for its captures; `None` (the test skipped) when not
/// root.
fn lan_with_scratch(test: &str) -> anyhow::Result<Option<(TempDir, Lab)>> {
    if skip_unless_root(test) {
        return Ok(None);
    }
    let scratch = tempfile::tempdir()?;
    Ok(Some((scratch, client_lan()?)))
}

/// Empties the client's neighbour cache, so its kernel asks the LAN again.
fn forget_neighbours(lab: &Lab) -> anyhow::Result<()> {
    lab.client.run(&format!("ip neigh flush dev {LAN_IFACE}"))?;
    Ok(())
}

/// Captures the ARP frames on the client's LAN interface into `dir`.
fn capture_client_arp(lab: &Lab, dir: &Path) -> anyhow::Result<Capture> {
    Capture::start(&lab.client, LAN_IFACE, "arp", dir, CAPTURE_NAME)
}

/// An announcer running for a node's LAN interface, with the owned set it reads.
struct Speaker {
    announcer: Announcer,
    owned: watch::Sender<Owned>,
    settings: Settings,
    mac: Mac,
}

impl Speaker {
    /// Chooses the interface and opens the channel inside the node's namespace (the
    /// AF_PACKET socket belongs to the namespace of the thread creating it).
    fn start(node: &Node, settings: Settings, vips: &[Ipv4Addr]) -> anyhow::Result<Self> {
        let _inside = node.netns.enter()?;
        let interface: Interface = {
            let sysfs = NamespaceSysfs::mount()?;
            interface::select(&sysfs.paths(), Some(LAN_IFACE))?
        };
        ensure!(
            interface.ipv4 == node.addr,
            "{} chose {interface:?}",
            node.name
        );
        let (owned, receiver) = watch::channel(owned(vips, settings));
        let announcer = Announcer::start(&interface, receiver)?;
        Ok(Self {
            announcer,
            owned,
            settings,
            mac: interface.link.mac.octets(),
        })
    }

    fn own(&self, vips: &[Ipv4Addr]) {
        self.owned.send_replace(owned(vips, self.settings));
    }

    fn counters(&self) -> Counters {
        self.announcer.counters()
    }
}

/// `vips` owned, each announced with `settings`.
fn owned(vips: &[Ipv4Addr], settings: Settings) -> Owned {
    Owned {
        vips: vips.iter().map(|&vip| (vip, settings)).collect(),
        reannounce: 0,
    }
}

/// sysfs mounted from inside the calling thread's namespace: `/sys` shows the namespace
/// it was mounted in (the host's, for this process), whatever namespace a thread enters.
struct NamespaceSysfs {
    dir: TempDir,
}

impl NamespaceSysfs {
    fn mount() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        mount(
            Some("sysfs"),
            dir.path(),
            Some("sysfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .context("mounting the namespace's sysfs")?;
        Ok(Self { dir })
    }

    fn paths(&self) -> SysPaths {
        SysPaths {
            class_net: self.dir.path().join("class/net"),
            ..SysPaths::live()
        }
    }
}

impl Drop for NamespaceSysfs {
    fn drop(&mut self) {
        if let Err(error) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {error}", self.dir.path().display());
        }
    }
}

/// Makes the client's kernel resolve `target` (one ping: its ARP request goes out at once,
/// then ping waits up to a second) and returns the MAC it cached, if any.
fn resolve(client: &Netns, target: Ipv4Addr) -> anyhow::Result<Option<Mac>> {
    client.run(&format!("ping -n -c1 -W1 {target} >/dev/null 2>&1 || true"))?;
    neighbour(client, target)
}

fn wait_for_resolution(client: &Netns, target: Ipv4Addr, limit: Duration) -> anyhow::Result<Mac> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(mac) = resolve(client, target)? {
            return Ok(mac);
        }
    }
    bail!("{target} did not resolve within {limit:?}")
}

/// The client's cached MAC for `target`, without sending anything.
fn neighbour(client: &Netns, target: Ipv4Addr) -> anyhow::Result<Option<Mac>> {
    let entry = client.run(&format!("ip neigh show {target} dev {LAN_IFACE}"))?;
    let mut words = entry.split_whitespace();
    match words.find(|&word| word == "lladdr").and(words.next()) {
        Some(mac) => Ok(Some(parse_mac(mac)?)),
        None => Ok(None),
    }
}

/// Polls `done` every 20 ms; returns how long it took, or fails after `limit`.
fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done()? {
            return Ok(started.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

fn mac_of(netns: &Netns) -> anyhow::Result<Mac> {
    mac_of_link(netns, LAN_IFACE)
}

fn mac_of_link(netns: &Netns, link: &str) -> anyhow::Result<Mac> {
    parse_mac(
        netns
            .run(&format!("cat /sys/class/net/{link}/address"))?
            .trim(),
    )
}

fn mac_text(mac: Mac) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// An ARP frame from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArpFrame {
    /// Capture timestamp.
    time: Duration,
    destination: Mac,
    operation: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
}

/// Broadcast announcements (sender = target address) sent by `mac`.
fn gratuitous_from(frames: &[ArpFrame], mac: Mac) -> Vec<&ArpFrame> {
    frames
        .iter()
        .filter(|frame| {
            frame.sender_mac == mac
                && frame.destination == BROADCAST
                && frame.sender_ip == frame.target_ip
        })
        .collect()
}

/// Stops `capture` (from [`capture_client_arp`] in `dir`) and reads the ARP frames of its
/// pcap.
fn stop_capture(capture: Capture, dir: &Path) -> anyhow::Result<Vec<ArpFrame>> {
    capture.stop()?;
    read_arp_pcap(&dir.join(format!("{CAPTURE_NAME}.pcap")))
}

/// Parses a classic little-endian pcap file of Ethernet frames (what tcpdump writes on
/// this machine) into its ARP frames.
fn read_arp_pcap(path: &Path) -> anyhow::Result<Vec<ArpFrame>> {
    const FILE_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    const LINKTYPE_ETHERNET: u32 = 1;
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u32_at = |offset: usize| -> anyhow::Result<u32> {
        let field = bytes
            .get(offset..offset + 4)
            .with_context(|| format!("{} truncated at {offset}", path.display()))?;
        Ok(u32::from_le_bytes(field.try_into()?))
    };
    let subsecond_unit = match u32_at(0)? {
        0xa1b2_c3d4 => Duration::from_micros(1),
        0xa1b2_3c4d => Duration::from_nanos(1),
        magic => bail!(
            "{}: not a little-endian pcap (magic {magic:#x})",
            path.display()
        ),
    };
    ensure!(
        u32_at(20)? == LINKTYPE_ETHERNET,
        "{}: not Ethernet",
        path.display()
    );
    let mut frames = Vec::new();
    let mut offset = FILE_HEADER;
    while offset < bytes.len() {
        let time =
            Duration::from_secs(u64::from(u32_at(offset)?)) + subsecond_unit * u32_at(offset + 4)?;
        let len = usize::try_from(u32_at(offset + 8)?)?;
        let start = offset + RECORD_HEADER;
        let data = bytes
            .get(start..start + len)
            .with_context(|| format!("{}: record at {offset} truncated", path.display()))?;
        frames.extend(parse_arp(time, data));
        offset = start + len;
    }
    Ok(frames)
}

/// An Ethernet/IPv4 ARP frame at fixed offsets; `None` for anything else.
fn parse_arp(time: Duration, data: &[u8]) -> Option<ArpFrame> {
    if data.len() < 42 || data[12..14] != [0x08, 0x06] || data[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let mac = |at: usize| -> Mac { data[at..at + 6].try_into().expect("6 bytes") };
    let ip = |at: usize| Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3]);
    Some(ArpFrame {
        time,
        destination: mac(0),
        operation: u16::from_be_bytes([data[20], data[21]]),
        sender_mac: mac(22),
        sender_ip: ip(28),
        target_mac: mac(32),
        target_ip: ip(38),
    })
}
