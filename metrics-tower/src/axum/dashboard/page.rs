//! The page itself and what it answers to whom: admins get the dashboard
//! (the template with the API path filled in), everyone else a small HTML
//! page with the contract's text and no numbers.
//!
//! The admin decision is [`RequireAdmin`]'s, so the page and the API refuse
//! the same people with the same statuses (401 / 403 / 503).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use metrics_core::SharedAdminCheck;

use super::assets::{Embedded, INDEX_HTML};
use crate::admin::{AdminRejection, RequireAdmin};

/// Where the API path goes in the template (HTML-escaped).
const API_PLACEHOLDER: &str = "{{api_path}}";
/// Where a `<base>` goes when the page is served without a trailing slash.
const BASE_PLACEHOLDER: &str = "{{base}}";

const HTML: &str = "text/html; charset=utf-8";

/// Scripts and styles from this origin only, no inline code, nothing may
/// frame the page. `img-src data:` is kept for SVG icons in CSS.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The page's fixed texts: clients and browser tests match them exactly.
pub(super) const UNAUTHENTICATED_TEXT: &str = "Authentication required. Please log in.";
pub(super) const NOT_ADMIN_TEXT: &str =
    "Admin access required. Only workspace administrators can view metrics.";
const CHECK_FAILED_TEXT: &str =
    "Unable to verify administrator privileges. Please try again later.";

/// The rendered page (each as it is and gzipped): the usual one, made when
/// the router is built, and the one with a `<base>` for a router nested
/// without a trailing slash, made on first use (the nest path is only known
/// then).
#[derive(Debug)]
pub(super) struct Page {
    api_path: String,
    plain: Embedded,
    based: OnceLock<(Arc<str>, Embedded)>,
}

impl Page {
    /// The page calling the API at `api_path`.
    pub(super) fn new(api_path: &str) -> Self {
        Self {
            api_path: api_path.to_owned(),
            plain: Embedded::new(HTML, render(api_path, None)),
            based: OnceLock::new(),
        }
    }

    /// The page's size in bytes, uncompressed and as sent gzipped.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.plain.len(), self.plain.wire_len())
    }

    /// The variant for a page whose relative links resolve against `base`
    /// (an absolute path ending in `/`), or the usual one.
    fn respond(&self, base: Option<&str>, request: &HeaderMap) -> Response {
        let Some(base) = base else {
            return self.plain.respond(request);
        };
        let (cached, page) = self.based.get_or_init(|| {
            (
                Arc::from(base),
                Embedded::new(HTML, render(&self.api_path, Some(base))),
            )
        });
        if **cached == *base {
            page.respond(request)
        } else {
            // The same router nested at a second place: render for it.
            Embedded::new(HTML, render(&self.api_path, Some(base))).respond(request)
        }
    }
}

/// The template with its placeholders filled.
fn render(api_path: &str, base: Option<&str>) -> String {
    let base = base.map_or_else(String::new, |b| {
        format!("<base href=\"{}\">", escape_html(b))
    });
    INDEX_HTML
        .replace(BASE_PLACEHOLDER, &base)
        .replace(API_PLACEHOLDER, &escape_html(api_path))
}

/// The answer to `GET /` (its request's `parts`): the dashboard for
/// admins, the refusal page for everyone else; `base` as
/// [`Page::respond`] takes it.
pub(super) async fn answer(
    page: &Page,
    admins: &SharedAdminCheck,
    mut parts: Parts,
    base: Option<&str>,
) -> Response {
    // The dashboard's own check, for the same decision as the API's guard.
    let mut response = match RequireAdmin::from_request_parts(&mut parts, admins).await {
        Ok(_) => page.respond(base, &parts.headers),
        Err(rejection) => refusal(&rejection, base),
    };
    html_headers(response.headers_mut());
    response
}

/// The page for callers who may not see the dashboard: its status is the
/// API guard's, its text the contract's, and it holds no numbers and no
/// script.
fn refusal(rejection: &AdminRejection, base: Option<&str>) -> Response {
    let text = match rejection {
        AdminRejection::Unauthenticated => UNAUTHENTICATED_TEXT,
        AdminRejection::NotAdmin => NOT_ADMIN_TEXT,
        AdminRejection::CheckFailed(_) => CHECK_FAILED_TEXT,
    };
    let base = base.map_or_else(String::new, |b| {
        format!("<base href=\"{}\">", escape_html(b))
    });
    let body = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{base}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Application Metrics</title>\n<link rel=\"stylesheet\" href=\"assets/app.css\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         </head>\n<body>\n<header class=\"page-header\"><h1>Application Metrics</h1></header>\n\
         <main id=\"main\">\n<p class=\"access-message\" data-testid=\"access-message\" \
         role=\"alert\">{text}</p>\n</main>\n</body>\n</html>\n"
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = rejection.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    // Who may see the page depends on who asks: keep shared caches out.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// What every HTML answer carries beside the file's own headers.
fn html_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Escapes the five characters that matter in HTML text and attributes.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_its_placeholders_once() {
        assert_eq!(INDEX_HTML.matches(BASE_PLACEHOLDER).count(), 1);
        assert!(INDEX_HTML.matches(API_PLACEHOLDER).count() >= 2);
        let page = render("/api/v1/metrics", None);
        assert!(!page.contains("{{"), "a placeholder was left: {page}");
        assert!(page.contains(r#"<meta name="app-metrics-api" content="/api/v1/metrics">"#));
        assert!(page.contains(r#"data-endpoint="/api/v1/metrics/usage-events""#));
        assert!(!page.contains("<base"));
    }

    #[test]
    fn api_path_and_base_are_escaped() {
        let page = render(r#"/x"><script>alert(1)</script>"#, Some("/a&b/"));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("/x&quot;&gt;&lt;script&gt;"));
        assert!(page.contains(r#"<base href="/a&amp;b/">"#));
    }

    #[test]
    fn refusal_texts_have_no_digits() {
        for text in [UNAUTHENTICATED_TEXT, NOT_ADMIN_TEXT, CHECK_FAILED_TEXT] {
            assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
        }
    }
}
