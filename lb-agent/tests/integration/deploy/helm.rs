//! The real `helm`, pinned, on deploy/helm/xdplb: what it renders and what its lint says.
//! Anything helm prints on stderr (deprecations, "unrecognized format", …) fails the
//! render, so no warning goes unseen.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use super::objects::{Document, documents, repo_dir};

/// Where `cargo xtask setup` installs the pinned helm (xtask/src/helm.rs).
const PINNED: &str = "/usr/local/lib/xdplb/helm-4.1.4/helm";
/// Another helm, e.g. on a machine where setup cannot write /usr/local.
const OVERRIDE: &str = "XDPLB_HELM";
/// The chart, relative to the repository root (where helm runs, as the install
/// guide's commands do).
const CHART: &str = "deploy/helm/xdplb";

pub fn binary() -> PathBuf {
    let path = std::env::var_os(OVERRIDE).map_or_else(|| PathBuf::from(PINNED), PathBuf::from);
    assert!(
        path.is_file(),
        "no helm at {}: run `cargo xtask setup` (it installs helm at {PINNED}) or set {OVERRIDE}",
        path.display()
    );
    path
}

/// Runs `command` in the repository root; its stdout, or a panic with everything it
/// printed when it fails or writes to stderr.
fn quiet_success(mut command: Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .current_dir(repo_dir())
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(
        status.success() && stderr.is_empty(),
        "{command:?}: {status}\nstderr:\n{stderr}\nstdout:\n{stdout}"
    );
    stdout.into_owned()
}

/// The chart installed as release `xdplb` into `namespace`, CRDs included, with
/// `extra` arguments (`--set …`, `--show-only …`).
pub fn template(namespace: &str, extra: &[&str]) -> Vec<Document> {
    let mut command = Command::new(binary());
    command
        .args(["template", "xdplb", CHART, "--include-crds", "--namespace"])
        .arg(namespace)
        .args(extra);
    parse("helm template", &quiet_success(command))
}

/// What a documented `helm install …` command line would install, rendered by `helm
/// template` with the same arguments, through the shell as a reader would paste it.
pub fn documented(command_line: &str) -> Vec<Document> {
    let arguments = command_line
        .strip_prefix("helm install ")
        .unwrap_or_else(|| panic!("not a helm install: {command_line}"));
    let mut command = Command::new("sh");
    // $0 is helm: the install guide's own words after it, untouched.
    command
        .args(["-c", &format!("\"$0\" template --include-crds {arguments}")])
        .arg(binary());
    parse(command_line, &quiet_success(command))
}

/// `helm lint --strict` of the chart: its report when clean, else a panic with it.
pub fn lint() -> String {
    let mut command = Command::new(binary());
    command.args(["lint", "--strict", CHART]);
    let report = quiet_success(command);
    assert!(
        !report.contains("[WARNING]") && !report.contains("[ERROR]"),
        "helm lint --strict {CHART}:\n{report}"
    );
    report
}

fn parse(origin: &str, rendered: &str) -> Vec<Document> {
    documents(origin, rendered).unwrap_or_else(|error| panic!("{error}\nrendered:\n{rendered}"))
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_dir().join(CHART)
}
