//! The configuration reference, docs/configuration.md, against the agent's parsers, for
//! both files it describes: the standalone file and the Kubernetes settings file.
//!
//! Each section holds a table of keys and a file that sets every key. The file must parse
//! with the real parser. The keys the parser accepts are read from the parser itself: a
//! made-up key is put into each mapping of that file in turn, and the parser's refusal
//! (`Unknown field `madeUpKey`, expected one of ...`) names every key the mapping
//! accepts; a mapping that takes the made-up key holds names of the user's choosing
//! (`labels`). Those keys must be exactly the keys of the table, and exactly the keys of
//! the example file: a key the parser takes but the page leaves out, or a documented key
//! the parser does not know (removed, misspelt), fails.

use std::collections::BTreeSet;

use serde_yaml::Value;

const REFERENCE: &str = "docs/configuration.md";
const STANDALONE: &str = "## The standalone file";
const KUBERNETES: &str = "## The Kubernetes settings file";
/// A key no parser accepts.
const MADE_UP: &str = "madeUpKey";

/// The agent's parser of the standalone file (`lb-agent --config`).
fn parse_standalone(text: &str) -> Result<(), String> {
    lb_agent::config::parse(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// The agent's parser of the Kubernetes settings file (`lb-agent kubernetes --settings`).
fn parse_kubernetes(text: &str) -> Result<(), String> {
    lb_agent::sources::kubernetes::settings::KubernetesSettings::parse(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

type Parser = fn(&str) -> Result<(), String>;

fn reference() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REFERENCE);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The text under `heading`, up to the next heading of its level.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{REFERENCE} has no `{heading}`"));
    let body = &page[start + heading.len() + 2..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The keys in the first column of the section's `| key | default | meaning |` table:
/// every name in backticks there (`peers[].name`).
fn table_keys(section: &str) -> BTreeSet<String> {
    let keys: BTreeSet<String> = section
        .lines()
        .skip_while(|line| !line.starts_with("| key |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .flat_map(|row| {
            let first = row.split(" | ").next().unwrap_or_default();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!keys.is_empty(), "no `| key |` table in:\n{section}");
    keys
}

/// The section's YAML block that follows `<!-- example: ... -->`.
fn example(section: &str) -> Value {
    let marker = section
        .find("<!-- example:")
        .unwrap_or_else(|| panic!("no `<!-- example: -->` in:\n{section}"));
    let block = &section[marker..];
    let start = block
        .find("```yaml\n")
        .expect("a yaml block after the marker")
        + 8;
    let end = block[start..].find("```").expect("the block's end") + start;
    serde_yaml::from_str(&block[start..end]).expect("the example is YAML")
}

/// `keys` with every key that holds them (`peers[].name` -> `peers`, `peers[]`).
fn with_parents(keys: &BTreeSet<String>) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for key in keys {
        for (at, c) in key.char_indices() {
            if c == '.' {
                all.insert(key[..at].to_owned());
            } else if c == '[' {
                all.insert(key[..at].to_owned());
                all.insert(key[..at + 2].to_owned());
            }
        }
        all.insert(key.clone());
    }
    all
}

/// One step from a mapping to a value inside it.
#[derive(Clone)]
enum Step {
    Key(String),
    /// The first item of a sequence.
    First,
}

/// `path` and one more step.
fn child(path: &[Step], step: Step) -> Vec<Step> {
    let mut path = path.to_vec();
    path.push(step);
    path
}

/// The value at `path` of `value`, if there is one.
fn at<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.get(key.as_str()),
        Step::First => value.get(0),
    })
}

fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |value, step| match step {
        Step::Key(key) => value.get_mut(key.as_str()).expect("a key of the example"),
        Step::First => value.get_mut(0).expect("a first item"),
    })
}

/// How the reference writes a path: `services[].ports[].port`.
fn documented(path: &[Step]) -> String {
    path.iter().fold(String::new(), |text, step| match step {
        Step::Key(key) if text.is_empty() => key.clone(),
        Step::Key(key) => format!("{text}.{key}"),
        Step::First => format!("{text}[]"),
    })
}

/// How the parser writes a path: `services[0].ports[0].port`.
fn parsers(path: &[Step]) -> String {
    documented(path).replace("[]", "[0]")
}

/// The keys of `example`'s mappings and of the mappings in its sequences.
fn example_keys(value: &Value, path: &[Step], keys: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(mapping) => {
            for (key, value) in mapping {
                let key = key.as_str().expect("keys are text");
                let path = child(path, Step::Key(key.to_owned()));
                keys.insert(documented(&path));
                example_keys(value, &path, keys);
            }
        }
        Value::Sequence(items) => {
            let path = child(path, Step::First);
            keys.insert(documented(&path));
            for item in items {
                example_keys(item, &path, keys);
            }
        }
        _ => {}
    }
}

/// The names in backticks after `expected` in a serde unknown-field message:
/// "expected one of `a`, `b`, or `c`", "expected `a` or `b`", "expected `a`".
fn expected_keys(message: &str) -> Vec<String> {
    let (_, list) = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of expected keys in: {message}"));
    let list = list.lines().next().unwrap_or_default();
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys `parse` accepts in the mapping at `path` of `example` and, following the
/// example, in every mapping below it.
fn accepted_keys(parse: Parser, example: &Value, path: &[Step], keys: &mut BTreeSet<String>) {
    let mut probe = example.clone();
    let Value::Mapping(mapping) = at_mut(&mut probe, path) else {
        return;
    };
    mapping.insert(MADE_UP.into(), "x".into());
    let text = serde_yaml::to_string(&probe).expect("YAML");
    let message = match parse(&text) {
        // Names of the user's choosing: no keys of the parser's below.
        Ok(()) => return,
        Err(message) => message,
    };
    let field = child(path, Step::Key(MADE_UP.to_owned()));
    assert!(
        message.contains(&format!(": {}: Unknown field `{MADE_UP}`", parsers(&field))),
        "the made-up key at {} was refused for another reason: {message}\n--- file ---\n{text}",
        parsers(&field)
    );
    for key in expected_keys(&message) {
        let path = child(path, Step::Key(key));
        keys.insert(documented(&path));
        let Some(value) = at(example, &path) else {
            // Not in the example; the comparison with the example's keys reports it.
            continue;
        };
        match value {
            Value::Mapping(_) => accepted_keys(parse, example, &path, keys),
            Value::Sequence(items) if items.first().is_some_and(Value::is_mapping) => {
                let path = child(&path, Step::First);
                keys.insert(documented(&path));
                accepted_keys(parse, example, &path, keys);
            }
            _ => {}
        }
    }
}

/// What the parser accepts, the table and the example, compared.
struct Reference {
    table: BTreeSet<String>,
    example: BTreeSet<String>,
    accepted: BTreeSet<String>,
}

fn check(name: &str, parse: Parser, example: &Value, table: BTreeSet<String>) -> Reference {
    let text = serde_yaml::to_string(example).expect("YAML");
    if let Err(error) = parse(&text) {
        panic!("{name}: the example in {REFERENCE} is refused by the parser:\n{error}\n{text}");
    }
    let mut accepted = BTreeSet::new();
    accepted_keys(parse, example, &[], &mut accepted);
    let mut example_set = BTreeSet::new();
    example_keys(example, &[], &mut example_set);
    Reference {
        table: with_parents(&table),
        example: example_set,
        accepted,
    }
}

impl Reference {
    /// Every disagreement, named.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut differ = |what: &str, left: &BTreeSet<String>, right: &BTreeSet<String>| {
            for key in left.difference(right) {
                problems.push(format!("`{key}`: {what}"));
            }
        };
        differ(
            "the parser accepts it, the table does not document it",
            &self.accepted,
            &self.table,
        );
        differ(
            "documented in the table, the parser does not accept it",
            &self.table,
            &self.accepted,
        );
        differ(
            "the parser accepts it, the example file leaves it out",
            &self.accepted,
            &self.example,
        );
        problems
    }
}

fn standalone(page: &str) -> Reference {
    let standalone = section(page, STANDALONE);
    check(
        STANDALONE,
        parse_standalone,
        &example(standalone),
        table_keys(standalone),
    )
}

/// The Kubernetes table's rows for keys shared with the standalone file say "as in the
/// standalone file": such a row stands for every key under it in the standalone table.
fn kubernetes(page: &str) -> Reference {
    let shared = table_keys(section(page, STANDALONE));
    let kubernetes = section(page, KUBERNETES);
    let mut table = table_keys(kubernetes);
    let under: Vec<String> = shared
        .iter()
        .filter(|key| {
            table.iter().any(|row| {
                key.strip_prefix(row.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
        })
        .cloned()
        .collect();
    table.extend(under);
    check(KUBERNETES, parse_kubernetes, &example(kubernetes), table)
}

#[test]
fn the_standalone_files_reference_lists_exactly_the_keys_the_parser_accepts() {
    let reference = standalone(&reference());
    assert_eq!(reference.problems(), Vec::<String>::new());
    for key in [
        "node",
        "peers[].labels",
        "services[].ports[].targetPort",
        "gossip.joinTimeoutMs",
        "api.listen",
        "capacities.replyFlows",
    ] {
        assert!(reference.accepted.contains(key), "{key} is accepted");
    }
    // `labels` holds names of the user's choosing, not keys.
    assert!(
        !reference
            .accepted
            .iter()
            .any(|key| key.starts_with("peers[].labels.")),
        "{:?}",
        reference.accepted
    );
}

#[test]
fn the_kubernetes_settings_reference_lists_exactly_the_keys_the_parser_accepts() {
    let reference = kubernetes(&reference());
    assert_eq!(reference.problems(), Vec::<String>::new());
    for key in [
        "defaultClass",
        "gossip.keyFile",
        "capacities.flows",
        "pinDir",
    ] {
        assert!(reference.accepted.contains(key), "{key} is accepted");
    }
    for key in ["node", "peers", "services"] {
        assert!(!reference.accepted.contains(key), "{key} is refused");
    }
}

/// The check itself: a page that leaves a key out, or misspells one, is caught.
/// Every range the agent enforces (`config::bounds`) is stated in its key's row as
/// `MIN to MAX`.
#[test]
fn the_reference_states_every_bound() {
    let page = reference();
    let table = section(&page, STANDALONE);
    let missing: Vec<String> = lb_agent::config::bounds::ALL
        .iter()
        .filter(|bound| {
            let row = format!("| `{}` |", bound.key);
            let range = format!("{} to {}", bound.min, bound.max);
            !table
                .lines()
                .any(|line| line.starts_with(&row) && line.contains(&range))
        })
        .map(|bound| format!("{}: {} to {}", bound.key, bound.min, bound.max))
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "bounds missing from {REFERENCE}"
    );
}

#[test]
fn a_missing_or_misspelt_key_is_reported() {
    let page = reference();
    let row = "| `gossip.joinTimeoutMs` |";
    assert!(page.contains(row), "{row}");

    let removed = page.replace(row, "| (removed) |");
    let problems = standalone(&removed).problems();
    assert!(
        problems.contains(
            &"`gossip.joinTimeoutMs`: the parser accepts it, the table does not document it"
                .to_owned()
        ),
        "{problems:#?}"
    );
    // The Kubernetes file shares the key through its `gossip` row.
    assert_ne!(kubernetes(&removed).problems(), Vec::<String>::new());

    let misspelt = page.replace(row, "| `gossip.joinTimeoutMS` |");
    let problems = standalone(&misspelt).problems();
    assert!(
        problems.contains(
            &"`gossip.joinTimeoutMS`: documented in the table, the parser does not accept it"
                .to_owned()
        ),
        "{problems:#?}"
    );

    let only_kubernetes = page.replace("| `defaultClass` |", "| `defaultClas` |");
    let problems = kubernetes(&only_kubernetes).problems();
    assert!(
        problems.contains(
            &"`defaultClas`: documented in the table, the parser does not accept it".to_owned()
        ),
        "{problems:#?}"
    );
}

#[test]
fn the_parser_refuses_the_made_up_key_and_names_the_keys_it_expects() {
    // What the enumeration relies on, stated once.
    let error = parse_kubernetes(&format!("{MADE_UP}: 1\n")).expect_err("an unknown key");
    let keys = expected_keys(&error);
    assert!(
        error.contains(&format!(": {MADE_UP}: Unknown field `{MADE_UP}`")),
        "{error}"
    );
    assert!(keys.contains(&"defaultClass".to_owned()), "{keys:?}");
    assert!(!keys.contains(&MADE_UP.to_owned()), "{keys:?}");
}
