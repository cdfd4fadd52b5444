//! `CorrelationId` as an axum extractor (feature `axum`).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use super::CorrelationId;

/// The request's correlation id, for handlers: `async fn h(id: CorrelationId)`.
///
/// It is the [current](CorrelationId::current) id (set by
/// `metrics_tower::MetricsLayer` while the handler runs), or else one found
/// in the request extensions (`MetricsLayer::correlation_id_extension`, or
/// another layer that puts one there). `Option<CorrelationId>` is `None`
/// when there is neither; `CorrelationId` then rejects with
/// [`MissingCorrelationId`].
impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = MissingCorrelationId;

    fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
        // Read now, inside the handler's poll, where the id is current.
        std::future::ready(find(parts).ok_or(MissingCorrelationId))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> impl Future<Output = Result<Option<Self>, Self::Rejection>> + Send {
        std::future::ready(Ok(find(parts)))
    }
}

fn find(parts: &Parts) -> Option<CorrelationId> {
    CorrelationId::current().or_else(|| parts.extensions.get::<CorrelationId>().cloned())
}

/// The rejection of the [`CorrelationId`] extractor: the handler runs without
/// a correlation id (no `MetricsLayer` in front of it, or one with correlation
/// ids off). A programming error, so a `500 Internal Server Error`, like
/// axum's `Extension` rejection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "no correlation id for this request: put MetricsLayer (with correlation ids on) in front of the handler"
)]
pub struct MissingCorrelationId;

impl IntoResponse for MissingCorrelationId {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}
