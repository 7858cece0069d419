//! A settings file's text as a YAML document that keeps every node's position, so that
//! any problem found later can name its line. Nulls are refused here: a key is either
//! set or left out.

use marked_yaml::{LoaderOptions, Marker, Node};

use super::error::{ConfigError, Issue, Location, load_issue};

/// The document of `text`: well-formed YAML, a mapping at the top, no duplicate key and
/// no null.
pub(super) fn document(text: &str) -> Result<Node, ConfigError> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let document = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| ConfigError::Syntax(load_issue(&error)))?;
    let lines: Vec<&str> = text.lines().collect();
    match first_null(&document, "", &lines) {
        Some(issue) => Err(ConfigError::Syntax(issue)),
        None => Ok(document),
    }
}

/// The first YAML null (`~` or `null`, unquoted) in `node`, whose field path is `path`;
/// `lines` is the text it was parsed from. The loader keeps scalars as text, so a null
/// would otherwise reach a text setting as the name `~` (e.g. an interface) instead of
/// meaning "the default", which it does not.
fn first_null(node: &Node, path: &str, lines: &[&str]) -> Option<Issue> {
    match node {
        Node::Scalar(scalar) => {
            let start = scalar.span().start()?;
            let spelled_null = matches!(scalar.as_str(), "~" | "null" | "Null" | "NULL");
            (spelled_null && !quoted(lines, start)).then(|| Issue {
                location: Some(Location::from(start)),
                field: (!path.is_empty()).then(|| path.to_owned()),
                message: format!(
                    "`{}` is no value: leave the key out to take its default",
                    scalar.as_str()
                ),
            })
        }
        Node::Mapping(mapping) => mapping.iter().find_map(|(key, value)| {
            let path = match path {
                "" => key.as_str().to_owned(),
                parent => format!("{parent}.{}", key.as_str()),
            };
            first_null(value, &path, lines)
        }),
        Node::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| first_null(item, &format!("{path}[{index}]"), lines)),
    }
}

/// Whether the scalar starting at `start` (1-based line and column) opens with a quote.
fn quoted(lines: &[&str], start: &Marker) -> bool {
    lines
        .get(start.line().saturating_sub(1))
        .and_then(|line| line.chars().nth(start.column().saturating_sub(1)))
        .is_some_and(|first| first == '"' || first == '\'')
}
