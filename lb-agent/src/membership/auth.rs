//! Authenticated gossip datagrams.
//!
//! Every datagram carries a small header and an HMAC-SHA256 tag over header and payload:
//!
//! ```text
//! "XL" | version (1) | key id (8) | epoch (u64 BE) | sequence (u64 BE) | name length (1) | name | payload | tag (32)
//! ```
//!
//! * The **key id** is derived from the shared key (an HMAC of a fixed label, truncated),
//!   so a receiver tells a peer configured with another key ("wrong key") from a datagram
//!   whose tag does not verify ("forged") without revealing the key.
//! * The **epoch** is the sender's boot time in microseconds since the Unix epoch; the
//!   **sequence** starts at 1 and grows by one per datagram within an epoch.
//! * A receiver keeps, per sender name, the newest epoch seen and a 64-datagram sliding
//!   window of sequence numbers ([`ReplayWindow`]). A datagram from an older epoch, or
//!   whose sequence is at or below the window or already seen, is a replay. A newer epoch
//!   is a restarted peer and resets the window, so a restart is accepted at once while
//!   old captured datagrams are not.
//!
//! Limits, by design: a receiver that has never heard from a sender (it just started)
//! accepts that sender's first authenticated datagram of any epoch; from then on older
//! epochs are refused. Epochs come from the wall clock, so a node whose clock went
//! backwards across a restart is refused (counted as replays) by peers that saw its
//! previous run, until they restart; keep node clocks synchronised.

use std::{collections::HashMap, fmt, path::Path};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::files::{self, ReadError};

const MAGIC: [u8; 2] = *b"XL";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const TAG_LEN: usize = 32;
/// Magic, version, key id, epoch, sequence, name length.
const FIXED_HEADER_LEN: usize = 2 + 1 + KEY_ID_LEN + 8 + 8 + 1;
/// Shortest datagram: fixed header, a one-byte name, no payload, tag.
pub const MIN_DATAGRAM_LEN: usize = FIXED_HEADER_LEN + 1 + TAG_LEN;
/// What the header and tag add to a payload with a sender name of `name_len` bytes.
pub const fn overhead(name_len: usize) -> usize {
    FIXED_HEADER_LEN + name_len + TAG_LEN
}
/// Shortest accepted key.
pub const MIN_KEY_LEN: usize = 16;
/// Sequence numbers tracked behind the newest one (reordered datagrams inside it pass).
const WINDOW: u64 = 64;
const KEY_ID_LABEL: &[u8] = b"xdplb gossip key id v1";

type HmacSha256 = Hmac<Sha256>;

/// The cluster's shared gossip key.
#[derive(Clone)]
pub struct GossipKey {
    bytes: Vec<u8>,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipKey")
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Why a gossip key file cannot be used. The messages leave the path out: the caller
/// names the file (or the `gossip.keyFile` line that names it).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error(
        "the key holds {len} bytes (ignoring trailing whitespace); at least {MIN_KEY_LEN} are needed, e.g. from `head -c 32 /dev/urandom | base64` (the same file on every node)"
    )]
    TooShort { len: usize },
    #[error(
        "the key file is writable by every user (mode {mode:03o}): anyone on this host could replace the cluster's key; make it root-only (`chmod 600`)"
    )]
    WritableByOthers { mode: u32 },
}

/// A key read from its file, and whether every user may read that file.
#[derive(Debug)]
pub struct KeyFile {
    pub key: GossipKey,
    /// The file's mode when every user may read it: the key lets anyone who has it
    /// speak for the cluster.
    pub readable_by_others: Option<u32>,
}

impl KeyFile {
    /// What to tell the user about the file, if anything.
    pub fn warning(&self) -> Option<String> {
        self.readable_by_others.map(|mode| {
            format!(
                "the key file is readable by every user (mode {mode:03o}): whoever reads it can forge gossip; make it root-only (`chmod 600`)"
            )
        })
    }
}

impl GossipKey {
    /// A key from raw bytes, refusing ones shorter than [`MIN_KEY_LEN`].
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() < MIN_KEY_LEN {
            return None;
        }
        let mut mac = mac_for(&bytes);
        mac.update(KEY_ID_LABEL);
        let digest = mac.finalize().into_bytes();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Some(Self { bytes, id })
    }

    /// Reads a key file: its bytes, less trailing whitespace (a key written with `echo`
    /// or an editor ends with a newline the other nodes' copies may lack). A file every
    /// user may write is refused.
    pub fn from_file(path: &Path) -> Result<KeyFile, KeyError> {
        let (mut bytes, mode) = files::read_with_mode(path, files::KEY_LIMIT)?;
        if mode & 0o002 != 0 {
            return Err(KeyError::WritableByOthers { mode });
        }
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        let len = bytes.len();
        let key = Self::new(bytes).ok_or(KeyError::TooShort { len })?;
        Ok(KeyFile {
            key,
            readable_by_others: (mode & 0o004 != 0).then_some(mode),
        })
    }

    /// A short public fingerprint for logs: equal on nodes sharing the key.
    pub fn fingerprint(&self) -> String {
        hex(&self.id)
    }

    fn mac(&self) -> HmacSha256 {
        mac_for(&self.bytes)
    }
}

fn mac_for(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; construction cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("truncated")]
    Truncated,
    #[error("malformed header")]
    Malformed,
    #[error("signed with another key")]
    WrongKey,
    #[error("authentication tag does not verify")]
    Forged,
    #[error("replayed or stale")]
    Replayed,
    /// The header's protocol version is one this agent cannot read: a peer of a release
    /// more than one ahead (or a broken one), not a forgery.
    #[error("protocol version {0}, this agent reads {VERSION}")]
    Version(u8),
}

/// Signs outgoing datagrams as one sender during one boot epoch.
#[derive(Debug)]
pub struct Sealer {
    key: GossipKey,
    name: Vec<u8>,
    epoch: u64,
    sequence: u64,
}

impl Sealer {
    /// `name` must be 1 to 255 bytes (node names are at most 253).
    pub fn new(key: GossipKey, name: &str, epoch: u64) -> Self {
        assert!(
            (1..=usize::from(u8::MAX)).contains(&name.len()),
            "sender name length"
        );
        Self {
            key,
            name: name.as_bytes().to_vec(),
            epoch,
            sequence: 0,
        }
    }

    /// Header, `payload` and tag, with the next sequence number.
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        self.sequence += 1;
        let mut datagram = Vec::with_capacity(overhead(self.name.len()) + payload.len());
        datagram.extend_from_slice(&MAGIC);
        datagram.push(VERSION);
        datagram.extend_from_slice(&self.key.id);
        datagram.extend_from_slice(&self.epoch.to_be_bytes());
        datagram.extend_from_slice(&self.sequence.to_be_bytes());
        datagram.push(self.name.len() as u8);
        datagram.extend_from_slice(&self.name);
        datagram.extend_from_slice(payload);
        let mut mac = self.key.mac();
        mac.update(&datagram);
        datagram.extend_from_slice(&mac.finalize().into_bytes());
        datagram
    }
}

/// A datagram that passed every check.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub sender: &'a str,
    pub epoch: u64,
    pub payload: &'a [u8],
}

/// The newest epoch of one sender and which recent sequence numbers it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    epoch: u64,
    highest: u64,
    /// Bit `i` set: sequence `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn new(epoch: u64, sequence: u64) -> Self {
        Self {
            epoch,
            highest: sequence,
            seen: 1,
        }
    }

    /// Whether `(epoch, sequence)` is fresh; records it if so.
    pub fn accept(&mut self, epoch: u64, sequence: u64) -> bool {
        if epoch != self.epoch {
            if epoch < self.epoch {
                return false;
            }
            *self = Self::new(epoch, sequence);
            return true;
        }
        if sequence > self.highest {
            let shift = sequence - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = sequence;
            return true;
        }
        let age = self.highest - sequence;
        if age >= WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

/// Checks incoming datagrams against the key and each sender's replay window.
#[derive(Debug)]
pub struct Opener {
    key: GossipKey,
    windows: HashMap<String, ReplayWindow>,
}

struct Header<'a> {
    key_id: &'a [u8],
    epoch: u64,
    sequence: u64,
    name: &'a str,
    payload: &'a [u8],
    signed: &'a [u8],
    tag: &'a [u8],
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

fn parse(datagram: &[u8]) -> Result<Header<'_>, Reject> {
    // Magic and version first: another version's header may be laid out otherwise.
    let (Some(magic), Some(&version)) = (datagram.get(..2), datagram.get(2)) else {
        return Err(Reject::Truncated);
    };
    if magic != MAGIC {
        return Err(Reject::Malformed);
    }
    if version != VERSION {
        return Err(Reject::Version(version));
    }
    if datagram.len() < MIN_DATAGRAM_LEN {
        return Err(Reject::Truncated);
    }
    let name_len = usize::from(datagram[FIXED_HEADER_LEN - 1]);
    if name_len == 0 {
        return Err(Reject::Malformed);
    }
    let name_end = FIXED_HEADER_LEN + name_len;
    if datagram.len() < name_end + TAG_LEN {
        return Err(Reject::Truncated);
    }
    let name = std::str::from_utf8(&datagram[FIXED_HEADER_LEN..name_end])
        .map_err(|_| Reject::Malformed)?;
    let tag_start = datagram.len() - TAG_LEN;
    Ok(Header {
        key_id: &datagram[3..3 + KEY_ID_LEN],
        epoch: u64_at(datagram, 3 + KEY_ID_LEN),
        sequence: u64_at(datagram, 3 + KEY_ID_LEN + 8),
        name,
        payload: &datagram[name_end..tag_start],
        signed: &datagram[..tag_start],
        tag: &datagram[tag_start..],
    })
}

impl Opener {
    pub fn new(key: GossipKey) -> Self {
        Self {
            key,
            windows: HashMap::new(),
        }
    }

    /// Verifies `datagram` and records its sequence number.
    pub fn open<'a>(&mut self, datagram: &'a [u8]) -> Result<Opened<'a>, Reject> {
        let header = parse(datagram)?;
        if header.key_id != self.key.id {
            return Err(Reject::WrongKey);
        }
        let mut mac = self.key.mac();
        mac.update(header.signed);
        mac.verify_slice(header.tag).map_err(|_| Reject::Forged)?;
        if header.sequence == 0 {
            return Err(Reject::Malformed);
        }
        let fresh = match self.windows.get_mut(header.name) {
            Some(window) => window.accept(header.epoch, header.sequence),
            None => {
                self.windows.insert(
                    header.name.to_owned(),
                    ReplayWindow::new(header.epoch, header.sequence),
                );
                true
            }
        };
        if !fresh {
            return Err(Reject::Replayed);
        }
        Ok(Opened {
            sender: header.name,
            epoch: header.epoch,
            payload: header.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey::new(vec![byte; 32]).expect("long enough")
    }

    fn pair() -> (Sealer, Opener) {
        (Sealer::new(key(7), "node1", 1_000), Opener::new(key(7)))
    }

    #[test]
    fn a_sealed_datagram_opens_with_its_payload() {
        let (mut sealer, mut opener) = pair();
        let datagram = sealer.seal(b"hello");
        assert_eq!(datagram.len(), overhead(5) + 5);
        assert_eq!(
            opener.open(&datagram),
            Ok(Opened {
                sender: "node1",
                epoch: 1_000,
                payload: b"hello"
            })
        );
        let empty = sealer.seal(&[]);
        assert_eq!(
            opener.open(&empty).map(|opened| opened.payload.len()),
            Ok(0)
        );
    }

    #[test]
    fn any_flipped_bit_is_forged() {
        let (mut sealer, _) = pair();
        let datagram = sealer.seal(b"payload");
        // Past the key id: header fields, name, payload and tag are all covered.
        for at in 3 + KEY_ID_LEN..datagram.len() {
            let mut opener = Opener::new(key(7));
            let mut forged = datagram.clone();
            forged[at] ^= 0x01;
            let result = opener.open(&forged);
            assert!(
                matches!(
                    result,
                    Err(Reject::Forged | Reject::Malformed | Reject::Truncated)
                ),
                "byte {at}: {result:?}"
            );
        }
    }

    #[test]
    fn another_key_is_reported_as_wrong_key() {
        let mut sealer = Sealer::new(key(9), "node1", 1);
        let mut opener = Opener::new(key(7));
        assert_eq!(opener.open(&sealer.seal(b"x")), Err(Reject::WrongKey));
    }

    #[test]
    fn a_tag_made_without_the_key_is_forged() {
        let (mut sealer, mut opener) = pair();
        let mut datagram = sealer.seal(b"take over");
        let tag_start = datagram.len() - TAG_LEN;
        let mut attacker = mac_for(b"not the cluster key at all");
        attacker.update(&datagram[..tag_start]);
        datagram.truncate(tag_start);
        datagram.extend_from_slice(&attacker.finalize().into_bytes());
        assert_eq!(opener.open(&datagram), Err(Reject::Forged));
    }

    #[test]
    fn short_or_garbled_datagrams_are_truncated_or_malformed() {
        let (mut sealer, mut opener) = pair();
        let datagram = sealer.seal(b"payload");
        for len in [0, 1, MIN_DATAGRAM_LEN - 1] {
            assert_eq!(
                opener.open(&datagram[..len]),
                Err(Reject::Truncated),
                "{len}"
            );
        }
        // Cut inside the tag: what remains fails verification or is too short for the name.
        let cut = &datagram[..datagram.len() - 10];
        assert!(matches!(
            opener.open(cut),
            Err(Reject::Forged | Reject::Truncated)
        ));
        let mut bad_magic = datagram.clone();
        bad_magic[0] = b'Y';
        assert_eq!(opener.open(&bad_magic), Err(Reject::Malformed));
        let mut next_version = datagram.clone();
        next_version[2] = VERSION + 1;
        assert_eq!(
            opener.open(&next_version),
            Err(Reject::Version(VERSION + 1))
        );
        assert_eq!(
            opener.open(&next_version[..3]),
            Err(Reject::Version(VERSION + 1))
        );
        let mut long_name = datagram;
        long_name[FIXED_HEADER_LEN - 1] = 200;
        assert_eq!(opener.open(&long_name), Err(Reject::Truncated));
    }

    #[test]
    fn a_replayed_datagram_is_refused() {
        let (mut sealer, mut opener) = pair();
        let first = sealer.seal(b"1");
        let second = sealer.seal(b"2");
        assert!(opener.open(&first).is_ok());
        assert!(opener.open(&second).is_ok());
        assert_eq!(opener.open(&first), Err(Reject::Replayed));
        assert_eq!(opener.open(&second), Err(Reject::Replayed));
    }

    #[test]
    fn reordering_inside_the_window_passes_once() {
        let (mut sealer, mut opener) = pair();
        let datagrams: Vec<Vec<u8>> = (0..70).map(|_| sealer.seal(b"x")).collect();
        assert!(opener.open(&datagrams[10]).is_ok());
        assert!(
            opener.open(&datagrams[5]).is_ok(),
            "late but inside the window"
        );
        assert_eq!(opener.open(&datagrams[5]), Err(Reject::Replayed));
        assert!(opener.open(&datagrams[69]).is_ok());
        // 69 - 4 = 65 behind the newest: outside the 64-datagram window.
        assert_eq!(opener.open(&datagrams[4]), Err(Reject::Replayed));
        assert!(
            opener.open(&datagrams[6]).is_ok(),
            "63 behind: still inside"
        );
    }

    #[test]
    fn a_restarted_peer_is_accepted_and_its_old_datagrams_are_not() {
        let mut opener = Opener::new(key(7));
        let mut before = Sealer::new(key(7), "node2", 5_000);
        let old: Vec<Vec<u8>> = (0..3).map(|_| before.seal(b"old")).collect();
        assert!(opener.open(&old[0]).is_ok());
        // The restarted agent starts its sequence at 1 again, in a newer epoch.
        let mut after = Sealer::new(key(7), "node2", 9_000);
        let fresh = after.seal(b"new");
        assert_eq!(opener.open(&fresh).map(|opened| opened.epoch), Ok(9_000));
        for datagram in &old {
            assert_eq!(opener.open(datagram), Err(Reject::Replayed));
        }
        assert!(opener.open(&after.seal(b"next")).is_ok());
    }

    #[test]
    fn senders_have_separate_windows() {
        let mut opener = Opener::new(key(7));
        let mut one = Sealer::new(key(7), "node1", 1);
        let mut two = Sealer::new(key(7), "node2", 1);
        assert!(opener.open(&one.seal(b"a")).is_ok());
        assert!(opener.open(&two.seal(b"a")).is_ok());
        assert!(opener.open(&one.seal(b"b")).is_ok());
    }

    #[test]
    fn keys_shorter_than_sixteen_bytes_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        fs::write(&path, "too-short\n").expect("write");
        let error = GossipKey::from_file(&path).expect_err("short key");
        let message = error.to_string();
        assert!(message.contains("holds 9 bytes"), "{message}");
        assert!(message.contains("at least 16"), "{message}");
        let missing = GossipKey::from_file(&dir.path().join("absent")).expect_err("missing");
        assert!(missing.to_string().starts_with("cannot read the file"));
    }

    #[test]
    fn trailing_newlines_do_not_change_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = dir.path().join("with");
        let without = dir.path().join("without");
        fs::write(&with, "0123456789abcdef0123\n").expect("write");
        fs::write(&without, "0123456789abcdef0123").expect("write");
        let with = GossipKey::from_file(&with).expect("valid").key;
        let without = GossipKey::from_file(&without).expect("valid").key;
        assert_eq!(with.fingerprint(), without.fingerprint());
        let mut sealer = Sealer::new(with, "a", 1);
        assert!(Opener::new(without).open(&sealer.seal(b"x")).is_ok());
        assert_ne!(key(1).fingerprint(), key(2).fingerprint());
    }
}
