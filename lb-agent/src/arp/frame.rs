//! ARP-over-Ethernet frames: reading requests, building replies and gratuitous ARP.

use std::net::Ipv4Addr;

use pnet_datalink::MacAddr;
use pnet_packet::{
    Packet as _,
    arp::{ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
};

const ETHERNET_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
/// Ethernet's minimum frame without FCS: ARP frames are padded to it, since not every
/// driver pads short frames itself.
pub(crate) const FRAME_LEN: usize = 60;

pub(crate) type Frame = [u8; FRAME_LEN];

/// What an IPv4-over-Ethernet ARP request asks, and who asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl Request {
    /// An announcement (sender = target address) asks nothing: it tells.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// The request in `frame` if it is an IPv4-over-Ethernet ARP request sent to broadcast or
/// to `own_mac` (a unicast re-check of a cached entry).
pub(crate) fn parse_request(frame: &[u8], own_mac: MacAddr) -> Option<Request> {
    let ethernet = EthernetPacket::new(frame)?;
    let for_us =
        ethernet.get_destination() == MacAddr::broadcast() || ethernet.get_destination() == own_mac;
    if ethernet.get_ethertype() != EtherTypes::Arp || !for_us {
        return None;
    }
    let arp = ArpPacket::new(ethernet.payload())?;
    let ipv4_over_ethernet = arp.get_hardware_type() == ArpHardwareTypes::Ethernet
        && arp.get_protocol_type() == EtherTypes::Ipv4
        && arp.get_hw_addr_len() == 6
        && arp.get_proto_addr_len() == 4;
    (ipv4_over_ethernet && arp.get_operation() == ArpOperations::Request).then(|| Request {
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

/// The unicast answer "`vip` is at `own_mac`" to `request`.
pub(crate) fn reply(own_mac: MacAddr, vip: Ipv4Addr, request: &Request) -> Frame {
    build(Arp {
        destination: request.sender_mac,
        operation: ArpOperations::Reply,
        sender: (own_mac, vip),
        target: (request.sender_mac, request.sender_ip),
    })
}

/// Gratuitous ARP for `vip` in both forms, since hosts differ in which one updates their
/// caches: a request (target MAC zero, RFC 5227) and a reply (target MAC = sender, as
/// `arping -A` sends it), both broadcast with sender = target = `vip`.
pub(crate) fn gratuitous(own_mac: MacAddr, vip: Ipv4Addr) -> [Frame; 2] {
    let announce = |operation, target_mac| {
        build(Arp {
            destination: MacAddr::broadcast(),
            operation,
            sender: (own_mac, vip),
            target: (target_mac, vip),
        })
    };
    [
        announce(ArpOperations::Request, MacAddr::zero()),
        announce(ArpOperations::Reply, own_mac),
    ]
}

struct Arp {
    destination: MacAddr,
    operation: ArpOperation,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
}

fn build(arp: Arp) -> Frame {
    let mut frame = [0; FRAME_LEN];
    let mut ethernet = MutableEthernetPacket::new(&mut frame).expect("frame holds a header");
    ethernet.set_destination(arp.destination);
    ethernet.set_source(arp.sender.0);
    ethernet.set_ethertype(EtherTypes::Arp);
    let mut packet =
        MutableArpPacket::new(&mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_LEN])
            .expect("frame holds an ARP packet");
    packet.set_hardware_type(ArpHardwareTypes::Ethernet);
    packet.set_protocol_type(EtherTypes::Ipv4);
    packet.set_hw_addr_len(6);
    packet.set_proto_addr_len(4);
    packet.set_operation(arp.operation);
    packet.set_sender_hw_addr(arp.sender.0);
    packet.set_sender_proto_addr(arp.sender.1);
    packet.set_target_hw_addr(arp.target.0);
    packet.set_target_proto_addr(arp.target.1);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: MacAddr = MacAddr(0x02, 0, 0, 0, 0x0a, 0x01);
    const CLIENT: MacAddr = MacAddr(0x02, 0, 0, 0, 0x0c, 0x01);
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);

    /// A request as the Linux kernel sends it (42 bytes, unpadded, as seen on veth).
    fn kernel_request(destination: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&CLIENT.octets());
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        frame.extend_from_slice(&CLIENT.octets());
        frame.extend_from_slice(&CLIENT_IP.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&target.octets());
        frame
    }

    #[test]
    fn broadcast_and_unicast_requests_parse() {
        let expected = Request {
            sender_mac: CLIENT,
            sender_ip: CLIENT_IP,
            target_ip: VIP,
        };
        for destination in [[0xff; 6], OWN.octets()] {
            let frame = kernel_request(destination, VIP);
            assert_eq!(parse_request(&frame, OWN), Some(expected));
        }
    }

    #[test]
    fn frames_that_are_not_requests_to_us_are_rejected() {
        let other_host = kernel_request([0x02, 0, 0, 0, 0x0b, 0x01], VIP);
        assert_eq!(parse_request(&other_host, OWN), None);
        let mut reply = kernel_request([0xff; 6], VIP);
        reply[21] = 2;
        assert_eq!(parse_request(&reply, OWN), None);
        let mut ipv6_ethertype = kernel_request([0xff; 6], VIP);
        ipv6_ethertype[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse_request(&ipv6_ethertype, OWN), None);
        let mut wrong_plen = kernel_request([0xff; 6], VIP);
        wrong_plen[19] = 16;
        assert_eq!(parse_request(&wrong_plen, OWN), None);
        let truncated = &kernel_request([0xff; 6], VIP)[..40];
        assert_eq!(parse_request(truncated, OWN), None);
    }

    #[test]
    fn reply_is_unicast_to_the_asker_with_the_vip_at_our_mac() {
        let request = parse_request(&kernel_request([0xff; 6], VIP), OWN).unwrap();
        let frame = reply(OWN, VIP, &request);
        let mut expected = Vec::new();
        expected.extend_from_slice(&CLIENT.octets());
        expected.extend_from_slice(&OWN.octets());
        expected.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        expected.extend_from_slice(&OWN.octets());
        expected.extend_from_slice(&VIP.octets());
        expected.extend_from_slice(&CLIENT.octets());
        expected.extend_from_slice(&CLIENT_IP.octets());
        expected.resize(FRAME_LEN, 0);
        assert_eq!(frame.as_slice(), expected.as_slice());
    }

    #[test]
    fn gratuitous_forms_announce_the_vip_by_broadcast() {
        let [request, reply] = gratuitous(OWN, VIP);
        for (frame, operation, target_mac) in [(request, 1, [0; 6]), (reply, 2, OWN.octets())] {
            assert_eq!(frame[..6], [0xff; 6]);
            assert_eq!(frame[6..12], OWN.octets());
            assert_eq!(frame[20..22], [0, operation]);
            assert_eq!(frame[22..28], OWN.octets());
            assert_eq!(frame[28..32], VIP.octets());
            assert_eq!(frame[32..38], target_mac);
            assert_eq!(frame[38..42], VIP.octets());
            assert!(frame[42..].iter().all(|&byte| byte == 0));
        }
        // An announcement (another node's, after a takeover) is never a question to answer.
        let looped = parse_request(&request, OWN).unwrap();
        assert!(looped.is_gratuitous());
    }
}
