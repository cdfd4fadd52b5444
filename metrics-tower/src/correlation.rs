//! Correlation ids: one id per request, shared by the caller, the handler's
//! logs, the metrics record and the response.
//!
//! The layer reuses the caller's `X-Correlation-ID` when it is 1 to
//! [`CorrelationId::MAX_LEN`] bytes of visible ASCII, and otherwise (missing,
//! oversized, control characters, non-ASCII) replaces it with a fresh UUIDv7.
//! The id is put into the request extensions, so handlers can take
//! `Extension<CorrelationId>`, and echoed in the `x-correlation-id` header of
//! every response the inner service produces, error statuses included. An
//! inner service *error* (`Err`) has no response to carry the header; the
//! server turns it into a bare connection error, which no middleware can
//! annotate. Axum services are infallible, so this only concerns plain tower
//! stacks.

use std::cell::RefCell;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use metrics_core::CorrelationId;

/// The header that carries the correlation id, in and out.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The caller's acceptable correlation id, or a generated one.
pub(crate) fn from_headers_or_generate(headers: &HeaderMap) -> CorrelationId {
    headers
        .get(X_CORRELATION_ID)
        .and_then(CorrelationId::from_header)
        .unwrap_or_else(generate)
}

/// How many generated ids share one buffer allocation.
const IDS_PER_SLAB: usize = 64;
const UUID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

thread_local! {
    // Generated ids are carved out of a per-thread buffer: a `HeaderValue`
    // needs heap bytes, and giving each 36-byte id its own allocation would be
    // the largest allocation cost of the layer. Every id is still generated
    // when its request arrives (UUIDv7 carries the time); only the memory is
    // shared, and a slab is freed once its last id is dropped.
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A fresh UUIDv7 correlation id, allocating once per 64 ids.
pub(crate) fn generate() -> CorrelationId {
    let mut text = [0u8; UUID_LEN];
    let _ = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
    let bytes = SLAB.try_with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() - slab.len() < UUID_LEN {
            *slab = BytesMut::with_capacity(UUID_LEN * IDS_PER_SLAB);
        }
        slab.extend_from_slice(&text);
        slab.split().freeze()
    });
    bytes
        .ok()
        .and_then(|b| HeaderValue::from_maybe_shared(b).ok())
        .and_then(|v| CorrelationId::from_header(&v))
        // Only reachable while the thread is being torn down.
        .unwrap_or_else(CorrelationId::generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_CORRELATION_ID, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn reuses_acceptable_ids() {
        let id = from_headers_or_generate(&headers(b"req-123"));
        assert_eq!(id.as_str(), "req-123");
    }

    #[test]
    fn replaces_bad_ids() {
        let long = vec![b'a'; CorrelationId::MAX_LEN + 1];
        for bad in [&b"has space"[..], b"caf\xc3\xa9", &long, b"tab\there"] {
            let id = from_headers_or_generate(&headers(bad));
            assert_ne!(id.as_str().as_bytes(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
        }
        let id = from_headers_or_generate(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
    }

    #[test]
    fn generated_ids_are_distinct_across_slabs() {
        let ids: Vec<_> = (0..IDS_PER_SLAB * 3).map(|_| generate()).collect();
        let mut texts: Vec<_> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), ids.len());
        for t in &texts {
            assert_eq!(uuid::Uuid::parse_str(t).unwrap().get_version_num(), 7);
        }
    }
}
