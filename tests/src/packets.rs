//! Frames for the packet fixtures: built with etherparse, and decoded back with every
//! checksum verified, so a fixture fails on a wrong checksum as surely as on a wrong
//! field.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, Result, bail, ensure};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, PacketBuilder,
    SingleVlanHeader, TcpHeader, TcpOptionElement, UdpHeader, VlanId, VlanPcp,
};
use lb_common::checksum::{fold, sum_words};

/// A client's (or the LAN router's) MAC address.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];
/// The MAC address of the LAN interface of the node under test.
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];

const TTL: u8 = 64;

/// Ethernet addressing of a frame, with an optional 802.1Q tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan: Option<u16>,
}

impl L2 {
    /// From a client on the LAN to the node's interface.
    pub const LAN: Self = Self {
        src: CLIENT_MAC,
        dst: NODE_MAC,
        vlan: None,
    };

    pub const fn tagged(self, vlan: u16) -> Self {
        Self {
            vlan: Some(vlan),
            ..self
        }
    }

    /// Length of the Ethernet header and tag.
    pub const fn header_len(&self) -> usize {
        if self.vlan.is_some() { 18 } else { 14 }
    }

    /// `payload` behind this L2 header, announced as `ether_type`.
    pub fn frame(&self, ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
        let first_type = match self.vlan {
            Some(_) => EtherType::VLAN_TAGGED_FRAME,
            None => ether_type,
        };
        let eth = Ethernet2Header {
            source: self.src,
            destination: self.dst,
            ether_type: first_type,
        };
        let mut frame = eth.to_bytes().to_vec();
        if let Some(id) = self.vlan {
            let tag = SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(id).expect("VLAN id below 4096"),
                ether_type,
            };
            frame.extend_from_slice(&tag.to_bytes());
        }
        frame.extend_from_slice(payload);
        frame
    }

    /// An IPv4 packet in a frame.
    pub fn ipv4(&self, packet: &[u8]) -> Vec<u8> {
        self.frame(EtherType::IPV4, packet)
    }
}

/// A MAC address as `ip` and sysfs print it (`02:00:00:00:0b:02`).
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {text:?} is not 6 bytes"))
}

/// A TCP segment (ACK|PSH) carrying `payload`.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut header = TcpHeader::new(src.port(), dst.port(), 1000, 64240);
    header.ack = true;
    header.psh = true;
    header.acknowledgment_number = 5000;
    tcp_with(src, dst, header, payload)
}

/// A client's SYN, the first segment of a connection.
pub fn syn(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut header = TcpHeader::new(src.port(), dst.port(), 1000, 64240);
    header.syn = true;
    tcp_with(src, dst, header, &[])
}

/// A TCP segment with the given header (ports come from the header).
pub fn tcp_with(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    header: TcpHeader,
    payload: &[u8],
) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), TTL)
        .tcp_header(header)
        .write(&mut packet, payload)
        .expect("TCP segment fits");
    packet
}

/// A SYN-ACK whose options carry `mss` after other options, as Linux orders them
/// differently from other stacks: the clamp has to walk the list.
pub fn syn_ack(src: SocketAddrV4, dst: SocketAddrV4, mss: u16) -> Vec<u8> {
    let mut header = TcpHeader::new(src.port(), dst.port(), 7000, 65160);
    header.syn = true;
    header.ack = true;
    header.acknowledgment_number = 1001;
    header
        .set_options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(11, 22),
            TcpOptionElement::MaximumSegmentSize(mss),
        ])
        .expect("options fit");
    tcp_with(src, dst, header, &[])
}

/// A UDP datagram with its checksum.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), TTL)
        .udp(src.port(), dst.port())
        .write(&mut packet, payload)
        .expect("UDP datagram fits");
    packet
}

/// A UDP datagram whose sender computed no checksum (field 0).
pub fn udp_no_checksum(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut packet = udp(src, dst, payload);
    let check = Ipv4Header::MIN_LEN + 6;
    packet[check..check + 2].copy_from_slice(&[0, 0]);
    packet
}

/// An ICMP echo request.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), TTL)
        .icmpv4_echo_request(id, seq)
        .write(&mut packet, payload)
        .expect("echo request fits");
    packet
}

/// Any ICMP message with `payload` after its 8-byte header.
pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, kind: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), TTL)
        .icmpv4(kind)
        .write(&mut packet, payload)
        .expect("ICMP message fits");
    packet
}

/// An IPv4 header of `proto` from `src` to `dst` around `payload`, checksum set.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits IPv4");
    let mut header = Ipv4Header::new(len, TTL, IpNumber(proto), src.octets(), dst.octets())
        .expect("payload fits IPv4");
    header.header_checksum = header.calc_header_checksum();
    let mut packet = header.to_bytes().to_vec();
    packet.extend_from_slice(payload);
    packet
}

/// `inner` in IPv4-in-IPv4 from `src` to `dst`.
pub fn ipip(src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    ipv4(src, dst, IpNumber::IPV4.0, inner)
}

/// `packet` with its IPv4 header edited; the header checksum (and the total length, if
/// the edit changed the header's length) follow the edit.
pub fn edit_ipv4(packet: &[u8], edit: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut header, rest) = Ipv4Header::from_slice(packet).expect("an IPv4 packet");
    let before = header.header_len();
    edit(&mut header);
    let grown = header.header_len() - before;
    header.total_len += u16::try_from(grown).expect("options fit");
    header.header_checksum = header.calc_header_checksum();
    let mut edited = header.to_bytes().to_vec();
    edited.extend_from_slice(rest);
    edited
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    L2 {
        dst: [0xff; 6],
        ..L2::LAN
    }
    .frame(EtherType::ARP, &arp)
}

/// A UDP datagram over IPv6 in a frame.
pub fn ipv6_udp_frame(l2: L2, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    PacketBuilder::ipv6(src, dst, TTL)
        .udp(5353, 53)
        .write(&mut packet, payload)
        .expect("IPv6 datagram fits");
    l2.frame(EtherType::IPV6, &packet)
}

/// An IPv4 packet decoded from a frame, its header checksum verified.
#[derive(Debug)]
pub struct Decoded {
    pub eth: Ethernet2Header,
    pub vlan: Option<SingleVlanHeader>,
    pub ip: Ip,
}

impl Decoded {
    pub fn l2(&self) -> L2 {
        L2 {
            src: self.eth.source,
            dst: self.eth.destination,
            vlan: self.vlan.as_ref().map(|tag| tag.vlan_id.value()),
        }
    }
}

/// Decodes an Ethernet frame (at most one VLAN tag) carrying IPv4.
pub fn decode(frame: &[u8]) -> Result<Decoded> {
    let (eth, rest) = Ethernet2Header::from_slice(frame).context("Ethernet header")?;
    let (vlan, ether_type, rest) = if eth.ether_type == EtherType::VLAN_TAGGED_FRAME {
        let (tag, rest) = SingleVlanHeader::from_slice(rest).context("VLAN tag")?;
        let ether_type = tag.ether_type;
        (Some(tag), ether_type, rest)
    } else {
        (None, eth.ether_type, rest)
    };
    ensure!(ether_type == EtherType::IPV4, "not IPv4: {ether_type:?}");
    Ok(Decoded {
        eth,
        vlan,
        ip: Ip::decode(rest)?,
    })
}

/// An IPv4 header and its payload (cut to the header's total length).
#[derive(Debug)]
pub struct Ip {
    pub header: Ipv4Header,
    pub payload: Vec<u8>,
}

impl Ip {
    /// Decodes `packet`, verifying the header checksum and the total length.
    pub fn decode(packet: &[u8]) -> Result<Self> {
        let (header, rest) = Ipv4Header::from_slice(packet).context("IPv4 header")?;
        ensure!(
            header.header_checksum == header.calc_header_checksum(),
            "bad IPv4 header checksum {:#06x} in {header:?}",
            header.header_checksum
        );
        let payload_len = usize::from(header.total_len) - header.header_len();
        ensure!(
            rest.len() >= payload_len,
            "IPv4 total length beyond the frame"
        );
        Ok(Self {
            header,
            payload: rest[..payload_len].to_vec(),
        })
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.header.source)
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.header.destination)
    }

    fn expect_proto(&self, proto: IpNumber) -> Result<()> {
        ensure!(
            self.header.protocol == proto,
            "protocol {:?}, expected {proto:?}",
            self.header.protocol
        );
        Ok(())
    }

    /// The TCP header and payload, checksum verified.
    pub fn tcp(&self) -> Result<(TcpHeader, Vec<u8>)> {
        self.expect_proto(IpNumber::TCP)?;
        let (tcp, payload) = TcpHeader::from_slice(&self.payload).context("TCP header")?;
        let expected = tcp.calc_checksum_ipv4(&self.header, payload)?;
        ensure!(
            tcp.checksum == expected,
            "bad TCP checksum {:#06x}, expected {expected:#06x}",
            tcp.checksum
        );
        Ok((tcp, payload.to_vec()))
    }

    /// The UDP header and payload, checksum verified unless the sender computed none.
    pub fn udp(&self) -> Result<(UdpHeader, Vec<u8>)> {
        self.expect_proto(IpNumber::UDP)?;
        let (udp, payload) = UdpHeader::from_slice(&self.payload).context("UDP header")?;
        if udp.checksum != 0 {
            let expected = udp.calc_checksum_ipv4(&self.header, payload)?;
            ensure!(
                udp.checksum == expected,
                "bad UDP checksum {:#06x}, expected {expected:#06x}",
                udp.checksum
            );
        }
        Ok((udp, payload.to_vec()))
    }

    /// The (source, destination) ports and the payload of a TCP or UDP packet, its
    /// checksum verified.
    pub fn transport(&self) -> Result<((u16, u16), Vec<u8>)> {
        if self.header.protocol == IpNumber::TCP {
            let (tcp, payload) = self.tcp()?;
            Ok(((tcp.source_port, tcp.destination_port), payload))
        } else {
            let (udp, payload) = self.udp()?;
            Ok(((udp.source_port, udp.destination_port), payload))
        }
    }

    /// The ICMP header and what follows it, checksum verified.
    pub fn icmp(&self) -> Result<(Icmpv4Header, Vec<u8>)> {
        self.expect_proto(IpNumber::ICMP)?;
        ensure!(
            fold(sum_words(&self.payload, 0)) == 0xffff,
            "bad ICMP checksum over {:02x?}",
            self.payload
        );
        let (icmp, rest) = Icmpv4Header::from_slice(&self.payload).context("ICMP header")?;
        Ok((icmp, rest.to_vec()))
    }

    /// The packet inside IPv4-in-IPv4.
    pub fn inner(&self) -> Result<Ip> {
        self.expect_proto(IpNumber::IPV4)?;
        Ip::decode(&self.payload)
    }

    /// The quote of an ICMP error: the offending packet's header (checksum verified)
    /// and the first 8 bytes behind it.
    pub fn quote(&self) -> Result<(Ipv4Header, [u8; 8])> {
        let (_, quoted) = self.icmp()?;
        let (header, rest) = Ipv4Header::from_slice(&quoted).context("quoted IPv4 header")?;
        ensure!(
            header.header_checksum == header.calc_header_checksum(),
            "bad quoted IPv4 header checksum"
        );
        let Some(first) = rest.get(..8) else {
            bail!("quote shorter than header + 8 bytes");
        };
        Ok((header, first.try_into()?))
    }
}

/// Source and destination port of the first 8 bytes of a TCP/UDP header.
pub fn quoted_ports(first: &[u8; 8]) -> (u16, u16) {
    (
        u16::from_be_bytes([first[0], first[1]]),
        u16::from_be_bytes([first[2], first[3]]),
    )
}

/// The MSS option of a TCP header, if any.
pub fn mss(tcp: &TcpHeader) -> Option<u16> {
    tcp.options_iterator().find_map(|option| match option {
        Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
        _ => None,
    })
}
