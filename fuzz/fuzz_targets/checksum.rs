//! lb-common's checksums: the full checksum against an independent big-endian RFC 1071
//! computation, and every incremental update (RFC 1624, 16- and 32-bit fields, the UDP
//! variants) against recomputation from scratch, over arbitrary headers and edits.
#![no_main]

use lb_common::checksum::{
    checksum, fold, replace_u16, replace_u32, sum_words, udp_replace_u16, udp_replace_u32,
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

/// RFC 1071 the textbook way: big-endian words, odd byte padded, result as it is stored.
fn reference(data: &[u8]) -> [u8; 2] {
    let mut sum: u64 = data
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

fn word(header: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([header[at], header[at + 1]])
}

fn dword(header: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// The checksum of `header` recomputed with its checksum field (at `check`) zeroed.
fn recomputed(header: &[u8], check: usize) -> u16 {
    let mut zeroed = header.to_vec();
    zeroed[check..check + 2].fill(0);
    checksum(&zeroed)
}

fn verifies(header: &[u8]) -> bool {
    fold(sum_words(header, 0)) == 0xffff
}

fn run(data: &[u8]) -> Result<()> {
    let mut input = Unstructured::new(data);
    let raw_len = input.int_in_range(0..=80)?;
    let raw = input.bytes(raw_len)?;
    assert_eq!(
        checksum(raw).to_ne_bytes(),
        reference(raw),
        "full checksum of {raw:02x?}"
    );

    let words = input.int_in_range(2..=30usize)?;
    let mut header = input.bytes(2 * words)?.to_vec();
    let check = 2 * input.choose_index(words)?;
    let udp = input.arbitrary::<bool>()?;
    let first = recomputed(&header, check);
    let first = if udp && input.arbitrary::<bool>()? {
        0
    } else {
        first
    };
    header[check..check + 2].copy_from_slice(&first.to_ne_bytes());
    while !input.is_empty() {
        let wide = input.arbitrary::<bool>()?;
        let width = if wide { 4 } else { 2 };
        let at = 2 * input.choose_index(words - width / 2 + 1)?;
        if (at..at + width).contains(&check) {
            continue;
        }
        let old_check = word(&header, check);
        let new_check = if wide {
            let (old, new) = (dword(&header, at), input.arbitrary::<u32>()?);
            header[at..at + 4].copy_from_slice(&new.to_ne_bytes());
            if udp {
                udp_replace_u32(old_check, old, new)
            } else {
                replace_u32(old_check, old, new)
            }
        } else {
            let (old, new) = (word(&header, at), input.arbitrary::<u16>()?);
            header[at..at + 2].copy_from_slice(&new.to_ne_bytes());
            if udp {
                udp_replace_u16(old_check, old, new)
            } else {
                replace_u16(old_check, old, new)
            }
        };
        header[check..check + 2].copy_from_slice(&new_check.to_ne_bytes());
        if udp && old_check == 0 {
            assert_eq!(new_check, 0, "a UDP datagram without checksum got one");
            continue;
        }
        let full = recomputed(&header, check);
        if full == 0xffff {
            // Everything but the checksum is zero: eqn. 3 yields +0, which does not
            // verify. RFC 1624 section 3: unreachable for real headers (an IPv4 header
            // has its version, a pseudo header its protocol).
            continue;
        }
        assert!(
            verifies(&header),
            "incremental update does not verify: {header:02x?}"
        );
        if udp {
            assert_ne!(new_check, 0, "UDP checksum updated to 0 (means none)");
            let expected = if full == 0 { 0xffff } else { full };
            assert_eq!(
                new_check, expected,
                "UDP update vs recomputation: {header:02x?}"
            );
        } else {
            assert_eq!(new_check, full, "update vs recomputation: {header:02x?}");
        }
    }
    Ok(())
}
