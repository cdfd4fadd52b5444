//! Correlation ids: one id per request, shared by the caller, the handler's
//! logs, the metrics record and the response.
//!
//! The layer reuses the caller's `X-Correlation-ID` when it is 1 to
//! [`CorrelationId::MAX_LEN`] bytes of visible ASCII, and otherwise (missing,
//! oversized, control characters, non-ASCII) replaces it with a fresh UUIDv7.
//! The id is echoed in the `x-correlation-id` header of every response the
//! inner service produces, error statuses included, excluded paths too.
//!
//! Handlers, inner middleware and their logs get the id as the *current* one
//! while the layer runs the inner service (its `call` and every poll of its
//! response future): [`CorrelationId::current`], or, with axum, the
//! `CorrelationId` extractor (`async fn h(id: CorrelationId)`, or
//! `Option<CorrelationId>`). Nothing is stored in the request for it: putting
//! the id into the request extensions costs up to three allocations per
//! request (the map's box and table on a request without extensions, the
//! value's box), more than the rest of the layer together. Services that read
//! it from the extensions (`Extension<CorrelationId>`) turn that on with
//! [`MetricsLayer::correlation_id_extension`](crate::MetricsLayer::correlation_id_extension).
//! The current id is per poll, not per task: code that runs later elsewhere
//! (a task the handler spawns, a streamed body after the handler returned)
//! takes the id along from the handler.
//!
//! ```
//! use axum::{Router, routing::get};
//! use metrics_core::{Collector, CorrelationId, MemorySink};
//! use metrics_tower::MetricsLayer;
//!
//! async fn handler(id: CorrelationId) -> String {
//!     tracing::info!(correlation_id = %id, "handling");
//!     format!("your id is {id}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let collector = Collector::builder(MemorySink::new()).spawn().unwrap();
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(MetricsLayer::new(collector));
//! # use tower::ServiceExt;
//! # let req = http::Request::get("/").header("x-correlation-id", "abc-1").body(axum::body::Body::empty()).unwrap();
//! # let res = app.oneshot(req).await.unwrap();
//! # let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
//! # assert_eq!(body, "your id is abc-1");
//! # }
//! ```
//!
//! An
//! inner service *error* (`Err`) has no response to carry the header; the
//! server turns it into a bare connection error, which no middleware can
//! annotate. Axum services are infallible, so this only concerns plain tower
//! stacks.

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use metrics_core::CorrelationId;

/// The header that carries the correlation id, in and out.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The caller's acceptable correlation id, or one generated for a request
/// that started `since_epoch` after the Unix epoch (the request's timestamp,
/// so the id costs no second clock read; see [`CorrelationId::generate_at`]
/// for why generating is cheap).
pub(crate) fn from_headers_or_generate(
    headers: &HeaderMap,
    since_epoch: Duration,
) -> CorrelationId {
    headers
        .get(X_CORRELATION_ID)
        .and_then(CorrelationId::from_header)
        .unwrap_or_else(|| {
            let millis = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
            CorrelationId::generate_at_unix_millis(millis)
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use std::time::SystemTime;

    use super::*;

    fn now() -> Duration {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
    }

    fn headers(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_CORRELATION_ID, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn reuses_acceptable_ids() {
        let id = from_headers_or_generate(&headers(b"req-123"), now());
        assert_eq!(id.as_str(), "req-123");
    }

    #[test]
    fn replaces_bad_ids() {
        let long = vec![b'a'; CorrelationId::MAX_LEN + 1];
        for bad in [&b"has space"[..], b"caf\xc3\xa9", &long, b"tab\there"] {
            let id = from_headers_or_generate(&headers(bad), now());
            assert_ne!(id.as_str().as_bytes(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
        }
        let id = from_headers_or_generate(&HeaderMap::new(), now());
        assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
    }

    #[test]
    fn generated_ids_are_distinct_across_buffers_and_within_a_millisecond() {
        let now = now();
        let ids: Vec<_> = (0..CorrelationId::IDS_PER_BUFFER * 3)
            .map(|_| from_headers_or_generate(&HeaderMap::new(), now))
            .collect();
        let mut texts: Vec<_> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), ids.len());
        for t in &texts {
            assert_eq!(uuid::Uuid::parse_str(t).unwrap().get_version_num(), 7);
        }
    }
}
