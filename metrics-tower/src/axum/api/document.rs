//! The served OpenAPI document: the committed `openapi.json` with this
//! API's settings filled in, built once when the router is built.
//!
//! The committed file holds the defaults (the ten event types, 1 MiB, the
//! +5 min / −24 h window), so an API with default settings serves it byte
//! for byte. The document is edited as an order-keeping JSON tree, so a
//! served document reads like the file (`serde_json::Value` would sort the
//! keys).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::contract::OPENAPI_JSON;
use super::ingest::MAX_EVENT_TYPE_CHARS;

/// Where the configured values go (JSON pointers into the document).
const EVENT_TYPE_ENUM: &[&str] = &[
    "components",
    "schemas",
    "UsageEvent",
    "properties",
    "event_type",
    "enum",
];
const MAX_BODY_BYTES: &[&str] = &[
    "paths",
    "/usage-events",
    "post",
    "requestBody",
    "x-max-body-bytes",
];
const TIMESTAMP_WINDOW: &[&str] = &[
    "components",
    "schemas",
    "UsageEvent",
    "properties",
    "timestamp",
    "x-accepted-window",
];

/// The document an API with these settings serves at `/openapi.json`, as
/// pretty JSON with a final newline (the committed file's layout).
pub(super) fn served(
    event_types: &BTreeSet<String>,
    max_body_bytes: usize,
    skew_future: Duration,
    skew_past: Duration,
) -> String {
    let mut doc: Node =
        serde_json::from_str(OPENAPI_JSON).expect("the committed openapi.json is JSON");
    // Types longer than the limit can never be accepted, so they are not
    // offered; the set is sorted, so the enum is too.
    let types = event_types
        .iter()
        .filter(|t| t.chars().count() <= MAX_EVENT_TYPE_CHARS)
        .map(|t| Node::String(t.clone()))
        .collect();
    doc.set(EVENT_TYPE_ENUM, Node::Array(types));
    doc.set(MAX_BODY_BYTES, Node::number(max_body_bytes as u64));
    doc.set(
        TIMESTAMP_WINDOW,
        Node::Object(vec![
            (
                "before_seconds".to_owned(),
                Node::number(skew_past.as_secs()),
            ),
            (
                "after_seconds".to_owned(),
                Node::number(skew_future.as_secs()),
            ),
        ]),
    );
    let mut text = serde_json::to_string_pretty(&doc).expect("a JSON tree serialises");
    text.push('\n');
    text
}

/// A JSON value whose objects keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Self>),
    Object(Vec<(String, Self)>),
}

impl Node {
    fn number(n: u64) -> Self {
        Self::Number(n.into())
    }

    /// Sets the member at `path` (object keys), which must lead through
    /// objects that exist; the last key is replaced in place or appended.
    fn set(&mut self, path: &[&str], value: Self) {
        let Some((last, parents)) = path.split_last() else {
            *self = value;
            return;
        };
        let mut node = self;
        for key in parents {
            node = node
                .member_mut(key)
                .unwrap_or_else(|| panic!("openapi.json has no {key:?} on the way to {path:?}"));
        }
        let Self::Object(members) = node else {
            panic!("openapi.json: {path:?} is not inside an object");
        };
        match members.iter_mut().find(|(k, _)| k == last) {
            Some((_, slot)) => *slot = value,
            None => members.push(((*last).to_owned(), value)),
        }
    }

    fn member_mut(&mut self, key: &str) -> Option<&mut Self> {
        match self {
            Self::Object(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(n)
            .map(Node::Number)
            .ok_or_else(|| E::custom("a JSON number is finite"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            members.push((k, v));
        }
        Ok(Node::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_unchanged() {
        // The committed file is laid out as the served document is written,
        // so the defaults serve it byte for byte.
        let doc: Node = serde_json::from_str(OPENAPI_JSON).unwrap();
        let mut text = serde_json::to_string_pretty(&doc).unwrap();
        text.push('\n');
        assert_eq!(text, OPENAPI_JSON);
    }

    #[test]
    fn set_replaces_in_place_and_appends_new_keys() {
        let mut doc: Node = serde_json::from_str(r#"{"b":{"x":1,"y":2},"a":0}"#).unwrap();
        doc.set(&["b", "x"], Node::Bool(true));
        doc.set(&["b", "z"], Node::Null);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"b":{"x":true,"y":2,"z":null},"a":0}"#
        );
    }
}
