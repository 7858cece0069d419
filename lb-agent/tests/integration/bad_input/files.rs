//! Inputs that are not regular files, or are far too large, given to every program that
//! reads a file a user names: the agent's standalone file (`--check` and a start), the
//! Kubernetes settings file, the kubeconfig lbctl is given (`--kubeconfig`, or
//! `$KUBECONFIG`, which `lb-agent kubernetes` reads the same way), and `lbctl migrate`'s
//! input. Each must be refused within a
//! second with the file named and what it is, and the process must stay within a few
//! tens of MiB: `/dev/zero` would otherwise grow it by gigabytes in seconds, and a FIFO
//! block it until a writer comes.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::table::{Checker, Expect};

/// What a refused read may take: a second, with room for a loaded machine's start-up.
const PATIENCE: Duration = Duration::from_secs(5);
/// The most a process may grow to while refusing: its own size plus the 16 MiB read.
const MAX_RSS_KIB: i64 = 64 * 1024;

/// A program that reads a file named on its command line.
struct Reader {
    name: &'static str,
    command: fn(&Path) -> Command,
    /// The exit status when the file is refused.
    code: i32,
}

fn agent(args: &[&str], file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    command.args(args).arg(file);
    command
}

fn readers() -> [Reader; 6] {
    [
        Reader {
            name: "lb-agent --check",
            command: |file| {
                let mut command = agent(&["--check", "--config"], file);
                command.env_remove("XDPLB_CONFIG");
                command
            },
            code: 2,
        },
        Reader {
            name: "lb-agent (a start)",
            command: |file| agent(&["--config"], file),
            code: 2,
        },
        Reader {
            name: "lb-agent kubernetes",
            command: |file| {
                let mut command = super::kubernetes_agent(file);
                command.env_remove("KUBECONFIG");
                command
            },
            code: 2,
        },
        Reader {
            name: "lbctl --kubeconfig",
            command: |file| {
                let mut command = crate::support::lbctl::command();
                command.arg("--kubeconfig").arg(file).arg("pools");
                command
            },
            code: 3,
        },
        Reader {
            name: "lbctl with $KUBECONFIG",
            command: |file| {
                let mut command = crate::support::lbctl::command();
                command.env("KUBECONFIG", file).arg("pools");
                command
            },
            code: 3,
        },
        Reader {
            name: "lbctl migrate metallb",
            command: |file| {
                let mut command = crate::support::lbctl::command();
                command.args(["migrate", "metallb"]).arg(file);
                command
            },
            code: 1,
        },
    ]
}

/// One kind of file, and what the refusal must say about it.
struct FileKind {
    name: &'static str,
    path: PathBuf,
    expect: Expect,
}

fn mkfifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn kinds(dir: &Path) -> Vec<FileKind> {
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let huge = dir.join("huge.yaml");
    // Sparse: a gibibyte of zeros that takes no disk.
    fs::File::create(&huge)
        .and_then(|file| file.set_len(1 << 30))
        .expect("huge file");
    let syntax = dir.join("syntax.yaml");
    fs::write(&syntax, "node: [\n").expect("write");
    vec![
        FileKind {
            name: "/dev/zero",
            path: PathBuf::from("/dev/zero"),
            expect: Expect::Rejected(&["/dev/zero", "is a character device, not a regular file"]),
        },
        FileKind {
            name: "a FIFO",
            path: fifo,
            expect: Expect::Rejected(&["fifo", "is a FIFO (named pipe), not a regular file"]),
        },
        FileKind {
            name: "a directory",
            path: dir.to_owned(),
            expect: Expect::Rejected(&["is a directory, not a regular file"]),
        },
        FileKind {
            name: "a 1 GiB file",
            path: huge,
            expect: Expect::Rejected(&["huge.yaml", "is larger than 16 MiB"]),
        },
        // A regular file is read: its refusal is about its content.
        FileKind {
            name: "a regular file (read, then refused for its YAML)",
            path: syntax,
            expect: Expect::Rejected(&["syntax.yaml", "line "]),
        },
    ]
}

/// The resident high-water mark of process `pid` since its exec, in KiB (0 once it has
/// exited). Not `wait4`'s `ru_maxrss`: that counts the forked copy of this test
/// process before the exec too.
fn high_water_kib(pid: libc::pid_t) -> i64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs `command` to its end within [`PATIENCE`]: its exit status, stderr and peak
/// resident size in KiB as sampled every millisecond (a process that keeps growing is
/// caught; one that exits at once has nothing to catch); `Err` if it had to be killed.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by waitpid while its memory is sampled"
)]
fn run(mut command: Command) -> Result<(i32, String, i64), String> {
    let errors = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors.reopen().expect("reopen"))
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(high_water_kib(pid));
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; the status pointer is valid for the call.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            let stderr = fs::read_to_string(errors.path()).unwrap_or_default();
            return Ok((code, stderr, peak));
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn run_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checker = Checker::new("unreadable-files");
    for reader in readers() {
        for kind in kinds(dir.path()) {
            let case = format!("{} on {}", reader.name, kind.name);
            let outcome = match run((reader.command)(&kind.path)) {
                Err(problem) => {
                    checker.fail(&case, problem);
                    continue;
                }
                Ok((code, stderr, rss)) => {
                    if rss > MAX_RSS_KIB {
                        checker.fail(&case, format!("grew to {rss} KiB"));
                    }
                    if code != reader.code {
                        checker.fail(&case, format!("exit status {code}: {stderr}"));
                    }
                    Err(stderr)
                }
            };
            checker.verdict(&case, kind.expect, outcome);
        }
        fs::remove_file(dir.path().join("fifo")).expect("remove fifo");
        for file in ["huge.yaml", "syntax.yaml"] {
            fs::remove_file(dir.path().join(file)).expect("remove");
        }
    }
    let control = dir.path().join("pool.yaml");
    fs::write(&control, super::lbctl::POOL).expect("write");
    let mut command = crate::support::lbctl::command();
    command.args(["migrate", "metallb"]).arg(&control);
    let outcome = match run(command) {
        Ok((0, _, _)) => Ok(()),
        Ok((code, stderr, _)) => Err(format!("exit status {code}: {stderr}")),
        Err(problem) => Err(problem),
    };
    checker.verdict(
        "lbctl migrate metallb on a valid file (control)",
        Expect::Accepted,
        outcome,
    );
    checker.finish();
}

/// Cases in the table: every reader on every kind, and the control.
pub fn counts() -> (usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = kinds(dir.path()).len();
    (readers().len() * kinds, 1)
}
