//! Label selectors as the pools use them (`namespaceSelector`, `serviceSelector`): a
//! Kubernetes `LabelSelector`, compiled from the API type by
//! [`crate::apis::address_pool`], asked only whether some labels match.

use std::collections::BTreeSet;

use super::pool::Labels;

/// One requirement on an object's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The label has this value (an entry of `matchLabels`).
    Equals { key: String, value: String },
    /// The label has one of `values`.
    In {
        key: String,
        values: BTreeSet<String>,
    },
    /// The label is absent or has none of `values`.
    NotIn {
        key: String,
        values: BTreeSet<String>,
    },
    /// The label is present, whatever its value.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Requirement {
    fn holds(&self, labels: &Labels) -> bool {
        match self {
            Self::Equals { key, value } => labels.get(key) == Some(value),
            Self::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Self::NotIn { key, values } => labels.get(key).is_none_or(|v| !values.contains(v)),
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// Labels match when every requirement holds (so an empty selector matches all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|requirement| requirement.holds(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn values(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn every_requirement_must_hold() {
        let selector = Selector(vec![
            Requirement::Equals {
                key: "tier".into(),
                value: "edge".into(),
            },
            Requirement::In {
                key: "zone".into(),
                values: values(&["a", "b"]),
            },
            Requirement::NotIn {
                key: "env".into(),
                values: values(&["test"]),
            },
            Requirement::Exists("team".into()),
            Requirement::DoesNotExist("legacy".into()),
        ]);
        let matching = labels(&[("tier", "edge"), ("zone", "b"), ("team", "net")]);
        assert!(selector.matches(&matching));
        for (key, value) in [
            ("tier", "core"),
            ("zone", "c"),
            ("env", "test"),
            ("legacy", ""),
        ] {
            let mut other = matching.clone();
            other.insert(key.into(), value.into());
            assert!(!selector.matches(&other), "{key}={value}");
        }
        let mut no_team = matching.clone();
        no_team.remove("team");
        assert!(!selector.matches(&no_team));
        let mut no_zone = matching;
        no_zone.remove("zone");
        assert!(!selector.matches(&no_zone), "In needs the label");
        assert!(Selector::default().matches(&Labels::new()));
    }
}
