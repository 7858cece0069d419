//! Well-formed base frames (built with the fixture builders of `packets`) and the map of
//! their header fields, which the corruption and truncation families work from.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{Icmpv4Type, IpFragOffset, TcpHeader, icmpv4::DestUnreachableHeader};
use lb_common::types::PROTO_TCP;

use super::{
    rng::Rng,
    scenario::{PEERS, SERVICES, STRANGER, Service, TRACKED_CLIENTS, VIPS},
};
use crate::{
    fixture::{MTU, NODE, PEER_MAC, TO_CLIENT},
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

/// The name of room in a header that no corruption touches.
const UNFUZZED: &str = "";

impl Field {
    /// The field of `bits` bits starting `start` bits into its header, in the fewest
    /// whole bytes that hold it.
    const fn at(name: &'static str, start: u32, bits: u32) -> Self {
        let offset = start / 8;
        let end = start + bits;
        let bytes = end.div_ceil(8) - offset;
        Self {
            name,
            offset: offset as usize,
            bytes: bytes as usize,
            shift: (offset + bytes) * 8 - end,
            bits,
        }
    }

    fn is_fuzzed(&self) -> bool {
        self.name != UNFUZZED
    }
}

/// A header as its RFC draws it: each field's name and width in bits, in wire order,
/// written 32 bits a row; the offsets follow from the widths.
const fn layout<const N: usize>(widths: [(&'static str, u32); N]) -> [Field; N] {
    let mut fields = [Field::at(UNFUZZED, 0, 0); N];
    let mut start = 0;
    let mut index = 0;
    while index < N {
        let (name, bits) = widths[index];
        fields[index] = Field::at(name, start, bits);
        start += bits;
        index += 1;
    }
    fields
}

#[rustfmt::skip]
const ETH: &[Field] = &layout([
    ("eth.dst", 48),
    ("eth.src", 48),
    ("eth.type", 16),
]);
#[rustfmt::skip]
const VLAN: &[Field] = &layout([
    ("vlan.pcp_dei", 4), ("vlan.id", 12), ("vlan.type", 16),
]);
#[rustfmt::skip]
const IPV4: &[Field] = &layout([
    ("ip.version", 4), ("ip.ihl", 4), ("ip.tos", 8), ("ip.total_len", 16),
    ("ip.id", 16), ("ip.flags", 3), ("ip.frag_offset", 13),
    ("ip.ttl", 8), ("ip.protocol", 8), ("ip.checksum", 16),
    ("ip.src", 32),
    ("ip.dst", 32),
]);
#[rustfmt::skip]
const TCP: &[Field] = &layout([
    ("tcp.src_port", 16), ("tcp.dst_port", 16),
    ("tcp.seq", 32),
    ("tcp.ack", 32),
    ("tcp.data_offset", 4), ("tcp.reserved", 4), ("tcp.flags", 8), ("tcp.window", 16),
    ("tcp.checksum", 16), ("tcp.urgent", 16),
]);
/// The options `packets::syn_ack` writes: NOP, window scale, SACK permitted,
/// timestamps, then MSS; the shift count, two option kinds and the timestamps' values
/// stay as they are.
#[rustfmt::skip]
const SYN_ACK_OPTIONS: &[Field] = &layout([
    ("tcp.opt.nop", 8), ("tcp.opt.wscale.kind", 8), ("tcp.opt.wscale.len", 8), (UNFUZZED, 8),
    (UNFUZZED, 8), ("tcp.opt.sack_perm.len", 8), (UNFUZZED, 8), ("tcp.opt.timestamp.len", 8),
    (UNFUZZED, 64),
    ("tcp.opt.mss.kind", 8), ("tcp.opt.mss.len", 8), ("tcp.opt.mss.value", 16),
]);
#[rustfmt::skip]
const UDP: &[Field] = &layout([
    ("udp.src_port", 16), ("udp.dst_port", 16),
    ("udp.len", 16), ("udp.checksum", 16),
]);
#[rustfmt::skip]
const ICMP: &[Field] = &layout([
    ("icmp.type", 8), ("icmp.code", 8), ("icmp.checksum", 16),
    ("icmp.rest_hi", 16), ("icmp.rest_lo", 16),
]);
/// The first 8 bytes of a quoted TCP/UDP header.
#[rustfmt::skip]
const QUOTED_L4: &[Field] = &layout([
    ("quote.src_port", 16), ("quote.dst_port", 16),
    ("quote.word1", 32),
]);

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

    /// Its length in bytes: where its last field ends.
    const fn len(self) -> usize {
        let fields = self.fields();
        let last = fields[fields.len() - 1];
        last.offset + last.bytes
    }
}

/// Where a header sits, and which one of its kind it is (`outer`, `inner`, `quote`).
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub header: Header,
    pub offset: usize,
    pub role: &'static str,
}

impl Placed {
    const fn at(header: Header, offset: usize, role: &'static str) -> Self {
        Self {
            header,
            offset,
            role,
        }
    }
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
                .filter(|field| field.is_fuzzed())
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
    let mut headers = vec![Placed::at(Header::Ipv4, l3, role)];
    let mut offset = l3 + IPV4_HLEN;
    for header in l4 {
        headers.push(Placed::at(*header, offset, role));
        offset += header.len();
    }
    headers
}

fn l2_headers(l2: &L2) -> Vec<Placed> {
    let mut headers = vec![Placed::at(Header::Eth, 0, "")];
    if l2.vlan.is_some() {
        headers.push(Placed::at(Header::Vlan, ETH_HLEN, ""));
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
    /// An IPv4 packet carrying the headers `l4`, meant as nothing in particular.
    fn new(bytes: Vec<u8>, l4: &[Header], kind: &'static str) -> Self {
        Self {
            bytes,
            headers: ip_headers(0, "", l4),
            intent: Intent::Other,
            kind,
        }
    }

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
        Packet::new(
            packets::tcp_with(src, dst, header, data),
            &[Header::Tcp],
            "tcp",
        )
    } else {
        let bytes = if rng.one_in(6) {
            packets::udp_no_checksum(src, dst, data)
        } else {
            packets::udp(src, dst, data)
        };
        Packet::new(bytes, &[Header::Udp], "udp")
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
    let bytes = packets::echo_request(
        *client(rng).ip(),
        *rng.pick(&VIPS),
        rng.next_u16(),
        rng.next_u16(),
        &data,
    );
    Packet::new(bytes, &[Header::Icmp], "echo")
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
    let bytes = packets::icmp(ROUTER, service.vip, kind, &reply.bytes);
    let mut error = Packet::new(bytes, &[Header::Icmp], "icmp_error");
    error.headers.extend(ip_headers(
        IPV4_HLEN + ICMP_HLEN,
        "quote",
        &[Header::QuotedL4],
    ));
    error
}

/// A pod's reply to a tracked client, or a SYN-ACK whose MSS may need clamping.
fn reply(rng: &mut Rng) -> Base {
    let service = rng.pick(&SERVICES[..4]);
    let pod = SocketAddrV4::new(*rng.pick(service.pods), service.pod_port());
    let client = *rng.pick(&TRACKED_CLIENTS);
    let l2 = if rng.one_in(4) {
        TO_CLIENT.tagged(7)
    } else {
        TO_CLIENT
    };
    let packet = if service.proto == PROTO_TCP && rng.one_in(2) {
        let mss = if rng.one_in(2) {
            1460
        } else {
            536 + rng.below(9000) as u16
        };
        let options = [Header::Tcp, Header::SynAckOptions];
        Packet::new(packets::syn_ack(pod, client, mss), &options, "syn_ack")
    } else {
        let data = payload(rng);
        let mut packet = transport(rng, pod, client, service.proto, &data);
        packet.kind = "reply";
        packet
    };
    Packet {
        intent: Intent::TrackedReply,
        ..packet
    }
    .framed(l2)
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

#[cfg(test)]
mod tests {
    use super::{Field, Header};

    fn find(header: Header, name: &str) -> (usize, usize, u32, u32) {
        let field: &Field = header
            .fields()
            .iter()
            .find(|field| field.name == name)
            .expect("a field of the header");
        (field.offset, field.bytes, field.shift, field.bits)
    }

    #[test]
    fn layouts_put_every_field_where_the_wire_has_it() {
        let lengths = [
            Header::Eth,
            Header::Vlan,
            Header::Ipv4,
            Header::Tcp,
            Header::SynAckOptions,
            Header::Udp,
            Header::Icmp,
            Header::QuotedL4,
        ]
        .map(Header::len);
        assert_eq!(lengths, [14, 4, 20, 20, 20, 8, 8, 8]);
        assert_eq!(find(Header::Eth, "eth.type"), (12, 2, 0, 16));
        assert_eq!(find(Header::Vlan, "vlan.pcp_dei"), (0, 1, 4, 4));
        assert_eq!(find(Header::Vlan, "vlan.id"), (0, 2, 0, 12));
        assert_eq!(find(Header::Ipv4, "ip.ihl"), (0, 1, 0, 4));
        assert_eq!(find(Header::Ipv4, "ip.flags"), (6, 1, 5, 3));
        assert_eq!(find(Header::Ipv4, "ip.frag_offset"), (6, 2, 0, 13));
        assert_eq!(find(Header::Ipv4, "ip.dst"), (16, 4, 0, 32));
        assert_eq!(find(Header::Tcp, "tcp.data_offset"), (12, 1, 4, 4));
        assert_eq!(find(Header::Tcp, "tcp.urgent"), (18, 2, 0, 16));
        let options = Header::SynAckOptions;
        assert_eq!(find(options, "tcp.opt.sack_perm.len"), (5, 1, 0, 8));
        assert_eq!(find(options, "tcp.opt.timestamp.len"), (7, 1, 0, 8));
        assert_eq!(find(options, "tcp.opt.mss.value"), (18, 2, 0, 16));
        assert_eq!(find(Header::QuotedL4, "quote.word1"), (4, 4, 0, 32));
    }
}
