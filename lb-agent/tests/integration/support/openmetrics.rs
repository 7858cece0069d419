//! A strict reader of the OpenMetrics text format (the subset without exemplars, units
//! and timestamps), independent of the encoder the agent uses: every sample must belong
//! to a family declared by `# TYPE` and `# HELP` before it, with the suffixes its type
//! allows, well-formed labels and a numeric value, and the exposition must end in `# EOF`.
//! And [`metrics_text`], what a test's telemetry shows.

use std::collections::BTreeMap;

use lb_agent::{status::AgentStatus, telemetry::Telemetry};

/// What `/metrics` shows of `telemetry` alone: with an agent status that has nothing in
/// it.
pub fn metrics_text(telemetry: &Telemetry) -> String {
    let status = AgentStatus {
        node: "node1".into(),
        address: "10.0.0.11".parse().expect("address"),
        interface: "eth0".into(),
        xdp_mode: None,
        ready: true,
        version: "test".into(),
        vips: Vec::new(),
        members: Vec::new(),
        reasons: BTreeMap::new(),
        arp: None,
        gossip: None,
        warnings: Vec::new(),
        refused: None,
    };
    telemetry.render(status).expect("metrics render")
}

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: String,
    /// `(sample name, labels, value)` in order.
    pub samples: Vec<(String, Labels, f64)>,
}

impl Family {
    /// The value of the sample named `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: Labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(sample, labels, _)| sample == name && *labels == wanted)
            .map(|(_, _, value)| *value)
    }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{a="x",b="y"}`; returns the labels and the rest of the line.
fn labels(text: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((Labels::new(), text));
    };
    let mut labels = Labels::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad label in {text:?}"))?;
        if !is_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in {text:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {text:?}")),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("duplicate label {key} in {text:?}"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

/// The family a sample name belongs to under `kind`'s suffix rules.
fn family_of<'a>(
    families: &BTreeMap<String, Family>,
    sample: &'a str,
) -> Result<(String, &'a str), String> {
    for (name, family) in families {
        let Some(suffix) = sample.strip_prefix(name.as_str()) else {
            continue;
        };
        let allowed: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            other => return Err(format!("unexpected type {other}")),
        };
        if allowed.contains(&suffix) {
            return Ok((name.clone(), suffix));
        }
    }
    Err(format!("sample {sample} belongs to no declared family"))
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let buckets: Vec<(f64, f64)> = family
        .samples
        .iter()
        .filter(|(sample, _, _)| sample.ends_with("_bucket"))
        .map(|(_, labels, count)| {
            let le = labels
                .get("le")
                .ok_or(format!("{name}: bucket without le"))?;
            Ok((value(le)?, *count))
        })
        .collect::<Result<_, String>>()?;
    if !buckets
        .windows(2)
        .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1)
    {
        return Err(format!("{name}: buckets not cumulative: {buckets:?}"));
    }
    let count = family.value(&format!("{name}_count"), &[]);
    match buckets.last() {
        Some((bound, total)) if bound.is_infinite() && Some(*total) == count => Ok(()),
        _ => Err(format!("{name}: +Inf bucket must equal _count")),
    }
}

/// Every family of an exposition, by name.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            return match lines.next() {
                None => {
                    for (name, family) in &families {
                        if family.help.is_empty() {
                            return Err(format!("{name} has no HELP"));
                        }
                        if family.kind == "histogram" {
                            check_histogram(name, family)?;
                        }
                    }
                    Ok(families)
                }
                Some(extra) => Err(format!("text after # EOF: {extra:?}")),
            };
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("bad TYPE line")?;
            if !is_name(name) || families.contains_key(name) {
                return Err(format!("bad or repeated TYPE for {name}"));
            }
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or("bad HELP line")?;
            // The encoder writes HELP first: declare the family here.
            let family = families.entry(name.to_owned()).or_default();
            family.help = help.to_owned();
            if let Some(kind) = lines
                .peek()
                .and_then(|next| next.strip_prefix(&format!("# TYPE {name} ")))
            {
                family.kind = kind.to_owned();
                lines.next();
            }
        } else if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        } else {
            let end = line
                .find(['{', ' '])
                .ok_or_else(|| format!("bad sample {line:?}"))?;
            let sample = &line[..end];
            let (labels, rest) = labels(&line[end..])?;
            let number = value(rest.strip_prefix(' ').ok_or("no value")?)?;
            let (family, _) = family_of(&families, sample)?;
            let family = families.get_mut(&family).ok_or("family vanished")?;
            family.samples.push((sample.to_owned(), labels, number));
        }
    }
    Err("no # EOF at the end".to_owned())
}
