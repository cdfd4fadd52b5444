//! The dashboard's embedded files and how each is answered: exact
//! `Content-Type`, a gzip variant for clients whose `Accept-Encoding` allows
//! it (`Content-Encoding: gzip`, `Vary: Accept-Encoding`), a strong `ETag`
//! per variant, both made once when the router is built, `If-None-Match` →
//! 304 for the variant asked for, `Cache-Control: no-cache`,
//! `X-Content-Type-Options: nosniff`.
//!
//! The files are committed next to this module and compiled in with
//! `include_str!`: no build step, no file system at run time, and the bytes a
//! test reads are the bytes a browser gets.

use std::io::Write as _;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::{HeaderMap, HeaderValue, StatusCode, header};

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
    ("detail.js", JAVASCRIPT, include_str!("assets/detail.js")),
    ("toast.js", JAVASCRIPT, include_str!("assets/toast.js")),
    ("dom.js", JAVASCRIPT, include_str!("assets/dom.js")),
];

/// One file ready to answer: its type and its variants, each with its own
/// validator.
#[derive(Debug, Clone)]
pub(super) struct Embedded {
    content_type: HeaderValue,
    identity: Variant,
    /// The gzip variant, when it is smaller than the file itself.
    gzip: Option<Variant>,
}

/// One encoding of a file: the bytes on the wire and their strong `ETag`.
#[derive(Debug, Clone)]
struct Variant {
    body: Bytes,
    etag: HeaderValue,
}

impl Embedded {
    /// `body` as `content_type`, gzipped and hashed now (once per router).
    pub(super) fn new(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let gzip = gzip(&body).filter(|gz| gz.len() < body.len()).map(|gz| {
            // Its own strong validator: other bytes, another tag (RFC 9110
            // §8.8.3), and visibly the gzip one.
            let etag = etag_for(&gz, "-gzip");
            Variant {
                body: Bytes::from(gz),
                etag,
            }
        });
        Self {
            content_type: HeaderValue::from_static(content_type),
            identity: Variant {
                etag: etag_for(&body, ""),
                body,
            },
            gzip,
        }
    }

    /// The size of the file in bytes (uncompressed).
    pub(super) fn len(&self) -> usize {
        self.identity.body.len()
    }

    /// The size of what a client that accepts gzip is sent.
    pub(super) fn wire_len(&self) -> usize {
        self.gzip.as_ref().unwrap_or(&self.identity).body.len()
    }

    /// 200 with the body in the encoding `request` accepts (gzip when it
    /// may, else the file as it is), or 304 when `request` already holds
    /// that variant.
    pub(super) fn respond(&self, request: &HeaderMap) -> Response {
        let gzip = self.gzip.as_ref().filter(|_| accepts_gzip(request));
        let variant = gzip.unwrap_or(&self.identity);
        let mut response = if not_modified(request, &variant.etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(Body::from(variant.body.clone()));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, self.content_type.clone());
            if gzip.is_some() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, variant.etag.clone());
        if self.gzip.is_some() {
            // The answer depends on Accept-Encoding: caches keep both.
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
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

/// `bytes` gzipped at the best compression (done once, so the time is
/// spent where it is cheapest). Writing to a `Vec` cannot fail; `None` only
/// if the encoder ever did.
fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// Whether `request`'s `Accept-Encoding` lets us answer with gzip (RFC 9110
/// §12.5.3): `gzip` (or its alias `x-gzip`), else `*`, with a q-value above
/// 0, and not below an explicit `identity`'s. No header, an empty one,
/// `gzip;q=0` or a malformed q-value mean no.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let (mut gzip, mut star, mut identity) = (None, None, None);
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or_default().trim();
            let slot =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut gzip
                } else if coding == "*" {
                    &mut star
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut identity
                } else {
                    continue;
                };
            let mut q = Some(1000);
            for param in params {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = qvalue(value.trim());
                    }
                }
            }
            // An unreadable weight is no consent; a repeat keeps the lower.
            let q = q.unwrap_or(0);
            *slot = Some(slot.map_or(q, |old: u16| old.min(q)));
        }
    }
    let gzip = gzip.or(star).unwrap_or(0);
    gzip > 0 && identity.is_none_or(|identity| gzip >= identity)
}

/// A q-value (`0`, `0.5`, `1.000`, at most three decimals, 0 to 1) in
/// thousandths, or `None` when it is not one.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
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

    /// The answer to `GET /assets/{path}`: the file, or 404 for any other
    /// name.
    pub(super) fn respond(&self, path: &str, request: &HeaderMap) -> Response {
        match self.get(path) {
            Some(file) => file.respond(request),
            None => not_found(),
        }
    }

    /// The answer to `GET /tracker.js`.
    pub(super) fn respond_tracker(&self, request: &HeaderMap) -> Response {
        self.tracker.respond(request)
    }
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

/// A strong validator: the length and the 64-bit FNV-1a hash of the bytes,
/// then `suffix`. Not cryptographic; it only has to change when the bytes
/// do.
fn etag_for(bytes: &[u8], suffix: &str) -> HeaderValue {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    HeaderValue::try_from(format!("\"{:x}-{hash:016x}{suffix}\"", bytes.len()))
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
        let a = etag_for(b"body { color: red }", "");
        let b = etag_for(b"body { color: blue }", "");
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert!(a.starts_with('"') && a.ends_with('"'), "{a}");
        assert_eq!(etag_for(b"same", ""), etag_for(b"same", ""));
    }

    #[test]
    fn if_none_match_forms() {
        let etag = etag_for(b"x", "");
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

    fn headers(accept_encoding: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in accept_encoding {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::try_from(*value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn accept_encoding_q_values() {
        for yes in [
            "gzip",
            "GZIP",
            "x-gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "gzip;q=0.001",
            "gzip; q=1.000",
            "gzip;Q=0.5",
            "*",
            "deflate, *;q=0.5",
            "gzip;q=0.5, identity;q=0.5",
            "identity;q=0, gzip",
        ] {
            assert!(accepts_gzip(&headers(&[yes])), "{yes:?} allows gzip");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip; q=0, *",
            "*;q=0",
            "*, gzip;q=0",
            "gzip;q=0.5, identity",
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.5000",
            "gzip;q=abc",
            "gzip;q=",
            "gzip;q=-1",
            "gzipx",
        ] {
            assert!(!accepts_gzip(&headers(&[no])), "{no:?} does not allow gzip");
        }
        assert!(!accepts_gzip(&HeaderMap::new()), "no header: identity");
        assert!(
            accepts_gzip(&headers(&["br", "gzip"])),
            "two headers are one list"
        );
        assert!(
            !accepts_gzip(&headers(&["gzip", "gzip;q=0"])),
            "the lower repeat wins"
        );
    }

    #[test]
    fn q_values_in_thousandths() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.0"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("0"), Some(0));
        for bad in ["1.001", "2", ".5", "0.1234", "+1", " 1", "0x1", ""] {
            assert_eq!(qvalue(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gzip_round_trips_and_is_smaller() {
        use std::io::Read as _;
        let file = Embedded::new(CSS, include_str!("assets/app.css"));
        let gz = file.gzip.as_ref().expect("css compresses");
        assert!(
            gz.body.len() * 2 < file.len(),
            "{} of {}",
            gz.body.len(),
            file.len()
        );
        assert_ne!(gz.etag, file.identity.etag);
        assert!(gz.etag.to_str().unwrap().ends_with("-gzip\""));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz.body[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), &file.identity.body[..]);
        // Too small to gain: only the file itself, and no Vary.
        let tiny = Embedded::new(CSS, "a{}");
        assert!(tiny.gzip.is_none());
        let res = tiny.respond(&headers(&["gzip"]));
        assert!(res.headers().get(header::VARY).is_none());
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
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
