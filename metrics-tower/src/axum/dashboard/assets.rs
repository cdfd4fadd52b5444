//! The dashboard's embedded files and how each is answered: exact
//! `Content-Type`, a strong `ETag` hashed once, `If-None-Match` → 304,
//! `Cache-Control: no-cache`, `X-Content-Type-Options: nosniff`.
//!
//! The files are committed next to this module and compiled in with
//! `include_str!`: no build step, no file system at run time, and the bytes a
//! test reads are the bytes a browser gets.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::DashboardState;

/// The page template (see [`page`](super::page)); not served as a file.
pub(super) const INDEX_HTML: &str = include_str!("assets/index.html");

/// The browser tracker, served at `/tracker.js` to anyone.
pub(super) const TRACKER_JS: &str = include_str!("tracker.js");

const JAVASCRIPT: &str = "text/javascript";
const CSS: &str = "text/css; charset=utf-8";

/// What `/assets/{*path}` serves: the page's stylesheet and its ES modules.
const FILES: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("assets/app.css")),
    ("main.js", JAVASCRIPT, include_str!("assets/main.js")),
    ("api.js", JAVASCRIPT, include_str!("assets/api.js")),
    ("range.js", JAVASCRIPT, include_str!("assets/range.js")),
    ("format.js", JAVASCRIPT, include_str!("assets/format.js")),
    ("cards.js", JAVASCRIPT, include_str!("assets/cards.js")),
    ("charts.js", JAVASCRIPT, include_str!("assets/charts.js")),
    ("table.js", JAVASCRIPT, include_str!("assets/table.js")),
    ("toast.js", JAVASCRIPT, include_str!("assets/toast.js")),
    ("dom.js", JAVASCRIPT, include_str!("assets/dom.js")),
];

/// One file ready to answer: its bytes, type and validator.
#[derive(Debug, Clone)]
pub(super) struct Embedded {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
}

impl Embedded {
    /// `body` as `content_type`, its `ETag` hashed now (once per router).
    pub(super) fn new(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let etag = etag_for(&body);
        Self {
            body,
            content_type: HeaderValue::from_static(content_type),
            etag,
        }
    }

    /// The size of the body in bytes.
    pub(super) fn len(&self) -> usize {
        self.body.len()
    }

    /// 200 with the body, or 304 when `request` already holds this version.
    pub(super) fn respond(&self, request: &HeaderMap) -> Response {
        let mut response = if not_modified(request, &self.etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(Body::from(self.body.clone()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, self.content_type.clone());
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        // Stored, but asked again every time: a new deploy shows at once,
        // an unchanged file costs a 304.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// The embedded files under `/assets/`, looked up by name.
#[derive(Debug)]
pub(super) struct Assets {
    files: Vec<(&'static str, Embedded)>,
    tracker: Embedded,
}

impl Assets {
    /// Every file, hashed once.
    pub(super) fn embedded() -> Self {
        Self {
            files: FILES
                .iter()
                .map(|&(name, content_type, body)| (name, Embedded::new(content_type, body)))
                .collect(),
            tracker: Embedded::new(JAVASCRIPT, TRACKER_JS),
        }
    }

    fn get(&self, name: &str) -> Option<&Embedded> {
        self.files.iter().find(|(n, _)| *n == name).map(|(_, e)| e)
    }
}

/// `GET /assets/{*path}`: the file, or 404 for any other name.
pub(super) async fn asset(
    State(state): State<Arc<DashboardState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    match state.assets.get(&path) {
        Some(file) => file.respond(&headers),
        None => not_found(),
    }
}

/// `GET /tracker.js`.
pub(super) async fn tracker(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
) -> Response {
    state.assets.tracker.respond(&headers)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        "Not Found",
    )
        .into_response()
}

/// A strong validator: the length and the 64-bit FNV-1a hash of the bytes.
/// Not cryptographic; it only has to change when the file does.
fn etag_for(bytes: &[u8]) -> HeaderValue {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    HeaderValue::try_from(format!("\"{:x}-{hash:016x}\"", bytes.len()))
        .expect("hex digits make a valid header value")
}

/// Whether `If-None-Match` names `etag` (or is `*`). GET and HEAD use the
/// weak comparison (RFC 9110 §13.1.2), so a `W/` prefix still matches.
fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_changes_with_content_and_is_quoted() {
        let a = etag_for(b"body { color: red }");
        let b = etag_for(b"body { color: blue }");
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert!(a.starts_with('"') && a.ends_with('"'), "{a}");
        assert_eq!(etag_for(b"same"), etag_for(b"same"));
    }

    #[test]
    fn if_none_match_forms() {
        let etag = etag_for(b"x");
        let tag = etag.to_str().unwrap().to_owned();
        let ask = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::try_from(value).unwrap());
            not_modified(&headers, &etag)
        };
        assert!(ask(&tag));
        assert!(ask(&format!("W/{tag}")));
        assert!(ask(&format!("\"other\", {tag}")));
        assert!(ask("*"));
        assert!(!ask("\"other\""));
        assert!(!not_modified(&HeaderMap::new(), &etag));
    }

    #[test]
    fn every_file_has_its_type() {
        for (name, content_type, body) in FILES {
            assert!(!body.is_empty(), "{name} is empty");
            let expected = if name.ends_with(".js") {
                JAVASCRIPT
            } else {
                CSS
            };
            assert_eq!(*content_type, expected, "{name}");
        }
    }
}
