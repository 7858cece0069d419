//! The agent's image run by a real container runtime, as on a Kubernetes node: a
//! containerd of the lab's own (its state, store and socket in a scratch directory, so
//! nothing touches a containerd the machine may run) with runc, driven by `ctr`.
//!
//! containerd is what k3s and kubeadm clusters run pods with; `ctr run --seccomp`
//! applies the same default seccomp profile as the kubelet's `RuntimeDefault` does
//! through containerd. Dropping [`Containerd`] kills every container it started, stops
//! the daemon and unmounts what it left mounted.

pub mod image;
pub mod plan;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use nix::mount::{MntFlags, umount2};

use self::image::ImageArchive;
use super::wait_for;
use crate::netns::ensure_success;

const DAEMON_START: Duration = Duration::from_secs(20);
const DAEMON_STOP: Duration = Duration::from_secs(10);

/// A containerd daemon private to one lab.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    daemon: Child,
}

impl Containerd {
    /// Starts containerd with everything below `dir` (created) and waits until it
    /// answers.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = dir.join("containerd.sock").display(),
            ),
        )?;
        let log = fs::File::create(dir.join("containerd.log"))?;
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (installed by `cargo xtask setup`)")?;
        let containerd = Self {
            dir: dir.to_owned(),
            daemon,
        };
        wait_for("containerd to answer", DAEMON_START, || {
            Ok(containerd
                .ctr(&["version"])
                .is_ok_and(|output| output.status.success())
                .then_some(()))
        })?;
        Ok(containerd)
    }

    /// `ctr` against this daemon.
    pub fn command(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.dir.join("containerd.sock"));
        command
    }

    /// The shell words of [`Self::command`], for commands spawned through a shell.
    pub fn command_line(&self) -> String {
        format!(
            "ctr --address {}",
            super::shell_quote(self.dir.join("containerd.sock").display())
        )
    }

    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("running ctr {}", args.join(" ")))
    }

    /// `ctr ARGS`, failing with its stderr; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.ctr(args)?;
        ensure_success(format_args!("ctr {}", args.join(" ")), &output)?;
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Imports `image`'s archive as a node does (`ctr images import`).
    pub fn import(&self, image: &ImageArchive) -> anyhow::Result<()> {
        self.ctr_ok(&["images", "import", &image.path.to_string_lossy()])
            .map(drop)
    }

    /// The host pid of container `id`'s main process.
    pub fn task_pid(&self, id: &str) -> anyhow::Result<i32> {
        let listing = self.ctr_ok(&["tasks", "ls"])?;
        listing
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.first() == Some(&id))
            .and_then(|words| words.get(1)?.parse().ok())
            .with_context(|| format!("no running task {id}: {listing}"))
    }

    /// Runs `args` inside running container `id` (`ctr tasks exec`).
    pub fn exec(&self, id: &str, exec_id: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["tasks", "exec", "--exec-id", exec_id, id];
        all.extend(args);
        self.ctr(&all)
    }

    /// Every task killed and deleted, every container removed.
    fn remove_all(&self) {
        let ids = |kind: &str| -> Vec<String> {
            self.ctr_ok(&[kind, "ls", "--quiet"])
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        for task in ids("tasks") {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", &task]);
            let _ = self.ctr(&["tasks", "delete", "--force", &task]);
        }
        for container in ids("containers") {
            let _ = self.ctr(&["containers", "delete", &container]);
        }
    }

    /// Unmounts whatever is still mounted below the daemon's directory, deepest first.
    fn unmount_leftovers(&self) {
        let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut mounts: Vec<&str> = table
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|point| Path::new(point).starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in mounts {
            let _ = umount2(point, MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let stopped = wait_for("containerd to stop", DAEMON_STOP, || {
            Ok(self.daemon.try_wait()?.map(drop))
        });
        if stopped.is_err() {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        self.unmount_leftovers();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
