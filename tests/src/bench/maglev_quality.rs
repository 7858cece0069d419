//! Maglev table quality and build time, pure lb-common: how evenly the tables the data
//! path uses share their slots, how many surviving backends' slots move when one backend
//! leaves, and how long a table takes to build.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::Result;
use lb_common::{
    maglev::{self, Backend},
    maps::{NODE_RING_SIZE, POD_RING_SIZE},
};

use super::{Measurement, median};

const GROUP: &str = "maglev";
/// The size the Maglev paper and Katran use, for comparison with ours.
const KATRAN_SIZE: usize = 65537;
/// Builds per (size, backends) for the build time.
const BUILDS: usize = 7;

pub fn run() -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for size in [POD_RING_SIZE, NODE_RING_SIZE, KATRAN_SIZE] {
        for count in [100, 1000] {
            out.push(build_time(size, count));
        }
    }
    for count in [3, 10, 100, 1000] {
        for size in [NODE_RING_SIZE, POD_RING_SIZE] {
            out.extend(quality(size, count));
        }
    }
    Ok(out)
}

/// `count` backends with distinct identities and addresses, equal weights.
fn identities(count: usize) -> Vec<([u8; 4], u32)> {
    (0..count)
        .map(|i| {
            let address = Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).expect("count") + 1);
            (address.octets(), u32::from_ne_bytes(address.octets()))
        })
        .collect()
}

fn backends(ids: &[([u8; 4], u32)]) -> Vec<Backend<'_>> {
    ids.iter()
        .map(|(id, addr)| Backend {
            id,
            addr: *addr,
            weight: 1,
        })
        .collect()
}

fn build_time(size: usize, count: usize) -> Measurement {
    let ids = identities(count);
    let list = backends(&ids);
    let times: Vec<f64> = (0..BUILDS)
        .map(|_| {
            let started = Instant::now();
            let table = maglev::build(&list, size);
            let took = started.elapsed();
            std::hint::black_box(table);
            took.as_secs_f64() * 1e3
        })
        .collect();
    Measurement::new(
        GROUP,
        &format!("build time, M = {size}, {count} backends"),
        median(&times),
        "ms",
        &format!("median of {BUILDS} builds (release, one thread), equal weights"),
    )
}

fn quality(size: usize, count: usize) -> Vec<Measurement> {
    let ids = identities(count);
    let all = backends(&ids);
    let before = maglev::build(&all, size);
    let stats = maglev::share_stats(&before).expect("a table with backends");
    // The middle backend leaves: neither first nor last in the fill order.
    let mut rest = all.clone();
    rest.remove(count / 2);
    let after = maglev::build(&rest, size);
    let remapped = maglev::remapped_fraction(&before, &after);
    let ratio = size as f64 / count as f64;
    vec![
        Measurement::new(
            GROUP,
            &format!("max/avg share, N = {count}, M = {size}"),
            stats.max_over_avg,
            "x",
            &format!(
                "largest backend's slots over the average (min/avg {:.4}); M/N = {ratio:.1}",
                stats.min_over_avg
            ),
        ),
        Measurement::new(
            GROUP,
            &format!("survivors' slots remapped when 1 of {count} leaves, M = {size}"),
            remapped * 100.0,
            "%",
            "slots of remaining backends that changed owner (the leaver's own slots must move and are not counted)",
        ),
    ]
}
