//! What is wrong with a file, as the agent reports it: each problem with its line,
//! column and field path ([`Issue`]), grouped by kind ([`ConfigError`]).

use std::fmt;

use marked_yaml::{LoadError, Marker, Node};

use super::locate::Problem;

/// Where in the file a problem is (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl From<&Marker> for Location {
    fn from(marker: &Marker) -> Self {
        Self {
            line: marker.line(),
            column: marker.column(),
        }
    }
}

/// One problem in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub location: Option<Location>,
    /// Path of the offending field, e.g. `services[1].ports[0].protocol`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(Location { line, column }) = self.location {
            write!(f, "line {line}, column {column}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn lines(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Read(#[source] crate::files::ReadError),
    /// Not well-formed YAML, or empty.
    #[error("{0}")]
    Syntax(Issue),
    /// A missing, unknown or mistyped key or value.
    #[error("{0}")]
    Schema(Issue),
    /// Well-typed but inconsistent: every problem found, in file order.
    #[error("{}", lines(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read(_) => "read",
            Self::Syntax(_) => "syntax",
            Self::Schema(_) => "schema",
            Self::Invalid(_) => "invalid",
        }
    }

    /// `problems` placed in `document`, in file order.
    pub(super) fn invalid(problems: Vec<Problem>, document: &Node) -> Self {
        let mut issues: Vec<Issue> = problems
            .into_iter()
            .map(|problem| problem.locate(document))
            .collect();
        issues.sort_by_key(|issue| issue.location);
        Self::Invalid(issues)
    }

    /// The problems found in the file (none for a read error).
    #[cfg(test)]
    pub fn issues(&self) -> &[Issue] {
        match self {
            Self::Read(_) => &[],
            Self::Syntax(issue) | Self::Schema(issue) => std::slice::from_ref(issue),
            Self::Invalid(issues) => issues,
        }
    }
}

pub(super) fn load_issue(error: &LoadError) -> Issue {
    let (marker, message) = match error {
        LoadError::ScanError(marker, scan) => {
            (Some(marker), format!("YAML syntax error: {}", scan.info()))
        }
        LoadError::DuplicateKey(keys) => (
            keys.key.span().start(),
            format!("duplicate key `{}`", keys.key.as_str()),
        ),
        LoadError::TopLevelMustBeMapping(marker) | LoadError::TopLevelMustBeSequence(marker) => (
            Some(marker),
            "the file must be a mapping of keys such as `node:`".to_owned(),
        ),
        LoadError::UnexpectedAnchor(marker) => {
            (Some(marker), "YAML anchors are not supported".to_owned())
        }
        LoadError::MappingKeyMustBeScalar(marker) => {
            (Some(marker), "keys must be plain names".to_owned())
        }
        LoadError::UnexpectedTag(marker) => {
            (Some(marker), "YAML tags are not supported".to_owned())
        }
    };
    Issue {
        location: marker.map(Location::from),
        field: None,
        message,
    }
}

pub(super) fn schema_issue(error: &marked_yaml::FromNodeError) -> Issue {
    use marked_yaml::Error;
    let message = match &**error {
        Error::IntegerParseFailure(cause, _) => format!("expected a whole number ({cause})"),
        Error::NotBoolean(_) => "expected `true` or `false`".to_owned(),
        other => other.to_string(),
    };
    Issue {
        location: error.start_mark().as_ref().map(Location::from),
        field: error.path().map(str::to_owned),
        message,
    }
}
