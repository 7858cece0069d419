//! Layout versions of the pinned maps, and the record of them the pin directory keeps.
//!
//! A map's layout is what its keys and values mean, byte for byte. Its version goes up
//! whenever a release changes the key or value type of the map (a field added, moved or
//! given another meaning), even when the size stays the same: the size alone cannot
//! tell two layouts apart. User space records the version and capacity of every pinned
//! map in a hash map pinned beside them ([`RecordKey`] -> [`RecordEntry`]), so a later
//! release knows what it adopts, migrates the layouts it knows and refuses newer ones.
//!
//! Release 0.1.0 kept no record: a pinned map without an entry has layout [`INITIAL`].

/// The layout every map had in release 0.1.0, and the one a new map starts with.
pub const INITIAL: u32 = 1;
/// `FLOWS` layout 2: [`crate::types::FlowValue::service_slot`] added.
pub const FLOWS: u32 = 2;
/// `SERVICES` layout 2: the padding word became [`crate::types::ServiceValue::slot`].
pub const SERVICES: u32 = 2;

/// Capacity of the record: one entry per map, with room for maps of later releases.
pub const RECORD_CAPACITY: u32 = 64;

/// Key of the layout record: the map's name from [`crate::maps`], NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub name: [u8; 16],
}

impl RecordKey {
    /// The key of the map called `name`; names longer than the kernel's 15 bytes are cut
    /// (no map of [`crate::maps`] is that long).
    pub fn new(name: &str) -> Self {
        let mut key = Self::default();
        let bytes = name.as_bytes();
        let len = bytes.len().min(key.name.len() - 1);
        key.name[..len].copy_from_slice(&bytes[..len]);
        key
    }
}

/// Value of the layout record: what the map pinned under the key's name holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordEntry {
    pub version: u32,
    pub max_entries: u32,
}

const _: () = {
    assert!(size_of::<RecordKey>() == 16);
    assert!(size_of::<RecordEntry>() == 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are `#[repr(C)]`, made only of integers and integer arrays without
    // padding, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::RecordKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RecordEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_the_name_nul_padded() {
        let key = RecordKey::new("FLOWS");
        assert_eq!(&key.name[..6], b"FLOWS\0");
        assert!(key.name[5..].iter().all(|byte| *byte == 0));
    }

    #[test]
    fn a_long_name_keeps_its_terminating_nul() {
        let key = RecordKey::new("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        assert_eq!(&key.name[..15], b"ABCDEFGHIJKLMNO");
        assert_eq!(key.name[15], 0);
    }
}
