//! Carrying a pinned map's entries into a new map: one of another capacity, so a changed
//! `capacities` setting takes effect with a restart, or one of this release's layout,
//! so an upgrade keeps what the previous release's maps held (a [`Migration`] converts
//! each entry). The established flows (and every other entry) move into the new map
//! before the new programs replace the old ones.
//!
//! The old map is first pinned at `retired/<MAP>` and unpinned at `maps/<MAP>`; the
//! object then creates the map afresh at `maps/<MAP>`, the entries are copied, and the
//! retired pin is removed (the old programs keep their map alive until the pinned links
//! take the new ones). A retired pin found at start is a copy that did not finish: it
//! is carried again.
//! Shrinking a hash map copies until it is full (the rest is counted as left out);
//! shrinking an LRU map keeps the entries copied last, in the kernel's iteration order.

use std::{fs, io};

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
};

use super::{
    adoption::MapSpec,
    layout::LayoutRecord,
    loader::{LoadError, PinDir, pins_error},
};

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

/// A change of one hash map's layout: what an entry of layout [`Self::FROM`] becomes.
pub(super) trait Migration {
    /// The layout version this migration reads.
    const FROM: u32;
    type OldKey: Pod;
    type OldValue: Pod;
    type Key: Pod;
    type Value: Pod;
    fn convert(key: Self::OldKey, value: Self::OldValue) -> (Self::Key, Self::Value);
}

/// How a pinned map of an older layout becomes one of this release's.
#[derive(Clone, Copy)]
pub(super) struct Migrated {
    /// The layout it reads.
    pub(super) from: u32,
    pub(super) key_size: usize,
    pub(super) value_size: usize,
    pub(super) copy: Copier,
}

/// The migration `M` of a hash map.
pub(super) fn migrated<M: Migration>() -> Migrated {
    Migrated {
        from: M::FROM,
        key_size: size_of::<M::OldKey>(),
        value_size: size_of::<M::OldValue>(),
        copy: |from, to| copy_hash_with(from, to, M::convert),
    }
}

fn copy_hash<K: Pod, V: Pod>(from: Map, to: &mut Map) -> Result<Carried, MapError> {
    copy_hash_with::<K, V, K, V>(from, to, |key, value| (key, value))
}

fn copy_hash_with<OK: Pod, OV: Pod, K: Pod, V: Pod>(
    from: Map,
    to: &mut Map,
    convert: impl Fn(OK, OV) -> (K, V),
) -> Result<Carried, MapError> {
    let from: HashMap<MapData, OK, OV> = HashMap::try_from(from)?;
    let mut to: HashMap<&mut MapData, K, V> = HashMap::try_from(to)?;
    let mut carried = Carried::default();
    for entry in from.iter() {
        let (key, value) = entry?;
        let (key, value) = convert(key, value);
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

/// One pinned map whose entries move into a new map of this release's layout and the
/// configured capacity.
pub(super) struct Move<'a> {
    pub(super) spec: &'a MapSpec,
    /// The layout of the pinned map.
    pub(super) from: u32,
    pub(super) copy: Copier,
    /// Already retired by a start that did not finish.
    pub(super) resumed: bool,
    /// The pinned map's capacity.
    pub(super) pinned_entries: u32,
}

/// Moves the pin of a map about to be replaced aside, to be carried once the new map
/// exists (pinned again under `retired/`, then unpinned: the BPF filesystem refuses
/// renames). A retired pin left by an interrupted start is the one to carry:
/// the pin beside it holds at most a partial copy and goes.
pub(super) fn retire(pins: &PinDir, planned: &Move<'_>) -> Result<(), LoadError> {
    let name = planned.spec.name;
    let (current, retired) = (pins.map(name), pins.retired_map(name));
    if !planned.resumed {
        let dir = pins.retired();
        fs::create_dir_all(&dir).map_err(pins_error(&dir))?;
        let map = MapData::from_pin(&current).map_err(carry_error(name))?;
        map.pin(&retired)
            .map_err(|error| carry_error(name)(MapError::PinError { name: None, error }))?;
    }
    match fs::remove_file(&current) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(pins_error(&current)(error)),
        _ => Ok(()),
    }
}

/// Copies every retired map into the loaded map of its name, records its new layout
/// and removes the retired pin.
pub(super) fn carry_retired(
    pins: &PinDir,
    moves: &[Move<'_>],
    ebpf: &mut Ebpf,
    record: &mut LayoutRecord,
) -> Result<(), LoadError> {
    for planned in moves {
        let spec = planned.spec;
        let retired = pins.retired_map(spec.name);
        let previous = MapData::from_pin(&retired)
            .and_then(Map::from_map_data)
            .map_err(carry_error(spec.name))?;
        let map = ebpf
            .map_mut(spec.name)
            .ok_or(LoadError::MissingMap { name: spec.name })?;
        let carried = (planned.copy)(previous, map).map_err(carry_error(spec.name))?;
        report(planned, carried);
        record.set(pins, spec.name, spec.layout, spec.max_entries)?;
        fs::remove_file(&retired).map_err(pins_error(&retired))?;
    }
    if !moves.is_empty() {
        // Empty now; a failure here only leaves an empty directory.
        let _ = fs::remove_dir(pins.retired());
    }
    Ok(())
}

fn report(planned: &Move<'_>, carried: Carried) {
    let spec = planned.spec;
    if planned.from == spec.layout {
        tracing::info!(
            map = spec.name,
            entries = carried.entries,
            capacity = spec.max_entries,
            "carried the pinned map's entries into a map of the configured capacity"
        );
    } else {
        tracing::info!(
            map = spec.name,
            entries = carried.entries,
            from_layout = planned.from,
            layout = spec.layout,
            capacity = spec.max_entries,
            "migrated the pinned map's entries to this release's layout"
        );
    }
    if carried.left_out > 0 {
        tracing::warn!(
            map = spec.name,
            left_out = carried.left_out,
            "the smaller map had no room for every entry"
        );
    }
}

fn carry_error(map: &'static str) -> impl FnOnce(MapError) -> LoadError {
    move |source| LoadError::Carry { map, source }
}
