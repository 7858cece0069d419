//! `cargo xtask test`: setup, then the test tiers in order, stopping at the first failure
//! and always ending with one summary line per tier.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::bail;
use nix::unistd::Uid;

use crate::{cmd, image, lab::target_dir, layers, setup};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Skip the privileged and container tiers (network namespaces, BPF, containers),
    /// which need root.
    #[arg(long)]
    host_only: bool,
    /// Also run the upgrade tier: build the previous release from its git tag (once,
    /// under target/previous-release) and roll the lab's agents back to it and forward
    /// to this build under load. About 5 minutes more the first time; CI skips it.
    #[arg(long)]
    upgrade: bool,
}

/// Test counts over every `cargo test` run, from libtest's `test result:` lines.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds the counts of a line like
    /// `test result: ok. 39 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

type TierFn = fn(&Path, &mut Totals) -> anyhow::Result<()>;

const TIERS: [(&str, TierFn); 7] = [
    ("setup", |_, _| setup::run()),
    ("lint", lint),
    ("host", host),
    ("fuzz", fuzz),
    ("privileged", privileged),
    ("container", container),
    ("upgrade", upgrade),
];

/// The tiers that need root.
const PRIVILEGED_TIERS: [&str; 3] = ["privileged", "container", "upgrade"];

/// The release before this build (its git tag, named in CHANGELOG.md): what the upgrade
/// tier rolls the lab's agents back to and forward from.
const PREVIOUS_RELEASE: &str = "v0.1.0";

/// The cargo-fuzz targets in fuzz/ (a workspace of its own), each run this long.
const FUZZ_TARGETS: [&str; 5] = [
    "checksum",
    "flow_hash",
    "maglev",
    "arp_frame",
    "gossip_auth",
];
const FUZZ_SECONDS: u32 = 15;

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !options.host_only && !Uid::effective().is_root() {
        bail!(
            "the privileged tier needs root (network namespaces, BPF programs); \
             run as root, or pass --host-only to run only setup, lint and host tests"
        );
    }
    let root = workspace_root();
    let started = Instant::now();
    let mut summary = Vec::new();
    let mut failure = None;
    let mut totals = Totals::default();
    for (name, tier) in TIERS {
        if failure.is_some() {
            summary.push(format!("{name:<10} not run"));
            continue;
        }
        if PRIVILEGED_TIERS.contains(&name) && options.host_only {
            summary.push(format!("{name:<10} skipped (--host-only)"));
            continue;
        }
        if name == "upgrade" && !options.upgrade {
            summary.push(format!("{name:<10} skipped (pass --upgrade)"));
            continue;
        }
        eprintln!("== tier {name}");
        let tier_started = Instant::now();
        let result = tier(&root, &mut totals);
        let seconds = tier_started.elapsed().as_secs_f64();
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        summary.push(format!("{name:<10} {verdict} in {seconds:.1}s"));
        failure = result
            .err()
            .map(|error| error.context(format!("tier {name}")));
    }
    println!("== summary");
    for line in summary {
        println!("{line}");
    }
    println!("total      {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    failure.map_or(Ok(()), Err)
}

fn lint(root: &Path, _: &mut Totals) -> anyhow::Result<()> {
    layers::check(root)?;
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// lb-ebpf is a `no_main` BPF binary that cannot link for the host; its code is
/// exercised through BPF_PROG_TEST_RUN in the privileged tier.
fn host(root: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    cargo_test(
        root,
        totals,
        &[
            "test",
            "--workspace",
            "--exclude",
            "testbed",
            "--exclude",
            "lb-ebpf",
        ],
    )
}

/// Builds the fuzz targets once, then runs each for [`FUZZ_SECONDS`] on its corpus in
/// fuzz/corpus (gitignored). The debug profile without a sanitizer: the code under test
/// is safe Rust, where overflow checks find more than ASan would, and it builds in a
/// fraction of the time. A crash fails the tier and names its reproducer.
fn fuzz(root: &Path, _: &mut Totals) -> anyhow::Result<()> {
    let dir = root.join("fuzz");
    cargo_fuzz(&dir, "build", &[])?;
    for target in FUZZ_TARGETS {
        let started = SystemTime::now();
        let limit = format!("-max_total_time={FUZZ_SECONDS}");
        if let Err(error) = cargo_fuzz(&dir, "run", &[target, "--", &limit]) {
            let reproducers = reproducers(&dir.join("artifacts").join(target), started);
            bail!(
                "{error:#}\nfuzz target {target} failed; reproducer(s): {reproducers:?}\n\
                 replay: cd fuzz && cargo +nightly fuzz run --dev -s none {target} <reproducer>"
            );
        }
    }
    Ok(())
}

fn cargo_fuzz(dir: &Path, command: &str, args: &[&str]) -> anyhow::Result<()> {
    cmd::run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", command, "--dev", "--sanitizer", "none"])
            .args(args)
            .current_dir(dir),
    )
}

/// The files libFuzzer wrote into `artifacts` since `since`.
fn reproducers(artifacts: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(artifacts) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified >= since)
        })
        .map(|entry| entry.path())
        .collect()
}

/// The end-to-end tests run the agent binary, so the binaries are built first.
fn privileged(root: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    cargo(root, &["build", "--bins"])?;
    cargo_test(
        root,
        totals,
        &["test", "-p", "testbed", "--", "--test-threads=1"],
    )
}

/// Builds the image (`cargo xtask image`), then runs the tests that run it in
/// containers (the `containers` module of the privileged tests, all `#[ignore]`d, so
/// the privileged tier skips them).
fn container(root: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    let archive = image::run(root, &image::Options { output: None })?;
    ignored_privileged_tests(
        root,
        totals,
        "containers::",
        ("XDPLB_IMAGE_ARCHIVE", &archive),
    )
}

/// The `#[ignore]`d privileged tests matching `filter`, one at a time, with `env` set.
fn ignored_privileged_tests(
    root: &Path,
    totals: &mut Totals,
    filter: &str,
    (name, value): (&str, &Path),
) -> anyhow::Result<()> {
    cargo_test_with(
        root,
        totals,
        &[
            "test",
            "-p",
            "testbed",
            "--test",
            "privileged",
            "--",
            "--ignored",
            filter,
            "--test-threads=1",
        ],
        Command::new("cargo").env(name, value),
    )
}

/// The rolling downgrade and upgrade between [`PREVIOUS_RELEASE`] and this build (the
/// `#[ignore]`d release test of the privileged `restarts` module).
fn upgrade(root: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    let previous = previous_release_agent(root)?;
    cargo(root, &["build", "--bins"])?;
    ignored_privileged_tests(
        root,
        totals,
        "restarts::a_rolling_upgrade_from_the_previous_release",
        ("XDPLB_PREVIOUS_AGENT", &previous),
    )
}

/// [`PREVIOUS_RELEASE`]'s `lb-agent`, built from its git tag under
/// `target/previous-release` (the sources are extracted once, the build is incremental).
fn previous_release_agent(root: &Path) -> anyhow::Result<PathBuf> {
    let base = target_dir(root).join("previous-release");
    let source = base.join(PREVIOUS_RELEASE);
    if !source.join("Cargo.toml").exists() {
        let partial = base.join(format!("{PREVIOUS_RELEASE}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        fs::create_dir_all(&partial)?;
        cmd::run(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "git archive {PREVIOUS_RELEASE} | tar -x -C '{}'",
                    partial.display()
                ))
                .current_dir(root),
        )
        .map_err(|error| {
            error.context(format!(
                "extracting {PREVIOUS_RELEASE} (is the tag there? `git fetch --tags`)"
            ))
        })?;
        fs::rename(&partial, &source)?;
    }
    let build_dir = base.join("target");
    cmd::run(
        Command::new("cargo")
            .args(["build", "-p", "lb-agent", "--bin", "lb-agent"])
            .env("CARGO_TARGET_DIR", &build_dir)
            .current_dir(&source),
    )?;
    Ok(build_dir.join("debug").join("lb-agent"))
}

fn cargo_test(root: &Path, totals: &mut Totals, args: &[&str]) -> anyhow::Result<()> {
    cargo_test_with(root, totals, args, &mut Command::new("cargo"))
}

fn cargo_test_with(
    root: &Path,
    totals: &mut Totals,
    args: &[&str],
    cargo: &mut Command,
) -> anyhow::Result<()> {
    cmd::run_observed(cargo.args(args).current_dir(root), |line| {
        totals.add_line(line)
    })
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new("cargo").args(args).current_dir(root))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use std::{
        fs::{self, File},
        time::{Duration, SystemTime},
    };

    use super::{PREVIOUS_RELEASE, Totals, reproducers, workspace_root};

    /// The newest release of CHANGELOG.md other than this build's version (at a release
    /// commit, the release itself is the newest).
    #[test]
    fn the_previous_release_is_the_changelogs_newest_before_this_one() {
        let changelog =
            fs::read_to_string(workspace_root().join("CHANGELOG.md")).expect("CHANGELOG.md");
        let this = format!("## {} ", env!("CARGO_PKG_VERSION"));
        let newest = changelog
            .lines()
            .find(|line| {
                line.starts_with("## ") && !line.contains("Unreleased") && !line.starts_with(&this)
            })
            .expect("a released version");
        assert!(
            newest.contains(&format!("tag {PREVIOUS_RELEASE}")),
            "{newest}"
        );
    }

    #[test]
    fn reproducers_are_the_artifacts_written_since_the_run_started() {
        let dir = std::env::temp_dir().join(format!("xtask-artifacts-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch dir");
        let started = SystemTime::now() - Duration::from_secs(60);
        let old = File::create(dir.join("crash-old")).expect("old artefact");
        old.set_modified(started - Duration::from_secs(3600))
            .expect("backdating");
        fs::write(dir.join("crash-new"), b"input").expect("new artefact");
        let found = reproducers(&dir, started);
        fs::remove_dir_all(&dir).expect("removing scratch dir");
        assert_eq!(found, [dir.join("crash-new")]);
        assert!(
            reproducers(&dir, started).is_empty(),
            "a missing dir has none"
        );
    }

    #[test]
    fn totals_add_up_libtest_result_lines() {
        let mut totals = Totals::default();
        totals.add_line("test result: ok. 39 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.84s");
        totals.add_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("running 3 tests");
        assert_eq!((totals.passed, totals.failed, totals.ignored), (42, 1, 2));
    }
}
