//! Every number's range (`config::bounds`): one past each end is refused at the key's
//! line, the range named; the ends themselves are accepted.

use lb_agent::config::{
    self,
    bounds::{self, Bound},
};

use super::table::{Checker, Expect};

const EXAMPLE: &str = include_str!("../../../examples/standalone.yaml");

/// The example with `key` (a bound's key) set to `value`, appended at the end.
fn with(settings: &[(&str, u32)]) -> String {
    let mut text = EXAMPLE.to_owned();
    let mut gossip = vec!["keyFile: /etc/xdplb/gossip.key".to_owned()];
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (key, value) in settings {
        match key.split_once('.') {
            Some(("gossip", inner)) => gossip.push(format!("{inner}: {value}")),
            Some((group, inner)) => match groups.iter_mut().find(|(name, _)| name == &group) {
                Some((_, entries)) => entries.push(format!("{inner}: {value}")),
                None => groups.push((group, vec![format!("{inner}: {value}")])),
            },
            None => text.push_str(&format!("{key}: {value}\n")),
        }
    }
    if gossip.len() > 1 {
        groups.push(("gossip", gossip));
    }
    for (group, entries) in groups {
        text.push_str(&format!("{group}: {{ {} }}\n", entries.join(", ")));
    }
    text
}

/// The values one past each end of `bound`.
fn outside(bound: &Bound) -> Vec<u32> {
    let mut values = vec![bound.max + 1];
    if bound.min > 0 {
        values.push(bound.min - 1);
    }
    values
}

/// Every bound at one end; the gossip probe timeout stays below the interval.
fn ends(end: fn(&Bound) -> u32) -> Vec<(&'static str, u32)> {
    bounds::ALL
        .iter()
        .map(|bound| {
            let value = match bound.key {
                "gossip.probeTimeoutMs" => end(&bounds::PROBE_INTERVAL).max(2) - 1,
                "gossip.probeIntervalMs" => end(bound).max(2),
                _ => end(bound),
            };
            (bound.key, value)
        })
        .collect()
}

pub fn run() {
    let mut checker = Checker::new("number-bounds");
    for (name, settings) in [
        (
            "every number at its minimum (control)",
            ends(|bound| bound.min),
        ),
        (
            "every number at its maximum (control)",
            ends(|bound| bound.max),
        ),
    ] {
        let outcome = config::parse(&with(&settings))
            .map(drop)
            .map_err(|error| error.to_string());
        checker.verdict(name, Expect::Accepted, outcome);
    }
    for bound in bounds::ALL {
        for value in outside(&bound) {
            let case = format!("{} = {value}", bound.key);
            let outcome = config::parse(&with(&[(bound.key, value)]))
                .map(drop)
                .map_err(|error| error.to_string());
            let expected = format!(
                "{}: {value} is outside {} to {}",
                bound.key, bound.min, bound.max
            );
            let located = outcome.as_ref().err().is_some_and(|text| {
                text.lines()
                    .any(|line| line.starts_with("line 2") && line.contains(&expected))
            });
            if outcome.is_err() && !located {
                checker.fail(&case, format!("not placed at its line: {outcome:?}"));
            }
            checker.verdict(&case, Expect::Rejected(&["is outside"]), outcome);
        }
    }
    checker.finish();
}

pub fn counts() -> (usize, usize) {
    let rejected = bounds::ALL.iter().map(|bound| outside(bound).len()).sum();
    (rejected, 2)
}
