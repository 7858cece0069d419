//! Alerting rules with test durations: the lab cannot wait minutes for a `for:` to pass
//! or a five-minute window to empty, so every rule's `for:` becomes `hold`, and every
//! range (`[5m]`) and offset (`offset 15m`) in an expression becomes `window`. The
//! expressions are otherwise the ones shipped.

use anyhow::{Context as _, bail};
use serde_yaml::Value;

/// `rules` (a Prometheus rules file) with every `for:` set to `hold` and every range
/// and offset in an expression set to `window` (Prometheus durations, e.g. `2s`).
pub fn shortened_rules(rules: &str, hold: &str, window: &str) -> anyhow::Result<String> {
    let mut file: Value = serde_yaml::from_str(rules).context("parsing the rules file")?;
    let groups = file["groups"]
        .as_sequence_mut()
        .context("a rules file without groups")?;
    for group in groups {
        let rules = group["rules"]
            .as_sequence_mut()
            .context("a group without rules")?;
        for rule in rules {
            let map = rule.as_mapping_mut().context("a rule that is no map")?;
            if map.contains_key("for") {
                map.insert("for".into(), hold.into());
            }
            let expr = map
                .get("expr")
                .and_then(Value::as_str)
                .context("a rule without expr")?;
            let expr = shorten(expr, window)?;
            map.insert("expr".into(), expr.into());
        }
    }
    Ok(serde_yaml::to_string(&file)?)
}

/// `expr` with every `[duration]` and `offset duration` set to `window`.
fn shorten(expr: &str, window: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['[', 'o']) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        if let Some(inside) = from.strip_prefix('[') {
            let end = inside.find(']').context("an unclosed [")?;
            let range = &inside[..end];
            if range.contains(':') {
                bail!("subquery [{range}] in {expr:?}: give it a test duration first");
            }
            if !is_duration(range) {
                bail!("[{range}] in {expr:?} is no duration");
            }
            out.push_str(&format!("[{window}]"));
            rest = &inside[end + 1..];
        } else if let Some(after) = from.strip_prefix("offset ")
            && out.ends_with(|c: char| c.is_whitespace())
        {
            let after = after.trim_start();
            let end = after
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(after.len());
            if !is_duration(&after[..end]) {
                bail!("offset {} in {expr:?} is no duration", &after[..end]);
            }
            out.push_str(&format!("offset {window}"));
            rest = &after[end..];
        } else {
            out.push_str(&from[..1]);
            rest = &from[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `text` is a Prometheus duration such as `5m`, `250ms` or `1h30m`.
fn is_duration(text: &str) -> bool {
    const UNITS: [&str; 7] = ["ms", "y", "w", "d", "h", "m", "s"];
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let Some(unit) = UNITS.iter().find(|unit| rest[digits..].starts_with(**unit)) else {
            return false;
        };
        if digits == 0 {
            return false;
        }
        rest = &rest[digits + unit.len()..];
    }
    !text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_offsets_and_holds_shrink_and_nothing_else_changes() {
        let rules = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: |\n      \
                     sum by (pool) (increase(x_total[15m])) > 0\n      or (x_total unless \
                     x_total offset 15m) > 0\n    for: 1m\n    labels: {severity: warning}\n  \
                     - alert: B\n    expr: up{job=\"offset\"} == 0\n";
        let short: Value =
            serde_yaml::from_str(&shortened_rules(rules, "2s", "10s").unwrap()).expect("YAML");
        let a = &short["groups"][0]["rules"][0];
        assert_eq!(a["for"], "2s");
        assert_eq!(
            a["expr"].as_str().unwrap().trim(),
            "sum by (pool) (increase(x_total[10s])) > 0\nor (x_total unless x_total offset 10s) > 0"
        );
        assert_eq!(a["labels"]["severity"], "warning");
        let b = &short["groups"][0]["rules"][1];
        assert_eq!(b["expr"], "up{job=\"offset\"} == 0");
        assert!(b.get("for").is_none());
    }

    #[test]
    fn what_it_cannot_shorten_it_refuses() {
        assert!(shorten("rate(x[5m:1m])", "10s").is_err());
        assert!(shorten("rate(x[$window])", "10s").is_err());
        assert!(
            is_duration("1h30m") && is_duration("250ms") && !is_duration("5") && !is_duration("m")
        );
    }
}
