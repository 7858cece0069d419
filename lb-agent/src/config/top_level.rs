//! A settings file's top level read as two structs: the keys of the file's own and the
//! node-local keys ([`NodeSettings`]) that both settings files have.
//!
//! serde cannot read one mapping into two structs and still refuse unknown keys
//! (`flatten` and `deny_unknown_fields` do not combine). So each struct reads the whole
//! mapping, passing over the other's keys, and a key that neither knows is refused here,
//! at its place in the file, in the words serde uses for the nested mappings.

use std::fmt;

use marked_yaml::Node;
use serde::{
    Deserializer,
    de::{DeserializeOwned, Visitor},
};

use super::{
    error::{ConfigError, Issue, Location, schema_issue},
    node::NodeSettings,
};

/// The top level of `document` as `Own` (the file's own keys) and [`NodeSettings`].
///
/// Of the problems found, the one reading both as one struct would have reported: the
/// first in the file, and a missing key (which has no place in the file) only when
/// nothing else is wrong.
pub(super) fn read<Own: DeserializeOwned>(
    document: &Node,
) -> Result<(Own, NodeSettings), ConfigError> {
    let own = typed::<Own>(document);
    let node_settings = typed::<NodeSettings>(document);
    let unknown = unknown_key(
        document,
        &[struct_keys::<NodeSettings>(), struct_keys::<Own>()].concat(),
    );
    let problems = (own.as_ref().err().into_iter())
        .chain(node_settings.as_ref().err())
        .chain(&unknown);
    if let Some(first) = problems.min_by_key(|issue| (issue.field.is_none(), issue.location)) {
        return Err(ConfigError::Schema(first.clone()));
    }
    Ok((
        own.map_err(ConfigError::Schema)?,
        node_settings.map_err(ConfigError::Schema)?,
    ))
}

fn typed<T: DeserializeOwned>(document: &Node) -> Result<T, Issue> {
    marked_yaml::from_node(document).map_err(|error| schema_issue(&error))
}

/// The first key at `document`'s top level that is not one of `expected`.
fn unknown_key(document: &Node, expected: &[&str]) -> Option<Issue> {
    let key = document
        .as_mapping()?
        .keys()
        .find(|key| !expected.contains(&key.as_str()))?;
    Some(Issue {
        location: key.span().start().map(Location::from),
        field: Some(key.as_str().to_owned()),
        message: unknown_field(key.as_str(), expected),
    })
}

/// What marked-yaml says of an unknown key in a nested mapping.
fn unknown_field(key: &str, expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|key| format!("`{key}`")).collect();
    let expected = match quoted.as_slice() {
        [] => return format!("Unknown field `{key}`, there are no fields"),
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("one of {}, or {last}", init.join(", ")),
    };
    format!("Unknown field `{key}`, expected {expected}")
}

/// The keys a struct that derives `Deserialize` reads: the list serde's derive hands to
/// `deserialize_struct`, so the keys are written down once, as the struct's fields.
fn struct_keys<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(KeysProbe) {
        Err(KeysFound(keys)) => keys,
        Ok(_) => &[],
    }
}

/// A deserializer that only learns the keys of the struct asked of it.
struct KeysProbe;

/// The keys the probe learnt: none when it was asked for anything but a struct.
#[derive(Debug)]
struct KeysFound(&'static [&'static str]);

impl fmt::Display for KeysFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the keys {:?}", self.0)
    }
}

impl std::error::Error for KeysFound {}

impl serde::de::Error for KeysFound {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self(&[])
    }
}

impl<'de> Deserializer<'de> for KeysProbe {
    type Error = KeysFound;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, KeysFound> {
        Err(KeysFound(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, KeysFound> {
        Err(KeysFound(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::OwnKeys;

    #[test]
    fn the_keys_are_the_structs_fields_as_the_file_spells_them() {
        assert_eq!(struct_keys::<OwnKeys>(), ["node", "peers", "services"]);
        assert_eq!(
            struct_keys::<NodeSettings>(),
            [
                "interface",
                "mtu",
                "icmpRatePerSecond",
                "capacities",
                "gossip",
                "arp",
                "api",
                "pinDir"
            ]
        );
        assert_eq!(struct_keys::<u32>(), [] as [&str; 0]);
    }

    #[test]
    fn an_unknown_key_is_named_like_serde_names_it() {
        assert_eq!(
            unknown_field("x", &["a"]),
            "Unknown field `x`, expected `a`"
        );
        assert_eq!(
            unknown_field("x", &["a", "b"]),
            "Unknown field `x`, expected `a` or `b`"
        );
        assert_eq!(
            unknown_field("x", &["a", "b", "c"]),
            "Unknown field `x`, expected one of `a`, `b`, or `c`"
        );
        assert_eq!(
            unknown_field("x", &[]),
            "Unknown field `x`, there are no fields"
        );
    }
}
