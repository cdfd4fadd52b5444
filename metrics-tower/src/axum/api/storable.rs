//! Text every store can keep. PostgreSQL refuses NUL (U+0000) in `text`
//! columns and `\u0000` in `jsonb` strings and keys; an event accepted with
//! one would be lost later as "rejected" (and cost the sink a bisection to
//! find it), so ingest refuses it up front, with the rest of the batch.
//!
//! Nothing else that reaches us can be refused by the store: the body is
//! UTF-8 (serde_json refuses invalid UTF-8 and lone surrogates such as
//! `"\ud800"` while parsing: a 400), numbers are `i64` / `u64` / finite
//! `f64` (serde_json refuses `1e400`), which `jsonb` keeps, and timestamps
//! are held to a window around the server's clock.

use serde_json::Value;

/// The character no store keeps.
const NUL: char = '\0';

/// Whether `text` can be stored as is.
pub(super) fn is_storable(text: &str) -> bool {
    // A byte search: NUL is ASCII, so it never appears inside a multi-byte
    // UTF-8 sequence.
    !text.as_bytes().contains(&(NUL as u8))
}

/// Whether every key and every string of `value`, at any depth, can be
/// stored. Stops at the first that cannot.
pub(super) fn is_storable_json(value: &Value) -> bool {
    match value {
        Value::String(s) => is_storable(s),
        Value::Array(items) => items.iter().all(is_storable_json),
        Value::Object(map) => map
            .iter()
            .all(|(key, value)| is_storable(key) && is_storable_json(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// The message for `field` holding a NUL.
pub(super) fn nul_message(field: &str) -> String {
    format!("{field} must not contain NUL (U+0000) characters, which the metrics store cannot keep")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_anywhere_is_refused() {
        assert!(is_storable(""));
        assert!(is_storable("caf\u{e9} \u{202e}rtl \u{200b}zw"));
        assert!(!is_storable("\0"));
        assert!(!is_storable("page\0name"));
        assert!(!is_storable("caf\u{e9}\0"));
    }

    #[test]
    fn nul_in_json_keys_and_strings_at_any_depth_is_refused() {
        assert!(is_storable_json(
            &json!({"a": [1, 2.5, null, true, {"b": "c"}], "d": {}})
        ));
        for bad in [
            json!({"a\u{0}": 1}),
            json!({"a": "x\u{0}"}),
            json!({"a": [1, {"b": ["ok", "n\u{0}"]}]}),
            json!({"a": {"b": {"c\u{0}d": null}}}),
        ] {
            assert!(!is_storable_json(&bad), "{bad}");
        }
    }

    #[test]
    fn serde_json_refuses_what_the_store_would_beyond_nul() {
        // Lone surrogates cannot become a Rust string: a syntax error (400).
        for body in [
            &br#"{"events":[{"page_name":"\ud800"}]}"#[..],
            br#"{"events":[{"metadata":{"\udc00":1}}]}"#,
            br#"{"events":[{"metadata":{"n":1e400}}]}"#,
            b"{\"events\":[{\"page_name\":\"\xff\"}]}",
        ] {
            assert!(
                serde_json::from_slice::<Value>(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A surrogate pair is one character, kept.
        let v: Value = serde_json::from_slice(br#"{"p":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(v["p"], "\u{1f600}");
        // `\u0000` parses (JSON allows it): ours to refuse.
        let v: Value = serde_json::from_slice(br#"{"p":"a\u0000b"}"#).unwrap();
        assert!(!is_storable_json(&v));
    }
}
