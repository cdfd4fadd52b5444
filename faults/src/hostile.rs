//! A seeded generator of hostile ingest requests: bodies mutated from a
//! valid one (byte flips, truncation), nesting, limits ± 1, NUL / RTL /
//! zero-width / lone surrogates, duplicate keys, wrong shapes and types,
//! wrong content types; and hostile heads (duplicate or malformed identity
//! headers, oversized headers, bad correlation ids, a spoofed `user_id`).
//!
//! The generator does not predict the answer: the scenario holds every
//! answer to the same rules (typed 4xx or 202, never 5xx) and the database
//! to `rows == events accepted`, with no invalid row. Same seed, same cases.

use fastrand::Rng;

use crate::load::rfc3339;

/// The identity hostile requests carry (unless the case is about identity).
pub(crate) const HOSTILE_USER: &str = "hostile@example.com";

/// One generated request.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// The category (figures count per category).
    pub(crate) category: &'static str,
    /// `Content-Type` (`None`: no header).
    pub(crate) content_type: Option<String>,
    /// The body bytes.
    pub(crate) body: Vec<u8>,
    /// Identity headers, in order (usually one `X-Forwarded-Email`).
    pub(crate) identity: Vec<(&'static str, Vec<u8>)>,
    /// Extra headers.
    pub(crate) extra: Vec<(String, Vec<u8>)>,
    /// The `X-Correlation-ID` to send and whether the app must reuse it.
    pub(crate) correlation: Option<(Vec<u8>, bool)>,
    /// The answer the rules demand beyond "typed 4xx or 202", if any.
    pub(crate) must: Must,
}

/// A case-specific rule on the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Must {
    /// Only the general rules.
    Any,
    /// Must not be accepted (no identity, or an ambiguous one).
    Refuse,
    /// The head is refused by the server before the app (431 / 400 without
    /// a typed body is fine).
    HeadLevel,
}

/// The default vocabulary (CONTRACT.md §1).
pub(crate) const EVENT_TYPES: &[&str] = &[
    "page_view",
    "button_click",
    "form_submit",
    "query_executed",
    "model_invoked",
    "preference_changed",
    "data_source_selected",
    "schema_detected",
    "file_uploaded",
    "export_triggered",
];

/// The `i`-th case of the sequence seeded with `seed` (cases are
/// independent: each has its own generator), with timestamps relative to
/// `now`.
pub(crate) fn case(seed: u64, i: u64, now: time::OffsetDateTime) -> Case {
    let mut rng = Rng::with_seed(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let pick = rng.u32(0..100);
    let mut c = match pick {
        0..=14 => valid(&mut rng, now),
        15..=34 => byte_flip(&mut rng, now),
        35..=47 => truncated(&mut rng, now),
        48..=52 => nested(&mut rng, now),
        53..=64 => limits(&mut rng, now),
        65..=77 => strange_strings(&mut rng, now),
        78..=82 => duplicate_keys(&mut rng, now),
        83..=90 => wrong_shapes(&mut rng, now),
        91..=93 => content_types(&mut rng, now),
        _ => hostile_head(&mut rng, now),
    };
    if c.correlation.is_none() && rng.u32(0..10) == 0 {
        let (id, head_level) = bad_correlation_id(&mut rng);
        c.correlation = Some((id, false));
        if head_level {
            // Refused before identity or body are even read.
            c.must = Must::HeadLevel;
        }
    }
    c
}

fn base(category: &'static str, body: Vec<u8>) -> Case {
    Case {
        category,
        content_type: Some("application/json".to_owned()),
        body,
        identity: vec![("X-Forwarded-Email", HOSTILE_USER.as_bytes().to_vec())],
        extra: Vec::new(),
        correlation: None,
        must: Must::Any,
    }
}

fn event(rng: &mut Rng, now: time::OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "event_type": EVENT_TYPES[rng.usize(..EVENT_TYPES.len())],
        "timestamp": rfc3339(now - time::Duration::seconds(rng.i64(0..3600))),
        "page_name": format!("/page/{}", rng.u32(..100)),
        "element_id": format!("h-{}", rng.u64(..)),
        "success": rng.bool(),
        "metadata": {"k": rng.u32(..1000), "s": "v"},
    })
}

fn body_of(events: &[serde_json::Value]) -> Vec<u8> {
    serde_json::json!({ "events": events })
        .to_string()
        .into_bytes()
}

fn valid_body(rng: &mut Rng, now: time::OffsetDateTime) -> Vec<u8> {
    let n = rng.usize(1..4);
    body_of(&(0..n).map(|_| event(rng, now)).collect::<Vec<_>>())
}

fn valid(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut c = base("valid", valid_body(rng, now));
    if rng.bool() {
        c.content_type = Some("text/plain;charset=UTF-8".to_owned());
    }
    c
}

fn byte_flip(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut body = valid_body(rng, now);
    for _ in 0..rng.usize(1..4) {
        let i = rng.usize(..body.len());
        body[i] ^= 1 << rng.u32(0..8);
    }
    base("byte_flip", body)
}

fn truncated(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut body = valid_body(rng, now);
    body.truncate(rng.usize(..body.len()));
    base("truncated", body)
}

fn nested(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let depth = [9, 10, 11, 12, 64, 129, 5_000][rng.usize(..7)];
    let metadata = format!("{}{}", "{\"a\":".repeat(depth - 1), "{}") + &"}".repeat(depth - 1);
    let mut e = event(rng, now).to_string();
    e = e.replacen("{\"k\"", &format!("{{\"deep\":{metadata},\"k\""), 1);
    base("nested", format!("{{\"events\":[{e}]}}").into_bytes())
}

fn limits(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut e = event(rng, now);
    match rng.u32(0..6) {
        0 => e["page_name"] = "p".repeat([254, 255, 256][rng.usize(..3)]).into(),
        1 => e["element_id"] = "é".repeat([254, 255, 256][rng.usize(..3)]).into(),
        2 => e["event_type"] = "x".repeat([99, 100, 101][rng.usize(..3)]).into(),
        3 => {
            // Serialised metadata of 16 KiB - 1, 16 KiB, 16 KiB + 1.
            let target = 16 * 1024 + [-1i64, 0, 1][rng.usize(..3)];
            let pad = usize::try_from(target).unwrap_or(0) - "{\"p\":\"\"}".len();
            e["metadata"] = serde_json::json!({ "p": "m".repeat(pad) });
        }
        4 => {
            let offsets = [-24 * 3600 + 60, -24 * 3600 - 60, 5 * 60 - 30, 5 * 60 + 60];
            let off = offsets[rng.usize(..4)];
            e["timestamp"] = rfc3339(now + time::Duration::seconds(off)).into();
        }
        _ if rng.u32(0..20) != 0 => e["success"] = serde_json::Value::Null,
        _ => {
            // 1000 and 1001 events: the batch limit ± 1 (kept rare: big).
            let n = if rng.bool() { 1000 } else { 1001 };
            return base(
                "limits",
                body_of(&(0..n).map(|_| event(rng, now)).collect::<Vec<_>>()),
            );
        }
    }
    base("limits", body_of(&[e]))
}

fn strange_strings(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    const STRANGE: &[&str] = &[
        "a\u{0}b",
        "\u{202E}evil",
        "zero\u{200B}width",
        "\u{FEFF}bom",
        "\u{0}",
        "tab\tnewline\n",
        "emoji \u{1F600}",
    ];
    let mut e = event(rng, now);
    let s = STRANGE[rng.usize(..STRANGE.len())];
    match rng.u32(0..5) {
        0 => e["page_name"] = s.into(),
        1 => e["element_id"] = s.into(),
        2 => e["event_type"] = s.into(),
        3 => e["metadata"] = serde_json::json!({ s: s }),
        _ => {
            // Raw bytes no JSON encoder would write: a lone surrogate
            // escape, or a raw NUL inside a string.
            let raw = if rng.bool() { "\\ud800" } else { "\u{0}" };
            let text = e.to_string().replacen("/page/", &format!("/page/{raw}"), 1);
            return base(
                "strange_strings",
                format!("{{\"events\":[{text}]}}").into_bytes(),
            );
        }
    }
    base("strange_strings", body_of(&[e]))
}

fn duplicate_keys(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let e = event(rng, now).to_string();
    let body = match rng.u32(0..3) {
        0 => format!("{{\"events\":[{e}],\"events\":[{e},{e}]}}"),
        1 => e.replacen("{", "{\"event_type\":\"not_a_type\",", 1),
        _ => e.replacen("{", "{\"page_name\":7,", 1),
    };
    let body = if body.starts_with("{\"events\"") {
        body
    } else {
        format!("{{\"events\":[{body}]}}")
    };
    base("duplicate_keys", body.into_bytes())
}

fn wrong_shapes(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let e = event(rng, now);
    let body = match rng.u32(0..10) {
        0 => String::new(),
        1 => "[]".to_owned(),
        2 => "{\"events\":{}}".to_owned(),
        3 => "{\"events\":[]}".to_owned(),
        4 => "{\"events\":[\"page_view\"]}".to_owned(),
        5 => {
            let mut e = e;
            e["timestamp"] = 1_700_000_000.into();
            body_string(&[e])
        }
        6 => {
            let mut e = e;
            e["success"] = "yes".into();
            body_string(&[e])
        }
        7 => {
            let mut e = e;
            e["metadata"] = serde_json::json!([1, 2]);
            body_string(&[e])
        }
        8 => "{\"events\":[{\"event_type\":null,\"timestamp\":null}]}".to_owned(),
        _ => format!("{{\"events\":[{}]}}", "1e999999"),
    };
    base("wrong_shapes", body.into_bytes())
}

fn body_string(events: &[serde_json::Value]) -> String {
    serde_json::json!({ "events": events }).to_string()
}

fn content_types(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut c = base("content_types", valid_body(rng, now));
    c.content_type = match rng.u32(0..4) {
        0 => None,
        1 => Some("application/xml".to_owned()),
        2 => Some("multipart/form-data; boundary=x".to_owned()),
        _ => Some("application/json; charset=utf-16".to_owned()),
    };
    c
}

fn hostile_head(rng: &mut Rng, now: time::OffsetDateTime) -> Case {
    let mut c = base("hostile_head", valid_body(rng, now));
    match rng.u32(0..8) {
        0 => {
            // A proxy that appends: the client's value first, the proxy's
            // after. Ambiguous identity must be refused (F6).
            c.identity = vec![
                ("X-Forwarded-Email", b"admin@example.com".to_vec()),
                ("X-Forwarded-Email", HOSTILE_USER.as_bytes().to_vec()),
            ];
            c.must = Must::Refuse;
        }
        1 => {
            c.identity = vec![("X-Forwarded-Email", b"has space@example.com".to_vec())];
            c.must = Must::Refuse;
        }
        2 => {
            c.identity = vec![("X-Forwarded-Email", vec![0xff, 0xfe, b'@', b'x'])];
            c.must = Must::Refuse;
        }
        3 => {
            c.identity = Vec::new();
            c.must = Must::Refuse;
        }
        4 => {
            // A spoofed user in the body: the row must carry the caller.
            let mut e = event(rng, now);
            e["user_id"] = "admin@example.com".into();
            c.body = body_of(&[e]);
        }
        5 => {
            c.extra
                .push(("X-Filler".to_owned(), "f".repeat(100 * 1024).into_bytes()));
            c.must = Must::HeadLevel;
        }
        6 => {
            c.identity = vec![("X-Forwarded-Email", "a".repeat(400).into_bytes())];
            c.must = Must::Refuse;
        }
        _ => {
            c.extra.push(("Content-Length".to_owned(), b"0".to_vec()));
            c.must = Must::HeadLevel;
        }
    }
    c
}

/// A correlation id the app must not reuse, and whether the server may
/// refuse the head before the app sees it (a DEL byte is not allowed in a
/// header value at all).
fn bad_correlation_id(rng: &mut Rng) -> (Vec<u8>, bool) {
    match rng.u32(0..4) {
        0 => ("c".repeat(129).into_bytes(), false),
        1 => (b"has space".to_vec(), false),
        2 => (vec![b'a', 0xc3, 0xa9], false),
        _ => ("x\u{7f}y".as_bytes().to_vec(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed "now": the same case twice must be the same bytes.
    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-12-07 12:00 UTC)
    }

    #[test]
    fn same_seed_same_cases() {
        for i in 0..50 {
            let (a, b) = (case(7, i, now()), case(7, i, now()));
            assert_eq!(a.body, b.body);
            assert_eq!(a.category, b.category);
        }
        assert_ne!(case(7, 1, now()).body, case(8, 1, now()).body);
    }

    #[test]
    fn every_category_appears_in_ten_thousand() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..10_000 {
            seen.insert(case(1, i, now()).category);
        }
        for c in [
            "valid",
            "byte_flip",
            "truncated",
            "nested",
            "limits",
            "strange_strings",
            "duplicate_keys",
            "wrong_shapes",
            "content_types",
            "hostile_head",
        ] {
            assert!(seen.contains(c), "{c} never generated");
        }
    }

    #[test]
    fn limits_hit_the_metadata_bound_exactly() {
        let mut sizes = std::collections::BTreeSet::new();
        for i in 0..20_000 {
            let c = case(3, i, now());
            if c.category != "limits" {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&c.body) else {
                continue;
            };
            if let Some(p) = v["events"][0]["metadata"].get("p") {
                let _ = p;
                sizes.insert(v["events"][0]["metadata"].to_string().len());
            }
        }
        assert!(sizes.contains(&16_383) && sizes.contains(&16_384) && sizes.contains(&16_385));
    }

    #[test]
    fn nesting_has_the_depth_asked_for() {
        let c = (0..5_000)
            .map(|i| case(5, i, now()))
            .find(|c| c.category == "nested")
            .expect("a nested case");
        let v: Result<serde_json::Value, _> = serde_json::from_slice(&c.body);
        // Deep ones exceed serde_json's recursion limit; the rest parse.
        if let Ok(v) = v {
            assert!(v["events"][0]["metadata"]["deep"].is_object());
        }
    }
}
