//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Every agent builds identical tables from identical inputs: backends are ordered by
//! their identity bytes before filling, and the permutation of each backend depends only
//! on its identity, never on its position in the input.

use alloc::vec;
use alloc::vec::Vec;

use crate::types::RING_EMPTY;

/// One entry of a table: `id` identifies the backend across agents (node name, pod
/// address), `addr` is what the table stores, `weight` its relative share (0 = absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend<'a> {
    pub id: &'a [u8],
    pub addr: u32,
    pub weight: u32,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const OFFSET_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const SKIP_SEED: u64 = 0x84222325_cbf29ce4;

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = seed;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // FNV's low bits mix poorly for short keys; finish with a murmur3 avalanche.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

/// Fills a table of `size` slots (`size` must be prime for full permutations). Returns
/// all [`RING_EMPTY`] when no backend has a weight.
pub fn build(backends: &[Backend<'_>], size: usize) -> Vec<u32> {
    let mut live: Vec<&Backend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    live.sort_by(|a, b| a.id.cmp(b.id));
    let mut table = vec![RING_EMPTY; size];
    let Some(max_weight) = live.iter().map(|b| b.weight).max() else {
        return table;
    };
    let size64 = size as u64;
    let offsets: Vec<u64> = live.iter().map(|b| fnv1a(OFFSET_SEED, b.id) % size64).collect();
    let skips: Vec<u64> = live
        .iter()
        .map(|b| fnv1a(SKIP_SEED, b.id) % (size64 - 1) + 1)
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut taken = vec![false; size];
    let mut filled = 0usize;
    while filled < size {
        for (i, backend) in live.iter().enumerate() {
            // Each pass grants `weight` credit; a slot costs `max_weight`, so claims are
            // proportional to weight.
            credit[i] += u64::from(backend.weight);
            while credit[i] >= u64::from(max_weight) && filled < size {
                credit[i] -= u64::from(max_weight);
                let slot = loop {
                    let candidate = (offsets[i] + next[i] * skips[i]) % size64;
                    next[i] += 1;
                    if !taken[candidate as usize] {
                        break candidate as usize;
                    }
                };
                taken[slot] = true;
                table[slot] = backend.addr;
                filled += 1;
            }
        }
    }
    table
}
