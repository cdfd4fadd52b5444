//! The API's error answers and how query, range and store errors map to
//! them.

use std::borrow::Cow;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use metrics_core::aggregate::TimeRangeError;
use metrics_core::query::{QueryError, UnknownSeriesKind};
use serde::Serialize;

use super::contract::MAX_BATCH_SIZE;
use crate::admin::AdminRejection;

/// One problem with one event of a batch (the 422's `details`).
#[derive(Debug, Serialize)]
pub(super) struct FieldError {
    pub(super) index: usize,
    pub(super) field: &'static str,
    pub(super) message: Cow<'static, str>,
}

/// Every way a request to the API can fail.
#[derive(Debug)]
pub(super) enum ApiError {
    /// The error envelope with `status`'s reason phrase.
    Status {
        status: StatusCode,
        message: Cow<'static, str>,
        details: Vec<FieldError>,
    },
    /// The guard's answers (401 without identity).
    Rejection(AdminRejection),
    /// More than [`MAX_BATCH_SIZE`] events: the original API's fixed body.
    BatchTooLarge { received: usize },
    /// `/time-series` without `metric_type` (required, as in the original
    /// API): 422 naming the allowed values.
    MissingMetricType,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Status {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// The 422 of a batch with invalid events: the message leads with the
    /// first problem (so it names an unknown type, as the original API's
    /// did), `details.errors` lists them all.
    pub(super) fn invalid_events(details: Vec<FieldError>) -> Self {
        let first = details.first().map_or("invalid events", |d| &d.message);
        let message = match details.len() {
            0 | 1 => format!("{first}; nothing was queued"),
            n => format!("{first} (and {} more); nothing was queued", n - 1),
        };
        let message = Cow::Owned(message);
        Self::Status {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            details,
        }
    }

    #[cfg(test)]
    fn status(&self) -> StatusCode {
        match self {
            Self::Status { status, .. } => *status,
            Self::Rejection(r) => r.status(),
            Self::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingMetricType => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a str,
    message: &'a str,
    status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
}

/// The envelope's `details`: an object (the original API's shape), today
/// only the invalid events' problems.
#[derive(Serialize)]
struct Details<'a> {
    errors: &'a [FieldError],
}

#[derive(Serialize)]
struct BatchTooLargeBody {
    detail: &'static str,
    max_batch_size: usize,
    received: usize,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejection(rejection) => rejection.into_response(),
            Self::Status {
                status,
                message,
                details,
            } => json(
                status,
                &Envelope {
                    error: status.canonical_reason().unwrap_or("Error"),
                    message: &message,
                    status_code: status.as_u16(),
                    details: (!details.is_empty()).then_some(Details { errors: &details }),
                },
            ),
            Self::MissingMetricType => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "metric_type is required: one of performance, usage, both",
            )
            .into_response(),
            Self::BatchTooLarge { received } => json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &BatchTooLargeBody {
                    detail: "Batch size exceeds maximum of 1000 events",
                    max_batch_size: MAX_BATCH_SIZE,
                    received,
                },
            ),
        }
    }
}

impl From<AdminRejection> for ApiError {
    fn from(rejection: AdminRejection) -> Self {
        Self::Rejection(rejection)
    }
}

impl From<TimeRangeError> for ApiError {
    fn from(error: TimeRangeError) -> Self {
        // Values that cannot be read are 422; readable values that break a
        // rule of custom ranges are 400 (docs/decisions.md, "400 vs 422").
        let status = match error {
            TimeRangeError::UnknownPreset(_)
            | TimeRangeError::UnknownInterval(_)
            | TimeRangeError::MissingBound { .. }
            | TimeRangeError::InvalidTimestamp { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.to_string())
    }
}

impl From<UnknownSeriesKind> for ApiError {
    fn from(error: UnknownSeriesKind) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            // A readable query that no store can answer: the message says
            // what to ask instead.
            QueryError::Unsupported(message) => Self::new(StatusCode::BAD_REQUEST, message),
            QueryError::Timeout(_) => {
                tracing::warn!(%error, "metrics query timed out: answering 503");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            QueryError::Unavailable(_) => {
                // The cause names hosts, pools and drivers: logs only.
                tracing::warn!(%error, "metrics store unavailable: answering 503");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The metrics store is unavailable; try again later",
                )
            }
            _ => {
                // The detail may name tables or stored state: logs only.
                tracing::error!(%error, "metrics query failed: answering 500");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The metrics query failed; the server log has the details",
                )
            }
        }
    }
}

/// A JSON response that no shared cache keeps (answers depend on the caller).
pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = match serde_json::to_vec(body) {
        Ok(bytes) => Response::new(Body::from(bytes)),
        Err(error) => {
            // Our bodies are plain structs, maps and numbers: unreachable in
            // practice, but a metrics bug must not panic the server.
            tracing::error!(%error, "could not serialise an API response");
            let mut r = Response::new(Body::from(
                r#"{"error":"Internal Server Error","message":"The response could not be serialised","status_code":500}"#,
            ));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            set_json_headers(&mut r);
            return r;
        }
    };
    *response.status_mut() = status;
    set_json_headers(&mut response);
    response
}

fn set_json_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn range_errors_split_into_422_and_400() {
        let unreadable = [
            TimeRangeError::UnknownPreset("1y".into()),
            TimeRangeError::UnknownInterval("daily".into()),
            TimeRangeError::MissingBound {
                missing: "end_date",
            },
            TimeRangeError::InvalidTimestamp {
                field: "start_date",
                value: "x".into(),
            },
        ];
        for e in unreadable {
            assert_eq!(ApiError::from(e).status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        let rules = [
            TimeRangeError::StartNotBeforeEnd,
            TimeRangeError::EndInFuture,
            TimeRangeError::SpanTooLong,
            TimeRangeError::StartTooOld,
        ];
        for e in rules {
            assert_eq!(ApiError::from(e).status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn store_errors_map_to_503_and_500() {
        let timeout = ApiError::from(QueryError::Timeout(Duration::from_secs(10)));
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
        let down = ApiError::from(QueryError::Unavailable("pool at 10.0.0.7 refused".into()));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ApiError::Status { message, .. } = down else {
            panic!("envelope expected");
        };
        assert!(!message.contains("10.0.0.7"), "{message}");
        let unsupported = ApiError::from(QueryError::Unsupported("use interval=hourly".into()));
        assert_eq!(unsupported.status(), StatusCode::BAD_REQUEST);
        let internal = ApiError::from(QueryError::Internal("secret table name".into()));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let ApiError::Status { message, .. } = internal else {
            panic!("envelope expected");
        };
        assert!(!message.contains("secret"), "{message}");
    }
}
