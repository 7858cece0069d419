//! `cargo xtask bench`: setup, a release build of every binary, then the `bench` program
//! of the `testbed` crate as root. Its measurements become `bench/results.json` (with the
//! date, kernel, CPU and commit), `BENCHMARKS.md`, the chart `bench/results.png` and the
//! summary block of `README.md`; the table is printed at the end. `BENCHMARKS.md` also
//! carries the hand-written analysis in `bench/limits.md` (what limits each missed
//! target), so it sits next to the figures it explains; the README, a front door, names
//! the missed targets and links there. `--part NAME` runs one part and only
//! prints its table (the files always describe a whole run).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use bench_measurement::Measurement;
use serde::Serialize;

use crate::{
    cmd,
    lab::{as_root, target_dir},
    setup,
};

mod chart;

const README_BEGIN: &str = "<!-- bench:begin -->";
const README_END: &str = "<!-- bench:end -->";
/// The hand-written analysis of the missed targets, relative to the workspace root.
const LIMITS: &str = "bench/limits.md";
const LIMITS_HEADING: &str = "What limits the missed targets";
/// The heading's anchor in BENCHMARKS.md, as GitHub makes it.
const LIMITS_ANCHOR: &str = "what-limits-the-missed-targets";
/// What an operator buys xdplb for comes first in both documents: the owner's
/// forwarding capacity and what direct server return keeps off the owner.
const LEAD_GROUPS: [&str; 2] = ["owner", "dsr"];

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Run only this part (program, owner, maglev, control-plane, forwarding, dsr,
    /// failover) and print its table without writing any file.
    #[arg(long, value_name = "NAME")]
    part: Option<String>,
}

/// Where and when the figures were taken.
#[derive(Debug, Serialize)]
struct Machine {
    date: String,
    kernel: String,
    cpu: String,
    cores: usize,
    commit: String,
    took: Took,
}

/// How long the run took, in minutes: measuring alone, and with setup and the release
/// build before it.
#[derive(Debug, Clone, Copy, Serialize)]
struct Took {
    measuring_min: f64,
    total_min: f64,
}

#[derive(Debug, Serialize)]
struct Results<'a> {
    #[serde(flatten)]
    machine: &'a Machine,
    measurements: &'a [Measurement],
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--bins"])
            .current_dir(root),
    )?;
    let built = Instant::now();
    let measurements = measure(root, options.part.as_deref())?;
    let minutes = |from: Instant| from.elapsed().as_secs_f64() / 60.0;
    let took = Took {
        measuring_min: minutes(built),
        total_min: minutes(started),
    };
    let machine = machine(root, took)?;
    if options.part.is_none() {
        write_files(root, &machine, &measurements)?;
    }
    println!("{}", tables(&machine, &measurements));
    Ok(())
}

/// Runs the bench program (through sudo unless root) and parses its JSON.
fn measure(root: &Path, part: Option<&str>) -> anyhow::Result<Vec<Measurement>> {
    let bench = target_dir(root).join("release").join("bench");
    let mut command = as_root(&bench);
    command
        .args(part)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("+ {}", bench.display());
    let output = command
        .output()
        .with_context(|| format!("starting {}", bench.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", bench.display(), output.status);
    }
    serde_json::from_slice(&output.stdout).context("parsing the bench program's JSON")
}

fn machine(root: &Path, took: Took) -> anyhow::Result<Machine> {
    let text = |program: &str, args: &[&str]| -> anyhow::Result<String> {
        let output = Command::new(program)
            .args(args)
            .current_dir(root)
            .output()
            .with_context(|| format!("running {program}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || "unknown CPU".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    Ok(Machine {
        date: text("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?,
        kernel: text("uname", &["-r"])?,
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        commit: text("git", &["rev-parse", "--short", "HEAD"])?,
        took,
    })
}

fn write_files(root: &Path, machine: &Machine, measurements: &[Measurement]) -> anyhow::Result<()> {
    let dir = root.join("bench");
    fs::create_dir_all(&dir)?;
    let results = Results {
        machine,
        measurements,
    };
    write(
        &dir.join("results.json"),
        &(serde_json::to_string_pretty(&results)? + "\n"),
    )?;
    let limits =
        fs::read_to_string(root.join(LIMITS)).with_context(|| format!("reading {LIMITS}"))?;
    write(
        &root.join("BENCHMARKS.md"),
        &benchmarks_md(machine, measurements, &limits),
    )?;
    chart::draw(
        &dir.join("results.png"),
        machine_line(machine),
        measurements,
    )?;
    eprintln!("wrote {}", dir.join("results.png").display());
    let readme = root.join("README.md");
    let text = fs::read_to_string(&readme).context("reading README.md")?;
    write(
        &readme,
        &with_summary(&text, &summary(machine, measurements)),
    )
}

fn write(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn machine_line(machine: &Machine) -> String {
    format!(
        "{}, Linux {}, {} ({} cores), commit {}; the run took {:.1} min ({:.1} with setup \
         and the release build)",
        machine.date,
        machine.kernel,
        machine.cpu,
        machine.cores,
        machine.commit,
        machine.took.measuring_min,
        machine.took.total_min
    )
}

/// Measurements by group: [`LEAD_GROUPS`] first, then the others in the order they
/// first appear.
fn groups(measurements: &[Measurement]) -> Vec<(&str, Vec<&Measurement>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_group: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for measurement in measurements {
        let group = measurement.group.as_str();
        if !order.contains(&group) {
            order.push(group);
        }
        by_group.entry(group).or_default().push(measurement);
    }
    // Stable: the lead groups keep their order, and so do the rest.
    order.sort_by_key(|group| {
        LEAD_GROUPS
            .iter()
            .position(|lead| lead == group)
            .unwrap_or(LEAD_GROUPS.len())
    });
    order
        .into_iter()
        .map(|group| (group, by_group.remove(group).unwrap_or_default()))
        .collect()
}

/// A value with as many decimals as its size needs.
fn value(measurement: &Measurement) -> String {
    let v = measurement.value;
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 4,
    };
    format!("{v:.decimals$}")
}

fn target_cells(measurement: &Measurement) -> (String, &'static str) {
    match &measurement.target {
        Some(target) => (
            target.text.clone(),
            if target.met { "yes" } else { "**no**" },
        ),
        None => ("—".to_owned(), "—"),
    }
}

fn benchmarks_md(machine: &Machine, measurements: &[Measurement], limits: &str) -> String {
    let mut text = String::from(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` (do not edit by hand). Ratios compare programs and \
         paths measured side by side in the same run; absolute figures depend on the \
         machine and on whatever else it was doing, and are never asserted by tests.\n\n",
    );
    let _ = writeln!(text, "Run: {}.\n", machine_line(machine));
    text.push_str("![results](bench/results.png)\n\n");
    for (group, rows) in groups(measurements) {
        let _ = writeln!(text, "## {group}\n");
        text.push_str("| figure | value | unit | target | met | how measured |\n");
        text.push_str("|---|---:|---|---|---|---|\n");
        for m in rows {
            let (target, met) = target_cells(m);
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {} |",
                m.name,
                value(m),
                m.unit,
                target,
                met,
                m.detail.replace('|', "\\|")
            );
        }
        text.push('\n');
    }
    let _ = write!(text, "## {LIMITS_HEADING}\n\n{}", limits.trim_start());
    text
}

/// The README block: the machine, every figure that has a target, and where the missed
/// ones are explained.
fn summary(machine: &Machine, measurements: &[Measurement]) -> String {
    let mut text = format!(
        "Measured {}. Full tables and method: [BENCHMARKS.md](BENCHMARKS.md).\n\n\
         | part | figure | value | target | met |\n|---|---|---:|---|---|\n",
        machine_line(machine)
    );
    let with_targets = groups(measurements)
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter(|m| m.target.is_some());
    for m in with_targets {
        let (target, met) = target_cells(m);
        let _ = writeln!(
            text,
            "| {} | {} | {} {} | {} | {} |",
            m.group,
            m.name,
            value(m),
            m.unit,
            target,
            met
        );
    }
    let missed: Vec<&str> = measurements
        .iter()
        .filter(|m| m.target.as_ref().is_some_and(|target| !target.met))
        .map(|m| m.name.as_str())
        .collect();
    if missed.is_empty() {
        text.push_str("\nEvery target is met.\n");
    } else {
        let _ = writeln!(
            text,
            "\nMissed: {}. What limits them, measured: [BENCHMARKS.md](BENCHMARKS.md#{LIMITS_ANCHOR}).",
            missed.join("; ")
        );
    }
    text
}

/// `readme` with the text between the markers replaced by `summary`; without markers, a
/// Benchmarks section holding them is appended.
fn with_summary(readme: &str, summary: &str) -> String {
    let block = format!("{README_BEGIN}\n{summary}{README_END}");
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{block}{}",
            &readme[..begin],
            &readme[end + README_END.len()..]
        ),
        _ => format!("{}\n\n## Benchmarks\n\n{block}\n", readme.trim_end()),
    }
}

/// The plain-text tables printed at the end of a run.
fn tables(machine: &Machine, measurements: &[Measurement]) -> String {
    let mut text = format!("\n{}\n", machine_line(machine));
    for (group, rows) in groups(measurements) {
        let _ = writeln!(text, "\n{group}");
        let width = rows.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in rows {
            let (target, met) = target_cells(m);
            let met = met.trim_matches('*');
            let _ = writeln!(
                text,
                "  {:width$}  {:>10} {:<4} {:>12} {}",
                m.name,
                value(m),
                m.unit,
                target,
                if m.target.is_some() { met } else { "" }
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_machine() -> Machine {
        Machine {
            date: "2026-12-07 00:00 UTC".into(),
            kernel: "6.18".into(),
            cpu: "test CPU".into(),
            cores: 2,
            commit: "abc1234".into(),
            took: Took {
                measuring_min: 12.5,
                total_min: 14.0,
            },
        }
    }

    #[test]
    fn the_summary_replaces_only_the_marked_block() {
        let readme = format!("# x\n\nintro\n{README_BEGIN}\nold\n{README_END}\n\nrest\n");
        let updated = with_summary(&readme, "new\n");
        assert_eq!(
            updated,
            format!("# x\n\nintro\n{README_BEGIN}\nnew\n{README_END}\n\nrest\n")
        );
        assert_eq!(with_summary(&updated, "new\n"), updated);
    }

    #[test]
    fn benchmarks_md_explains_the_missed_targets_and_the_readme_links_there() {
        let machine = test_machine();
        let missed = Measurement::new("program", "flow hit / minimal TX", 12.7, "x", "per call")
            .at_most(3.0, "<= 3x");
        let met = Measurement::new("program", "non-VIP pass", 1.1, "x", "per call")
            .at_most(1.3, "<= 1.3x");
        let both = [missed, met.clone()];
        let limits = "\n- **Flow hit.** Two hash lookups.\n";
        let text = benchmarks_md(&machine, &both, limits);
        let figure = text.find("flow hit / minimal TX").expect("the figure");
        let heading = text.find(LIMITS_HEADING).expect("the heading");
        let analysis = text
            .find("- **Flow hit.** Two hash lookups.\n")
            .expect("analysis");
        assert!(figure < heading && heading < analysis, "{text}");

        let readme = summary(&machine, &both);
        assert!(
            readme.contains(&format!(
                "Missed: flow hit / minimal TX. What limits them, measured: \
                 [BENCHMARKS.md](BENCHMARKS.md#{LIMITS_ANCHOR})."
            )),
            "{readme}"
        );
        assert!(!readme.contains("Two hash lookups"), "{readme}");
        assert!(
            summary(&machine, &[met]).contains("Every target is met."),
            "nothing missed"
        );
        // The anchor is the heading's, as GitHub derives it.
        assert_eq!(
            LIMITS_HEADING.to_lowercase().replace(' ', "-"),
            LIMITS_ANCHOR
        );
    }

    /// The README keeps its Benchmarks section with the markers, so a run rewrites the
    /// block where it stands instead of appending a second section.
    #[test]
    fn the_readme_holds_the_marked_block_in_its_benchmarks_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = fs::read_to_string(&path).expect("README.md");
        let section = readme
            .find("\n## Benchmarks\n")
            .expect("a Benchmarks section");
        let begin = readme.find(README_BEGIN).expect("the begin marker");
        let end = readme.find(README_END).expect("the end marker");
        assert!(section < begin && begin < end, "markers out of order");
        assert!(
            !readme[section + 1..begin].contains("\n## "),
            "the block is in the Benchmarks section"
        );
        let updated = with_summary(&readme, "new\n");
        assert_eq!(updated.matches("\n## Benchmarks\n").count(), 1);
        assert_eq!(&updated[..begin], &readme[..begin]);
        assert_eq!(
            &updated[updated.find(README_END).expect("the end marker")..],
            &readme[end..]
        );
    }

    #[test]
    fn owner_capacity_and_dsr_lead_both_documents() {
        let machine = test_machine();
        let row = |group: &str, name: &str| {
            Measurement::new(group, name, 1.0, "x", "how").at_least(1.0, ">= 1x")
        };
        let measurements = [
            row("program", "program row"),
            row("dsr", "dsr row"),
            row("owner", "owner row"),
            row("failover", "failover row"),
        ];
        for text in [
            benchmarks_md(&machine, &measurements, ""),
            summary(&machine, &measurements),
        ] {
            let at = |name: &str| text.find(name).expect(name);
            assert!(
                at("owner row") < at("dsr row")
                    && at("dsr row") < at("program row")
                    && at("program row") < at("failover row"),
                "{text}"
            );
        }
    }

    #[test]
    fn without_markers_a_section_is_appended() {
        let updated = with_summary("# x\n", "new\n");
        assert_eq!(
            updated,
            format!("# x\n\n## Benchmarks\n\n{README_BEGIN}\nnew\n{README_END}\n")
        );
    }
}
