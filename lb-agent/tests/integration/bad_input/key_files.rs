//! The gossip key file, as `--check` and a start both check it (`config::host`): every
//! problem is placed at the `gossip.keyFile` line of the configuration, names the key
//! file and says what is wrong once. A key file any user may write is refused; one any
//! user may read is accepted with a warning.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use lb_agent::config::{self, host};

use super::table::{Checker, Expect};
use crate::support::host::FakeHost;

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");
/// Where the appended `gossip` line puts the key file's path.
const AT: &str = "line 25, column 20: gossip.keyFile: ";
const KEY: &[u8] = b"restart-test-key-0123456789\n";

/// How a case's key file is made, under a scratch directory.
enum Make {
    File(&'static [u8], u32),
    Missing,
    Directory,
    Fifo,
    DevZero,
    /// A link to a good root-only key, as Kubernetes projects a Secret.
    Symlink,
}

struct KeyCase {
    name: &'static str,
    make: Make,
    expect: Expect,
    /// A warning the accepted file must get.
    warning: Option<&'static str>,
}

const fn bad(name: &'static str, make: Make, parts: &'static [&'static str]) -> KeyCase {
    KeyCase {
        name,
        make,
        expect: Expect::Rejected(parts),
        warning: None,
    }
}

fn cases() -> Vec<KeyCase> {
    vec![
        KeyCase {
            name: "a root-only key (valid control)",
            make: Make::File(KEY, 0o600),
            expect: Expect::Accepted,
            warning: None,
        },
        KeyCase {
            name: "a link to a root-only key, as a projected Secret (valid control)",
            make: Make::Symlink,
            expect: Expect::Accepted,
            warning: None,
        },
        KeyCase {
            name: "a key every user may read (accepted, with a warning)",
            make: Make::File(KEY, 0o644),
            expect: Expect::Accepted,
            warning: Some("readable by every user (mode 644)"),
        },
        bad(
            "a short key",
            Make::File(b"0123456789", 0o600),
            &[AT, "holds 10 bytes", "at least 16"],
        ),
        bad(
            "whitespace only",
            Make::File(b" \n\t\n", 0o600),
            &[AT, "holds 0 bytes"],
        ),
        bad(
            "a key and newlines, too short",
            Make::File(b"abcdefghijklmno\n\n", 0o600),
            &[AT, "holds 15 bytes"],
        ),
        bad(
            "a key every user may write",
            Make::File(KEY, 0o666),
            &[AT, "writable by every user (mode 666)", "chmod 600"],
        ),
        bad(
            "a key only others may write",
            Make::File(KEY, 0o602),
            &[AT, "writable by every user (mode 602)"],
        ),
        bad(
            "a missing key file",
            Make::Missing,
            &[
                AT,
                "gossip.key: cannot read the file: No such file or directory",
            ],
        ),
        bad(
            "a directory",
            Make::Directory,
            &[AT, "is a directory, not a regular file"],
        ),
        bad("a FIFO", Make::Fifo, &[AT, "is a FIFO (named pipe)"]),
        bad(
            "/dev/zero",
            Make::DevZero,
            &[
                "line 25, column 20",
                "/dev/zero: the file is a character device",
            ],
        ),
        bad(
            "a key file over 64 KiB",
            Make::File(&[b'k'; 64 * 1024 + 1], 0o600),
            &[AT, "larger than 64 KiB"],
        ),
    ]
}

fn mkfifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn make(dir: &Path, make: &Make) -> PathBuf {
    let path = dir.join("gossip.key");
    match make {
        Make::File(bytes, mode) => {
            fs::write(&path, bytes).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        Make::Missing => {}
        Make::Directory => fs::create_dir(&path).expect("mkdir"),
        Make::Fifo => mkfifo(&path),
        Make::DevZero => return PathBuf::from("/dev/zero"),
        Make::Symlink => {
            let target = dir.join("..data-key");
            fs::write(&target, KEY).expect("write");
            fs::set_permissions(&target, fs::Permissions::from_mode(0o400)).expect("chmod");
            std::os::unix::fs::symlink(&target, &path).expect("symlink");
        }
    }
    path
}

/// The example with gossip keyed by `key`, written next to it.
fn config_for(dir: &Path, key: &Path) -> PathBuf {
    let path = dir.join("xdplb.yaml");
    let text = format!("{EXAMPLE}gossip: {{ keyFile: {} }}\n", key.display());
    fs::write(&path, text).expect("write");
    path
}

/// `Ok` with the warnings when the host check passes, else its message.
fn checked(config_path: &Path) -> Result<Vec<String>, String> {
    let standalone = config::load(config_path).map_err(|error| error.to_string())?;
    let fake = FakeHost::new();
    host::check(
        config_path,
        &standalone.config().node_settings,
        &fake.host(),
    )
    .map(|warnings| warnings.iter().map(ToString::to_string).collect())
    .map_err(|error| error.to_string())
}

pub fn run() {
    let mut checker = Checker::new("gossip-key-file");
    for case in cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = make(dir.path(), &case.make);
        let config_path = config_for(dir.path(), &key);
        let outcome = checked(&config_path).map(|warnings| {
            let expected = case.warning.map(|warning| (AT, warning));
            let fits = match expected {
                None => warnings.is_empty(),
                Some((at, warning)) => {
                    warnings.len() == 1 && warnings[0].contains(at) && warnings[0].contains(warning)
                }
            };
            if !fits {
                checker.fail(case.name, format!("warnings {warnings:?}"));
            }
        });
        if let Err(message) = &outcome
            && message.matches("os error").count() > 1
        {
            checker.fail(case.name, format!("the OS error is repeated: {message}"));
        }
        checker.verdict(case.name, case.expect, outcome);
    }
    checker.finish();
}

/// The agent binary refuses a bad key file as a bad configuration file: exit status 2,
/// with the line `error: FILE: line N, column M: gossip.keyFile: ...` (among others
/// about this machine's links, which are not the example's).
pub fn run_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make(dir.path(), &Make::File(KEY, 0o666));
    let config_path = config_for(dir.path(), &key);
    for args in [&["--check"][..], &[]] {
        let output = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .expect("run lb-agent");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(&format!("error: {}: {AT}", config_path.display()))),
            "{args:?}: {stderr}"
        );
    }
}

pub fn counts() -> (usize, usize) {
    super::table::count(cases().iter().map(|case| &case.expect))
}
