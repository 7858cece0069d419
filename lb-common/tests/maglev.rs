//! Maglev's promises, checked at the table sizes the data path uses: even shares at
//! M > 100 N, shares proportional to weights, little disruption when a backend leaves
//! or changes weight, and the same table on every agent whatever the input order.
//! Run with `--nocapture` to see the measured figures.
#![cfg(feature = "user")]

use lb_common::maglev::{
    Backend, ShareStats, build, is_prime, remapped_fraction, share_stats, slot_counts,
};
use lb_common::maps::{NODE_RING_SIZE, POD_RING_SIZE};
use lb_common::types::RING_EMPTY;

/// The two sizes the brief names: the node ring and Katran's 65537.
const SIZES: [usize; 2] = [NODE_RING_SIZE, 65537];

/// Backend `i` is node `node-i` at address `i + 1`.
fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn backends<'a>(ids: &'a [String], weight: impl Fn(usize) -> u32) -> Vec<Backend<'a>> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| Backend {
            id: id.as_bytes(),
            addr: i as u32 + 1,
            weight: weight(i),
        })
        .collect()
}

/// Largest relative deviation of any backend's share from the ideal `M / N`:
/// `max_b |share_b - 1/N| / (1/N)`, which is `max(max/avg - 1, 1 - min/avg)` for a full
/// table.
fn evenness_error(stats: ShareStats) -> f64 {
    (stats.max_over_avg - 1.0).max(1.0 - stats.min_over_avg)
}

#[test]
fn equal_weights_share_within_one_percent() {
    for size in SIZES {
        for n in [3, 10, 100] {
            let ids = ids(n);
            let table = build(&backends(&ids, |_| 1), size);
            assert!(
                !table.contains(&RING_EMPTY),
                "N={n} M={size}: table not full"
            );
            let stats = share_stats(&table).unwrap();
            assert_eq!(stats.backends, n);
            let error = evenness_error(stats);
            println!(
                "N={n} M={size}: max/avg {:.5}, min/avg {:.5}",
                stats.max_over_avg, stats.min_over_avg
            );
            assert!(
                error <= 0.01,
                "N={n} M={size}: share off by {:.3} %",
                error * 100.0
            );
        }
    }
}

/// Each backend's slots against its ideal `M * w / W`, as a relative error.
fn weighted_errors(ids: &[String], weight: impl Fn(usize) -> u32 + Copy, size: usize) -> f64 {
    let list = backends(ids, weight);
    let counts = slot_counts(&build(&list, size));
    let total: u64 = list.iter().map(|b| u64::from(b.weight)).sum();
    list.iter()
        .map(|b| {
            let ideal = size as f64 * f64::from(b.weight) / total as f64;
            (counts[&b.addr] as f64 - ideal).abs() / ideal
        })
        .fold(0.0, f64::max)
}

#[test]
fn weight_two_gets_twice_the_slots_of_weight_one() {
    let ids = ids(10);
    for size in SIZES {
        let weight = |i: usize| if i.is_multiple_of(2) { 2 } else { 1 };
        let counts = slot_counts(&build(&backends(&ids, weight), size));
        let heavy: Vec<usize> = (0..10)
            .step_by(2)
            .map(|i| counts[&(i as u32 + 1)])
            .collect();
        let light: Vec<usize> = (1..10)
            .step_by(2)
            .map(|i| counts[&(i as u32 + 1)])
            .collect();
        for h in &heavy {
            for l in &light {
                let ratio = *h as f64 / *l as f64;
                assert!(
                    (ratio / 2.0 - 1.0).abs() <= 0.01,
                    "M={size}: {h} vs {l} slots"
                );
            }
        }
        let error = weighted_errors(&ids, weight, size);
        println!(
            "weights 2/1, M={size}: heavy {heavy:?}, light {light:?}, worst error {:.4} %",
            error * 100.0
        );
        assert!(error <= 0.01);
    }
}

#[test]
fn mixed_weights_share_in_proportion() {
    // Ready endpoints per node as a cluster might have them: 1..=8.
    let ids = ids(20);
    let weight = |i: usize| (i * 7 % 8 + 1) as u32;
    for size in SIZES {
        let error = weighted_errors(&ids, weight, size);
        println!(
            "weights 1..=8 over 20 backends, M={size}: worst error {:.4} %",
            error * 100.0
        );
        assert!(
            error <= 0.01,
            "M={size}: share off by {:.3} %",
            error * 100.0
        );
    }
}

/// Worst fraction of surviving backends' slots moved when one of `n` backends leaves,
/// over every choice of the one that leaves (at most 10 choices, spread out).
fn worst_removal_disruption(n: usize, size: usize) -> f64 {
    let ids = ids(n);
    let all = backends(&ids, |_| 1);
    let before = build(&all, size);
    (0..n)
        .step_by(n.div_ceil(10))
        .map(|gone| {
            let rest: Vec<Backend<'_>> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, b)| *b)
                .collect();
            remapped_fraction(&before, &build(&rest, size))
        })
        .fold(0.0, f64::max)
}

#[test]
fn removing_a_backend_moves_few_surviving_slots() {
    // Bounds sit about 2x above what this implementation measures (see the output), far
    // below the (N-1)/N a modulo table would move.
    for (n, size, bound) in [
        (3, NODE_RING_SIZE, 0.02),
        (10, NODE_RING_SIZE, 0.04),
        (100, NODE_RING_SIZE, 0.04),
        (10, 65537, 0.04),
    ] {
        let worst = worst_removal_disruption(n, size);
        println!(
            "remove 1 of N={n}, M={size}: worst {:.3} % of surviving slots moved",
            worst * 100.0
        );
        assert!(
            worst < bound,
            "N={n} M={size}: {:.3} % moved",
            worst * 100.0
        );
    }
}

#[test]
fn adding_a_backend_moves_few_existing_slots() {
    let ids = ids(11);
    let all = backends(&ids, |_| 1);
    let before = build(&all[..10], NODE_RING_SIZE);
    let after = build(&all, NODE_RING_SIZE);
    let share_taken = slot_counts(&after)[&11] as f64 / NODE_RING_SIZE as f64;
    let moved = remapped_fraction(&before, &after);
    // The newcomer must take ~1/11 of the slots; anything beyond that is needless churn.
    let needless = moved - share_taken;
    println!(
        "add 11th backend: {:.3} % moved, {:.3} % to the newcomer",
        moved * 100.0,
        share_taken * 100.0
    );
    assert!(
        needless < 0.04,
        "{:.3} % moved beyond the newcomer's share",
        needless * 100.0
    );
}

#[test]
fn changing_one_weight_moves_few_other_slots() {
    // A node gains a ready endpoint (weight 4 -> 5); the heaviest node is the one that
    // changes, which shifts the reference weight of any normalising scheme.
    let ids = ids(10);
    let before_weight = |i: usize| if i == 0 { 4 } else { (i % 3 + 1) as u32 };
    let after_weight = |i: usize| if i == 0 { 5 } else { before_weight(i) };
    let before = build(&backends(&ids, before_weight), NODE_RING_SIZE);
    let after = build(&backends(&ids, after_weight), NODE_RING_SIZE);
    let before_counts = slot_counts(&before);
    let after_counts = slot_counts(&after);
    let gained = after_counts[&1] - before_counts[&1];
    // Slots that changed owner, minus those the changed node had to gain.
    let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let needless = (changed - gained) as f64 / NODE_RING_SIZE as f64;
    println!(
        "weight 4 -> 5 on one of 10: {changed} slots changed owner, {gained} needed, {:.3} % needless",
        needless * 100.0
    );
    assert!(
        needless < 0.04,
        "{:.3} % of slots moved needlessly",
        needless * 100.0
    );
}

#[test]
fn input_order_does_not_change_the_table() {
    let ids = ids(50);
    let list = backends(&ids, |i| (i % 4 + 1) as u32);
    let table = build(&list, POD_RING_SIZE);
    let mut reversed = list.clone();
    reversed.reverse();
    let mut rotated = list.clone();
    rotated.rotate_left(17);
    // A fixed shuffle: stride 7 is coprime with 50.
    let strided: Vec<Backend<'_>> = (0..50).map(|i| list[i * 7 % 50]).collect();
    for other in [reversed, rotated, strided] {
        assert_eq!(build(&other, POD_RING_SIZE), table);
    }
}

#[test]
fn duplicate_ids_are_still_order_independent() {
    let list = [
        Backend {
            id: b"pod",
            addr: 1,
            weight: 1,
        },
        Backend {
            id: b"pod",
            addr: 2,
            weight: 1,
        },
        Backend {
            id: b"other",
            addr: 3,
            weight: 1,
        },
    ];
    let mut reversed = list;
    reversed.reverse();
    assert_eq!(build(&list, POD_RING_SIZE), build(&reversed, POD_RING_SIZE));
}

#[test]
fn slots_follow_identity_not_address() {
    // A node that comes back with a new address keeps its slots.
    let ids = ids(10);
    let before = build(&backends(&ids, |_| 1), NODE_RING_SIZE);
    let mut moved = backends(&ids, |_| 1);
    moved[4].addr = 99;
    let after = build(&moved, NODE_RING_SIZE);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(*a, if *b == 5 { 99 } else { *b });
    }
}

#[test]
fn no_backend_gives_an_empty_table() {
    let ids = ids(3);
    let cases = [
        Vec::new(),
        backends(&ids, |_| 0),
        vec![Backend {
            id: b"no-address",
            addr: RING_EMPTY,
            weight: 3,
        }],
    ];
    for list in cases {
        let table = build(&list, POD_RING_SIZE);
        assert_eq!(table.len(), POD_RING_SIZE);
        assert!(table.iter().all(|a| *a == RING_EMPTY), "{list:?}");
        assert_eq!(share_stats(&table), None);
    }
}

#[test]
fn zero_weight_is_the_same_as_absent() {
    let ids = ids(5);
    let with_zero = build(&backends(&ids, |i| u32::from(i != 2)), NODE_RING_SIZE);
    let list = backends(&ids, |_| 1);
    let without: Vec<Backend<'_>> = list
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, b)| *b)
        .collect();
    assert_eq!(with_zero, build(&without, NODE_RING_SIZE));
}

#[test]
fn one_backend_fills_every_slot() {
    let table = build(
        &[Backend {
            id: b"only",
            addr: 7,
            weight: 3,
        }],
        NODE_RING_SIZE,
    );
    assert_eq!(table.len(), NODE_RING_SIZE);
    assert!(table.iter().all(|a| *a == 7));
}

#[test]
fn huge_weights_do_not_overflow() {
    let list = [
        Backend {
            id: b"a",
            addr: 1,
            weight: u32::MAX,
        },
        Backend {
            id: b"b",
            addr: 2,
            weight: u32::MAX / 2,
        },
    ];
    let counts = slot_counts(&build(&list, POD_RING_SIZE));
    assert_eq!(counts[&1] + counts[&2], POD_RING_SIZE);
    assert!(counts[&1].abs_diff(2 * counts[&2]) <= 2, "{counts:?}");
}

#[test]
#[should_panic(expected = "not prime")]
fn composite_size_is_refused() {
    build(
        &[Backend {
            id: b"a",
            addr: 1,
            weight: 1,
        }],
        65536,
    );
}

#[test]
fn primality() {
    let primes: Vec<usize> = (0..30).filter(|n| is_prime(*n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(NODE_RING_SIZE) && is_prime(POD_RING_SIZE) && is_prime(65537));
    assert!(!is_prime(16383) && !is_prime(65535));
}

#[test]
fn share_stats_of_a_small_table() {
    // Backend 1 holds 3 slots, backend 2 holds 1: average 2.
    let stats = share_stats(&[1, 1, 2, RING_EMPTY, 1]).unwrap();
    assert_eq!(
        stats,
        ShareStats {
            backends: 2,
            min_over_avg: 0.5,
            max_over_avg: 1.5
        }
    );
}

#[test]
fn remapped_fraction_counts_only_survivors() {
    // Backend 2 leaves: its slot must move and is not counted. Of backends 1 and 3's
    // three slots, one (the last) changed owner.
    assert_eq!(remapped_fraction(&[1, 2, 3, 1], &[1, 1, 3, 3]), 1.0 / 3.0);
    assert_eq!(remapped_fraction(&[1, 2], &[1, 2]), 0.0);
    assert_eq!(remapped_fraction(&[RING_EMPTY; 3], &[1, 1, 1]), 0.0);
}
