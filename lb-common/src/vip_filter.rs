//! The VIP prefilter's slot function. `VIP_FILTER` counts, per slot, the VIPs that fold
//! there; XDP skips the `VIPS` hash lookup for a destination whose slot counts none, and
//! the agent keeps the counts. Both call [`slot`], so they always agree.
//!
//! The fold XORs the address's first two bytes with its last two. Addresses that share
//! a /16 therefore never share a slot, so a LAN whose VIPs and hosts sit in one /16 (the
//! usual homelab) gets an exact filter; other destinations collide with a VIP's slot
//! about once in 65536 and only pay the hash lookup they paid before.

use crate::maps::VIP_FILTER_SLOTS;

const _: () = assert!(VIP_FILTER_SLOTS == 1 << 16, "the fold yields 16 bits");

/// The slot of `addr` (stored as in the packet: network byte order loaded as a native
/// integer). XOR of the two halves is symmetric, so the slot of an address is the same
/// bytes on either host byte order.
#[inline(always)]
pub const fn slot(addr: u32) -> u32 {
    (addr ^ (addr >> 16)) & 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wire(octets: [u8; 4]) -> u32 {
        u32::from_ne_bytes(octets)
    }

    proptest! {
        /// The slot is the first two bytes XOR the last two, on this host's byte order.
        #[test]
        fn slot_folds_the_halves(octets in any::<[u8; 4]>()) {
            let [a, b, c, d] = octets;
            let expected = u32::from(u16::from_ne_bytes([a ^ c, b ^ d]));
            prop_assert_eq!(slot(wire(octets)), expected);
            prop_assert!(slot(wire(octets)) < VIP_FILTER_SLOTS);
        }
    }

    #[test]
    fn one_slash_16_fills_every_slot_once() {
        let mut seen = [false; VIP_FILTER_SLOTS as usize];
        for low in 0..=u16::MAX {
            let [c, d] = low.to_be_bytes();
            let slot = slot(wire([192, 168, c, d])) as usize;
            assert!(!seen[slot], "192.168.{c}.{d} shares slot {slot}");
            seen[slot] = true;
        }
    }

    #[test]
    fn other_prefixes_can_collide() {
        // 10^194 == 192^8 and 0^88 == 168^240: the agent must count, not flag, slots.
        assert_eq!(slot(wire([192, 168, 8, 240])), slot(wire([10, 0, 194, 88])));
        assert_ne!(slot(wire([192, 168, 8, 240])), slot(wire([192, 168, 1, 1])));
    }
}
