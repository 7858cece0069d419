//! What every table shares: a case's expectation, and a checker that runs all cases of
//! a category before failing, so one run lists every case that went wrong.

/// What a case expects of the code under test.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// A valid control: it must pass, so the table cannot be vacuous.
    Accepted,
    /// Refused, with a message containing each of these parts (the field, the value,
    /// the reason).
    Rejected(&'static [&'static str]),
}

/// Collects the verdicts of one category's table.
#[derive(Debug)]
pub struct Checker {
    category: &'static str,
    failures: Vec<String>,
    rejected: usize,
    accepted: usize,
}

impl Checker {
    pub fn new(category: &'static str) -> Self {
        Self {
            category,
            failures: Vec::new(),
            rejected: 0,
            accepted: 0,
        }
    }

    /// Judges one case: `outcome` is `Ok(())` when the input was accepted, otherwise
    /// the text the user sees (error, condition, event).
    pub fn verdict(&mut self, case: &str, expect: Expect, outcome: Result<(), String>) {
        match (expect, outcome) {
            (Expect::Accepted, Ok(())) => self.accepted += 1,
            (Expect::Accepted, Err(text)) => {
                self.accepted += 1;
                self.fail(case, format!("a valid input was refused: {text}"));
            }
            (Expect::Rejected(_), Ok(())) => {
                self.rejected += 1;
                self.fail(case, "accepted".to_owned());
            }
            (Expect::Rejected(parts), Err(text)) => {
                self.rejected += 1;
                let missing: Vec<&str> = parts
                    .iter()
                    .copied()
                    .filter(|part| !text.contains(part))
                    .collect();
                if !missing.is_empty() {
                    self.fail(case, format!("the message lacks {missing:?}: {text}"));
                }
            }
        }
    }

    /// Records a problem beyond the verdict, e.g. state lost by a refused input.
    pub fn fail(&mut self, case: &str, problem: String) {
        self.failures.push(format!("{case}: {problem}"));
    }

    /// Prints the category's count and fails with every problem found.
    pub fn finish(self) {
        println!("{}", summary(self.category, self.rejected, self.accepted));
        assert!(self.accepted > 0, "{}: no valid control", self.category);
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases failed:\n{}",
            self.category,
            self.failures.len(),
            self.rejected + self.accepted,
            self.failures.join("\n")
        );
    }
}

/// The line RELIABILITY.md quotes.
pub fn summary(category: &str, rejected: usize, accepted: usize) -> String {
    format!("BAD-INPUT {category}: {rejected} cases (+{accepted} valid controls)")
}

/// How many bad inputs and valid controls a list of expectations holds.
pub fn count<'a>(expects: impl IntoIterator<Item = &'a Expect>) -> (usize, usize) {
    expects
        .into_iter()
        .fold((0, 0), |(rejected, accepted), expect| match expect {
            Expect::Rejected(_) => (rejected + 1, accepted),
            Expect::Accepted => (rejected, accepted + 1),
        })
}
