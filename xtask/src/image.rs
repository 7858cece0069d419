//! `cargo xtask image`: the agent's container image, built without a Docker engine.
//!
//! The root filesystem is made by deploy/image/rootfs.sh from the Debian 12 packages of
//! deploy/image/packages, as deploy/Dockerfile makes it; the release `lb-agent` and
//! `lbctl` go to /usr/local/bin. buildah turns that into a one-layer OCI image and
//! writes it as an OCI archive, which
//! `podman load`, `ctr images import` and `k3s ctr images import` take. buildah's
//! storage is a scratch directory removed afterwards: nothing is left in the machine's
//! image store.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{cmd, lab::target_dir, setup};

/// The Debian release of the image (and of deploy/Dockerfile's stages).
pub const DEBIAN_SUITE: &str = "bookworm";
/// The image's name in the manifests and the Helm chart, without the tag.
pub const REPOSITORY: &str = "registry.example.invalid/xdplb/lb-agent";
pub const ENTRYPOINT: &str = "/usr/local/bin/lb-agent";
/// Root, with only the capabilities the DaemonSet grants.
pub const USER: &str = "0:0";
const BINARIES: [&str; 2] = ["lb-agent", "lbctl"];
/// The image's labels, as deploy/Dockerfile sets them too.
pub const LABELS: [(&str, &str); 4] = [
    ("org.opencontainers.image.title", "xdplb"),
    (
        "org.opencontainers.image.description",
        "XDP layer-4 load balancer with direct server return and ARP announcements for bare-metal Kubernetes",
    ),
    ("org.opencontainers.image.licenses", "Apache-2.0"),
    ("org.opencontainers.image.version", VERSION),
];
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Where to write the OCI archive (default: target/image/lb-agent-VERSION.oci.tar).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The image's full reference, `REPOSITORY:VERSION`.
pub fn reference() -> String {
    format!("{REPOSITORY}:{VERSION}")
}

/// Where `cargo xtask image` writes the archive unless told otherwise.
pub fn default_archive(root: &Path) -> PathBuf {
    target_dir(root)
        .join("image")
        .join(format!("lb-agent-{VERSION}.oci.tar"))
}

/// Setup, a release build of the binaries, then the archive; returns its path.
pub fn run(root: &Path, options: &Options) -> anyhow::Result<PathBuf> {
    setup::run()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "lb-agent", "--bins"])
            .current_dir(root),
    )?;
    let archive = options
        .output
        .clone()
        .unwrap_or_else(|| default_archive(root));
    let work = target_dir(root).join("image").join("work");
    // A previous run that failed half-way may have left its scratch behind.
    remove_dir(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let built = build(root, &work, &archive);
    remove_dir(&work)?;
    built?;
    let size = fs::metadata(&archive)?.len();
    println!(
        "image: {} -> {} ({:.1} MiB)",
        reference(),
        archive.display(),
        size as f64 / f64::from(1 << 20)
    );
    Ok(archive)
}

fn build(root: &Path, work: &Path, archive: &Path) -> anyhow::Result<()> {
    let rootfs = work.join("rootfs");
    make_rootfs(root, &rootfs)?;
    // Stripped of their symbols, as deploy/Dockerfile installs them (`install -s`).
    let release = target_dir(root).join("release");
    cmd::run(
        Command::new("install")
            .args(["-s", "-m", "0755", "-t"])
            .arg(rootfs.join("usr/local/bin"))
            .args(BINARIES.map(|binary| release.join(binary))),
    )?;
    let buildah = Buildah::new(work);
    let container = buildah.output(&["from", "scratch"])?;
    buildah.run(&["add", &container, &path_text(&rootfs)?, "/"])?;
    let mut config = vec![
        "config".to_owned(),
        format!("--entrypoint=[\"{ENTRYPOINT}\"]"),
        "--cmd=".to_owned(),
        format!("--user={USER}"),
        "--created-by=cargo xtask image".to_owned(),
    ];
    config.extend(
        LABELS
            .iter()
            .map(|(key, value)| format!("--label={key}={value}")),
    );
    config.push(container.clone());
    buildah.run(&config.iter().map(String::as_str).collect::<Vec<_>>())?;
    let local = format!("localhost/xdplb-build:{VERSION}");
    // No `io.buildah.version` label: the image's labels are exactly the Dockerfile's.
    buildah.run(&[
        "commit",
        "--quiet",
        "--timestamp=0",
        "--identity-label=false",
        &container,
        &local,
    ])?;
    if let Some(dir) = archive.parent() {
        fs::create_dir_all(dir)?;
    }
    // buildah refuses to overwrite an archive.
    let _ = fs::remove_file(archive);
    let destination = format!("oci-archive:{}:{}", path_text(archive)?, reference());
    buildah.run(&["push", "--quiet", &local, &destination])
}

/// Makes the root filesystem with deploy/image/rootfs.sh, run as a hook of an
/// mmdebstrap whose only job is an apt set-up for [`DEBIAN_SUITE`] (its own tree goes to
/// /dev/null): the packages come from that release whatever the machine runs.
fn make_rootfs(root: &Path, rootfs: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(rootfs)?;
    let script = root.join("deploy/image/rootfs.sh");
    let hook = format!(
        "sh {} {}",
        shell_word(&path_text(&script)?),
        shell_word(&path_text(rootfs)?)
    );
    cmd::run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=custom", "--skip=output/dev"])
            .arg(format!("--customize-hook={hook}"))
            .args([DEBIAN_SUITE, "/dev/null"]),
    )
}

/// `text` as one word for `sh -c`.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// buildah with a private store in the build's scratch directory.
struct Buildah {
    store: PathBuf,
}

impl Buildah {
    fn new(work: &Path) -> Self {
        Self {
            store: work.join("store"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(self.store.join("root"))
            .arg("--runroot")
            .arg(self.store.join("run"))
            // vfs needs no overlay mounts, so removing the store is a plain delete.
            .args(["--storage-driver", "vfs"])
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        cmd::run(&mut self.command(args))
    }

    /// Runs buildah and returns its trimmed stdout (e.g. a container's name).
    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(args)
            .output()
            .with_context(|| format!("running buildah {}", args.join(" ")))?;
        anyhow::ensure!(
            output.status.success(),
            "buildah {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }
}

fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
