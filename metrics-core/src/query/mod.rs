//! The dashboard's questions and their answers: the [`MetricsQuery`] trait
//! that a store implements (PostgreSQL in `metrics-pg`, the in-memory store
//! here in [`MemorySink`](crate::MemorySink)), the query parameters and the
//! report types the HTTP API serialises.
//!
//! The report types serialise to exactly the JSON of the HTTP API (the API
//! router adds the range it answered for around them), so every store gives
//! the same body shape and an empty store answers zeros and empty lists.
//!
//! # Example: asking the memory store
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use metrics_core::query::{MetricsQuery, PerformanceQuery};
//! use metrics_core::aggregate::{Preset, TimeRange};
//! use metrics_core::{MemorySink, Method, RequestRecord, Route};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), metrics_core::query::QueryError> {
//! let store = MemorySink::new();
//! let now = SystemTime::now();
//! for (ms, status) in [(10, 200), (20, 200), (300, 500)] {
//!     store.insert(RequestRecord::new(
//!         now - Duration::from_secs(60),
//!         Route::from_static("/users/{id}"),
//!         Method::GET,
//!         status,
//!         Duration::from_millis(ms),
//!     ));
//! }
//! let q = PerformanceQuery::new(TimeRange::preset(Preset::Last24Hours, now), now);
//! let report = store.performance(&q).await?;
//! assert_eq!(report.metrics.total_requests, 3);
//! assert_eq!(report.metrics.p50_response_time_ms, 20.0);
//! assert_eq!(report.endpoints[0].endpoint, "/users/{id}");
//! assert!((report.metrics.error_rate - 1.0 / 3.0).abs() < 1e-12);
//! # Ok(()) }
//! ```

mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aggregate::{PerformanceSummary, Resolution, TimeRange};
use crate::error::BoxError;

/// The store behind the dashboard API: answers each of its reports for a
/// validated [`TimeRange`].
///
/// Implementations must
/// * never double count: each instant of the range is answered from exactly
///   one source (rollups for closed, rolled-up hours; raw rows otherwise);
/// * answer an empty range with zeros and empty lists, not an error;
/// * bound their work (a store-side statement timeout, 10 s in `metrics-pg`)
///   and report it as [`QueryError::Timeout`].
///
/// Held as a trait object ([`SharedMetricsQuery`]) by the API router, hence
/// `async_trait`.
#[async_trait]
pub trait MetricsQuery: Send + Sync + 'static {
    /// Summary over every request in the range plus the per-(endpoint,
    /// method) table in [`sort_slowest_first`] order (highest average
    /// first).
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError>;

    /// Usage summary: totals, distinct users, events by type and by page.
    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError>;

    /// Buckets of the range at the asked resolution, ascending.
    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError>;

    /// Number of usage events `user_id` sent in `range` (the caller's own
    /// count, for any authenticated user).
    async fn user_event_count(&self, user_id: &str, range: &TimeRange) -> Result<u64, QueryError>;

    /// The slowest raw requests of one endpoint in the query's
    /// [`window`](SlowRequestsQuery::window) (the range clipped to the last
    /// [`RAW_RETENTION`]), in [`sort_slowest_requests`] order, at most
    /// `limit` of them, and the endpoint's requests per status code over the
    /// same window.
    async fn slowest_requests(&self, query: &SlowRequestsQuery)
    -> Result<SlowRequests, QueryError>;
}

/// How far back every store keeps raw request rows: 7 days, the default raw
/// retention of `metrics-pg` (its `RetentionJob`). Answers that need single
/// requests rather than rollups — the slowest requests of an endpoint,
/// 5-minute buckets of one endpoint — cover at most this much before `now`,
/// on every store (the memory store clips the same way, so both stores give
/// the same answers).
pub const RAW_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The start of the raw retention at `now`: `now − RAW_RETENTION`.
pub fn raw_horizon(now: SystemTime) -> SystemTime {
    now.checked_sub(RAW_RETENTION)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A [`MetricsQuery`] shared between the API router's handlers.
pub type SharedMetricsQuery = Arc<dyn MetricsQuery>;

/// Why a query could not be answered. The API maps [`Timeout`](Self::Timeout)
/// and [`Unavailable`](Self::Unavailable) to 503, [`Internal`](Self::Internal)
/// to 500.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The store cancelled the query at its statement timeout.
    #[error(
        "The metrics query did not finish within {} s; try a shorter time range",
        .0.as_secs()
    )]
    Timeout(Duration),
    /// The store cannot be reached (connection refused, pool exhausted, ...).
    #[error("the metrics store is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else (undecodable stored state, a query bug).
    #[error("the metrics query failed: {0}")]
    Internal(#[source] BoxError),
    /// The query asks for something no store keeps (for example 5-minute
    /// buckets of one endpoint from before the [`RAW_RETENTION`]); the
    /// message says what to ask instead. The API answers 400 with it.
    #[error("{0}")]
    Unsupported(String),
}

// ===== queries =====

/// Parameters of [`MetricsQuery::performance`].
#[derive(Clone, Debug, PartialEq)]
pub struct PerformanceQuery {
    /// The validated range.
    pub range: TimeRange,
    /// Only this route template (the `endpoint` parameter), if given.
    pub endpoint: Option<String>,
    /// The time the request was answered (which hour is still open).
    pub now: SystemTime,
}

impl PerformanceQuery {
    /// All endpoints over `range`, answered at `now`.
    pub fn new(range: TimeRange, now: SystemTime) -> Self {
        Self {
            range,
            endpoint: None,
            now,
        }
    }

    /// Restricts the report to one route template.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
}

/// Parameters of [`MetricsQuery::usage`].
#[derive(Clone, Debug, PartialEq)]
pub struct UsageQuery {
    /// The validated range.
    pub range: TimeRange,
    /// Only this event type (the `event_type` parameter), if given.
    pub event_type: Option<String>,
    /// The time the request was answered (for `active_users_current_hour`).
    pub now: SystemTime,
}

impl UsageQuery {
    /// All event types over `range`, answered at `now`.
    pub fn new(range: TimeRange, now: SystemTime) -> Self {
        Self {
            range,
            event_type: None,
            now,
        }
    }

    /// Restricts the report to one event type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }
}

/// Parameters of [`MetricsQuery::time_series`].
///
/// # Filters
///
/// [`endpoint`](Self::endpoint) and [`method`](Self::method) narrow the
/// *performance* fields to the requests of that route template and/or
/// method (with neither, every request counts). Usage fields, when asked
/// for, are never filtered: usage events belong to no endpoint.
///
/// A filtered series is read from the per-(endpoint, method) hourly rollups
/// (merged per bucket over the methods that match) for rolled hours and
/// from raw rows otherwise; at 5 minutes there are no per-endpoint
/// rollups, so every bucket comes from raw rows, which exist for
/// [`RAW_RETENTION`] only: a filtered 5-minute series whose range starts
/// earlier is refused ([`check`](Self::check)).
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSeriesQuery {
    /// The validated range.
    pub range: TimeRange,
    /// Which series.
    pub metric_type: SeriesKind,
    /// Bucket width.
    pub resolution: Resolution,
    /// Only requests of this route template count in the performance
    /// fields, if given.
    pub endpoint: Option<String>,
    /// Only requests with this method (as recorded, e.g. `GET`) count in
    /// the performance fields, if given.
    pub method: Option<String>,
    /// The time the request was answered.
    pub now: SystemTime,
}

impl TimeSeriesQuery {
    /// `metric_type` over `range` at the range's default resolution
    /// ([`TimeRange::default_resolution`]), every request counted.
    pub fn new(range: TimeRange, metric_type: SeriesKind, now: SystemTime) -> Self {
        Self {
            resolution: range.default_resolution(),
            range,
            metric_type,
            endpoint: None,
            method: None,
            now,
        }
    }

    /// Sets the bucket width.
    pub fn resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = resolution;
        self
    }

    /// Restricts the performance fields to one route template.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Restricts the performance fields to one HTTP method (with
    /// [`endpoint`](Self::endpoint): that endpoint's requests of the
    /// method; without: every endpoint's).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Whether the performance fields are filtered by endpoint or method.
    pub fn is_filtered(&self) -> bool {
        self.endpoint.is_some() || self.method.is_some()
    }

    /// Whether every store can answer the query: a filtered 5-minute series
    /// comes from raw rows only, so its range must start within the last
    /// [`RAW_RETENTION`] before `now` (its first bucket may start up to 5
    /// minutes earlier, in the same UTC day, whose raw rows are kept).
    ///
    /// # Errors
    ///
    /// [`QueryError::Unsupported`] naming the alternatives (hourly buckets,
    /// or a range within the last 7 days).
    pub fn check(&self) -> Result<(), QueryError> {
        if self.is_filtered()
            && self.resolution == Resolution::FiveMinutes
            && self.range.start() < raw_horizon(self.now)
        {
            return Err(QueryError::Unsupported(format!(
                "5-minute buckets of one endpoint are read from raw requests, which are kept for {} days: \
                 use interval=hourly, or a range that starts within the last {} days",
                RAW_RETENTION.as_secs() / 86_400,
                RAW_RETENTION.as_secs() / 86_400,
            )));
        }
        Ok(())
    }
}

/// Parameters of [`MetricsQuery::slowest_requests`]: the slowest raw
/// requests of one endpoint (optionally one method) in a range.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowRequestsQuery {
    /// The validated range asked for; the store searches its
    /// [`window`](Self::window).
    pub range: TimeRange,
    /// The route template (exact match).
    pub endpoint: String,
    /// Only requests with this method (as recorded, e.g. `GET`), if given.
    pub method: Option<String>,
    /// At most this many requests (1..=[`Self::MAX_LIMIT`]).
    pub limit: usize,
    /// The time the request was answered (where the raw retention starts).
    pub now: SystemTime,
}

impl SlowRequestsQuery {
    /// The default number of requests listed.
    pub const DEFAULT_LIMIT: usize = 20;
    /// The most requests listed.
    pub const MAX_LIMIT: usize = 100;

    /// The [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT) slowest requests of
    /// `endpoint` (every method) in `range`, answered at `now`.
    pub fn new(range: TimeRange, endpoint: impl Into<String>, now: SystemTime) -> Self {
        Self {
            range,
            endpoint: endpoint.into(),
            method: None,
            limit: Self::DEFAULT_LIMIT,
            now,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// At most `limit` requests, clamped to 1..=[`MAX_LIMIT`](Self::MAX_LIMIT).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, Self::MAX_LIMIT);
        self
    }

    /// The half-open window `[start, end)` searched: the range clipped to
    /// the raw retention, `start = max(range start, now − RAW_RETENTION)`.
    /// A range that ends before the retention gives an empty window at the
    /// horizon (`start == end`), which holds no requests.
    pub fn window(&self) -> (SystemTime, SystemTime) {
        let horizon = raw_horizon(self.now);
        let start = self.range.start().max(horizon);
        let end = self.range.end().max(start);
        (start, end)
    }
}

/// The `metric_type` parameter of the time series (required: the original
/// API has no default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    /// Request volume, latency and errors.
    Performance,
    /// Usage events and their users.
    Usage,
    /// Both, merged on the bucket timestamp.
    Both,
}

impl SeriesKind {
    /// The query-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Performance => "performance",
            Self::Usage => "usage",
            Self::Both => "both",
        }
    }

    /// Whether the performance fields are asked for.
    pub fn includes_performance(self) -> bool {
        matches!(self, Self::Performance | Self::Both)
    }

    /// Whether the usage fields are asked for.
    pub fn includes_usage(self) -> bool {
        matches!(self, Self::Usage | Self::Both)
    }
}

/// `metric_type` is not `performance`, `usage` or `both`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metric_type must be one of performance, usage, both (got {0:?})")]
pub struct UnknownSeriesKind(pub String);

impl FromStr for SeriesKind {
    type Err = UnknownSeriesKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "performance" => Ok(Self::Performance),
            "usage" => Ok(Self::Usage),
            "both" => Ok(Self::Both),
            other => Err(UnknownSeriesKind(other.to_owned())),
        }
    }
}

impl fmt::Display for SeriesKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== reports =====

/// The event type that [`UsageReport::page_views`] counts.
pub const PAGE_VIEW: &str = "page_view";

/// Answer of [`MetricsQuery::performance`]: `{"metrics": {..}, "endpoints": [..]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PerformanceReport {
    /// Summary over every request in the range.
    pub metrics: PerformanceMetrics,
    /// One row per (endpoint, method), in [`sort_slowest_first`] order.
    pub endpoints: Vec<EndpointMetrics>,
}

impl PerformanceReport {
    /// The report of `metrics` and the `endpoints` table (sorted by the
    /// caller, see [`sort_slowest_first`]).
    pub fn new(metrics: PerformanceMetrics, endpoints: Vec<EndpointMetrics>) -> Self {
        Self { metrics, endpoints }
    }
}

/// The `metrics` object of the performance report. Times in milliseconds;
/// all zero for an empty range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PerformanceMetrics {
    /// Number of requests.
    pub total_requests: u64,
    /// Mean response time.
    pub avg_response_time_ms: f64,
    /// Median response time.
    pub p50_response_time_ms: f64,
    /// 95th percentile.
    pub p95_response_time_ms: f64,
    /// 99th percentile.
    pub p99_response_time_ms: f64,
    /// Share of requests with status ≥ 400 (0..=1).
    pub error_rate: f64,
    /// Distinct users among the requests.
    pub active_users: u64,
}

impl PerformanceMetrics {
    /// The metrics of a summary, with `active_users` distinct users.
    pub fn from_summary(summary: &PerformanceSummary, active_users: u64) -> Self {
        Self {
            total_requests: summary.count(),
            avg_response_time_ms: summary.latency().mean().unwrap_or(0.0),
            p50_response_time_ms: summary.quantile(0.5),
            p95_response_time_ms: summary.quantile(0.95),
            p99_response_time_ms: summary.quantile(0.99),
            error_rate: summary.error_rate(),
            active_users,
        }
    }
}

/// One row of the performance report's `endpoints` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EndpointMetrics {
    /// Route template.
    pub endpoint: String,
    /// HTTP method.
    pub method: String,
    /// Number of requests.
    pub request_count: u64,
    /// Requests with status ≥ 400.
    pub error_count: u64,
    /// `error_count / request_count`.
    pub error_rate: f64,
    /// Mean response time.
    pub avg_response_time_ms: f64,
    /// Median response time.
    pub p50_response_time_ms: f64,
    /// 95th percentile.
    pub p95_response_time_ms: f64,
    /// 99th percentile.
    pub p99_response_time_ms: f64,
}

impl EndpointMetrics {
    /// The row of `(endpoint, method)` from its summary.
    pub fn from_summary(
        endpoint: impl Into<String>,
        method: impl Into<String>,
        summary: &PerformanceSummary,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            method: method.into(),
            request_count: summary.count(),
            error_count: summary.error_count(),
            error_rate: summary.error_rate(),
            avg_response_time_ms: summary.latency().mean().unwrap_or(0.0),
            p50_response_time_ms: summary.quantile(0.5),
            p95_response_time_ms: summary.quantile(0.95),
            p99_response_time_ms: summary.quantile(0.99),
        }
    }
}

/// Sorts an endpoint table slowest first, the original API's order: highest
/// `avg_response_time_ms`, ties by highest `request_count`, then by endpoint
/// and method ascending (a total order, so every store lists ties the same
/// way).
pub fn sort_slowest_first(endpoints: &mut [EndpointMetrics]) {
    endpoints.sort_by(|a, b| {
        b.avg_response_time_ms
            .total_cmp(&a.avg_response_time_ms)
            .then(b.request_count.cmp(&a.request_count))
            .then_with(|| a.endpoint.cmp(&b.endpoint))
            .then_with(|| a.method.cmp(&b.method))
    });
}

/// Answer of [`MetricsQuery::usage`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageReport {
    /// Totals and users.
    pub metrics: UsageMetrics,
    /// Events per event type.
    pub event_distribution: BTreeMap<String, u64>,
    /// `page_view` events per page name (other event types, and page views
    /// without a page name, are not counted here).
    pub page_views: BTreeMap<String, u64>,
}

impl UsageReport {
    /// The report of `metrics`, events per type and page views per page.
    pub fn new(
        metrics: UsageMetrics,
        event_distribution: BTreeMap<String, u64>,
        page_views: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            metrics,
            event_distribution,
            page_views,
        }
    }
}

/// The `metrics` object of the usage report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageMetrics {
    /// Number of usage events.
    pub total_events: u64,
    /// Distinct users who sent events.
    pub unique_users: u64,
    /// Distinct users over requests *and* events in the range.
    pub active_users: u64,
    /// Distinct users over requests and events in the current UTC hour.
    pub active_users_current_hour: u64,
}

impl UsageMetrics {
    /// The usage totals: events, their distinct users, and the distinct
    /// users over requests and events in the range and in the current hour.
    pub fn new(
        total_events: u64,
        unique_users: u64,
        active_users: u64,
        active_users_current_hour: u64,
    ) -> Self {
        Self {
            total_events,
            unique_users,
            active_users,
            active_users_current_hour,
        }
    }
}

/// Answer of [`MetricsQuery::time_series`]: `{"data_points": [..]}`.
///
/// Each point covers its whole bucket: the first bucket starts at the
/// bucket boundary at or before the range start (5-minute and hourly
/// buckets are aligned to UTC), the last one holds the range's end.
///
/// Buckets with no data inside a range that has some are listed with
/// zeros (a chart's x axis stays continuous); a range without any data
/// answers an empty list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimeSeries {
    /// Buckets, ascending.
    pub data_points: Vec<DataPoint>,
}

impl TimeSeries {
    /// The series of `data_points` (ascending by bucket start).
    pub fn new(data_points: Vec<DataPoint>) -> Self {
        Self { data_points }
    }
}

/// One bucket of a time series: its start and the fields of the series
/// asked for (`both` carries both sets, flattened into one object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DataPoint {
    /// Bucket start, UTC, RFC 3339 (`2024-06-01T10:05:00Z`).
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Request fields (performance and both).
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub performance: Option<PerformancePoint>,
    /// Usage fields (usage and both).
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<UsagePoint>,
}

impl DataPoint {
    /// The bucket starting at `timestamp`, with the request fields, the
    /// usage fields, or both.
    pub fn new(
        timestamp: SystemTime,
        performance: Option<PerformancePoint>,
        usage: Option<UsagePoint>,
    ) -> Self {
        Self {
            timestamp,
            performance,
            usage,
        }
    }
}

/// Request fields of a time-series bucket (all zero when it is empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PerformancePoint {
    /// Requests in the bucket.
    pub total_requests: u64,
    /// Mean response time.
    pub avg_response_time_ms: f64,
    /// Median response time.
    pub p50_response_time_ms: f64,
    /// 95th percentile.
    pub p95_response_time_ms: f64,
    /// 99th percentile.
    pub p99_response_time_ms: f64,
    /// Requests with status ≥ 400.
    pub error_count: u64,
    /// `error_count / total_requests`.
    pub error_rate: f64,
}

impl PerformancePoint {
    /// The point of a bucket's summary.
    pub fn from_summary(summary: &PerformanceSummary) -> Self {
        Self {
            total_requests: summary.count(),
            avg_response_time_ms: summary.latency().mean().unwrap_or(0.0),
            p50_response_time_ms: summary.quantile(0.5),
            p95_response_time_ms: summary.quantile(0.95),
            p99_response_time_ms: summary.quantile(0.99),
            error_count: summary.error_count(),
            error_rate: summary.error_rate(),
        }
    }
}

/// Usage fields of a time-series bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsagePoint {
    /// Usage events in the bucket.
    pub total_events: u64,
    /// Distinct users who sent them.
    pub unique_users: u64,
}

impl UsagePoint {
    /// A bucket's event count and distinct users.
    pub fn new(total_events: u64, unique_users: u64) -> Self {
        Self {
            total_events,
            unique_users,
        }
    }
}

/// Answer of [`MetricsQuery::slowest_requests`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlowRequests {
    /// The slowest requests, in [`sort_slowest_requests`] order.
    pub requests: Vec<SlowRequest>,
    /// The endpoint's requests (of the method, if given) in the window per
    /// status code; serialised with the codes as keys (`{"200": 5}`).
    pub status_codes: BTreeMap<u16, u64>,
}

impl SlowRequests {
    /// The slowest `requests` (sorted by the caller, see
    /// [`sort_slowest_requests`]) and the window's requests per status code.
    pub fn new(requests: Vec<SlowRequest>, status_codes: BTreeMap<u16, u64>) -> Self {
        Self {
            requests,
            status_codes,
        }
    }
}

/// One raw request of [`SlowRequests`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlowRequest {
    /// When the request started, UTC, at microsecond precision (what
    /// PostgreSQL stores; the memory store truncates to it too).
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Status code recorded.
    pub status_code: u16,
    /// Response time in milliseconds.
    pub response_time_ms: f64,
    /// The authenticated user, if any.
    pub user_id: Option<String>,
    /// The request's correlation id (`X-Correlation-ID`), to find it in the
    /// logs.
    pub correlation_id: Option<String>,
}

impl SlowRequest {
    /// One raw request: when it started, its method, status, response time
    /// in milliseconds, user and correlation id.
    pub fn new(
        timestamp: SystemTime,
        method: impl Into<String>,
        status_code: u16,
        response_time_ms: f64,
        user_id: Option<String>,
        correlation_id: Option<String>,
    ) -> Self {
        Self {
            timestamp,
            method: method.into(),
            status_code,
            response_time_ms,
            user_id,
            correlation_id,
        }
    }
}

/// Sorts requests slowest first: highest `response_time_ms`, ties newest
/// first, then by correlation id (byte order, requests without one last),
/// then method, status code and user (byte order, none last), so every
/// store lists ties the same way.
pub fn sort_slowest_requests(requests: &mut [SlowRequest]) {
    fn none_last(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    requests.sort_by(|a, b| {
        b.response_time_ms
            .total_cmp(&a.response_time_ms)
            .then(b.timestamp.cmp(&a.timestamp))
            .then_with(|| none_last(a.correlation_id.as_deref(), b.correlation_id.as_deref()))
            .then_with(|| a.method.as_bytes().cmp(b.method.as_bytes()))
            .then(a.status_code.cmp(&b.status_code))
            .then_with(|| none_last(a.user_id.as_deref(), b.user_id.as_deref()))
    });
}

/// Formats `t` as RFC 3339 in UTC with a `Z` suffix (whole seconds unless
/// `t` has a fraction). Used for every timestamp in API bodies.
pub fn format_rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t)
        .format(&Rfc3339)
        // Only years outside 0..=9999 fail to format; the API never sees
        // such instants (ranges are validated against `now`).
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        time::OffsetDateTime::parse(&text, &Rfc3339)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_point_flattens_the_series_asked_for() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_236_300);
        let p = DataPoint {
            timestamp: t,
            performance: Some(PerformancePoint {
                total_requests: 2,
                ..PerformancePoint::default()
            }),
            usage: None,
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["timestamp"], "2024-06-01T10:05:00Z");
        assert_eq!(json["total_requests"], 2);
        assert!(json.get("total_events").is_none());
        let both = DataPoint {
            usage: Some(UsagePoint {
                total_events: 3,
                unique_users: 1,
            }),
            ..p
        };
        let json = serde_json::to_value(&both).unwrap();
        assert_eq!(
            (
                json["total_requests"].as_u64(),
                json["total_events"].as_u64()
            ),
            (Some(2), Some(3))
        );
        let back: DataPoint = serde_json::from_value(json).unwrap();
        assert_eq!(back.timestamp, t);
    }

    #[test]
    fn series_kind_round_trips_and_refuses_others() {
        for k in [SeriesKind::Performance, SeriesKind::Usage, SeriesKind::Both] {
            assert_eq!(k.as_str().parse::<SeriesKind>(), Ok(k));
        }
        let err = "latency".parse::<SeriesKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric_type must be one of performance, usage, both (got \"latency\")"
        );
    }

    #[test]
    fn slowest_first_orders_by_avg_then_count_then_name() {
        let row = |e: &str, m: &str, avg: f64, n: u64| EndpointMetrics {
            endpoint: e.into(),
            method: m.into(),
            avg_response_time_ms: avg,
            // A high p95 must not move a row: the order is the average's.
            p95_response_time_ms: 1_000.0 / avg,
            request_count: n,
            ..EndpointMetrics::default()
        };
        let mut rows = vec![
            row("/a", "GET", 10.0, 1),
            row("/b", "GET", 30.0, 1),
            row("/c", "POST", 10.0, 5),
            row("/c", "GET", 10.0, 5),
            row("/d", "GET", 10.0, 7),
        ];
        sort_slowest_first(&mut rows);
        let order: Vec<_> = rows
            .iter()
            .map(|r| format!("{} {}", r.method, r.endpoint))
            .collect();
        assert_eq!(order, ["GET /b", "GET /d", "GET /c", "POST /c", "GET /a"]);
    }

    #[test]
    fn timeout_message_names_the_limit() {
        let e = QueryError::Timeout(Duration::from_secs(10));
        assert_eq!(
            e.to_string(),
            "The metrics query did not finish within 10 s; try a shorter time range"
        );
    }
}
