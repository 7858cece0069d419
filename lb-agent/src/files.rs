//! Reading the files a user hands the agent and `lbctl` (configuration, settings, the
//! gossip key, MetalLB's configuration): regular files only, and at most a stated size.
//!
//! A path that names `/dev/zero` would otherwise grow the process by gigabytes in
//! seconds, and a FIFO would block the reader until a writer comes, forever. So the file
//! is opened without blocking, refused unless it is a regular file, and read up to its
//! limit plus one byte, which tells a file over the limit from one at it.

use std::{
    fs::{File, Metadata},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// At most this much configuration: a file of 1,000 services with 50 endpoints each is
/// about 3 MiB.
pub const CONFIG_LIMIT: u64 = 16 * MIB;
/// At most this much gossip key: keys are tens of bytes.
pub const KEY_LIMIT: u64 = 64 * KIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    #[error("the file is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("the file is larger than {}, the most read from such a file", size(*.limit))]
    TooLarge { limit: u64 },
    #[error("the file is not UTF-8 text")]
    NotText,
}

/// `1048576` -> `1 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        _ if bytes >= MIB && bytes.is_multiple_of(MIB) => format!("{} MiB", bytes / MIB),
        _ if bytes >= KIB && bytes.is_multiple_of(KIB) => format!("{} KiB", bytes / KIB),
        _ => format!("{bytes} bytes"),
    }
}

/// What a non-regular file is, for the error.
fn kind(metadata: &Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path`, refusing anything else and files over
/// `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_with_mode(path, limit).map(|(bytes, _)| bytes)
}

/// [`read`], and the file's permission bits (of the file read, not of a symlink to it).
pub fn read_with_mode(path: &Path, limit: u64) -> Result<(Vec<u8>, u32), ReadError> {
    let file = File::options()
        .read(true)
        // A FIFO's open blocks until a writer opens it; this one returns at once.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(ReadError::NotRegular(kind(&metadata)));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok((bytes, metadata.permissions().mode() & 0o7777))
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read(path, limit)?).map_err(|_| ReadError::NotText)
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, fs, os::unix::ffi::OsStrExt as _, time::Instant};

    use super::*;

    fn mkfifo(path: &Path) {
        let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_regular_file_within_its_limit_is_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        fs::write(&path, "node: node1\n").expect("write");
        assert_eq!(read_text(&path, 12).expect("read"), "node: node1\n");
    }

    #[test]
    fn a_file_over_its_limit_is_refused_with_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        fs::write(&path, vec![b'a'; 2049]).expect("write");
        let error = read(&path, 2 * KIB).expect_err("too large");
        assert_eq!(
            error.to_string(),
            "the file is larger than 2 KiB, the most read from such a file"
        );
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let started = Instant::now();
        for (path, what) in [
            (
                Path::new("/dev/zero"),
                "the file is a character device, not a regular file",
            ),
            (
                fifo.as_path(),
                "the file is a FIFO (named pipe), not a regular file",
            ),
            (dir.path(), "the file is a directory, not a regular file"),
        ] {
            let error = read(path, CONFIG_LIMIT).expect_err("refused");
            assert_eq!(error.to_string(), what, "{}", path.display());
        }
        assert!(started.elapsed().as_secs() < 1, "a refusal blocked");
    }

    #[test]
    fn binary_content_is_not_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("binary");
        fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(read_text(&path, KIB), Err(ReadError::NotText)));
    }
}
