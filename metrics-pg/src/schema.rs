//! Schema names: validated once, then used in SQL text.

use std::fmt;

use crate::error::Error;

/// The schema metrics-pg uses when none is configured.
pub const DEFAULT_SCHEMA: &str = "app_metrics";

/// A validated schema name: 1-63 characters of `a-z`, `0-9` and `_`, not
/// starting with a digit.
///
/// DDL cannot take bind parameters, so the schema name ends up in SQL text;
/// restricting it to plain lower-case identifiers (and still quoting it) rules
/// out injection and case-folding surprises.
///
/// ```
/// use metrics_pg::SchemaName;
/// assert_eq!(SchemaName::new("app_metrics").unwrap().as_str(), "app_metrics");
/// assert!(SchemaName::new("App-Metrics").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.as_bytes()[0].is_ascii_digit()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidSchemaName(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `"schema"."table"`, ready for SQL text.
    pub(crate) fn qualify(&self, table: &str) -> String {
        format!("\"{}\".\"{table}\"", self.0)
    }

    /// `"schema"`, ready for SQL text.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        Self(DEFAULT_SCHEMA.to_owned())
    }
}

impl fmt::Debug for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        for ok in ["a", "app_metrics", "_x1", &"a".repeat(63)] {
            assert!(SchemaName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "A",
            "a-b",
            "a b",
            "a\"b",
            "été",
            &"a".repeat(64),
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting() {
        let s = SchemaName::new("m1").unwrap();
        assert_eq!(s.qualify("t"), "\"m1\".\"t\"");
        assert_eq!(s.quoted(), "\"m1\"");
        assert_eq!(SchemaName::default().as_str(), DEFAULT_SCHEMA);
    }
}
