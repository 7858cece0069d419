//! Network namespaces owned by one test: created on demand, removed with everything in
//! them when the guard drops, even if the test panics.

use std::{
    fs::File,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns`), deleted on drop with its processes.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `xl-<prefix>-<pid>-<n>` with loopback up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("xl-{prefix}-{}-{id}", std::process::id());
        run_command(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name };
        netns.run("ip link set lo up")?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `script` with `sh -c` inside the namespace; fails on a non-zero exit with
    /// its stderr. Returns stdout.
    pub fn run(&self, script: &str) -> anyhow::Result<String> {
        run_command(self.command("sh").args(["-c", script]))
            .with_context(|| format!("in netns {}: {script}", self.name))
    }

    /// A command that will run inside the namespace.
    /// The id of the XDP program attached to `interface` in this namespace, if any.
    pub fn xdp_program(&self, interface: &str) -> anyhow::Result<Option<u32>> {
        let link = self.run(&format!("ip -details link show dev {interface}"))?;
        let id = link
            .split("prog/xdp id ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::parse)
            .transpose()?;
        Ok(id)
    }

    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Starts a long-running process inside the namespace, killed when the guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> anyhow::Result<Process> {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {program} in netns {}", self.name))?;
        Ok(Process { child })
    }

    /// Moves the calling thread into the namespace until the guard drops (for syscalls
    /// that act in the caller's namespace, such as BPF_PROG_TEST_RUN's fib lookups).
    pub fn enter(&self) -> anyhow::Result<Entered> {
        let original = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        setns(&target, CloneFlags::CLONE_NEWNET).context("setns into test netns")?;
        Ok(Entered { original })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The calling thread's original namespace, restored on drop.
#[derive(Debug)]
pub struct Entered {
    original: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(error) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            // A thread stuck in a deleted namespace would poison later tests in it.
            panic!("restoring the original netns failed: {error}");
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal`; the process is still reaped on drop.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(self.pid(), signal).context("signalling child")
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a veth pair with `a_if` in `a` and `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    a.run(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {} && ip link set {a_if} up",
        b.name()
    ))?;
    b.run(&format!("ip link set {b_if} up"))?;
    Ok(())
}

fn run_command(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure_success(format_args!("{command:?}"), &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fails, naming `what` with the exit status and stderr, unless the command that gave
/// `output` succeeded.
pub fn ensure_success(what: impl std::fmt::Display, output: &Output) -> anyhow::Result<()> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
