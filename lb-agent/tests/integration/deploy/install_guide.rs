//! The install guide, docs/install.md, as a reader follows it: the shell commands of
//! each numbered step, what they create, and the chart values it names.

use serde_json::json;

use super::{
    helm,
    objects::{Document, documents, read_dir, repo_dir},
};

/// The guide, relative to the repository root.
const GUIDE: &str = "docs/install.md";
const TITLE: &str = "# Install on Kubernetes\n";

/// One command line of a `sh` block (continuation lines joined), under the step whose
/// `## 2.` or `## 4b.` heading precedes it.
#[derive(Debug)]
pub struct Command {
    pub step: String,
    pub line: String,
}

impl Command {
    /// Whether a reader who runs this command has run `earlier`, which precedes it in
    /// the guide: yes in the same step or a lower-numbered one; steps sharing a number
    /// (`4a`, `4b`) are alternatives.
    pub fn follows(&self, earlier: &Command) -> bool {
        let number = |step: &str| -> u32 {
            let digits: String = step.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a step number")
        };
        earlier.step == self.step || number(&earlier.step) < number(&self.step)
    }

    /// `None` for commands that create nothing (`rollout status`, `sed`, `docker …`).
    pub fn effect(&self) -> Option<Effect> {
        let words: Vec<&str> = self.line.split_whitespace().collect();
        let after = |flag: &str| {
            let at = words.iter().position(|word| *word == flag)?;
            words.get(at + 1).copied()
        };
        match words.as_slice() {
            ["helm", ..] => Some(Effect {
                objects: helm::documented(&self.line),
                updates_existing: false,
            }),
            ["kubectl", "apply", ..] => Some(Effect {
                objects: applied(after("-f").expect("kubectl apply -f PATH")),
                updates_existing: true,
            }),
            ["kubectl", ..] if self.line.contains(" create secret generic ") => Some(Effect {
                objects: vec![secret(
                    after("generic").expect("a Secret's name"),
                    after("-n").expect("kubectl -n NAMESPACE"),
                )],
                updates_existing: false,
            }),
            _ => None,
        }
    }
}

/// What a documented command leaves in the cluster.
pub struct Effect {
    pub objects: Vec<Document>,
    /// `kubectl apply` updates what exists; `kubectl create` and `helm install` fail on
    /// it (Helm cannot take over an object it did not create).
    pub updates_existing: bool,
}

/// The guide's text after its title.
fn section() -> String {
    let guide = std::fs::read_to_string(repo_dir().join(GUIDE)).expect(GUIDE);
    let body = guide
        .strip_prefix(TITLE)
        .unwrap_or_else(|| panic!("{GUIDE} opens with `{}`", TITLE.trim_end()));
    body.to_owned()
}

/// The `4b` of a `## 4b. Title` heading.
fn step_label(heading: &str) -> String {
    let label = heading.split_once(". ").map_or("", |(label, _)| label);
    assert!(
        label.starts_with(|c: char| c.is_ascii_digit()),
        "{GUIDE}: a step heading without a step number: {heading}"
    );
    label.to_owned()
}

pub fn commands() -> Vec<Command> {
    let mut commands = Vec::new();
    let (mut step, mut in_shell, mut line) = (String::new(), false, String::new());
    for text in section().lines() {
        if let Some(heading) = text.strip_prefix("## ") {
            step = step_label(heading);
        } else if text.starts_with("```") {
            in_shell = text == "```sh";
        } else if in_shell {
            let (text, continued) = match text.strip_suffix('\\') {
                Some(text) => (text, true),
                None => (text, false),
            };
            line = format!("{line} {}", text.trim()).trim().to_owned();
            if !continued && !line.is_empty() {
                commands.push(Command {
                    step: step.clone(),
                    line: std::mem::take(&mut line),
                });
            }
        }
    }
    commands
}

/// `NAME` of each `--set NAME=…`, `--set-string NAME=…` and `--set-file NAME=…` in
/// `text`.
fn set_flags(text: &str) -> Vec<String> {
    // Inline code: `--set-file settings=…`.
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| word.trim_matches('`'))
        .collect();
    words
        .windows(2)
        .filter(|pair| ["--set", "--set-string", "--set-file"].contains(&pair[0]))
        .filter_map(|pair| pair[1].split_once('='))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Every chart value the section names: those its commands and inline code set, and the
/// names that open each item of the list after the line starting with `Values` (before
/// the item's first `: `).
pub fn values() -> Vec<String> {
    let section = section();
    let mut names = set_flags(&section.replace('\\', " "));
    let list = section
        .lines()
        .skip_while(|line| !line.starts_with("Values"))
        .skip(1)
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty());
    let mut listed = 0;
    for item in list.filter_map(|line| line.strip_prefix("- ")) {
        let head = item.split(": ").next().unwrap_or_default();
        names.extend(head.split('`').skip(1).step_by(2).map(str::to_owned));
        listed += 1;
    }
    assert!(listed > 0, "{GUIDE} lists no chart values after `Values`");
    names
}

/// The documents of a `kubectl apply -f` file or directory.
fn applied(path: &str) -> Vec<Document> {
    let path = repo_dir().join(path);
    if path.is_dir() {
        return read_dir(&path);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    documents(&path.display().to_string(), &text).unwrap_or_else(|error| panic!("{error}"))
}

fn secret(name: &str, namespace: &str) -> Document {
    Document {
        origin: "kubectl create secret".to_owned(),
        value: json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": name, "namespace": namespace },
        }),
    }
}
