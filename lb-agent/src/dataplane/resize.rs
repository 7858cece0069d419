//! Carrying a pinned map's entries into a map of another capacity, so a changed
//! `capacities` setting takes effect with a restart: the established flows (and every
//! other entry) move into the new map before the new programs replace the old ones.
//!
//! The old map is first pinned at `retired/<MAP>` and unpinned at `maps/<MAP>`; the
//! object then creates the map afresh at `maps/<MAP>`, the entries are copied, and the
//! retired pin is removed (the old programs keep their map alive until the pinned links
//! take the new ones). A retired pin found at start is a copy that did not finish: it
//! is carried again.
//! Shrinking a hash map copies until it is full (the rest is counted as left out);
//! shrinking an LRU map keeps the entries copied last, in the kernel's iteration order.

use std::fs;

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
};

use super::loader::{LoadError, MapSpec, PinDir, pins_error};

/// How a map stores its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Hash or LRU hash: keys and values.
    Hash,
    /// Array: a value per index.
    Array,
    /// Per-CPU array: a value per index and CPU.
    PerCpuArray,
}

/// What a copy moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    pub entries: u64,
    /// Entries the smaller map had no room for.
    pub left_out: u64,
}

/// Copies the entries of the first map into the second, both of one map's types.
pub(super) type Copier = fn(Map, &mut Map) -> Result<Carried, MapError>;

/// The copier for a map of `kind` with keys `K` (`u32` indexes for arrays) and values `V`.
pub(super) fn copier<K: Pod, V: Pod>(kind: Kind) -> Copier {
    match kind {
        Kind::Hash => copy_hash::<K, V>,
        Kind::Array => copy_array::<V>,
        Kind::PerCpuArray => copy_per_cpu_array::<V>,
    }
}

fn copy_hash<K: Pod, V: Pod>(from: Map, to: &mut Map) -> Result<Carried, MapError> {
    let from: HashMap<MapData, K, V> = HashMap::try_from(from)?;
    let mut to: HashMap<&mut MapData, K, V> = HashMap::try_from(to)?;
    let mut carried = Carried::default();
    for entry in from.iter() {
        let (key, value) = entry?;
        match to.insert(key, value, 0) {
            Ok(()) => carried.entries += 1,
            // A plain hash map refuses inserts once full (an LRU evicts instead).
            Err(MapError::SyscallError(_)) => carried.left_out += 1,
            Err(error) => return Err(error),
        }
    }
    Ok(carried)
}

fn copy_array<V: Pod>(from: Map, to: &mut Map) -> Result<Carried, MapError> {
    let from: Array<MapData, V> = Array::try_from(from)?;
    let mut to: Array<&mut MapData, V> = Array::try_from(to)?;
    copy_indexes(from.len(), to.len(), |index| {
        to.set(index, from.get(&index, 0)?, 0)
    })
}

fn copy_per_cpu_array<V: Pod>(from: Map, to: &mut Map) -> Result<Carried, MapError> {
    let from: PerCpuArray<MapData, V> = PerCpuArray::try_from(from)?;
    let mut to: PerCpuArray<&mut MapData, V> = PerCpuArray::try_from(to)?;
    copy_indexes(from.len(), to.len(), |index| {
        to.set(index, from.get(&index, 0)?, 0)
    })
}

/// Copies the indexes two arrays share with `copy`; the rest of a longer source is
/// left out.
fn copy_indexes(
    from_len: u32,
    to_len: u32,
    mut copy: impl FnMut(u32) -> Result<(), MapError>,
) -> Result<Carried, MapError> {
    let kept = from_len.min(to_len);
    for index in 0..kept {
        copy(index)?;
    }
    Ok(Carried {
        entries: u64::from(kept),
        left_out: u64::from(from_len - kept),
    })
}

/// Moves the pin of a map about to be replaced aside, to be carried once the new map
/// exists (pinned again under `retired/`, then unpinned: the BPF filesystem refuses
/// renames). A retired pin left by an interrupted start is the one to carry:
/// the pin beside it holds at most a partial copy and goes.
pub(super) fn retire(pins: &PinDir, spec: &MapSpec) -> Result<(), LoadError> {
    let (current, retired) = (pins.map(spec.name), pins.retired_map(spec.name));
    if !retired.exists() {
        let dir = pins.retired();
        fs::create_dir_all(&dir).map_err(pins_error(&dir))?;
        let map = MapData::from_pin(&current).map_err(carry_error(spec))?;
        map.pin(&retired)
            .map_err(|error| carry_error(spec)(MapError::PinError { name: None, error }))?;
    }
    fs::remove_file(&current).map_err(pins_error(&current))
}

/// Copies every retired map into the loaded map of its name and removes the retired
/// pin; returns how many maps were carried.
pub(super) fn carry_retired(
    pins: &PinDir,
    specs: &[MapSpec],
    ebpf: &mut Ebpf,
) -> Result<usize, LoadError> {
    let mut carried_maps = 0;
    for spec in specs {
        let retired = pins.retired_map(spec.name);
        if !retired.exists() {
            continue;
        }
        let previous = MapData::from_pin(&retired)
            .and_then(Map::from_map_data)
            .map_err(carry_error(spec))?;
        let map = ebpf
            .map_mut(spec.name)
            .ok_or(LoadError::MissingMap { name: spec.name })?;
        let carried = (spec.copy)(previous, map).map_err(carry_error(spec))?;
        tracing::info!(
            map = spec.name,
            entries = carried.entries,
            capacity = spec.max_entries,
            "carried the pinned map's entries into a map of the configured capacity"
        );
        if carried.left_out > 0 {
            tracing::warn!(
                map = spec.name,
                left_out = carried.left_out,
                "the smaller map had no room for every entry"
            );
        }
        fs::remove_file(&retired).map_err(pins_error(&retired))?;
        carried_maps += 1;
    }
    if carried_maps > 0 {
        // Empty now; a failure here only leaves an empty directory.
        let _ = fs::remove_dir(pins.retired());
    }
    Ok(carried_maps)
}

fn carry_error(spec: &MapSpec) -> impl FnOnce(MapError) -> LoadError {
    let map = spec.name;
    move |source| LoadError::Carry { map, source }
}
