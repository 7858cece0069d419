//! The slot function of the express cache ([`crate::maps::EXPRESS`]): a per-CPU,
//! direct-mapped cache of the owner's whole forwarding decision for an established
//! flow, in front of the `FLOWS` table. Two flows that share a slot take turns in it;
//! the one that is out takes the full path, so a collision costs time, never a wrong
//! decision.
//!
//! The slot is a cheap integer mix of the flow key (Fibonacci hashing of the XOR of its
//! words: one multiply), not the Maglev hash: it runs on every VIP packet before the
//! cache is read, and only has to spread flows evenly.

use crate::{maps::EXPRESS_SLOTS, types::FlowKey};

const _: () = assert!(EXPRESS_SLOTS.is_power_of_two(), "the mask is the modulo");

/// The epoch after `epoch`: the writer of the tables moves [`crate::maps::EPOCH`] to it
/// after every change. It skips 0, which disables the express cache, when it wraps.
#[inline(always)]
pub const fn next_epoch(epoch: u32) -> u32 {
    match epoch.wrapping_add(1) {
        0 => 1,
        next => next,
    }
}

/// The slot of `key`, below [`EXPRESS_SLOTS`].
#[inline(always)]
pub const fn slot(key: &FlowKey) -> u32 {
    let ports = ((key.client_port as u32) << 16) | key.vip_port as u32;
    let mixed = key.client ^ key.vip.rotate_left(16) ^ ports ^ key.proto as u32;
    // Fibonacci hashing: the top bits of the product depend on every bit of `mixed`.
    mixed.wrapping_mul(0x9e37_79b1) >> (u32::BITS - EXPRESS_SLOTS.trailing_zeros())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn key(client: [u8; 4], client_port: u16, vip_port: u16, proto: u8) -> FlowKey {
        FlowKey {
            client: u32::from_ne_bytes(client),
            vip: u32::from_ne_bytes([192, 168, 8, 240]),
            client_port: client_port.to_be(),
            vip_port: vip_port.to_be(),
            proto,
            _pad: 0,
            _pad2: 0,
        }
    }

    proptest! {
        #[test]
        fn every_slot_is_in_the_cache(
            client in any::<[u8; 4]>(),
            client_port in any::<u16>(),
            vip_port in any::<u16>(),
            proto in any::<u8>(),
        ) {
            prop_assert!(slot(&key(client, client_port, vip_port, proto)) < EXPRESS_SLOTS);
        }
    }

    /// One client's connections differ only in the source port: they must spread like
    /// random keys, not crowd into a few slots.
    #[test]
    fn one_clients_ports_spread_over_the_cache() {
        let flows = EXPRESS_SLOTS / 4;
        let slots: BTreeSet<u32> = (0..flows)
            .map(|n| slot(&key([192, 168, 1, 50], 32768 + n as u16, 443, 6)))
            .collect();
        // Random placement of n keys into 4n slots leaves ~88% of them alone.
        assert!(
            slots.len() as u32 > flows * 8 / 10,
            "{} of {flows} flows got a slot of their own",
            slots.len()
        );
    }

    #[test]
    fn the_epoch_never_returns_to_zero() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(u32::MAX), 1);
    }

    #[test]
    fn every_field_of_the_key_moves_the_slot() {
        let base = key([192, 168, 1, 50], 40000, 443, 6);
        let others = [
            key([192, 168, 1, 51], 40000, 443, 6),
            key([192, 168, 1, 50], 40001, 443, 6),
            key([192, 168, 1, 50], 40000, 444, 6),
            key([192, 168, 1, 50], 40000, 443, 17),
            FlowKey {
                vip: u32::from_ne_bytes([192, 168, 8, 241]),
                ..base
            },
        ];
        for other in others {
            assert_ne!(slot(&other), slot(&base), "{other:?}");
        }
    }
}
