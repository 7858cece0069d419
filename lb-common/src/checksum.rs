//! Internet checksums (RFC 1071) and their incremental update (RFC 1624, eqn. 3).
//!
//! Checksums are handled as the 16-bit value stored in the header, in network byte
//! order loaded as a native `u16`; one's-complement arithmetic is byte-order independent,
//! so the kernel can feed header fields in without swapping.

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
    let sum = (!check) as u32
        + (!(old >> 16) & 0xffff)
        + (!old & 0xffff)
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// One's-complement sum of `data` read as native-order 16-bit words (odd tail padded
/// with zero), not yet folded or inverted.
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
