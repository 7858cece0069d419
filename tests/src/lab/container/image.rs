//! The agent image as `cargo xtask image` writes it: an OCI archive (index, manifest,
//! config and one layer as blobs in a tar), read with the system's `tar`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use crate::netns::ensure_success;
use anyhow::{Context as _, ensure};
use serde::Deserialize;

/// Names the archive to use instead of the one beside the build output.
pub const ARCHIVE_ENV: &str = "XDPLB_IMAGE_ARCHIVE";

/// The image's archive and what its config says.
#[derive(Debug, Clone)]
pub struct ImageArchive {
    pub path: PathBuf,
    /// The reference the archive's index names (`org.opencontainers.image.ref.name`).
    pub reference: String,
    pub config: ImageConfig,
    /// The digest (`sha256:…`) of the one layer.
    layer: String,
}

/// The runtime part of the image config.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    config: ImageConfig,
}

impl ImageArchive {
    /// The archive named by [`ARCHIVE_ENV`], else `target/image/lb-agent-VERSION.oci.tar`
    /// of the target directory the running test was built in.
    pub fn locate() -> anyhow::Result<Self> {
        let path = match std::env::var_os(ARCHIVE_ENV) {
            Some(path) => PathBuf::from(path),
            None => default_path()?,
        };
        ensure!(
            path.is_file(),
            "no image archive at {}: build it with `cargo xtask image` (or set {ARCHIVE_ENV})",
            path.display()
        );
        Self::read(&path)
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let index: Index = serde_json::from_slice(&member(path, "index.json")?)?;
        ensure!(
            index.manifests.len() == 1,
            "{} holds {} images, not one",
            path.display(),
            index.manifests.len()
        );
        let entry = &index.manifests[0];
        let reference = entry
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned()
            .context("the archive's index names no reference")?;
        let manifest: Manifest = serde_json::from_slice(&blob(path, &entry.digest)?)?;
        let config: ConfigFile = serde_json::from_slice(&blob(path, &manifest.config.digest)?)?;
        ensure!(
            manifest.layers.len() == 1,
            "the image has {} layers, not one",
            manifest.layers.len()
        );
        Ok(Self {
            path: path.to_owned(),
            reference,
            config: config.config,
            layer: manifest.layers[0].digest.clone(),
        })
    }

    /// Every path in the image's layer (`usr/local/bin/lb-agent`, …), with the kind
    /// `tar -tv` gives it (`-` file, `d` directory, `l` symlink) and, for links, the
    /// target.
    pub fn files(&self) -> anyhow::Result<Vec<(char, String)>> {
        let layer = tempfile::NamedTempFile::new()?;
        std::fs::write(layer.path(), blob(&self.path, &self.layer)?)?;
        let listing = tar(&["-tvzf", &layer.path().to_string_lossy()])?;
        Ok(String::from_utf8(listing)?
            .lines()
            .filter_map(|line| {
                let kind = line.chars().next()?;
                let entry: Vec<&str> = line.split_whitespace().skip(5).collect();
                Some((kind, entry.join(" ").trim_start_matches("./").to_owned()))
            })
            .collect())
    }

    /// The archive's size in bytes.
    pub fn size(&self) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }
}

fn default_path() -> anyhow::Result<PathBuf> {
    // Tests run from target/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not inside a target directory")?;
    Ok(target
        .join("image")
        .join(format!("lb-agent-{}.oci.tar", env!("CARGO_PKG_VERSION"))))
}

fn blob(archive: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest} is not sha256"))?;
    member(archive, &format!("blobs/sha256/{hex}"))
}

fn member(archive: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    tar(&["-xOf", &archive.to_string_lossy(), name])
        .with_context(|| format!("reading {name} from {}", archive.display()))
}

fn tar(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("tar").args(args).output()?;
    ensure_success(format_args!("tar {}", args.join(" ")), &output)?;
    Ok(output.stdout)
}
