//! The frame families: well-formed frames, one corrupted field, truncations, random
//! bytes, and the combinations of every branch the parsers take.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{EtherType, Icmpv4Type, Ipv4Options, icmpv4::DestUnreachableHeader};
use lb_common::types::{PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP};

use super::{
    frames::{self, Base, Field, Intent},
    rng::Rng,
    scenario::{PEERS, STRANGER, TRACKED_CLIENTS, VIP2},
};
use crate::{
    fixture::{NODE, POD, VIP},
    packets::{self, L2, NODE_MAC},
};

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and no NIC delivers
/// them.
const MIN_FRAME: usize = 14;

/// How a frame was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Valid,
    Corrupt,
    Truncate,
    Random,
    Branch,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Valid,
        Family::Corrupt,
        Family::Truncate,
        Family::Random,
        Family::Branch,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Valid => "valid",
            Family::Corrupt => "corrupt-field",
            Family::Truncate => "truncate",
            Family::Random => "random",
            Family::Branch => "branch-combo",
        }
    }
}

/// One frame to run, and how it came about (printed on failure).
#[derive(Clone, Debug)]
pub struct Case {
    pub family: Family,
    pub frame: Vec<u8>,
    pub intent: Intent,
    pub kind: &'static str,
    /// The corrupted field (role, name) and its new value.
    pub corrupted: Option<(&'static str, &'static str, u64)>,
}

impl Case {
    fn new(family: Family, frame: Vec<u8>, kind: &'static str) -> Self {
        Self {
            family,
            frame,
            intent: Intent::Other,
            kind,
            corrupted: None,
        }
    }

    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} {} ({} bytes)",
            self.family.name(),
            self.kind,
            self.frame.len()
        );
        if let Some((role, name, value)) = self.corrupted {
            text.push_str(&format!(
                ", {role}{}{name} := {value:#x}",
                if role.is_empty() { "" } else { "." }
            ));
        }
        text
    }
}

/// Makes the cases of a run: family `i % 10` in a fixed mix, so every family gets its
/// share whatever the frame count.
pub struct Generator {
    rng: Rng,
    turn: u64,
}

impl Generator {
    pub const fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            turn: 0,
        }
    }

    pub fn next_case(&mut self) -> Case {
        let turn = self.turn;
        self.turn += 1;
        let rng = &mut self.rng;
        match turn % 10 {
            0 | 1 => valid(frames::base(rng)),
            2..=4 => {
                let base = frames::base(rng);
                corrupt(rng, base, turn / 10)
            }
            5 | 6 => {
                let base = frames::base(rng);
                truncate(rng, base)
            }
            7 => random(rng),
            _ => branch(rng, turn / 10),
        }
    }
}

fn valid(base: Base) -> Case {
    Case {
        intent: base.intent,
        ..Case::new(Family::Valid, base.frame, base.kind)
    }
}

/// One field of `base` set to an edge or random value; the field is picked in turn.
fn corrupt(rng: &mut Rng, mut base: Base, turn: u64) -> Case {
    let fields: Vec<(usize, &'static str, Field)> = base.fields().collect();
    let (offset, role, field) = fields[(turn as usize * 7 + rng.below(7)) % fields.len()];
    let at = offset + field.offset;
    let old = read_field(&base.frame[at..at + field.bytes], &field);
    let max = if field.bits == 64 {
        u64::MAX
    } else {
        (1u64 << field.bits) - 1
    };
    let mut new = match rng.below(6) {
        0 => 0,
        1 => max,
        2 => old.wrapping_add(1) & max,
        3 => old.wrapping_sub(1) & max,
        4 => old ^ (1 << rng.below(field.bits as usize)),
        _ => rng.next_u64() & max,
    };
    if new == old {
        new = old ^ 1;
    }
    write_field(&mut base.frame[at..at + field.bytes], &field, new);
    Case {
        corrupted: Some((role, field.name, new)),
        ..Case::new(Family::Corrupt, base.frame, base.kind)
    }
}

fn read_field(bytes: &[u8], field: &Field) -> u64 {
    (big_endian(bytes) >> field.shift) & value_mask(field)
}

fn write_field(bytes: &mut [u8], field: &Field, value: u64) {
    let mask = value_mask(field) << field.shift;
    let whole = (big_endian(bytes) & !mask) | ((value << field.shift) & mask);
    let len = bytes.len();
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = (whole >> (8 * (len - 1 - i))) as u8;
    }
}

/// The bytes as one big-endian number (at most 8 of them).
fn big_endian(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

/// The field's bits, unshifted.
fn value_mask(field: &Field) -> u64 {
    if field.bits == 64 {
        u64::MAX
    } else {
        (1u64 << field.bits) - 1
    }
}

/// The frame cut anywhere from nothing to a few bytes past its innermost header, so
/// every header boundary and every byte around it comes up.
fn truncate(rng: &mut Rng, mut base: Base) -> Case {
    let cut = (MIN_FRAME + rng.below(base.headers_end() + 5 - MIN_FRAME)).min(base.frame.len());
    base.frame.truncate(cut);
    Case::new(Family::Truncate, base.frame, base.kind)
}

/// Random bytes: bare, behind an Ethernet header to us, or behind a plausible IPv4
/// header to a VIP or (as IPIP from a peer) to this node.
fn random(rng: &mut Rng) -> Case {
    let len = rng.below(100);
    let tail = rng.bytes(len);
    let (frame, kind) = match rng.below(3) {
        0 => (rng.bytes(MIN_FRAME + len), "bytes"),
        1 => (lan(rng).ipv4(&tail), "eth+bytes"),
        _ => {
            let mut header = rng.bytes(20);
            header[0] = 0x45;
            let (proto, src, dst) = match rng.below(4) {
                0 => (PROTO_IPIP, *rng.pick(&PEERS), NODE),
                1 => (PROTO_TCP, Ipv4Addr::from(rng.next_u32()), VIP),
                2 => (PROTO_UDP, Ipv4Addr::from(rng.next_u32()), VIP2),
                _ => (PROTO_ICMP, Ipv4Addr::from(rng.next_u32()), VIP),
            };
            header[9] = proto;
            header[12..16].copy_from_slice(&src.octets());
            header[16..20].copy_from_slice(&dst.octets());
            header.extend_from_slice(&tail);
            (lan(rng).ipv4(&header), "eth+ipv4+bytes")
        }
    };
    Case::new(Family::Random, frame, kind)
}

fn lan(rng: &mut Rng) -> L2 {
    let l2 = L2 {
        src: packets::CLIENT_MAC,
        dst: NODE_MAC,
        vlan: None,
    };
    if rng.one_in(2) { l2.tagged(5) } else { l2 }
}

/// The EtherType chains the parsers tell apart.
const ETHER_CHAINS: usize = 9;
/// Destination MACs: ours, another host's, broadcast.
const MACS: [[u8; 6]; 3] = [NODE_MAC, [0x02, 0, 0, 0, 0x0a, 0x03], [0xff; 6]];
/// Source -> destination pairs: client to each VIP, to this node, to elsewhere, and a
/// pod's reply to a tracked client.
const ADDRESSINGS: usize = 5;
/// TCP, UDP, ICMP, IPIP from a peer, IPIP from a stranger, GRE, ESP, 255.
const PROTOCOLS: usize = 8;
/// None, DF, MF, an offset, MF and an offset.
const FRAGMENTS: usize = 5;
/// IHL 5, 6 and 15 (with options).
const IHLS: usize = 3;
/// A protocol-specific variant: TCP flags, ICMP type, UDP checksum or not.
const VARIANTS: usize = 4;
const COMBINATIONS: u64 =
    (ETHER_CHAINS * MACS.len() * ADDRESSINGS * PROTOCOLS * FRAGMENTS * IHLS * VARIANTS) as u64;

/// Splits `index` into mixed-radix digits.
struct Digits(u64);

impl Digits {
    fn next(&mut self, radix: usize) -> usize {
        let digit = (self.0 % radix as u64) as usize;
        self.0 /= radix as u64;
        digit
    }
}

/// Combination `turn` (cycling) of every branch the XDP and TC parsers take, each
/// frame otherwise well formed (checksums valid).
fn branch(rng: &mut Rng, turn: u64) -> Case {
    let mut digits = Digits(turn % COMBINATIONS);
    let chain = digits.next(ETHER_CHAINS);
    let mac = MACS[digits.next(MACS.len())];
    let addressing = digits.next(ADDRESSINGS);
    let protocol = digits.next(PROTOCOLS);
    let fragment = digits.next(FRAGMENTS);
    let ihl = digits.next(IHLS);
    let variant = digits.next(VARIANTS);
    let (src, dst) = addressing_of(rng, addressing);
    let packet = l4_packet(rng, src, dst, protocol, variant);
    let packet = packets::edit_ipv4(&packet, |ip| {
        ip.dont_fragment = fragment == 1;
        ip.more_fragments = fragment == 2 || fragment == 4;
        if fragment >= 3 {
            ip.fragment_offset = frames::frag_offset(185);
        }
        ip.options = match ihl {
            0 => Ipv4Options::default(),
            // Record route-ish bytes; the parsers only look at the length.
            1 => Ipv4Options::from([1, 1, 1, 0]),
            _ => Ipv4Options::from([1; 40]),
        };
    });
    let frame = ether_chain(rng, chain, mac, &packet);
    Case::new(Family::Branch, frame, "combination")
}

fn addressing_of(rng: &mut Rng, addressing: usize) -> (SocketAddrV4, SocketAddrV4) {
    let client = frames::client(rng);
    match addressing {
        0 => (client, SocketAddrV4::new(VIP, 443)),
        1 => (client, SocketAddrV4::new(VIP2, 500)),
        2 => (client, SocketAddrV4::new(NODE, 22)),
        3 => (client, SocketAddrV4::new(Ipv4Addr::new(8, 8, 4, 4), 53)),
        _ => (SocketAddrV4::new(POD, 8443), TRACKED_CLIENTS[0]),
    }
}

fn l4_packet(
    rng: &mut Rng,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    protocol: usize,
    variant: usize,
) -> Vec<u8> {
    let len = rng.below(24);
    let data = rng.bytes(len);
    match protocol {
        0 => {
            let mut header =
                etherparse::TcpHeader::new(src.port(), dst.port(), rng.next_u32(), 64240);
            match variant {
                0 => header.syn = true,
                1 => (header.syn, header.ack) = (true, true),
                2 => (header.fin, header.ack) = (true, true),
                _ => header.rst = true,
            }
            packets::tcp_with(src, dst, header, &data)
        }
        1 => {
            // UDP to the pod port keeps the reply addressing tracked.
            let src = if src.ip() == &POD {
                SocketAddrV4::new(POD, 5353)
            } else {
                src
            };
            if variant == 0 {
                packets::udp_no_checksum(src, dst, &data)
            } else {
                packets::udp(src, dst, &data)
            }
        }
        2 => icmp_packet(*src.ip(), *dst.ip(), variant, &data),
        3 | 4 => {
            let from = if protocol == 3 {
                PEERS[variant % 2]
            } else {
                STRANGER
            };
            let inner = packets::tcp(
                frames::client(rng),
                SocketAddrV4::new(*dst.ip(), 443),
                &data,
            );
            packets::ipip(from, NODE, &inner)
        }
        5 => packets::ipv4(*src.ip(), *dst.ip(), 47, &data),
        6 => packets::ipv4(*src.ip(), *dst.ip(), 50, &data),
        _ => packets::ipv4(*src.ip(), *dst.ip(), 255, &data),
    }
}

fn icmp_packet(src: Ipv4Addr, dst: Ipv4Addr, variant: usize, data: &[u8]) -> Vec<u8> {
    let quoted = packets::udp(
        SocketAddrV4::new(dst, 500),
        SocketAddrV4::new(src, 4000),
        data,
    );
    match variant {
        0 => packets::echo_request(src, dst, 1, 2, data),
        1 => packets::icmp(
            src,
            dst,
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port),
            &quoted,
        ),
        2 => packets::icmp(
            src,
            dst,
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
            &quoted,
        ),
        _ => packets::icmp(
            src,
            dst,
            Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 1, seq: 2 }),
            data,
        ),
    }
}

/// `packet` behind one of the EtherType chains: plain IPv4, one tag, two tags, an
/// 802.1ad tag, and ARP / IPv6 / an unknown type, plain or tagged.
fn ether_chain(rng: &mut Rng, chain: usize, dst: [u8; 6], packet: &[u8]) -> Vec<u8> {
    let l2 = L2 {
        src: packets::CLIENT_MAC,
        dst,
        vlan: None,
    };
    let tag = |ether_type: EtherType| {
        let mut bytes = vec![0x00, 0x07];
        bytes.extend_from_slice(&ether_type.0.to_be_bytes());
        bytes.extend_from_slice(packet);
        bytes
    };
    match chain {
        0 => l2.ipv4(packet),
        1 => l2.tagged(7).ipv4(packet),
        2 => l2
            .tagged(7)
            .frame(EtherType::VLAN_TAGGED_FRAME, &tag(EtherType::IPV4)),
        3 => l2.frame(EtherType::PROVIDER_BRIDGING, &tag(EtherType::IPV4)),
        4 => l2.frame(EtherType::ARP, packet),
        5 => l2.frame(EtherType::IPV6, packet),
        6 => l2.tagged(7).frame(EtherType::IPV6, packet),
        7 => l2.tagged(7).frame(EtherType::ARP, packet),
        _ => l2.frame(EtherType(rng.next_u16() | 0x0600), packet),
    }
}
