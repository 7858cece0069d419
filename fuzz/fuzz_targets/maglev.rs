//! Weighted Maglev tables for arbitrary backend sets: full and only of live backends,
//! independent of input order, and each backend's share within the bounds the due-time
//! schedule guarantees.
#![no_main]

use std::collections::BTreeMap;

use lb_common::{
    maglev::{Backend, build, slot_counts},
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
    types::RING_EMPTY,
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

/// Small primes keep an iteration fast; the real sizes come up too.
const SIZES: [usize; 13] = [
    2,
    3,
    5,
    7,
    13,
    31,
    61,
    127,
    251,
    509,
    1021,
    POD_RING_SIZE,
    NODE_RING_SIZE,
];

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

struct Spec {
    id: Vec<u8>,
    addr: u32,
    weight: u32,
}

fn spec(input: &mut Unstructured<'_>) -> Result<Spec> {
    let id_len = input.int_in_range(0..=6)?;
    Ok(Spec {
        id: input.bytes(id_len)?.to_vec(),
        // Few distinct addresses, so duplicates and RING_EMPTY come up.
        addr: u32::from(input.int_in_range(0..=12u8)?),
        weight: match input.int_in_range(0..=3u8)? {
            0 => 0,
            1 => input.int_in_range(1..=4)?,
            2 => input.arbitrary()?,
            _ => u32::MAX - u32::from(input.arbitrary::<u8>()?),
        },
    })
}

fn run(data: &[u8]) -> Result<()> {
    let mut input = Unstructured::new(data);
    let size = SIZES[input.choose_index(SIZES.len())?];
    let count = input.int_in_range(0..=24)?;
    let specs: Vec<Spec> = (0..count)
        .map(|_| spec(&mut input))
        .collect::<Result<_>>()?;
    let backends: Vec<Backend<'_>> = specs
        .iter()
        .map(|spec| Backend {
            id: &spec.id,
            addr: spec.addr,
            weight: spec.weight,
        })
        .collect();
    let table = build(&backends, size);
    assert_eq!(table.len(), size);

    let live: Vec<&Backend<'_>> = backends
        .iter()
        .filter(|backend| backend.weight > 0 && backend.addr != RING_EMPTY)
        .collect();
    if live.is_empty() {
        assert!(
            table.iter().all(|slot| *slot == RING_EMPTY),
            "a table without backends"
        );
        return Ok(());
    }
    assert!(
        table
            .iter()
            .all(|slot| live.iter().any(|backend| backend.addr == *slot)),
        "a slot empty or of a dead backend"
    );

    let mut rotated = backends.clone();
    let turn = input.choose_index(rotated.len())?;
    rotated.rotate_left(turn);
    rotated.reverse();
    assert_eq!(
        build(&rotated, size),
        table,
        "the table depends on input order"
    );

    // Claims are served in due order (k / weight), so a backend's claim count c meets
    // c <= T * w <= c + 1 for the last due time T served, and summing over the n live
    // backends: size * w / W - 1 <= c <= (size + n) * w / W. Per address, with m
    // backends sharing it, the lower bound loses m.
    let total: u128 = live.iter().map(|backend| u128::from(backend.weight)).sum();
    let n = live.len() as u128;
    let mut groups: BTreeMap<u32, (u128, u128)> = BTreeMap::new();
    for backend in &live {
        let group = groups.entry(backend.addr).or_default();
        group.0 += u128::from(backend.weight);
        group.1 += 1;
    }
    let counts = slot_counts(&table);
    let size = size as u128;
    for (addr, (weight, members)) in groups {
        let slots = counts.get(&addr).copied().unwrap_or(0) as u128;
        assert!(
            (slots + members) * total >= size * weight && slots * total <= (size + n) * weight,
            "address {addr}: {slots} of {size} slots for weight {weight} of {total}"
        );
    }
    Ok(())
}
