//! The data path rewrites addresses and ports (DNAT on the backend node, SNAT back to the
//! VIP on egress) and fixes checksums incrementally. These tests hold the incremental
//! update to what a from-scratch computation gives, for IPv4 headers and for TCP and UDP
//! segments under their pseudo-header, and hold the from-scratch computation to an
//! independent implementation (etherparse) and to published vectors.

use etherparse::checksum::Sum16BitWords;
use etherparse::{TcpHeader, UdpHeader};
use lb_common::checksum::{
    checksum, fold, replace_u16, replace_u32, sum_words, udp_replace_u16, udp_replace_u32,
};
use lb_common::types::{PROTO_TCP, PROTO_UDP};
use proptest::prelude::*;

fn load_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn load_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn store_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_ne_bytes());
}

fn store_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// What a checksum covers, laid out contiguously: an IPv4 header, or a TCP/UDP pseudo
/// header followed by the segment.
#[derive(Clone, Debug)]
struct Covered {
    bytes: Vec<u8>,
    check_at: usize,
    /// UDP's rules: 0 is "no checksum", a computed 0 is sent as 0xffff.
    udp: bool,
    /// Offsets of the 32-bit addresses.
    addrs: [usize; 2],
    /// Offsets of the ports (empty for an IPv4 header).
    ports: Vec<usize>,
    /// First offset of the words a rewrite may touch (past the pseudo header).
    words_from: usize,
}

#[derive(Clone, Copy, Debug)]
enum Change {
    U32 { at: usize, new: u32 },
    U16 { at: usize, new: u16 },
}

const PSEUDO_LEN: usize = 12;

impl Covered {
    fn ipv4(mut header: [u8; 20]) -> Self {
        header[0] = 0x45;
        let mut covered = Covered {
            bytes: header.to_vec(),
            check_at: 10,
            udp: false,
            addrs: [12, 16],
            ports: Vec::new(),
            words_from: 0,
        };
        covered.seal();
        covered
    }

    fn l4(proto: u8, addrs: [u8; 8], mut segment: Vec<u8>) -> Self {
        let len = u16::try_from(segment.len()).expect("test segments are small");
        let check_at = if proto == PROTO_TCP {
            // Data offset 5 (no options), keeping a random NS bit.
            segment[12] = 0x50 | (segment[12] & 1);
            16
        } else {
            segment[4..6].copy_from_slice(&len.to_be_bytes());
            6
        };
        let mut bytes = addrs.to_vec();
        bytes.extend([0, proto]);
        bytes.extend(len.to_be_bytes());
        bytes.extend(segment);
        let mut covered = Covered {
            bytes,
            check_at: PSEUDO_LEN + check_at,
            udp: proto == PROTO_UDP,
            addrs: [0, 4],
            ports: vec![PSEUDO_LEN, PSEUDO_LEN + 2],
            words_from: PSEUDO_LEN,
        };
        covered.seal();
        covered
    }

    fn check(&self) -> u16 {
        load_u16(&self.bytes, self.check_at)
    }

    /// The checksum computed from scratch over the current bytes.
    fn recompute(&self) -> u16 {
        let mut bytes = self.bytes.clone();
        store_u16(&mut bytes, self.check_at, 0);
        match checksum(&bytes) {
            0 if self.udp => 0xffff,
            check => check,
        }
    }

    fn seal(&mut self) {
        let check = self.recompute();
        store_u16(&mut self.bytes, self.check_at, check);
    }

    /// Aligned 16-bit words a rewrite may change: everything but the checksum itself and
    /// an odd trailing byte.
    fn word_offsets(&self) -> Vec<usize> {
        (self.words_from..self.bytes.len() - 1)
            .step_by(2)
            .filter(|at| *at != self.check_at)
            .collect()
    }

    /// Applies `change` to the bytes and returns the incrementally updated checksum.
    fn apply(&mut self, change: Change) -> u16 {
        let check = self.check();
        match change {
            Change::U32 { at, new } => {
                let old = load_u32(&self.bytes, at);
                store_u32(&mut self.bytes, at, new);
                if self.udp {
                    udp_replace_u32(check, old, new)
                } else {
                    replace_u32(check, old, new)
                }
            }
            Change::U16 { at, new } => {
                let old = load_u16(&self.bytes, at);
                store_u16(&mut self.bytes, at, new);
                if self.udp {
                    udp_replace_u16(check, old, new)
                } else {
                    replace_u16(check, old, new)
                }
            }
        }
    }

    /// Any change a NAT rewrite could make: an address, a port, or any other word.
    fn changes(&self) -> BoxedStrategy<Change> {
        let addr = (prop::sample::select(self.addrs.to_vec()), any::<u32>())
            .prop_map(|(at, new)| Change::U32 { at, new });
        let word = (prop::sample::select(self.word_offsets()), any::<u16>())
            .prop_map(|(at, new)| Change::U16 { at, new });
        if self.ports.is_empty() {
            prop_oneof![addr, word].boxed()
        } else {
            let port = (prop::sample::select(self.ports.clone()), any::<u16>())
                .prop_map(|(at, new)| Change::U16 { at, new });
            prop_oneof![addr, port, word].boxed()
        }
    }

    /// The value for the word at `at` that makes the one's-complement sum of everything
    /// -0, so that the correct checksum is `0x0000` (sent as `0xffff` by UDP).
    fn value_for_zero_checksum(&self, at: usize) -> u16 {
        let mut bytes = self.bytes.clone();
        store_u16(&mut bytes, self.check_at, 0);
        store_u16(&mut bytes, at, 0);
        !fold(sum_words(&bytes, 0))
    }
}

fn ipv4_header() -> impl Strategy<Value = Covered> {
    any::<[u8; 20]>().prop_map(Covered::ipv4)
}

/// A TCP (20-byte header) or UDP (8-byte header) segment with 0..=40 payload bytes, odd
/// lengths included, under random addresses.
fn segment(proto: u8) -> impl Strategy<Value = Covered> {
    let header = if proto == PROTO_TCP { 20 } else { 8 };
    (
        any::<[u8; 8]>(),
        prop::collection::vec(any::<u8>(), header..=header + 40),
    )
        .prop_map(move |(addrs, segment)| Covered::l4(proto, addrs, segment))
}

fn any_covered() -> impl Strategy<Value = Covered> {
    prop_oneof![ipv4_header(), segment(PROTO_TCP), segment(PROTO_UDP)]
}

fn with_change(covered: Covered) -> (Just<Covered>, BoxedStrategy<Change>) {
    let changes = covered.changes();
    (Just(covered), changes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_header_update_equals_recompute((mut header, change) in ipv4_header().prop_flat_map(with_change)) {
        let incremental = header.apply(change);
        prop_assert_eq!(incremental, header.recompute());
    }

    #[test]
    fn tcp_update_equals_recompute((mut segment, change) in segment(PROTO_TCP).prop_flat_map(with_change)) {
        let incremental = segment.apply(change);
        prop_assert_eq!(incremental, segment.recompute());
    }

    #[test]
    fn udp_update_equals_recompute((mut segment, change) in segment(PROTO_UDP).prop_flat_map(with_change)) {
        let incremental = segment.apply(change);
        prop_assert_eq!(incremental, segment.recompute());
    }

    /// A DNAT rewrites the address and the port one after the other; errors must not
    /// accumulate.
    #[test]
    fn chained_updates_equal_recompute(
        (mut covered, changes) in any_covered().prop_flat_map(|c| {
            let changes = prop::collection::vec(c.changes(), 1..6);
            (Just(c), changes)
        })
    ) {
        for change in changes {
            let incremental = covered.apply(change);
            store_u16(&mut covered.bytes, covered.check_at, incremental);
        }
        prop_assert_eq!(covered.check(), covered.recompute());
    }

    /// RFC 1624's boundary: when the new sum is -0 the checksum is +0 (`0x0000`), never
    /// `0xffff`; UDP then sends `0xffff`.
    #[test]
    fn update_to_a_zero_checksum_gives_plus_zero(
        (mut covered, at) in any_covered().prop_flat_map(|c| {
            let at = prop::sample::select(c.word_offsets());
            (Just(c), at)
        })
    ) {
        let new = covered.value_for_zero_checksum(at);
        let incremental = covered.apply(Change::U16 { at, new });
        let expected = if covered.udp { 0xffff } else { 0x0000 };
        prop_assert_eq!(covered.recompute(), expected);
        prop_assert_eq!(incremental, expected);
    }

    #[test]
    fn update_never_yields_minus_zero(check in 0..0xffffu16, old: u32, new: u32) {
        prop_assert_ne!(replace_u16(check, old as u16, new as u16), 0xffff);
        prop_assert_ne!(replace_u32(check, old, new), 0xffff);
    }

    #[test]
    fn udp_without_checksum_keeps_none(old: u32, new: u32) {
        prop_assert_eq!(udp_replace_u16(0, old as u16, new as u16), 0);
        prop_assert_eq!(udp_replace_u32(0, old, new), 0);
    }

    #[test]
    fn full_checksum_matches_etherparse(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let theirs = Sum16BitWords::new().add_slice(&data).ones_complement();
        prop_assert_eq!(checksum(&data), theirs);
    }

    /// Pins the test's own pseudo-header layout: etherparse computes the same TCP and UDP
    /// checksums from parsed headers (it sends a computed 0 as 0xffff for TCP too).
    #[test]
    fn segment_layout_matches_etherparse(covered in prop_oneof![segment(PROTO_TCP), segment(PROTO_UDP)]) {
        let src: [u8; 4] = covered.bytes[0..4].try_into().unwrap();
        let dst: [u8; 4] = covered.bytes[4..8].try_into().unwrap();
        let segment = &covered.bytes[PSEUDO_LEN..];
        let theirs = if covered.udp {
            let (header, payload) = UdpHeader::from_slice(segment).unwrap();
            header.calc_checksum_ipv4_raw(src, dst, payload).unwrap()
        } else {
            let (header, payload) = TcpHeader::from_slice(segment).unwrap();
            header.calc_checksum_ipv4_raw(src, dst, payload).unwrap()
        };
        let ours = u16::from_be_bytes(covered.check().to_ne_bytes());
        prop_assert_eq!(if ours == 0 { 0xffff } else { ours }, theirs);
    }
}

/// The header of a UDP datagram from 192.168.0.1 to 192.168.0.199 whose checksum is the
/// textbook 0xb861.
const KNOWN_IPV4_HEADER: [u8; 20] = [
    0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01,
    0xc0, 0xa8, 0x00, 0xc7,
];

#[test]
fn known_ipv4_header_checksum() {
    let mut header = KNOWN_IPV4_HEADER;
    assert_eq!(checksum(&header), 0, "a correct header sums to -0");
    header[10..12].fill(0);
    assert_eq!(checksum(&header).to_ne_bytes(), [0xb8, 0x61]);
}

#[test]
fn known_ipv4_header_ttl_decrement() {
    // A router's TTL decrement (64 -> 63) adds 0x0100 to the checksum, as RFC 1141 notes.
    let mut header = Covered::ipv4(KNOWN_IPV4_HEADER);
    assert_eq!(header.check().to_ne_bytes(), [0xb8, 0x61]);
    let ttl_proto = u16::from_ne_bytes([63, 0x11]);
    let updated = header.apply(Change::U16 {
        at: 8,
        new: ttl_proto,
    });
    assert_eq!(updated.to_ne_bytes(), [0xb9, 0x61]);
    assert_eq!(updated, header.recompute());
}

/// RFC 1624 section 3 and its errata 5864, in host order (the arithmetic is the same in
/// either order, so the values can be used as they are printed).
#[test]
fn rfc1624_vectors() {
    // Other header words sum to 0xcd7a; m = 0x5555 -> m' = 0x3285. The new sum is -0,
    // so the correct checksum is 0x0000; RFC 1141's eqn. 2 gives 0xffff.
    assert_eq!(replace_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    // Unchanged field on a header whose checksum is 0x0000 stays 0x0000.
    assert_eq!(replace_u16(0x0000, 0x5555, 0x5555), 0x0000);
    // Two end-around carries.
    assert_eq!(replace_u16(0x0000, 0x5555, 0x5556), 0xfffe);
}

#[test]
fn udp_computed_zero_is_sent_as_all_ones() {
    // The same -0 boundary as RFC 1624's example, for a UDP checksum.
    assert_eq!(udp_replace_u16(0xdd2f, 0x5555, 0x3285), 0xffff);
    assert_eq!(udp_replace_u32(0xdd2f, 0x5555, 0x3285), 0xffff);
}
