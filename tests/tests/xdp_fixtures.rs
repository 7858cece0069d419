//! Katran-style BPF_PROG_TEST_RUN fixtures for `xdp_lb`: an input frame, the verdict,
//! the frame as it leaves (decoded, every checksum verified) and the reason counters
//! that moved. Privileged (root); run with `--test-threads=1`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::Result;
use etherparse::{
    IcmpEchoHeader, Icmpv4Type, IpDscp, IpFragOffset, IpNumber, Ipv4Options,
    icmpv4::DestUnreachableHeader,
};
use lb_common::{
    reasons::*,
    types::{
        BACKEND_DRAINING, BackendStats, FlowValue, PROTO_TCP, PROTO_UDP, SERVICE_F_LOCAL_ONLY,
        VIP_F_DROP_UNKNOWN_PORTS, VipStats,
    },
    vip_filter,
};
use testbed::{
    cpu::OnOneCpu,
    fixture::*,
    packets::{self, Decoded, L2, NODE_MAC, decode, quoted_ports},
};

/// MAC address of the next hop the static neighbour entries point at.
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// The next hop's MAC address after its neighbour entry changed.
const MOVED_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x03];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
/// A LAN router that reports errors about our replies.
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n";

fn https_packet(client: SocketAddrV4) -> Vec<u8> {
    packets::tcp(client, vip(HTTPS), REQUEST)
}

fn https_frame(client: SocketAddrV4) -> Vec<u8> {
    L2::LAN.ipv4(&https_packet(client))
}

fn client_port(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(*CLIENT.ip(), port)
}

/// `inner` tunnelled from `from` to this node, as a peer sends it.
fn tunnelled(l2: L2, from: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    l2.ipv4(&packets::ipip(from, NODE, inner))
}

const FROM_PEER: L2 = L2 {
    src: PEER_MAC,
    dst: NODE_MAC,
    vlan: None,
};

/// A router's "fragmentation needed" about the reply `VIP:443 -> client`.
fn error_about_reply(client: SocketAddrV4) -> Vec<u8> {
    let reply = packets::tcp(vip(HTTPS), client, b"a reply that was too big");
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });
    packets::icmp(ROUTER, VIP, kind, &reply)
}

/// The destination a VIP packet left with: the pod after DNAT, the node after encap.
fn outer_dst(run: &Run) -> Result<Ipv4Addr> {
    Ok(decode(&run.frame)?.ip.dst())
}

fn assert_untouched(run: &Run, input: &[u8]) {
    assert_eq!(run.action, XDP_PASS);
    assert_eq!(
        run.frame, input,
        "a passed frame must leave bit for bit unchanged"
    );
}

/// Asserts `CLIENT`'s HTTPS flow cached as chosen by `node` for `POD`, and `POD`'s
/// replies recorded as the VIP's.
fn assert_https_flow_to_pod(lb: &Dataplane, node: u32) -> Result<()> {
    let node_slot = match node {
        0 => 0,
        node => lb.backend_slot(Ipv4Addr::from(node.to_ne_bytes()))?,
    };
    let chosen = FlowValue {
        node,
        pod: wire(POD),
        node_slot,
        pod_slot: lb.backend_slot(POD)?,
    };
    assert_eq!(https_flow(lb)?, Some(chosen));
    let pod = SocketAddrV4::new(POD, HTTPS_TARGET);
    assert_reply_flow(lb, pod, PROTO_TCP, vip(HTTPS))
}

/// Asserts `input` passed untouched, counted under `reason` alone.
fn assert_passes_untouched(lb: &mut Dataplane, input: &[u8], reason: u32) -> Result<()> {
    assert_untouched(&lb.xdp(input)?, input);
    lb.expect_reasons(&[(reason, 1)])
}

/// Asserts `input` dropped, counted under `reason` alone.
fn assert_dropped(lb: &mut Dataplane, input: &[u8], reason: u32) -> Result<()> {
    assert_eq!(lb.xdp(input)?.action, XDP_DROP);
    lb.expect_reasons(&[(reason, 1)])
}

/// Asserts a TCP packet DNATed to `pod:port`, everything else as sent by `client`.
fn assert_dnat_tcp(out: &Decoded, client: SocketAddrV4, pod: Ipv4Addr, port: u16) -> Result<()> {
    assert_eq!((out.ip.src(), out.ip.dst()), (*client.ip(), pod));
    let (tcp, payload) = out.ip.tcp()?;
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (client.port(), port)
    );
    assert_eq!(payload, REQUEST);
    Ok(())
}

/// The data plane with the services and `PEER` known as a tunnel peer.
fn with_peer() -> Result<Dataplane> {
    let mut lb = Dataplane::with_services()?;
    lb.add_peer(PEER)?;
    Ok(lb)
}

/// The flow cache entry of `CLIENT`'s HTTPS flow.
fn https_flow(lb: &Dataplane) -> Result<Option<FlowValue>> {
    lb.flow(&flow_key(CLIENT, vip(HTTPS), PROTO_TCP))
}

/// Asserts that replies from `pod` to `CLIENT` are recorded as coming from `service`.
fn assert_reply_flow(
    lb: &Dataplane,
    pod: SocketAddrV4,
    proto: u8,
    service: SocketAddrV4,
) -> Result<()> {
    let reply = reply_key(pod, CLIENT, proto);
    assert_eq!(lb.maps.reply_flows.get(&reply)?, Some(reply_value(service)));
    Ok(())
}

// --- Traffic that is not ours leaves untouched -------------------------------------

#[test]
fn arp_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = packets::arp_request(*CLIENT.ip(), VIP);
    assert_passes_untouched(&mut lb, &input, PASS_NOT_IPV4)
}

#[test]
fn ipv6_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = packets::ipv6_udp_frame(L2::LAN, b"query");
    assert_passes_untouched(&mut lb, &input, PASS_NOT_IPV4)
}

#[test]
fn non_vip_ipv4_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let ssh = SocketAddrV4::new(NODE, 22);
    let input = L2::LAN.ipv4(&packets::tcp(CLIENT, ssh, b"SSH-2.0"));
    assert_passes_untouched(&mut lb, &input, PASS_NOT_VIP)?;
    assert_eq!(lb.vip_stats()?.packets, 0);
    Ok(())
}

/// No VIP, but in [`VIP`]'s prefilter slot: 10 ^ 194 == 192 ^ 8 and 0 ^ 88 == 168 ^ 240.
const SLOT_SHARER: Ipv4Addr = Ipv4Addr::new(10, 0, 194, 88);

#[test]
fn vip_prefilter_slot_shared_with_a_non_vip() -> Result<()> {
    assert_eq!(
        vip_filter::slot(wire(VIP)),
        vip_filter::slot(wire(SLOT_SHARER))
    );
    let mut lb = Dataplane::with_services()?;
    assert_eq!(lb.maps.vips.slot_count(wire(SLOT_SHARER))?, 1);
    // The slot holds a VIP, so the hash lookup decides: not this address.
    let sharer = L2::LAN.ipv4(&packets::tcp(
        CLIENT,
        SocketAddrV4::new(SLOT_SHARER, 443),
        b"x",
    ));
    assert_passes_untouched(&mut lb, &sharer, PASS_NOT_VIP)?;
    let run = lb.xdp(&https_frame(CLIENT))?;
    assert_eq!(run.action, XDP_PASS);
    assert_dnat_tcp(&decode(&run.frame)?, CLIENT, POD, HTTPS_TARGET)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])?;

    // A second VIP in the slot counts once, however often it is written.
    lb.add_vip(SLOT_SHARER, 0)?;
    lb.add_vip(SLOT_SHARER, VIP_F_DROP_UNKNOWN_PORTS)?;
    assert_eq!(lb.maps.vips.slot_count(wire(VIP))?, 2);
    assert_dropped(&mut lb, &sharer, DROP_UNKNOWN_PORT)?;
    // Removing the first VIP (after its ports, as the agent does) leaves the second one
    // found; removing it twice counts once.
    lb.remove_service(vip(HTTPS), PROTO_TCP)?;
    lb.remove_service(vip(DNS), PROTO_UDP)?;
    lb.maps.vips.remove(&wire(VIP))?;
    lb.maps.vips.remove(&wire(VIP))?;
    assert_eq!(lb.maps.vips.slot_count(wire(VIP))?, 1);
    assert_dropped(&mut lb, &sharer, DROP_UNKNOWN_PORT)?;
    assert_passes_untouched(&mut lb, &https_frame(CLIENT), PASS_NOT_VIP)?;
    lb.maps.vips.remove(&wire(SLOT_SHARER))?;
    assert_eq!(lb.maps.vips.slot_count(wire(VIP))?, 0);
    assert_passes_untouched(&mut lb, &sharer, PASS_NOT_VIP)
}

#[test]
fn vlan_tagged_non_vip_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let dns = SocketAddrV4::new(ROUTER, 53);
    let input = L2::LAN
        .tagged(42)
        .ipv4(&packets::udp(CLIENT, dns, b"query"));
    assert_passes_untouched(&mut lb, &input, PASS_NOT_VIP)
}

#[test]
fn vlan_tagged_non_ipv4_and_double_tags_pass_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let tagged_v6 = packets::ipv6_udp_frame(L2::LAN.tagged(42), b"query");
    assert_untouched(&lb.xdp(&tagged_v6)?, &tagged_v6);
    // Q-in-Q around a VIP packet: only one tag is parsed, so it is not IPv4 to us.
    let mut inner_tag = vec![0x00, 0x07, 0x08, 0x00];
    inner_tag.extend_from_slice(&https_packet(CLIENT));
    let double = L2::LAN
        .tagged(42)
        .frame(etherparse::EtherType::VLAN_TAGGED_FRAME, &inner_tag);
    assert_untouched(&lb.xdp(&double)?, &double);
    lb.expect_reasons(&[(PASS_NOT_IPV4, 2)])
}

#[test]
fn truncated_ipv4_header_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let packet = https_packet(CLIENT);
    // Ten bytes of IPv4 header: the destination cannot be read.
    let input = L2::LAN.ipv4(&packet[..10]);
    assert_untouched(&lb.xdp(&input)?, &input);
    let bare = L2::LAN.ipv4(&[]);
    assert_untouched(&lb.xdp(&bare)?, &bare);
    lb.expect_reasons(&[(PASS_NOT_VIP, 2)])
}

// --- VIP frames addressed to another host's MAC -------------------------------------

/// Another node's LAN interface: frames for it reach this node when a switch floods them
/// (its port went down) or a bridge is promiscuous.
const OTHER_NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x03];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// The group address of 224.0.0.1.
const MULTICAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 0x01];

fn sent_to(dst: [u8; 6]) -> L2 {
    L2 { dst, ..L2::LAN }
}

/// Asserts that no packet was counted for the VIP or a backend and no flow recorded.
fn assert_nothing_recorded(lb: &Dataplane, backend: Ipv4Addr) -> Result<()> {
    assert_eq!(lb.vip_stats()?, VipStats::default());
    assert_eq!(lb.backend_stats(backend)?, BackendStats::default());
    assert_eq!(https_flow(lb)?, None);
    let reply = reply_key(SocketAddrV4::new(POD, HTTPS_TARGET), CLIENT, PROTO_TCP);
    assert_eq!(lb.maps.reply_flows.get(&reply)?, None);
    Ok(())
}

#[test]
fn vip_frames_for_another_hosts_mac_pass_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let elsewhere = sent_to(OTHER_NODE_MAC);
    let inputs = [
        elsewhere.ipv4(&https_packet(CLIENT)),
        elsewhere.tagged(42).ipv4(&https_packet(CLIENT)),
        elsewhere.ipv4(&packets::udp(CLIENT, vip(DNS), b"query")),
        ping(elsewhere, 1),
        elsewhere.ipv4(&error_about_reply(CLIENT)),
    ];
    for input in &inputs {
        assert_untouched(&lb.xdp(input)?, input);
    }
    lb.expect_reasons(&[(PASS_NOT_OUR_MAC, inputs.len() as u64)])?;
    assert_nothing_recorded(&lb, POD)?;
    // The same packet sent to this node is served: the MAC alone made the difference.
    assert_eq!(lb.xdp(&https_frame(CLIENT))?.action, XDP_PASS);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

#[test]
fn flooded_vip_frame_is_not_tunnelled() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    let input = sent_to(OTHER_NODE_MAC).ipv4(&https_packet(CLIENT));
    assert_untouched(&lb.xdp_on(&input, lan)?, &input);
    lb.expect_reasons(&[(PASS_NOT_OUR_MAC, 1)])?;
    assert_nothing_recorded(&lb, PEER)?;
    assert_eq!(lb.xdp_on(&https_frame(CLIENT), lan)?.action, XDP_TX);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (TX_ENCAP, 1)])
}

#[test]
fn broadcast_and_multicast_vip_frames_pass_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    for dst in [BROADCAST_MAC, MULTICAST_MAC] {
        let input = sent_to(dst).ipv4(&https_packet(CLIENT));
        assert_untouched(&lb.xdp(&input)?, &input);
        let echo = ping(sent_to(dst), 2);
        assert_untouched(&lb.xdp(&echo)?, &echo);
    }
    lb.expect_reasons(&[(PASS_NOT_OUR_MAC, 4)])?;
    assert_nothing_recorded(&lb, POD)
}

#[test]
fn ipip_for_another_hosts_mac_passes_untouched() -> Result<()> {
    let mut lb = with_peer()?;
    for dst in [OTHER_NODE_MAC, BROADCAST_MAC] {
        let l2 = L2 { dst, ..FROM_PEER };
        let input = tunnelled(l2, PEER, &https_packet(CLIENT));
        assert_untouched(&lb.xdp(&input)?, &input);
    }
    lb.expect_reasons(&[(PASS_NOT_OUR_MAC, 2)])?;
    assert_nothing_recorded(&lb, POD)?;
    let input = tunnelled(FROM_PEER, PEER, &https_packet(CLIENT));
    assert_eq!(lb.xdp(&input)?.action, XDP_PASS);
    lb.expect_reasons(&[(PASS_DECAP_DNAT, 1)])
}

#[test]
fn without_a_configured_mac_every_destination_is_served() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_mac([0; 6])?;
    let run = lb.xdp(&sent_to(OTHER_NODE_MAC).ipv4(&https_packet(CLIENT)))?;
    assert_eq!(run.action, XDP_PASS);
    assert_dnat_tcp(&decode(&run.frame)?, CLIENT, POD, HTTPS_TARGET)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

// --- Sanity checks on VIP traffic -----------------------------------------------------

#[test]
fn vip_packet_cut_short_is_dropped_as_malformed() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let mut input = https_frame(CLIENT);
    // The IPv4 total length now claims more than the frame holds.
    input.truncate(14 + 20 + 10);
    let run = lb.xdp(&input)?;
    assert_eq!(run.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_MALFORMED, 1)])?;
    let stats = lb.vip_stats()?;
    assert_eq!((stats.packets, stats.dropped), (1, 1));
    Ok(())
}

#[test]
fn total_length_short_of_the_l4_header_is_malformed() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    // The frame carries a full TCP header, the IPv4 header claims only 10 bytes of it.
    let packet = packets::edit_ipv4(&https_packet(CLIENT), |ip| ip.total_len = 30);
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&packet))?.action, XDP_DROP);
    let udp = packets::edit_ipv4(&packets::udp(CLIENT, vip(DNS), b"q"), |ip| {
        ip.total_len = 24
    });
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&udp))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_MALFORMED, 2)])
}

#[test]
fn ip_options_are_dropped() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let packet = packets::edit_ipv4(&https_packet(CLIENT), |ip| {
        ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).expect("four option bytes");
    });
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&packet))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_IP_OPTIONS, 1)])?;
    assert_eq!(lb.vip_stats()?.dropped, 1);
    Ok(())
}

#[test]
fn fragments_are_dropped() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let first = packets::edit_ipv4(&https_packet(CLIENT), |ip| {
        ip.dont_fragment = false;
        ip.more_fragments = true;
    });
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&first))?.action, XDP_DROP);
    let later = packets::edit_ipv4(&https_packet(CLIENT), |ip| {
        ip.dont_fragment = false;
        ip.fragment_offset = IpFragOffset::try_new(185).expect("offset");
    });
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&later))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_FRAGMENT, 2)])
}

#[test]
fn unknown_port_passes_untouched() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = L2::LAN.ipv4(&packets::tcp(CLIENT, vip(8080), b"x"));
    assert_passes_untouched(&mut lb, &input, PASS_UNKNOWN_PORT)?;
    assert_eq!(lb.vip_stats()?.packets, 1);
    Ok(())
}

#[test]
fn unknown_port_is_dropped_when_the_vip_says_so() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.add_vip(VIP, VIP_F_DROP_UNKNOWN_PORTS)?;
    let input = L2::LAN.ipv4(&packets::udp(CLIENT, vip(5353), b"x"));
    assert_dropped(&mut lb, &input, DROP_UNKNOWN_PORT)?;
    assert_eq!(lb.vip_stats()?.dropped, 1);
    // A known port of the same VIP is still served.
    assert_eq!(lb.xdp(&https_frame(CLIENT))?.action, XDP_PASS);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

#[test]
fn other_protocols_to_a_vip_are_dropped() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let gre = packets::ipv4(*CLIENT.ip(), VIP, 47, &[0; 16]);
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&gre))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_UNSUPPORTED_PROTO, 1)])
}

#[test]
fn other_icmp_to_a_vip_is_dropped() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let timestamp = Icmpv4Type::Unknown {
        type_u8: 13,
        code_u8: 0,
        bytes5to8: [0, 1, 0, 1],
    };
    let input = L2::LAN.ipv4(&packets::icmp(*CLIENT.ip(), VIP, timestamp, &[0; 12]));
    assert_eq!(lb.xdp(&input)?.action, XDP_DROP);
    // An error quoting a packet the VIP did not send is not ours to steer.
    let other = Ipv4Addr::new(192, 168, 8, 241);
    let foreign = packets::tcp(SocketAddrV4::new(other, HTTPS), CLIENT, b"x");
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let error = L2::LAN.ipv4(&packets::icmp(ROUTER, VIP, kind, &foreign));
    assert_eq!(lb.xdp(&error)?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_UNSUPPORTED_PROTO, 2)])?;
    assert_eq!(lb.vip_stats()?.dropped, 2);
    Ok(())
}

// --- ICMP answered in XDP ----------------------------------------------------------

fn ping(l2: L2, seq: u16) -> Vec<u8> {
    l2.ipv4(&packets::echo_request(
        *CLIENT.ip(),
        VIP,
        0x4242,
        seq,
        b"are you there?",
    ))
}

/// Asserts `run` sent back out the way a frame sent over `l2` came, from the VIP to
/// `CLIENT`, and decodes it.
fn decode_answer(run: &Run, l2: L2) -> Result<Decoded> {
    assert_eq!(run.action, XDP_TX);
    let out = decode(&run.frame)?;
    let back = L2 {
        src: l2.dst,
        dst: l2.src,
        vlan: l2.vlan,
    };
    assert_eq!(out.l2(), back);
    assert_eq!((out.ip.src(), out.ip.dst()), (VIP, *CLIENT.ip()));
    Ok(out)
}

fn assert_echo_reply(run: &Run, l2: L2, seq: u16) -> Result<()> {
    let out = decode_answer(run, l2)?;
    assert_eq!(out.ip.header.time_to_live, 64);
    let (icmp, payload) = out.ip.icmp()?;
    assert_eq!(
        icmp.icmp_type,
        Icmpv4Type::EchoReply(IcmpEchoHeader { id: 0x4242, seq })
    );
    assert_eq!(payload, b"are you there?");
    Ok(())
}

#[test]
fn echo_request_to_a_vip_is_answered() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let run = lb.xdp(&ping(L2::LAN, 1))?;
    assert_echo_reply(&run, L2::LAN, 1)?;
    lb.expect_reasons(&[(TX_ICMP_ECHO_REPLY, 1)])?;
    let stats = lb.vip_stats()?;
    assert_eq!(
        (stats.packets, stats.icmp_replies, stats.dropped),
        (1, 1, 0)
    );
    Ok(())
}

#[test]
fn echo_reply_keeps_the_vlan_tag() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let l2 = L2::LAN.tagged(300);
    assert_echo_reply(&lb.xdp(&ping(l2, 9))?, l2, 9)?;
    lb.expect_reasons(&[(TX_ICMP_ECHO_REPLY, 1)])
}

#[test]
fn echo_replies_are_rate_limited() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    // Three a second: five back-to-back pings (well under a millisecond apart, far
    // less than the 333 ms a new token takes) get three answers.
    lb.configure(MTU, 3)?;
    let _pinned = OnOneCpu::pin()?;
    let actions: Vec<u32> = (0..5)
        .map(|seq| lb.xdp(&ping(L2::LAN, seq)).map(|run| run.action))
        .collect::<Result<_>>()?;
    assert_eq!(actions, [XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP]);
    lb.expect_reasons(&[(TX_ICMP_ECHO_REPLY, 3), (DROP_ICMP_RATE_LIMITED, 2)])?;
    let stats = lb.vip_stats()?;
    assert_eq!((stats.icmp_replies, stats.dropped), (3, 2));
    Ok(())
}

fn oversized(df: bool) -> Vec<u8> {
    // 1500 bytes of IPv4: 20 more would exceed the 1500-byte LAN MTU.
    let packet = packets::tcp(CLIENT, vip(HTTPS), &[0xab; 1460]);
    packets::edit_ipv4(&packet, |ip| ip.dont_fragment = df)
}

fn assert_frag_needed(run: &Run, l2: L2, original: &[u8]) -> Result<()> {
    let out = decode_answer(run, l2)?;
    assert_eq!(run.frame.len(), l2.header_len() + 20 + 8 + 20 + 8);
    let (icmp, _) = out.ip.icmp()?;
    let expected = DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: (MTU - 20) as u16,
    };
    assert_eq!(icmp.icmp_type, Icmpv4Type::DestinationUnreachable(expected));
    let (quoted, first) = out.ip.quote()?;
    assert_eq!(quoted.to_bytes().as_slice(), &original[..20]);
    assert_eq!(first, original[20..28]);
    Ok(())
}

#[test]
fn oversized_df_packet_gets_fragmentation_needed() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let original = oversized(true);
    let run = lb.xdp(&L2::LAN.ipv4(&original))?;
    assert_frag_needed(&run, L2::LAN, &original)?;
    lb.expect_reasons(&[(TX_ICMP_FRAG_NEEDED, 1)])?;
    assert_eq!(lb.vip_stats()?.icmp_replies, 1);
    Ok(())
}

#[test]
fn fragmentation_needed_keeps_the_vlan_tag() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let original = oversized(true);
    let l2 = L2::LAN.tagged(12);
    assert_frag_needed(&lb.xdp(&l2.ipv4(&original))?, l2, &original)?;
    lb.expect_reasons(&[(TX_ICMP_FRAG_NEEDED, 1)])
}

#[test]
fn oversized_packet_without_df_is_dropped() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&oversized(false)))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_TOO_BIG, 1)])?;
    assert_eq!(lb.vip_stats()?.dropped, 1);
    Ok(())
}

#[test]
fn packet_that_fits_the_tunnel_exactly_is_forwarded() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let packet = packets::tcp(CLIENT, vip(HTTPS), &[0xab; 1440]);
    assert_eq!(packet.len() as u32, MTU - 20);
    assert_eq!(lb.xdp(&L2::LAN.ipv4(&packet))?.action, XDP_PASS);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

// --- Local delivery ------------------------------------------------------------------

#[test]
fn tcp_to_a_local_pod_is_dnatted_and_recorded() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = https_frame(CLIENT);
    let run = lb.xdp(&input)?;
    assert_eq!(run.action, XDP_PASS);
    assert_eq!(run.frame.len(), input.len());
    let out = decode(&run.frame)?;
    assert_eq!(out.l2(), L2::LAN);
    assert_dnat_tcp(&out, CLIENT, POD, HTTPS_TARGET)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])?;

    assert_https_flow_to_pod(&lb, wire(NODE))?;
    let backend = lb.backend_stats(POD)?;
    assert_eq!((backend.packets, backend.bytes), (1, input.len() as u64));
    let stats = lb.vip_stats()?;
    assert_eq!(
        (
            stats.packets,
            stats.bytes,
            stats.delivered_local,
            stats.encapsulated
        ),
        (1, input.len() as u64, 1, 0)
    );
    Ok(())
}

#[test]
fn udp_to_a_local_pod_is_dnatted_with_its_checksum() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = L2::LAN.ipv4(&packets::udp(CLIENT, vip(DNS), b"\x12\x34 query"));
    let run = lb.xdp(&input)?;
    assert_eq!(run.action, XDP_PASS);
    let out = decode(&run.frame)?;
    assert_eq!(out.ip.dst(), POD);
    let (udp, payload) = out.ip.udp()?;
    assert_ne!(udp.checksum, 0);
    assert_eq!(
        (udp.source_port, udp.destination_port),
        (CLIENT.port(), DNS_TARGET)
    );
    assert_eq!(payload, b"\x12\x34 query");
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])?;
    assert_reply_flow(&lb, SocketAddrV4::new(POD, DNS_TARGET), PROTO_UDP, vip(DNS))?;
    Ok(())
}

#[test]
fn udp_without_checksum_keeps_none() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let input = L2::LAN.ipv4(&packets::udp_no_checksum(CLIENT, vip(DNS), b"query"));
    let run = lb.xdp(&input)?;
    assert_eq!(run.action, XDP_PASS);
    let (udp, _) = decode(&run.frame)?.ip.udp()?;
    assert_eq!((udp.destination_port, udp.checksum), (DNS_TARGET, 0));
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

#[test]
fn target_port_zero_keeps_the_service_port() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.add_service(vip(HTTPS), PROTO_TCP, 0, HTTPS_SLOT, 0)?;
    let out = decode(&lb.xdp(&https_frame(CLIENT))?.frame)?;
    assert_dnat_tcp(&out, CLIENT, POD, HTTPS)?;
    assert_reply_flow(&lb, SocketAddrV4::new(POD, HTTPS), PROTO_TCP, vip(HTTPS))?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])
}

#[test]
fn local_only_service_is_delivered_here_and_never_tunnelled() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.add_service(
        vip(HTTPS),
        PROTO_TCP,
        HTTPS_TARGET,
        HTTPS_SLOT,
        SERVICE_F_LOCAL_ONLY,
    )?;
    // The node ring would send the flow elsewhere; externalTrafficPolicy Local wins.
    lb.set_node_ring(HTTPS_SLOT, &[PEER])?;
    let run = lb.xdp(&https_frame(CLIENT))?;
    assert_eq!(run.action, XDP_PASS);
    assert_dnat_tcp(&decode(&run.frame)?, CLIENT, POD, HTTPS_TARGET)?;
    lb.expect_reasons(&[(PASS_LOCAL_DNAT, 1)])
}

#[test]
fn empty_rings_drop_with_no_backend() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_node_ring(HTTPS_SLOT, &[])?;
    assert_eq!(lb.xdp(&https_frame(CLIENT))?.action, XDP_DROP);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (DROP_NO_BACKEND, 1)])?;
    // This node chosen, but no local pod.
    lb.set_node_ring(HTTPS_SLOT, &[NODE])?;
    lb.set_pod_ring(HTTPS_SLOT, &[])?;
    assert_eq!(lb.xdp(&https_frame(client_port(40001)))?.action, XDP_DROP);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (DROP_NO_BACKEND, 1)])?;
    assert_eq!(lb.vip_stats()?.dropped, 2);
    Ok(())
}

#[test]
fn pod_choice_survives_a_pod_ring_change() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, POD);
    lb.set_pod_ring(HTTPS_SLOT, &[POD2])?;
    // The established flow stays on its pod, a new one follows the new ring.
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, POD);
    assert_eq!(outer_dst(&lb.xdp(&https_frame(client_port(40001)))?)?, POD2);
    lb.expect_reasons(&[
        (FLOW_CACHE_HIT, 1),
        (FLOW_CACHE_MISS, 2),
        (PASS_LOCAL_DNAT, 3),
    ])
}

// --- Tunnelling to the backend node --------------------------------------------------

/// The data plane with HTTPS flows going to `PEER`, reachable on `lan0` through a
/// static neighbour entry. Returns `lan0`'s index.
fn towards_peer() -> Result<(Dataplane, u32)> {
    towards_peer_via(Some(NEXT_HOP_MAC))
}

/// As [`towards_peer`], with `next_hop` (if any) as `PEER`'s neighbour entry.
fn towards_peer_via(next_hop: Option<[u8; 6]>) -> Result<(Dataplane, u32)> {
    let mut lb = Dataplane::with_services()?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER])?;
    let lan = lb.add_link("lan0", NODE, PEER, next_hop)?;
    Ok((lb, lan))
}

/// Asserts `inner` wrapped in IPIP from this node to `node`, the outer header built
/// from the inner one.
fn assert_encapsulated(out: &Decoded, node: Ipv4Addr, inner: &[u8]) -> Result<()> {
    let outer = &out.ip.header;
    let inner_header = packets::Ip::decode(inner)?.header;
    assert_eq!((out.ip.src(), out.ip.dst()), (NODE, node));
    assert_eq!(outer.protocol, IpNumber::IPV4);
    assert_eq!(outer.time_to_live, 64);
    assert_eq!(outer.header_len(), 20);
    assert_eq!(usize::from(outer.total_len), inner.len() + 20);
    assert_eq!(outer.dont_fragment, inner_header.dont_fragment);
    assert_eq!(outer.dscp, inner_header.dscp);
    assert_eq!(
        out.ip.payload, inner,
        "the inner packet travels bit for bit"
    );
    Ok(())
}

/// Asserts `inner`, sent over `vlan`, left with `action` through `link` towards the next
/// hop, encapsulated for `node`.
fn assert_sent_on(
    lb: &Dataplane,
    run: &Run,
    (action, link, vlan): (u32, &str, Option<u16>),
    node: Ipv4Addr,
    inner: &[u8],
) -> Result<()> {
    assert_eq!(run.action, action);
    let out = decode(&run.frame)?;
    let hop = L2 {
        src: lb.mac(link)?,
        dst: NEXT_HOP_MAC,
        vlan,
    };
    assert_eq!(out.l2(), hop);
    assert_encapsulated(&out, node, inner)
}

#[test]
fn remote_flow_is_encapsulated_and_sent_back_out() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    let inner = packets::edit_ipv4(&https_packet(CLIENT), |ip| {
        ip.dscp = IpDscp::try_new(46).expect("EF");
    });
    let input = L2::LAN.ipv4(&inner);
    let run = lb.xdp_on(&input, lan)?;
    assert_sent_on(&lb, &run, (XDP_TX, "lan0", None), PEER, &inner)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (TX_ENCAP, 1)])?;
    let backend = lb.backend_stats(PEER)?;
    assert_eq!((backend.packets, backend.bytes), (1, input.len() as u64));
    let stats = lb.vip_stats()?;
    assert_eq!((stats.encapsulated, stats.delivered_local), (1, 0));
    assert_eq!(
        https_flow(&lb)?,
        Some(FlowValue {
            node: wire(PEER),
            node_slot: lb.backend_slot(PEER)?,
            ..FlowValue::default()
        })
    );
    Ok(())
}

#[test]
fn encapsulation_keeps_the_vlan_tag() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    let inner = https_packet(CLIENT);
    let run = lb.xdp_on(&L2::LAN.tagged(99).ipv4(&inner), lan)?;
    assert_sent_on(&lb, &run, (XDP_TX, "lan0", Some(99)), PEER, &inner)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (TX_ENCAP, 1)])
}

#[test]
fn node_behind_another_interface_is_redirected() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    let far_node = Ipv4Addr::new(10, 1, 0, 2);
    lb.add_link(
        "lan1",
        Ipv4Addr::new(10, 1, 0, 1),
        far_node,
        Some(NEXT_HOP_MAC),
    )?;
    lb.set_node_ring(HTTPS_SLOT, &[far_node])?;
    let inner = https_packet(CLIENT);
    let run = lb.xdp_on(&L2::LAN.ipv4(&inner), lan)?;
    assert_sent_on(&lb, &run, (XDP_REDIRECT, "lan1", None), far_node, &inner)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (TX_ENCAP, 1)])
}

#[test]
fn without_a_neighbour_the_kernel_forwards_the_encapsulated_packet() -> Result<()> {
    let (mut lb, lan) = towards_peer_via(None)?;
    let inner = https_packet(CLIENT);
    let run = lb.xdp_on(&L2::LAN.ipv4(&inner), lan)?;
    assert_eq!(run.action, XDP_PASS);
    let out = decode(&run.frame)?;
    assert_eq!(out.l2(), L2::LAN, "the original MACs stay for the kernel");
    assert_encapsulated(&out, PEER, &inner)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])?;
    assert_eq!(lb.vip_stats()?.encapsulated, 1);
    Ok(())
}

#[test]
fn flow_stays_on_its_node_after_the_ring_changes() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER])?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER2])?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER);
    lb.expect_reasons(&[(FLOW_CACHE_HIT, 1), (PASS_FIB_FALLBACK, 1)])?;
    assert_eq!(
        outer_dst(&lb.xdp(&https_frame(client_port(40001)))?)?,
        PEER2
    );
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])
}

#[test]
fn draining_node_keeps_its_flows_until_it_is_gone() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER])?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER);
    lb.set_node_ring(HTTPS_SLOT, &[PEER2])?;
    lb.set_backend(PEER, BACKEND_DRAINING)?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER);
    lb.expect_reasons(&[
        (FLOW_CACHE_MISS, 1),
        (FLOW_CACHE_HIT, 1),
        (PASS_FIB_FALLBACK, 2),
    ])?;
    lb.remove_backend(PEER)?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER2);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])?;
    assert_eq!(https_flow(&lb)?.map(|flow| flow.node), Some(wire(PEER2)));
    Ok(())
}

#[test]
fn a_reused_backend_slot_does_not_inherit_flows_or_counters() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER])?;
    assert_eq!(outer_dst(&lb.xdp(&https_frame(CLIENT))?)?, PEER);
    let slot = lb.backend_slot(PEER)?;
    lb.remove_backend(PEER)?;
    lb.set_node_ring(HTTPS_SLOT, &[PEER2])?;
    assert_eq!(lb.backend_slot(PEER2)?, slot, "the freed slot is reused");
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])?;
    let input = https_frame(CLIENT);
    assert_eq!(outer_dst(&lb.xdp(&input)?)?, PEER2);
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_FIB_FALLBACK, 1)])?;
    let counted = lb.backend_stats(PEER2)?;
    assert_eq!((counted.packets, counted.bytes), (1, input.len() as u64));
    Ok(())
}

#[test]
fn a_changed_next_hop_is_picked_up_within_the_cache_lifetime() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    // The cache is per CPU.
    let _pinned = OnOneCpu::pin()?;
    let input = https_frame(CLIENT);
    let next_hop = |lb: &mut Dataplane| -> Result<[u8; 6]> {
        let run = lb.xdp_on(&input, lan)?;
        assert_eq!(run.action, XDP_TX);
        Ok(decode(&run.frame)?.l2().dst)
    };
    let asked = Instant::now();
    assert_eq!(next_hop(&mut lb)?, NEXT_HOP_MAC);
    lb.set_neighbour("lan0", PEER, MOVED_HOP_MAC)?;
    let cached = next_hop(&mut lb)?;
    // 25 jiffies are 25 ms at HZ=1000: only a run surely inside that can tell.
    if asked.elapsed() < Duration::from_millis(20) {
        assert_eq!(cached, NEXT_HOP_MAC, "the FIB's answer is reused");
    }
    let deadline = asked + Duration::from_secs(1);
    while next_hop(&mut lb)? != MOVED_HOP_MAC {
        assert!(Instant::now() < deadline, "the new neighbour is never used");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

// --- Receiving from the tunnel -------------------------------------------------------

#[test]
fn ipip_from_a_stranger_is_dropped() -> Result<()> {
    let mut lb = with_peer()?;
    let stranger = Ipv4Addr::new(10, 0, 0, 66);
    let input = tunnelled(FROM_PEER, stranger, &https_packet(CLIENT));
    assert_dropped(&mut lb, &input, DROP_IPIP_STRANGER)?;
    assert_eq!(lb.vip_stats()?.packets, 0);
    Ok(())
}

#[test]
fn ipip_for_another_address_passes_untouched() -> Result<()> {
    let mut lb = with_peer()?;
    let input = L2::LAN.ipv4(&packets::ipip(PEER, PEER2, &https_packet(CLIENT)));
    assert_passes_untouched(&mut lb, &input, PASS_NOT_VIP)
}

#[test]
fn ipip_around_non_vip_traffic_is_dropped() -> Result<()> {
    let mut lb = with_peer()?;
    let web = SocketAddrV4::new(ROUTER, 80);
    let input = tunnelled(FROM_PEER, PEER, &packets::tcp(CLIENT, web, b"x"));
    assert_dropped(&mut lb, &input, DROP_IPIP_NOT_VIP)
}

#[test]
fn tunnelled_flow_is_decapsulated_and_dnatted_here() -> Result<()> {
    let mut lb = with_peer()?;
    // Even if this node's own ring points elsewhere, a tunnelled packet is never
    // tunnelled again.
    lb.set_node_ring(HTTPS_SLOT, &[PEER2])?;
    for l2 in [FROM_PEER, FROM_PEER.tagged(5)] {
        let input = tunnelled(l2, PEER, &https_packet(CLIENT));
        let run = lb.xdp(&input)?;
        assert_eq!(run.action, XDP_PASS);
        assert_eq!(run.frame.len(), input.len() - 20);
        let out = decode(&run.frame)?;
        assert_eq!(out.l2(), l2);
        assert_dnat_tcp(&out, CLIENT, POD, HTTPS_TARGET)?;
    }
    lb.expect_reasons(&[(PASS_DECAP_DNAT, 2)])?;
    assert_https_flow_to_pod(&lb, 0)?;
    let stats = lb.vip_stats()?;
    assert_eq!((stats.packets, stats.delivered_local), (2, 2));
    Ok(())
}

#[test]
fn tunnelled_packet_to_an_unknown_port_is_dropped() -> Result<()> {
    let mut lb = with_peer()?;
    let input = tunnelled(FROM_PEER, PEER, &packets::udp(CLIENT, vip(9999), b"x"));
    assert_dropped(&mut lb, &input, DROP_UNKNOWN_PORT)
}

#[test]
fn tunnelled_packets_pass_the_same_sanity_checks() -> Result<()> {
    let mut lb = with_peer()?;
    let fragment = packets::edit_ipv4(&https_packet(CLIENT), |ip| {
        ip.dont_fragment = false;
        ip.more_fragments = true;
    });
    assert_eq!(
        lb.xdp(&tunnelled(FROM_PEER, PEER, &fragment))?.action,
        XDP_DROP
    );
    let gre = packets::ipv4(*CLIENT.ip(), VIP, 47, &[0; 16]);
    assert_eq!(lb.xdp(&tunnelled(FROM_PEER, PEER, &gre))?.action, XDP_DROP);
    lb.expect_reasons(&[(DROP_FRAGMENT, 1), (DROP_UNSUPPORTED_PROTO, 1)])
}

// --- ICMP errors about our replies ---------------------------------------------------

/// Asserts an ICMP error DNATed to `pod`: the outer destination and the quoted reply's
/// source address and port.
fn assert_steered_error(run: &Run, pod: Ipv4Addr) -> Result<()> {
    assert_eq!(run.action, XDP_PASS);
    let out = decode(&run.frame)?;
    assert_eq!((out.ip.src(), out.ip.dst()), (ROUTER, pod));
    let (quoted, first) = out.ip.quote()?;
    assert_eq!(
        (
            Ipv4Addr::from(quoted.source),
            Ipv4Addr::from(quoted.destination)
        ),
        (pod, *CLIENT.ip())
    );
    assert_eq!(quoted_ports(&first), (HTTPS_TARGET, CLIENT.port()));
    Ok(())
}

#[test]
fn icmp_error_about_a_reply_reaches_the_flows_pod() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    lb.set_pod_ring(HTTPS_SLOT, &[POD, POD2])?;
    let pod = outer_dst(&lb.xdp(&https_frame(CLIENT))?)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (PASS_LOCAL_DNAT, 1)])?;
    let run = lb.xdp(&L2::LAN.ipv4(&error_about_reply(CLIENT)))?;
    assert_steered_error(&run, pod)?;
    lb.expect_reasons(&[
        (FLOW_CACHE_HIT, 1),
        (PASS_LOCAL_DNAT, 1),
        (ICMP_ERROR_STEERED, 1),
    ])
}

#[test]
fn icmp_error_follows_its_flow_to_the_backend_node() -> Result<()> {
    let (mut lb, lan) = towards_peer()?;
    let error = error_about_reply(CLIENT);
    let run = lb.xdp_on(&L2::LAN.ipv4(&error), lan)?;
    assert_eq!(run.action, XDP_TX);
    assert_encapsulated(&decode(&run.frame)?, PEER, &error)?;
    lb.expect_reasons(&[(FLOW_CACHE_MISS, 1), (TX_ENCAP, 1), (ICMP_ERROR_STEERED, 1)])?;
    // The forward flow hashes to the same cache entry.
    assert_eq!(lb.xdp_on(&https_frame(CLIENT), lan)?.action, XDP_TX);
    lb.expect_reasons(&[(FLOW_CACHE_HIT, 1), (TX_ENCAP, 1)])
}

#[test]
fn tunnelled_icmp_error_is_dnatted_to_the_pod() -> Result<()> {
    let mut lb = with_peer()?;
    let input = tunnelled(FROM_PEER, PEER, &error_about_reply(CLIENT));
    let run = lb.xdp(&input)?;
    assert_steered_error(&run, POD)?;
    assert_eq!(decode(&run.frame)?.l2(), FROM_PEER);
    lb.expect_reasons(&[(PASS_DECAP_DNAT, 1), (ICMP_ERROR_STEERED, 1)])
}

#[test]
fn icmp_error_to_an_unknown_port_follows_the_vip_flag() -> Result<()> {
    let mut lb = Dataplane::with_services()?;
    let reply = packets::udp(vip(9999), CLIENT, b"x");
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let input = L2::LAN.ipv4(&packets::icmp(ROUTER, VIP, kind, &reply));
    assert_passes_untouched(&mut lb, &input, PASS_UNKNOWN_PORT)?;
    lb.add_vip(VIP, VIP_F_DROP_UNKNOWN_PORTS)?;
    assert_dropped(&mut lb, &input, DROP_UNKNOWN_PORT)
}
