//! The pin directory's layout record: the layout version and capacity of every pinned
//! map, in a hash map pinned at `<pinDir>/layout` (the BPF filesystem holds nothing but
//! pins, so the record is a map too). See [`lb_common::layout`].
//!
//! The record is kept ahead of the pins it describes: a map about to be created gets its
//! entry before the object creates it, and a map whose entries are carried into a new
//! layout keeps the old entry until the carry finished. So after an interrupted start
//! the record still names what each pin (or retired pin) holds.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use lb_common::layout::{INITIAL, RECORD_CAPACITY, RecordEntry, RecordKey};

use super::loader::{LoadError, PinDir};

/// The opened record.
pub(super) struct LayoutRecord {
    map: HashMap<MapData, RecordKey, RecordEntry>,
}

impl LayoutRecord {
    /// The pinned record, `None` if there is none (no pins, or release 0.1.0's).
    pub(super) fn open(pins: &PinDir) -> Result<Option<Self>, LoadError> {
        let path = pins.layout();
        if !path.exists() {
            return Ok(None);
        }
        Self::from_pin(&path).map(Some)
    }

    /// The pinned record, created (empty) and pinned if there is none.
    pub(super) fn open_or_create(pins: &PinDir) -> Result<Self, LoadError> {
        let path = pins.layout();
        if !path.exists() {
            HashMap::<MapData, RecordKey, RecordEntry>::create(RECORD_CAPACITY, 0)
                .map_err(record_error(&path))?
                .pin(&path)
                .map_err(|error| record_error(&path)(MapError::PinError { name: None, error }))?;
        }
        Self::from_pin(&path)
    }

    fn from_pin(path: &Path) -> Result<Self, LoadError> {
        let map = MapData::from_pin(path)
            .and_then(Map::from_map_data)
            .and_then(HashMap::try_from)
            .map_err(record_error(path))?;
        Ok(Self { map })
    }

    /// The layout version of the map pinned as `name`: [`INITIAL`] when unrecorded.
    pub(super) fn version(record: Option<&Self>, name: &str) -> u32 {
        record
            .and_then(|record| record.map.get(&RecordKey::new(name), 0).ok())
            .map_or(INITIAL, |entry| entry.version)
    }

    /// Records that the map pinned as `name` holds `version` with `max_entries`.
    pub(super) fn set(
        &mut self,
        pins: &PinDir,
        name: &str,
        version: u32,
        max_entries: u32,
    ) -> Result<(), LoadError> {
        let entry = RecordEntry {
            version,
            max_entries,
        };
        self.map
            .insert(RecordKey::new(name), entry, 0)
            .map_err(record_error(&pins.layout()))
    }
}

fn record_error(path: &Path) -> impl FnOnce(MapError) -> LoadError + '_ {
    move |source| LoadError::Record {
        path: path.to_owned(),
        source,
    }
}
