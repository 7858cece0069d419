//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Every agent builds identical tables from identical inputs: backends are ordered before
//! filling, and the permutation of each backend depends only on its identity, never on
//! its position in the input.
//!
//! Weights schedule the claims: backend `i`'s `k`-th claim is due at virtual time
//! `k / weight_i`, and claims are served in due order (ties in backend order). With equal
//! weights this is the paper's round robin. Because a claim's due time depends only on
//! its own backend, removing a backend or changing one's weight never reorders the
//! claims of the others, which keeps the disruption to the slots that must move.

use alloc::collections::{BTreeMap, BTreeSet, BinaryHeap};
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::{Ordering, Reverse};

use crate::maps::{NODE_RING_SIZE, POD_RING_SIZE};
use crate::types::RING_EMPTY;

/// One entry of a table: `id` identifies the backend across agents (node name, pod
/// address), `addr` is what the table stores, `weight` its relative share. A backend
/// with weight 0 or address [`RING_EMPTY`] is absent.
///
/// The derived order (id, then address, then weight) is the fill order, so even
/// duplicate ids give the same table whatever the input order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend<'a> {
    pub id: &'a [u8],
    pub addr: u32,
    pub weight: u32,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const OFFSET_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const SKIP_SEED: u64 = 0x8422_2325_cbf2_9ce4;

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

/// Trial division; sizes are at most a few hundred thousand.
pub const fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

// Only a prime size makes every `skip` generate a full permutation of the slots.
const _: () = assert!(is_prime(NODE_RING_SIZE) && is_prime(POD_RING_SIZE));

/// The next slot one backend wants: its permutation `(offset + j * skip) mod size`.
struct Permutation {
    offset: u64,
    skip: u64,
    next: u64,
}

impl Permutation {
    fn new(id: &[u8], size: u64) -> Self {
        Permutation {
            offset: fnv1a(OFFSET_SEED, id) % size,
            skip: fnv1a(SKIP_SEED, id) % (size - 1) + 1,
            next: 0,
        }
    }

    /// The first slot of the permutation not yet taken. Terminates because the
    /// permutation visits every slot and the caller only asks while one is free.
    fn claim(&mut self, taken: &mut [bool]) -> usize {
        let size = taken.len() as u64;
        loop {
            let slot = ((self.offset + self.next * self.skip) % size) as usize;
            self.next += 1;
            if !taken[slot] {
                taken[slot] = true;
                return slot;
            }
        }
    }
}

/// A backend's next claim, due at virtual time `claims / weight`.
struct Due {
    claims: u64,
    weight: u64,
    index: usize,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // claims / weight compared without division: both products fit in u64 since
        // claims <= size + 1 and weight < 2^32.
        (self.claims * other.weight)
            .cmp(&(other.claims * self.weight))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Fills a table of `size` slots with backend addresses, each backend getting a share
/// of slots proportional to its weight (with equal weights, `size / N` rounded down or
/// up). Returns all [`RING_EMPTY`] when no backend is present.
///
/// # Panics
///
/// If `size` is not prime: the tables' sizes are constants, and a composite size would
/// leave some permutations unable to reach every slot.
pub fn build(backends: &[Backend<'_>], size: usize) -> Vec<u32> {
    assert!(is_prime(size), "Maglev table size {size} is not prime");
    let mut live: Vec<&Backend<'_>> = backends
        .iter()
        .filter(|b| b.weight > 0 && b.addr != RING_EMPTY)
        .collect();
    live.sort_unstable();
    let mut table = vec![RING_EMPTY; size];
    if live.is_empty() {
        return table;
    }
    let mut permutations: Vec<Permutation> = live
        .iter()
        .map(|b| Permutation::new(b.id, size as u64))
        .collect();
    let mut queue: BinaryHeap<Reverse<Due>> = live
        .iter()
        .enumerate()
        .map(|(index, b)| {
            Reverse(Due {
                claims: 1,
                weight: u64::from(b.weight),
                index,
            })
        })
        .collect();
    let mut taken = vec![false; size];
    for _ in 0..size {
        // The queue holds every live backend for the whole fill.
        let Some(mut next) = queue.peek_mut() else {
            break;
        };
        let due = &mut next.0;
        let slot = permutations[due.index].claim(&mut taken);
        table[slot] = live[due.index].addr;
        // Re-sifted when `next` drops.
        due.claims += 1;
    }
    table
}

/// Slots per backend address in a table, [`RING_EMPTY`] excluded.
pub fn slot_counts(table: &[u32]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for addr in table.iter().filter(|a| **a != RING_EMPTY) {
        *counts.entry(*addr).or_insert(0) += 1;
    }
    counts
}

/// How evenly a table shares its slots, relative to the average share per backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShareStats {
    pub backends: usize,
    /// Smallest share / average share.
    pub min_over_avg: f64,
    /// Largest share / average share (the Maglev paper's imbalance measure).
    pub max_over_avg: f64,
}

/// [`ShareStats`] of a table; `None` if it holds no backend.
pub fn share_stats(table: &[u32]) -> Option<ShareStats> {
    let counts = slot_counts(table);
    let min = *counts.values().min()?;
    let max = *counts.values().max()?;
    let avg = counts.values().sum::<usize>() as f64 / counts.len() as f64;
    Some(ShareStats {
        backends: counts.len(),
        min_over_avg: min as f64 / avg,
        max_over_avg: max as f64 / avg,
    })
}

/// Of the slots whose backend in `old` is still in `new`, the fraction that now belongs
/// to another backend: the established flows a table change moves needlessly (slots of a
/// removed backend must move and are not counted). 0 when no slot qualifies.
///
/// # Panics
///
/// If the tables differ in size: slot `i` of one must mean slot `i` of the other.
pub fn remapped_fraction(old: &[u32], new: &[u32]) -> f64 {
    assert_eq!(old.len(), new.len(), "tables of different sizes");
    let survivors: BTreeSet<u32> = new.iter().copied().filter(|a| *a != RING_EMPTY).collect();
    let (mut kept, mut moved) = (0usize, 0usize);
    for (before, after) in old.iter().zip(new) {
        if survivors.contains(before) {
            if before == after {
                kept += 1;
            } else {
                moved += 1;
            }
        }
    }
    match kept + moved {
        0 => 0.0,
        total => moved as f64 / total as f64,
    }
}
