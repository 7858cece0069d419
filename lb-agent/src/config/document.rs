//! A settings file's text as a YAML document that keeps every node's position, so that
//! any problem found later can name its line. Nulls are refused here: a key is either
//! set or left out.

use marked_yaml::{LoaderOptions, Marker, Node};

use super::error::{ConfigError, Issue, Location, load_issue};

/// The document of `text`: well-formed YAML, one document, a mapping at the top, no
/// duplicate key and no null. A leading byte-order mark (some Windows editors write
/// one) is skipped: it would otherwise become part of the first key.
pub(super) fn document(text: &str) -> Result<Node, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(line) = second_document(text) {
        return Err(ConfigError::Syntax(Issue {
            location: Some(Location { line, column: 1 }),
            field: None,
            message: "a second YAML document starts here; the file must hold one \
                      (the loader would ignore everything from here on): remove this \
                      marker and merge what follows into the first document"
                .to_owned(),
        }));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let document = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| ConfigError::Syntax(load_issue(&error)))?;
    let lines: Vec<&str> = text.lines().collect();
    match first_null(&document, "", &lines) {
        Some(issue) => Err(ConfigError::Syntax(issue)),
        None => Ok(document),
    }
}

/// The line (1-based) where a document after the first starts: a `---` or `...` marker
/// at the start of a line once content was seen, with content after it (a lone end
/// marker is fine). At column 0 such a marker ends the document in YAML wherever it
/// stands (block scalars are indented), so a scan of the lines finds what the parser
/// would stop at.
fn second_document(text: &str) -> Option<usize> {
    let is_marker = |line: &str| {
        ["---", "..."].iter().any(|marker| {
            line.strip_prefix(marker)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']))
        })
    };
    let is_content = |line: &str| {
        !(line.trim().is_empty() || line.trim_start().starts_with('#') || is_marker(line))
    };
    let lines: Vec<&str> = text.lines().collect();
    let first_content = lines.iter().position(|line| is_content(line))?;
    let end = first_content
        + lines[first_content..]
            .iter()
            .position(|line| is_marker(line))?;
    lines[end..]
        .iter()
        .any(|line| is_content(line))
        .then_some(end + 1)
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
