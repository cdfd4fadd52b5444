//! The read endpoints, the OpenAPI document and the 404 / 405 answers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, Uri, header};
use metrics_core::Identity;
use metrics_core::aggregate::{Resolution, TimeRange};
use metrics_core::query::{
    PerformanceQuery, PerformanceReport, SeriesKind, SlowRequest, SlowRequestsQuery, TimeSeries,
    TimeSeriesQuery, UsageQuery, UsageReport, format_rfc3339,
};
use serde::Serialize;
use std::collections::BTreeMap;

use super::error::{ApiError, json};
use super::params::{Params, range_name};
use super::state::ApiState;
use crate::admin::AdminRejection;

/// The caller's identity, for the endpoints open to every authenticated
/// user: 401 (the guard's body) without one.
#[derive(Debug)]
pub(super) struct Caller(pub(super) Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Self)
            .ok_or(ApiError::Rejection(AdminRejection::Unauthenticated))
    }
}

/// The window an answer is for, as every read endpoint reports it (the
/// original API's names: `start_date` / `end_date` are only the custom
/// range's query parameters).
#[derive(Serialize)]
struct RangeFields {
    time_range: &'static str,
    start_time: String,
    end_time: String,
}

impl RangeFields {
    fn new(range: &TimeRange) -> Self {
        Self {
            time_range: range_name(range),
            start_time: format_rfc3339(range.start()),
            end_time: format_rfc3339(range.end()),
        }
    }
}

#[derive(Serialize)]
struct WithRange<T> {
    #[serde(flatten)]
    range: RangeFields,
    #[serde(flatten)]
    report: T,
}

#[derive(Serialize)]
struct TimeSeriesBody {
    metric_type: SeriesKind,
    interval: &'static str,
    #[serde(flatten)]
    range: RangeFields,
    #[serde(flatten)]
    series: TimeSeries,
}

#[derive(Serialize)]
struct CountBody<'a> {
    count: u64,
    user_id: &'a str,
    #[serde(flatten)]
    range: RangeFields,
}

/// GET /performance (admin; the guard ran before).
pub(super) async fn performance(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let now = state.now();
    let params = Params::from_uri(&uri)?;
    // An unreadable value (422) before a range rule (400), as on /time-series.
    let endpoint = params.endpoint()?;
    let range = params.range(now)?;
    let mut query = PerformanceQuery::new(range, now);
    if let Some(endpoint) = endpoint {
        query = query.endpoint(endpoint);
    }
    let report: PerformanceReport = state.query.performance(&query).await?;
    Ok(json(
        StatusCode::OK,
        &WithRange {
            range: RangeFields::new(&range),
            report,
        },
    ))
}

/// GET /usage (admin).
pub(super) async fn usage(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let now = state.now();
    let params = Params::from_uri(&uri)?;
    let range = params.range(now)?;
    let mut query = UsageQuery::new(range, now);
    if let Some(event_type) = params.event_type() {
        query = query.event_type(event_type);
    }
    let report: UsageReport = state.query.usage(&query).await?;
    Ok(json(
        StatusCode::OK,
        &WithRange {
            range: RangeFields::new(&range),
            report,
        },
    ))
}

/// GET /time-series (admin).
pub(super) async fn time_series(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let now = state.now();
    let params = Params::from_uri(&uri)?;
    // Every parameter is read before the range is checked, so a request
    // with two problems reports the unreadable value (422) first.
    let metric_type: SeriesKind = params
        .metric_type()
        .ok_or(ApiError::MissingMetricType)?
        .parse()?;
    let interval: Option<Resolution> = params.interval().map(str::parse).transpose()?;
    let endpoint = params.endpoint()?;
    let method = params.method()?;
    if method.is_some() && endpoint.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "method filters one endpoint's requests: give endpoint too",
        ));
    }
    let range = params.range(now)?;
    let resolution = interval.unwrap_or_else(|| range.default_resolution());
    let mut query = TimeSeriesQuery::new(range, metric_type, now).resolution(resolution);
    if let Some(endpoint) = endpoint {
        query = query.endpoint(endpoint);
    }
    if let Some(method) = method {
        query = query.method(method);
    }
    // Refused before the store is asked (every store refuses it alike).
    query.check()?;
    let series = state.query.time_series(&query).await?;
    Ok(json(
        StatusCode::OK,
        &TimeSeriesBody {
            metric_type,
            interval: resolution.as_str(),
            range: RangeFields::new(&range),
            series,
        },
    ))
}

#[derive(Serialize)]
struct RequestsBody<'a> {
    #[serde(flatten)]
    range: RangeFields,
    endpoint: &'a str,
    method: Option<&'a str>,
    limit: usize,
    status_codes: BTreeMap<u16, u64>,
    requests: Vec<SlowRequest>,
}

/// GET /requests (admin): the slowest raw requests of one endpoint in the
/// range clipped to the raw retention; `start_time` / `end_time` are the
/// window searched.
pub(super) async fn requests(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let now = state.now();
    let params = Params::from_uri(&uri)?;
    let endpoint = params.endpoint()?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint is required: the route template, as /performance lists it (e.g. /users/{id})",
        )
    })?;
    let method = params.method()?;
    let limit = params.limit(
        SlowRequestsQuery::DEFAULT_LIMIT,
        SlowRequestsQuery::MAX_LIMIT,
    )?;
    let range = params.range(now)?;
    let mut query = SlowRequestsQuery::new(range, endpoint, now).limit(limit);
    if let Some(method) = method {
        query = query.method(method);
    }
    let report = state.query.slowest_requests(&query).await?;
    let (start, end) = query.window();
    Ok(json(
        StatusCode::OK,
        &RequestsBody {
            range: RangeFields {
                time_range: range_name(&range),
                start_time: format_rfc3339(start),
                end_time: format_rfc3339(end),
            },
            endpoint,
            method,
            limit,
            status_codes: report.status_codes,
            requests: report.requests,
        },
    ))
}

/// GET /usage/count (any authenticated user; only their own events).
pub(super) async fn usage_count(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let now = state.now();
    let range = Params::from_uri(&uri)?.range(now)?;
    let user = caller.user_id();
    let count = state.query.user_event_count(user.as_str(), &range).await?;
    Ok(json(
        StatusCode::OK,
        &CountBody {
            count,
            user_id: user.as_str(),
            range: RangeFields::new(&range),
        },
    ))
}

/// GET /openapi.json (public: it describes the API, not its data): the
/// document built with the router.
pub(super) async fn openapi(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.clone(),
    )
        .into_response()
}

/// Any path under the mount point that the API does not serve.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No metrics API endpoint at {}", uri.path()),
    )
}

/// A known path with a method it does not serve (axum adds `Allow`).
pub(super) async fn method_not_allowed(method: http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
