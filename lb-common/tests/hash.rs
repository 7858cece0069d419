//! The flow hash is what places a client on a node and a pod, so it must be exactly
//! the published jhash, spread realistic client populations evenly over the ring sizes
//! the data path uses, and keep the node and pod choices independent.

use lb_common::hash::{NODE_SEED, POD_SEED, flow_hash, jhash_3words};
use lb_common::maps::{NODE_RING_SIZE, POD_RING_SIZE};
use lb_common::types::{PROTO_TCP, PROTO_UDP};

/// SplitMix64: a fixed, seedable input stream so failures reproduce.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// `(a, b, c, initval, hash)` computed by a C build of lookup3's `hashword(k, 3, initval)`,
/// the same function as the kernel's `jhash_3words`.
const LOOKUP3_VECTORS: [(u32, u32, u32, u32, u32); 5] = [
    (
        0x0000_0000,
        0x0000_0000,
        0x0000_0000,
        0x0000_0000,
        0x1b68_e557,
    ),
    (
        0x0000_0001,
        0x0000_0002,
        0x0000_0003,
        0x0000_0004,
        0x8103_143f,
    ),
    (
        0x0a00_a8c0,
        0x14c8_10aa,
        0x3930_bb01,
        0x6c62_6e64,
        0x11a4_9e87,
    ),
    (
        0xffff_ffff,
        0xffff_ffff,
        0xffff_ffff,
        0xffff_ffff,
        0xc343_af0b,
    ),
    (
        0xdead_beef,
        0x0123_4567,
        0x89ab_cdef,
        0x6c62_7064,
        0xb011_dd14,
    ),
];

#[test]
fn jhash_3words_matches_lookup3_hashword() {
    for (a, b, c, initval, expected) in LOOKUP3_VECTORS {
        assert_eq!(
            jhash_3words(a, b, c, initval),
            expected,
            "({a:#x}, {b:#x}, {c:#x}, {initval:#x})"
        );
    }
}

#[test]
fn flow_hash_packs_the_tuple_as_documented() {
    // 192.168.0.10:12345 -> 172.16.200.20:443 over TCP, as loaded on little endian:
    // the third lookup3 vector.
    let hash = flow_hash(
        0x0a00_a8c0,
        0x3930,
        0x14c8_10ac,
        0xbb01,
        PROTO_TCP,
        NODE_SEED,
    );
    assert_eq!(hash, 0x11a4_9e87);
}

/// Flips every input bit of `flow_hash` (including the seed) over many random tuples
/// and checks that each output bit then flips with probability close to 1/2. This is
/// what makes any change of client, port, VIP, protocol or seed move a flow.
#[test]
fn every_input_bit_avalanches_into_every_output_bit() {
    const SAMPLES: u32 = 1000;
    // Input bit layout: client 0..32, client port 32..48, vip 48..80, vip port 80..96,
    // proto 96..104, seed 104..136.
    const INPUT_BITS: usize = 136;
    let hash = |words: [u32; 6]| {
        flow_hash(
            words[0],
            words[1] as u16,
            words[2],
            words[3] as u16,
            words[4] as u8,
            words[5],
        )
    };
    let widths = [32, 16, 32, 16, 8, 32];
    let mut rng = SplitMix(1);
    let mut flips = vec![[0u32; 32]; INPUT_BITS];
    for _ in 0..SAMPLES {
        let base: [u32; 6] = core::array::from_fn(|_| rng.next_u32());
        let base_hash = hash(base);
        let mut bit = 0;
        for (field, width) in widths.iter().enumerate() {
            for field_bit in 0..*width {
                let mut flipped = base;
                flipped[field] ^= 1 << field_bit;
                let diff = base_hash ^ hash(flipped);
                for (out, count) in flips[bit].iter_mut().enumerate() {
                    *count += (diff >> out) & 1;
                }
                bit += 1;
            }
        }
    }
    let (mut worst_bit, mut worst_rate) = (0, 0.5f64);
    for (bit, counts) in flips.iter().enumerate() {
        for count in counts {
            let rate = f64::from(*count) / f64::from(SAMPLES);
            if (rate - 0.5).abs() > (worst_rate - 0.5).abs() {
                (worst_bit, worst_rate) = (bit, rate);
            }
        }
    }
    // 1000 samples give a standard deviation of 0.016 per cell; 0.1 is ~6 sigma.
    assert!(
        (worst_rate - 0.5).abs() < 0.1,
        "input bit {worst_bit} flips an output bit with rate {worst_rate}"
    );
}

/// Chi-square statistic of `counts` against a uniform expectation.
fn chi_square(counts: &[u32]) -> f64 {
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|c| (f64::from(*c) - expected).powi(2) / expected)
        .sum()
}

/// Asserts that `chi2` over `cells` uniform cells is within 6 standard deviations of its
/// mean (df = cells - 1, variance 2 df): a fair hash fails this about once in 10^9 runs.
fn assert_uniform(chi2: f64, cells: usize, what: &str) {
    let df = (cells - 1) as f64;
    let limit = df + 6.0 * (2.0 * df).sqrt();
    assert!(
        chi2 < limit,
        "{what}: chi-square {chi2:.0} over {cells} cells, limit {limit:.0}"
    );
}

/// A homelab's clients: one /24, ephemeral ports from Linux's default range, to one VIP.
fn lan_clients(ports_per_client: u16, seed: u32) -> impl Iterator<Item = u32> {
    let vip = u32::from_ne_bytes([172, 16, 200, 20]);
    let vip_port = 443u16.to_be();
    (1..=254u8).flat_map(move |host| {
        let client = u32::from_ne_bytes([192, 168, 1, host]);
        (32768..32768 + ports_per_client)
            .map(move |port| flow_hash(client, port.to_be(), vip, vip_port, PROTO_TCP, seed))
    })
}

#[test]
fn lan_clients_spread_evenly_over_the_rings() {
    for (size, seed) in [(NODE_RING_SIZE, NODE_SEED), (POD_RING_SIZE, POD_SEED)] {
        let mut counts = vec![0u32; size];
        // ~10 flows per slot of the larger ring.
        for hash in lan_clients(650, seed) {
            counts[hash as usize % size] += 1;
        }
        assert_uniform(chi_square(&counts), size, &format!("ring of {size}"));
    }
}

#[test]
fn node_and_pod_choices_are_independent() {
    // 3 nodes x 4 pods: every (node, pod) pair must see 1/12 of the flows, or the pods
    // behind one node would be unevenly loaded.
    let mut cells = [0u32; 12];
    let vip = u32::from_ne_bytes([172, 16, 200, 53]);
    let mut rng = SplitMix(2);
    for _ in 0..120_000 {
        let (client, port) = (rng.next_u32(), rng.next_u32() as u16);
        let node = flow_hash(client, port, vip, 53u16.to_be(), PROTO_UDP, NODE_SEED) % 3;
        let pod = flow_hash(client, port, vip, 53u16.to_be(), PROTO_UDP, POD_SEED) % 4;
        cells[(node * 4 + pod) as usize] += 1;
    }
    assert_uniform(
        chi_square(&cells),
        cells.len(),
        &format!("node x pod {cells:?}"),
    );
}
