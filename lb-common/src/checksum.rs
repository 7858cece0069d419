//! Internet checksums (RFC 1071) and their incremental update (RFC 1624, eqn. 3).
//!
//! Checksums are handled as the 16-bit value stored in the header, in network byte
//! order loaded as a native `u16`; one's-complement arithmetic is byte-order independent,
//! so the kernel can feed header fields in without swapping. A 32-bit field (an address)
//! is passed as loaded natively from its four bytes: its two halves are then exactly the
//! two header words.
//!
//! Eqn. 3 is used rather than RFC 1141's `HC + m + ~m'` because the latter yields -0
//! (`0xffff`) where recomputation from scratch yields `0x0000`. With eqn. 3 the result is
//! `0xffff` only if the old checksum already was, which a correct checksum never is.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `HC' = ~(~HC + ~m + m')` for one changed 16-bit word.
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// [`replace_u16`] for a changed 32-bit field (two words).
#[inline(always)]
pub const fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        (!check) as u32 + (!(old >> 16) & 0xffff) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// [`replace_u16`] for a UDP checksum: `0` means the sender computed none and must stay
/// `0`, and a computed `0` is sent as `0xffff` (RFC 768).
#[inline(always)]
pub const fn udp_replace_u16(check: u16, old: u16, new: u16) -> u16 {
    udp_result(check, replace_u16(check, old, new))
}

/// [`replace_u32`] for a UDP checksum, with the rules of [`udp_replace_u16`].
#[inline(always)]
pub const fn udp_replace_u32(check: u16, old: u32, new: u32) -> u16 {
    udp_result(check, replace_u32(check, old, new))
}

#[inline(always)]
const fn udp_result(check: u16, updated: u16) -> u16 {
    match (check, updated) {
        (0, _) => 0,
        (_, 0) => 0xffff,
        (_, updated) => updated,
    }
}

/// One's-complement sum of `data` read as native-order 16-bit words (odd tail padded
/// with zero), not yet folded or inverted. For user space and tests: it loops over a
/// slice of any length, which the BPF verifier would not accept.
pub fn sum_words(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_ne_bytes([pair[0], pair[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u64;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// Full checksum of `data` (with its checksum field zeroed by the caller).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}
