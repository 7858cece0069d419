//! Packet fuzzing of the data plane: at least a million generated and mutated frames
//! through `xdp_lb` and `tc_reply` (BPF_PROG_TEST_RUN), each checked by the oracle in
//! `testbed::fuzz::check`. The seed is printed; `XDPLB_FUZZ_SEED` replays a run and
//! `XDPLB_FUZZ_FRAMES` changes its length. Privileged (root); run with
//! `--test-threads=1`.

use std::{fmt::Write as _, time::Instant};

use anyhow::{Context as _, Result};
use testbed::{
    fixture::Run,
    fuzz::{
        check::{self, Links, Outcome},
        families::{Case, Generator},
        rng::{Rng, SEED_VAR},
        scenario::Scenario,
        tally::Tally,
    },
};

const FRAMES_VAR: &str = "XDPLB_FUZZ_FRAMES";
const DEFAULT_FRAMES: u64 = 1_000_000;
/// Failures printed in full; the rest are only counted.
const REPORTED: u64 = 10;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// The failures of a run: the first few in full, all counted.
#[derive(Default)]
struct Failures {
    count: u64,
    report: String,
}

impl Failures {
    fn check(
        &mut self,
        index: u64,
        case: &Case,
        program: &str,
        run: &Run,
        result: Result<Outcome, String>,
    ) -> Option<Outcome> {
        match result {
            Ok(outcome) => Some(outcome),
            Err(what) => {
                self.count += 1;
                if self.count <= REPORTED {
                    let _ = write!(
                        self.report,
                        "\n#{index} {program}: {what}\n  frame: {}\n  in:  {}\n  out: action {} {}\n",
                        case.describe(),
                        hex(&case.frame),
                        run.action,
                        hex(&run.frame),
                    );
                }
                None
            }
        }
    }
}

fn frames_to_run() -> Result<u64> {
    std::env::var(FRAMES_VAR).map_or(Ok(DEFAULT_FRAMES), |text| {
        text.trim()
            .parse()
            .with_context(|| format!("{FRAMES_VAR}={text:?}"))
    })
}

/// The loaded scenario and what its runs have shown so far.
struct Fuzzer {
    scenario: Scenario,
    links: Links,
    tally: Tally,
    failures: Failures,
}

impl Fuzzer {
    fn new() -> Result<Self> {
        let scenario = Scenario::load()?;
        let links = Links {
            lan_mac: scenario.lan_mac,
            far_mac: scenario.far_mac,
        };
        Ok(Self {
            scenario,
            links,
            tally: Tally::default(),
            failures: Failures::default(),
        })
    }

    /// Runs `case` through both programs and checks each run.
    fn run(&mut self, index: u64, case: &Case) -> Result<()> {
        if let Some((role, field, _)) = case.corrupted {
            self.tally.corrupted(role, field);
        }
        let xdp = self
            .scenario
            .lb
            .xdp_on(&case.frame, self.scenario.lan)
            .with_context(|| format!("xdp_lb on #{index}: {}", case.describe()))?;
        let checked = check::xdp(case, &xdp, &self.links);
        self.record(index, case, "xdp_lb", &xdp, checked);
        if check::skb_refused(&case.frame) {
            self.tally.outcome(case.family, Outcome::TcRefused);
        } else {
            let tc = self
                .scenario
                .lb
                .tc(&case.frame)
                .with_context(|| format!("tc_reply on #{index}: {}", case.describe()))?;
            let checked = check::tc(case, &tc);
            self.record(index, case, "tc_reply", &tc, checked);
        }
        self.tally.frame();
        Ok(())
    }

    fn record(
        &mut self,
        index: u64,
        case: &Case,
        program: &str,
        run: &Run,
        checked: Result<Outcome, String>,
    ) {
        if let Some(outcome) = self.failures.check(index, case, program, run, checked) {
            self.tally.outcome(case.family, outcome);
        }
    }
}

#[test]
fn fuzzed_frames_never_abort_and_rewrites_stay_valid() -> Result<()> {
    let seed = Rng::seed_from_env()?;
    let frames = frames_to_run()?;
    println!("fuzz: seed {seed:#x} (replay with {SEED_VAR}={seed:#x}), {frames} frames");
    let mut fuzzer = Fuzzer::new()?;
    let mut generator = Generator::new(seed);
    let started = Instant::now();
    for index in 0..frames {
        fuzzer.run(index, &generator.next_case())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let tally = &fuzzer.tally;
    println!(
        "fuzz: {} frames through xdp_lb and tc_reply in {seconds:.1}s ({:.0} frames/s)\n{}",
        tally.frames(),
        tally.frames() as f64 / seconds,
        tally.summary()
    );
    let failures = &fuzzer.failures;
    assert!(
        failures.count == 0,
        "{} check(s) failed; seed {seed:#x} (replay with {SEED_VAR}={seed:#x}):{}",
        failures.count,
        failures.report
    );
    Ok(())
}
