//! BPF_PROG_TEST_RUN fixtures for `tc_reply`: replies of DNATed flows leave as the VIP,
//! with valid checksums and a clamped SYN-ACK MSS; everything else is left alone.
//! Privileged (root); run with `--test-threads=1`.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Result;
use lb_common::{
    reasons::*,
    types::{PROTO_TCP, PROTO_UDP},
};
use testbed::{
    fixture::*,
    packets::{self, CLIENT_MAC, L2, NODE_MAC, decode},
};

/// Replies leave the node towards the client's router.
const OUT: L2 = L2 {
    src: NODE_MAC,
    dst: CLIENT_MAC,
    vlan: None,
};
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

fn pod_https() -> SocketAddrV4 {
    SocketAddrV4::new(POD, HTTPS_TARGET)
}

fn pod_dns() -> SocketAddrV4 {
    SocketAddrV4::new(POD, DNS_TARGET)
}

/// The data plane with the reply flows of one HTTPS and one DNS client recorded.
fn tracking() -> Result<Dataplane> {
    let mut lb = Dataplane::with_services()?;
    let https = reply_key(pod_https(), CLIENT, PROTO_TCP);
    lb.maps
        .reply_flows
        .insert(&https, &reply_value(vip(HTTPS)))?;
    let dns = reply_key(pod_dns(), CLIENT, PROTO_UDP);
    lb.maps.reply_flows.insert(&dns, &reply_value(vip(DNS)))?;
    Ok(lb)
}

fn assert_untouched(run: &Run, input: &[u8]) {
    assert_eq!(run.action, TC_ACT_OK);
    assert_eq!(
        run.frame, input,
        "an untracked frame must leave bit for bit unchanged"
    );
}

#[test]
fn tcp_reply_leaves_as_the_vip() -> Result<()> {
    let mut lb = tracking()?;
    let input = OUT.ipv4(&packets::tcp(pod_https(), CLIENT, RESPONSE));
    let run = lb.tc(&input)?;
    assert_eq!(run.action, TC_ACT_OK);
    let out = decode(&run.frame)?;
    assert_eq!(out.l2(), OUT);
    assert_eq!((out.ip.src(), out.ip.dst()), (VIP, *CLIENT.ip()));
    let (tcp, payload) = out.ip.tcp()?;
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (HTTPS, CLIENT.port())
    );
    assert_eq!(payload, RESPONSE);
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1)])?;
    let stats = lb.vip_stats()?;
    assert_eq!(
        (stats.reply_packets, stats.reply_bytes),
        (1, input.len() as u64)
    );
    Ok(())
}

#[test]
fn udp_reply_leaves_as_the_vip() -> Result<()> {
    let mut lb = tracking()?;
    let input = OUT.ipv4(&packets::udp(pod_dns(), CLIENT, b"\x12\x34 answer"));
    let run = lb.tc(&input)?;
    let out = decode(&run.frame)?;
    assert_eq!(out.ip.src(), VIP);
    let (udp, payload) = out.ip.udp()?;
    assert_ne!(udp.checksum, 0);
    assert_eq!(
        (udp.source_port, udp.destination_port),
        (DNS, CLIENT.port())
    );
    assert_eq!(payload, b"\x12\x34 answer");
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1)])
}

#[test]
fn udp_reply_without_checksum_keeps_none() -> Result<()> {
    let mut lb = tracking()?;
    let input = OUT.ipv4(&packets::udp_no_checksum(pod_dns(), CLIENT, b"answer"));
    let out = decode(&lb.tc(&input)?.frame)?;
    assert_eq!(out.ip.src(), VIP);
    let (udp, _) = out.ip.udp()?;
    assert_eq!((udp.source_port, udp.checksum), (DNS, 0));
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1)])
}

#[test]
fn vlan_tagged_reply_is_rewritten() -> Result<()> {
    let mut lb = tracking()?;
    let l2 = OUT.tagged(42);
    let out = decode(
        &lb.tc(&l2.ipv4(&packets::tcp(pod_https(), CLIENT, RESPONSE)))?
            .frame,
    )?;
    assert_eq!(out.l2(), l2);
    assert_eq!(out.ip.src(), VIP);
    assert_eq!(out.ip.tcp()?.0.source_port, HTTPS);
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1)])
}

#[test]
fn syn_ack_mss_is_clamped_to_fit_the_tunnel() -> Result<()> {
    let mut lb = tracking()?;
    let input = OUT.ipv4(&packets::syn_ack(pod_https(), CLIENT, 1460));
    let out = decode(&lb.tc(&input)?.frame)?;
    let (tcp, _) = out.ip.tcp()?;
    assert_eq!(packets::mss(&tcp), Some((MTU - 60) as u16));
    assert_eq!(tcp.source_port, HTTPS);
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1), (TC_MSS_CLAMPED, 1)])
}

#[test]
fn syn_ack_with_a_small_mss_keeps_it() -> Result<()> {
    let mut lb = tracking()?;
    let input = OUT.ipv4(&packets::syn_ack(pod_https(), CLIENT, 1200));
    let out = decode(&lb.tc(&input)?.frame)?;
    assert_eq!(packets::mss(&out.ip.tcp()?.0), Some(1200));
    lb.expect_reasons(&[(TC_REPLY_REWRITTEN, 1)])
}

#[test]
fn untracked_syn_ack_is_not_clamped() -> Result<()> {
    let mut lb = tracking()?;
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 99), 8080);
    let input = OUT.ipv4(&packets::syn_ack(elsewhere, CLIENT, 1460));
    assert_untouched(&lb.tc(&input)?, &input);
    lb.expect_reasons(&[(TC_PASS_UNTRACKED, 1)])
}

#[test]
fn untracked_replies_pass_untouched() -> Result<()> {
    let mut lb = tracking()?;
    // Same pod, other client port; and the right ports from another pod.
    let other_client = SocketAddrV4::new(*CLIENT.ip(), 40001);
    let a = OUT.ipv4(&packets::tcp(pod_https(), other_client, RESPONSE));
    let b = OUT.ipv4(&packets::tcp(
        SocketAddrV4::new(POD2, HTTPS_TARGET),
        CLIENT,
        RESPONSE,
    ));
    // A UDP reply on the TCP flow's ports.
    let c = OUT.ipv4(&packets::udp(pod_https(), CLIENT, b"x"));
    for input in [a, b, c] {
        assert_untouched(&lb.tc(&input)?, &input);
    }
    lb.expect_reasons(&[(TC_PASS_UNTRACKED, 3)])
}

#[test]
fn non_tcp_udp_traffic_passes_uncounted() -> Result<()> {
    let mut lb = tracking()?;
    let arp = packets::arp_request(NODE, PEER);
    let v6 = packets::ipv6_udp_frame(OUT, b"x");
    let ping = OUT.ipv4(&packets::echo_request(POD, *CLIENT.ip(), 1, 1, b"x"));
    for input in [arp, v6, ping] {
        assert_untouched(&lb.tc(&input)?, &input);
    }
    lb.expect_reasons(&[])
}

#[test]
fn xdp_dnat_and_tc_reply_round_trip() -> Result<()> {
    // No reply flow is preset: the XDP program records it when it DNATs the request.
    let mut lb = Dataplane::with_services()?;
    let request = L2::LAN.ipv4(&packets::tcp(CLIENT, vip(HTTPS), b"GET /"));
    let delivered = decode(&lb.xdp(&request)?.frame)?;
    let pod = SocketAddrV4::new(delivered.ip.dst(), delivered.ip.tcp()?.0.destination_port);
    assert_eq!(pod, pod_https());
    let reply = lb.tc(&OUT.ipv4(&packets::tcp(pod, CLIENT, RESPONSE)))?;
    let out = decode(&reply.frame)?;
    assert_eq!((out.ip.src(), out.ip.tcp()?.0.source_port), (VIP, HTTPS));
    lb.expect_reasons(&[
        (FLOW_CACHE_MISS, 1),
        (PASS_LOCAL_DNAT, 1),
        (TC_REPLY_REWRITTEN, 1),
    ])
}
