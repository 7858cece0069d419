//! Well-formed base frames (built with the fixture builders of `packets`) and the map of
//! their header fields, which the corruption and truncation families work from.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{Icmpv4Type, IpFragOffset, TcpHeader, icmpv4::DestUnreachableHeader};
use lb_common::types::PROTO_TCP;

use super::{
    rng::Rng,
    scenario::{PEER_MAC, PEERS, SERVICES, STRANGER, Service, TRACKED_CLIENTS, VIPS},
};
use crate::{
    fixture::{MTU, NODE},
    packets::{self, CLIENT_MAC, L2, NODE_MAC},
};

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const ICMP_HLEN: usize = 8;
/// A LAN router that reports errors about the VIPs' replies.
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

/// One header field: `bits` bits at `shift` of the big-endian integer of `bytes` bytes
/// at `offset` (relative to its header).
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub bytes: usize,
    pub shift: u32,
    pub bits: u32,
}

const fn field(name: &'static str, offset: usize, bytes: usize) -> Field {
    Field {
        name,
        offset,
        bytes,
        shift: 0,
        bits: 8 * bytes as u32,
    }
}

const fn bits(name: &'static str, offset: usize, bytes: usize, shift: u32, bits: u32) -> Field {
    Field {
        name,
        offset,
        bytes,
        shift,
        bits,
    }
}

const ETH: &[Field] = &[
    field("eth.dst", 0, 6),
    field("eth.src", 6, 6),
    field("eth.type", 12, 2),
];
const VLAN: &[Field] = &[
    bits("vlan.pcp_dei", 0, 1, 4, 4),
    bits("vlan.id", 0, 2, 0, 12),
    field("vlan.type", 2, 2),
];
const IPV4: &[Field] = &[
    bits("ip.version", 0, 1, 4, 4),
    bits("ip.ihl", 0, 1, 0, 4),
    field("ip.tos", 1, 1),
    field("ip.total_len", 2, 2),
    field("ip.id", 4, 2),
    bits("ip.flags", 6, 2, 13, 3),
    bits("ip.frag_offset", 6, 2, 0, 13),
    field("ip.ttl", 8, 1),
    field("ip.protocol", 9, 1),
    field("ip.checksum", 10, 2),
    field("ip.src", 12, 4),
    field("ip.dst", 16, 4),
];
const TCP: &[Field] = &[
    field("tcp.src_port", 0, 2),
    field("tcp.dst_port", 2, 2),
    field("tcp.seq", 4, 4),
    field("tcp.ack", 8, 4),
    bits("tcp.data_offset", 12, 1, 4, 4),
    bits("tcp.reserved", 12, 1, 0, 4),
    field("tcp.flags", 13, 1),
    field("tcp.window", 14, 2),
    field("tcp.checksum", 16, 2),
    field("tcp.urgent", 18, 2),
];
/// The options `packets::syn_ack` writes: NOP, window scale, SACK permitted,
/// timestamps, then MSS.
const SYN_ACK_OPTIONS: &[Field] = &[
    field("tcp.opt.nop", 0, 1),
    field("tcp.opt.wscale.kind", 1, 1),
    field("tcp.opt.wscale.len", 2, 1),
    field("tcp.opt.sack_perm.len", 5, 1),
    field("tcp.opt.timestamp.len", 7, 1),
    field("tcp.opt.mss.kind", 16, 1),
    field("tcp.opt.mss.len", 17, 1),
    field("tcp.opt.mss.value", 18, 2),
];
const UDP: &[Field] = &[
    field("udp.src_port", 0, 2),
    field("udp.dst_port", 2, 2),
    field("udp.len", 4, 2),
    field("udp.checksum", 6, 2),
];
const ICMP: &[Field] = &[
    field("icmp.type", 0, 1),
    field("icmp.code", 1, 1),
    field("icmp.checksum", 2, 2),
    field("icmp.rest_hi", 4, 2),
    field("icmp.rest_lo", 6, 2),
];
/// The first 8 bytes of a quoted TCP/UDP header.
const QUOTED_L4: &[Field] = &[
    field("quote.src_port", 0, 2),
    field("quote.dst_port", 2, 2),
    field("quote.word1", 4, 4),
];

/// A header in a frame.
#[derive(Clone, Copy, Debug)]
pub enum Header {
    Eth,
    Vlan,
    Ipv4,
    Tcp,
    SynAckOptions,
    Udp,
    Icmp,
    QuotedL4,
}

impl Header {
    pub const fn fields(self) -> &'static [Field] {
        match self {
            Header::Eth => ETH,
            Header::Vlan => VLAN,
            Header::Ipv4 => IPV4,
            Header::Tcp => TCP,
            Header::SynAckOptions => SYN_ACK_OPTIONS,
            Header::Udp => UDP,
            Header::Icmp => ICMP,
            Header::QuotedL4 => QUOTED_L4,
        }
    }

    const fn len(self) -> usize {
        match self {
            Header::Eth => ETH_HLEN,
            Header::Vlan => 4,
            Header::Ipv4 | Header::Tcp | Header::SynAckOptions => 20,
            Header::Udp | Header::Icmp | Header::QuotedL4 => 8,
        }
    }
}

/// Where a header sits, and which one of its kind it is (`outer`, `inner`, `quote`).
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub header: Header,
    pub offset: usize,
    pub role: &'static str,
}

/// What a base frame is meant to be, so the checks can demand more of well-formed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// TCP/UDP to a service with backends, from the LAN or a peer: must be forwarded.
    Forward,
    /// IPIP from a LAN stranger: must be dropped.
    Stranger,
    /// A pod's reply to a tracked client: TC must rewrite it.
    TrackedReply,
    /// Anything else (echo, ICMP errors, oversized, backend-less, non-VIP).
    Other,
}

/// A well-formed frame and its headers, outermost first.
#[derive(Clone, Debug)]
pub struct Base {
    pub kind: &'static str,
    pub frame: Vec<u8>,
    pub headers: Vec<Placed>,
    pub intent: Intent,
}

impl Base {
    /// Every field of every header, with its absolute offset and qualified by role.
    pub fn fields(&self) -> impl Iterator<Item = (usize, &'static str, Field)> + '_ {
        self.headers.iter().flat_map(|placed| {
            placed
                .header
                .fields()
                .iter()
                .map(move |field| (placed.offset, placed.role, *field))
        })
    }

    /// The end of the innermost header: truncations happen up to here.
    pub fn headers_end(&self) -> usize {
        self.headers
            .iter()
            .map(|placed| placed.offset + placed.header.len())
            .max()
            .unwrap_or(0)
    }
}

/// A random client on the LAN side, outside `TRACKED_CLIENTS`' subnet.
pub fn client(rng: &mut Rng) -> SocketAddrV4 {
    let addr = Ipv4Addr::new(192, 168, 1, 2 + rng.below(250) as u8);
    SocketAddrV4::new(addr, 1024 + rng.below(64512) as u16)
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.one_in(8) {
        rng.below(600)
    } else {
        rng.below(40)
    };
    rng.bytes(len)
}

fn lan_l2(rng: &mut Rng, src: [u8; 6]) -> L2 {
    let l2 = L2 {
        src,
        dst: NODE_MAC,
        vlan: None,
    };
    if rng.one_in(3) {
        l2.tagged(1 + rng.below(4094) as u16)
    } else {
        l2
    }
}

/// Headers of an IPv4 packet at `l3` carrying `l4` at its fixed 20-byte offset.
fn ip_headers(l3: usize, role: &'static str, l4: &[Header]) -> Vec<Placed> {
    let mut headers = vec![Placed {
        header: Header::Ipv4,
        offset: l3,
        role,
    }];
    let mut offset = l3 + IPV4_HLEN;
    for header in l4 {
        headers.push(Placed {
            header: *header,
            offset,
            role,
        });
        offset += header.len();
    }
    headers
}

fn l2_headers(l2: &L2) -> Vec<Placed> {
    let mut headers = vec![Placed {
        header: Header::Eth,
        offset: 0,
        role: "",
    }];
    if l2.vlan.is_some() {
        headers.push(Placed {
            header: Header::Vlan,
            offset: ETH_HLEN,
            role: "",
        });
    }
    headers
}

/// An IPv4 packet and the headers inside it (offsets relative to the packet).
struct Packet {
    bytes: Vec<u8>,
    headers: Vec<Placed>,
    intent: Intent,
    kind: &'static str,
}

impl Packet {
    fn framed(self, l2: L2) -> Base {
        let l3 = l2.header_len();
        let mut headers = l2_headers(&l2);
        headers.extend(self.headers.into_iter().map(|placed| Placed {
            offset: placed.offset + l3,
            ..placed
        }));
        Base {
            kind: self.kind,
            frame: l2.ipv4(&self.bytes),
            headers,
            intent: self.intent,
        }
    }

    /// This packet inside IPv4-in-IPv4 from `from` to this node.
    fn tunnelled(self, from: Ipv4Addr, intent: Intent, kind: &'static str) -> Packet {
        let mut headers = ip_headers(0, "outer", &[]);
        headers.extend(self.headers.into_iter().map(|placed| Placed {
            offset: placed.offset + IPV4_HLEN,
            role: "inner",
            ..placed
        }));
        Packet {
            bytes: packets::ipip(from, NODE, &self.bytes),
            headers,
            intent,
            kind,
        }
    }
}

fn random_tcp_header(rng: &mut Rng, src: u16, dst: u16) -> TcpHeader {
    let mut header = TcpHeader::new(src, dst, rng.next_u32(), rng.next_u16());
    let flags = rng.next_u8();
    header.fin = flags & 0x01 != 0;
    header.syn = flags & 0x02 != 0;
    header.rst = flags & 0x04 != 0;
    header.psh = flags & 0x08 != 0;
    header.ack = flags & 0x10 != 0;
    header.urg = flags & 0x20 != 0;
    header.acknowledgment_number = rng.next_u32();
    header
}

/// A TCP or UDP packet from `src` to `dst`, per `proto`.
fn transport(
    rng: &mut Rng,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    proto: u8,
    data: &[u8],
) -> Packet {
    if proto == PROTO_TCP {
        let header = random_tcp_header(rng, src.port(), dst.port());
        Packet {
            bytes: packets::tcp_with(src, dst, header, data),
            headers: ip_headers(0, "", &[Header::Tcp]),
            intent: Intent::Other,
            kind: "tcp",
        }
    } else {
        let bytes = if rng.one_in(6) {
            packets::udp_no_checksum(src, dst, data)
        } else {
            packets::udp(src, dst, data)
        };
        Packet {
            bytes,
            headers: ip_headers(0, "", &[Header::Udp]),
            intent: Intent::Other,
            kind: "udp",
        }
    }
}

/// A client's packet to a service, DF set at random.
fn to_service(rng: &mut Rng, service: &Service) -> Packet {
    let data = payload(rng);
    let client = client(rng);
    let mut packet = transport(rng, client, service.socket(), service.proto, &data);
    if rng.one_in(2) {
        packet.bytes = packets::edit_ipv4(&packet.bytes, |ip| ip.dont_fragment = true);
    }
    packet.intent = if service.has_backends() {
        Intent::Forward
    } else {
        Intent::Other
    };
    packet
}

/// A packet too big for the tunnel, DF set at random.
fn oversized(rng: &mut Rng, service: &Service) -> Packet {
    let room = MTU as usize - 2 * IPV4_HLEN - 8;
    let extra = rng.below(60);
    let data = rng.bytes(room + 1 + extra);
    let client = client(rng);
    let mut packet = transport(rng, client, service.socket(), service.proto, &data);
    let df = rng.one_in(2);
    packet.bytes = packets::edit_ipv4(&packet.bytes, |ip| ip.dont_fragment = df);
    packet.kind = "oversized";
    packet
}

fn echo(rng: &mut Rng) -> Packet {
    let data = payload(rng);
    Packet {
        bytes: packets::echo_request(
            *client(rng).ip(),
            *rng.pick(&VIPS),
            rng.next_u16(),
            rng.next_u16(),
            &data,
        ),
        headers: ip_headers(0, "", &[Header::Icmp]),
        intent: Intent::Other,
        kind: "echo",
    }
}

/// A router's error about a reply `service` sent to a client.
fn icmp_error(rng: &mut Rng, service: &Service) -> Packet {
    let data = payload(rng);
    let client = client(rng);
    let reply = transport(rng, service.socket(), client, service.proto, &data);
    let kind = if rng.one_in(2) {
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        })
    } else {
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
    };
    let mut headers = ip_headers(0, "", &[Header::Icmp]);
    headers.extend(ip_headers(
        IPV4_HLEN + ICMP_HLEN,
        "quote",
        &[Header::QuotedL4],
    ));
    Packet {
        bytes: packets::icmp(ROUTER, service.vip, kind, &reply.bytes),
        headers,
        intent: Intent::Other,
        kind: "icmp_error",
    }
}

/// A pod's reply to a tracked client, or a SYN-ACK whose MSS may need clamping.
fn reply(rng: &mut Rng) -> Base {
    let service = rng.pick(&SERVICES[..4]);
    let pod = SocketAddrV4::new(*rng.pick(service.pods), service.pod_port());
    let client = *rng.pick(&TRACKED_CLIENTS);
    let l2 = L2 {
        src: NODE_MAC,
        dst: CLIENT_MAC,
        vlan: None,
    };
    let l2 = if rng.one_in(4) { l2.tagged(7) } else { l2 };
    let packet = if service.proto == PROTO_TCP && rng.one_in(2) {
        let mss = if rng.one_in(2) {
            1460
        } else {
            536 + rng.below(9000) as u16
        };
        Packet {
            bytes: packets::syn_ack(pod, client, mss),
            headers: ip_headers(0, "", &[Header::Tcp, Header::SynAckOptions]),
            intent: Intent::TrackedReply,
            kind: "syn_ack",
        }
    } else {
        let data = payload(rng);
        let mut packet = transport(rng, pod, client, service.proto, &data);
        packet.intent = Intent::TrackedReply;
        packet.kind = "reply";
        packet
    };
    packet.framed(l2)
}

/// One well-formed frame of a random kind: VIP flows from the LAN and through the
/// tunnel (from peers and strangers), ICMP, oversized packets, pods' replies.
pub fn base(rng: &mut Rng) -> Base {
    let service = rng.pick(&SERVICES);
    match rng.below(12) {
        0..=3 => to_service(rng, service).framed(lan_l2(rng, CLIENT_MAC)),
        4 => echo(rng).framed(lan_l2(rng, CLIENT_MAC)),
        5 => icmp_error(rng, service).framed(lan_l2(rng, CLIENT_MAC)),
        6 => oversized(rng, service).framed(lan_l2(rng, CLIENT_MAC)),
        7 | 8 => {
            let inner = if rng.one_in(4) {
                icmp_error(rng, service)
            } else {
                to_service(rng, service)
            };
            let intent = inner.intent;
            inner
                .tunnelled(*rng.pick(&PEERS), intent, "ipip_peer")
                .framed(lan_l2(rng, PEER_MAC))
        }
        9 => to_service(rng, service)
            .tunnelled(STRANGER, Intent::Stranger, "ipip_stranger")
            .framed(lan_l2(rng, PEER_MAC)),
        _ => reply(rng),
    }
}

/// A fragment offset in 8-byte units, for the branch family.
pub fn frag_offset(units: u16) -> IpFragOffset {
    IpFragOffset::try_new(units & 0x1fff).expect("13-bit fragment offset")
}
