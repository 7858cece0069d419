//! Counts per program, family and outcome, and the coverage of corrupted fields: the
//! summary a run prints (quoted in RELIABILITY.md).

use std::{collections::BTreeMap, fmt::Write as _};

use super::{check::Outcome, families::Family};

#[derive(Debug, Default)]
pub struct Tally {
    outcomes: BTreeMap<(Family, Outcome), u64>,
    fields: BTreeMap<(&'static str, &'static str), u64>,
    frames: u64,
}

impl Tally {
    pub fn frame(&mut self) {
        self.frames += 1;
    }

    pub fn outcome(&mut self, family: Family, outcome: Outcome) {
        *self.outcomes.entry((family, outcome)).or_default() += 1;
    }

    pub fn corrupted(&mut self, role: &'static str, field: &'static str) {
        *self.fields.entry((role, field)).or_default() += 1;
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn count(&self, family: Family, outcome: Outcome) -> u64 {
        self.outcomes.get(&(family, outcome)).copied().unwrap_or(0)
    }

    /// A table per program: one row per family, one column per outcome.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for (program, outcomes) in [
            ("xdp_lb", &Outcome::XDP[..]),
            ("tc_reply", &Outcome::TC[..]),
        ] {
            let _ = write!(text, "{program:<10} {:<14}", "family");
            for outcome in outcomes {
                let _ = write!(text, " {:>13}", outcome.name());
            }
            text.push('\n');
            for family in Family::ALL {
                let _ = write!(text, "{:<10} {:<14}", "", family.name());
                for outcome in outcomes {
                    let _ = write!(text, " {:>13}", self.count(family, *outcome));
                }
                text.push('\n');
            }
        }
        let least = self.fields.iter().min_by_key(|(_, count)| **count);
        let _ = writeln!(
            text,
            "corrupted fields: {} distinct, each at least {} times (rarest: {})",
            self.fields.len(),
            least.map_or(0, |(_, count)| *count),
            least.map_or(String::new(), |((role, name), _)| format!("{role} {name}")),
        );
        text
    }
}
