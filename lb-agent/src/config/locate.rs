//! Field paths into the file, and finding where in the text one is. Semantic checks run
//! on the typed configuration and name the field; the parsed document, which kept every
//! node's position, turns that into a line.

use std::fmt;

use marked_yaml::Node;

use super::error::{Issue, Location};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(&'static str),
    Index(usize),
}

/// A path such as `services[1].ports[0].protocol`, with keys spelled as in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn key(&self, key: &'static str) -> Self {
        self.with(Segment::Key(key))
    }

    pub fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut path = self.clone();
        path.0.push(segment);
        path
    }

    /// Where the field's value starts; the deepest existing ancestor's position when the
    /// field itself is absent (a default).
    pub fn locate(&self, document: &Node) -> Option<Location> {
        let mut node = document;
        for segment in &self.0 {
            let child = match segment {
                Segment::Key(key) => node.as_mapping().and_then(|map| map.get_node(key)),
                Segment::Index(index) => node.as_sequence().and_then(|seq| seq.get_node(*index)),
            };
            match child {
                Some(child) => node = child,
                None => break,
            }
        }
        node.span().start().map(Location::from)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A semantic problem, not yet placed in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: FieldPath,
    pub message: String,
}

impl Problem {
    pub fn locate(self, document: &Node) -> Issue {
        Issue {
            location: self.path.locate(document),
            field: Some(self.path.to_string()),
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_serde_paths() {
        let path = FieldPath::default()
            .key("services")
            .index(1)
            .key("ports")
            .index(0)
            .key("protocol");
        assert_eq!(path.to_string(), "services[1].ports[0].protocol");
    }

    #[test]
    fn absent_fields_point_at_their_parent() {
        let document = marked_yaml::parse_yaml(0, "a: 1\nlist:\n  - x: 1\n  - x: 2\n    y: 3\n")
            .expect("yaml");
        let root = FieldPath::default();
        let at = |path: FieldPath| path.locate(&document).map(|location| location.line);
        assert_eq!(at(root.key("list").index(1).key("y")), Some(5));
        assert_eq!(at(root.key("list").index(1).key("z")), Some(4));
        assert_eq!(at(root.key("list").index(7)), Some(3));
        assert_eq!(at(root.key("a")), Some(1));
    }
}
