//! Shared set-up of the API tests: the router mounted as an app mounts it
//! (under `/api/v1/metrics`, `MetricsLayer` with `TrustedProxyHeaders`
//! outermost), a memory store, a real collector, a fixed clock, and test
//! doubles for failing stores and admin checks.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use metrics_core::aggregate::TimeRange;
use metrics_core::query::{
    MetricsQuery, PerformanceQuery, PerformanceReport, QueryError, SharedMetricsQuery,
    SlowRequests, SlowRequestsQuery, TimeSeries, TimeSeriesQuery, UsageQuery, UsageReport,
    format_rfc3339,
};
use metrics_core::{
    AdminCheck, AdminCheckError, Collector, CollectorHandle, Identity, MemorySink,
    SharedAdminCheck, StaticAdmins, Worker, async_trait,
};
use metrics_tower::axum::api::MetricsApi;
use metrics_tower::{MetricsLayer, identity::TrustedProxyHeaders};
use serde_json::Value;
use tower::ServiceExt;

pub const ADMIN: &str = "ada@example.com";
pub const USER: &str = "bob@example.com";
pub const BASE: &str = "/api/v1/metrics";

/// The API's "now": 2024-06-01T12:30:00Z (mid-hour). Request records that
/// the metrics layer writes carry the real wall clock, far outside every
/// range asked for here, so they never show up in the answers.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_245_000)
}

pub fn ts(t: SystemTime) -> String {
    format_rfc3339(t)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub const DAY: Duration = Duration::from_secs(86_400);

/// The app under test and what it writes to.
pub struct Harness {
    pub app: Router,
    pub store: MemorySink,
    pub collector: CollectorHandle,
}

impl Harness {
    /// Memory store, admins = [`ADMIN`], fixed clock.
    pub fn new() -> Self {
        Self::with(|api| api)
    }

    /// Like [`new`](Self::new), with changes to the API.
    pub fn with(configure: impl FnOnce(MetricsApi) -> MetricsApi) -> Self {
        Self::custom(None, None, None, configure)
    }

    /// Any part replaced: the query store, the admin check, the collector
    /// the API queues events into.
    pub fn custom(
        query: Option<SharedMetricsQuery>,
        admins: Option<SharedAdminCheck>,
        ingest: Option<CollectorHandle>,
        configure: impl FnOnce(MetricsApi) -> MetricsApi,
    ) -> Self {
        let store = MemorySink::new();
        let collector = Collector::builder(store.clone())
            .spawn()
            .expect("tests run inside a Tokio runtime");
        let api = MetricsApi::new(
            query.unwrap_or_else(|| Arc::new(store.clone())),
            ingest.unwrap_or_else(|| collector.clone()),
            admins.unwrap_or_else(|| SharedAdminCheck::new(StaticAdmins::new([ADMIN]))),
        )
        .clock(now);
        let app = Router::new()
            .nest(BASE, configure(api).router())
            .layer(MetricsLayer::new(collector.clone()).identity_with(TrustedProxyHeaders));
        Self {
            app,
            store,
            collector,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    pub async fn get(&self, path_and_query: &str, user: Option<&str>) -> Answer {
        self.send(get(path_and_query, user)).await
    }

    pub async fn post_events(&self, user: Option<&str>, body: impl Into<Body>) -> Answer {
        self.send(post(user, Some("application/json"), body)).await
    }

    /// Usage events written so far (after a flush).
    pub async fn stored_events(&self) -> Vec<metrics_core::UsageEvent> {
        self.collector.flush().await.expect("collector running");
        self.store.snapshot().into_usage_events()
    }
}

pub fn get(path_and_query: &str, user: Option<&str>) -> Request<Body> {
    let mut req = Request::get(format!("{BASE}{path_and_query}"));
    if let Some(user) = user {
        req = req.header("x-forwarded-email", user);
    }
    req.body(Body::empty()).unwrap()
}

pub fn post(
    user: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::post(format!("{BASE}/usage-events"));
    if let Some(user) = user {
        req = req.header("x-forwarded-email", user);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body.into()).unwrap()
}

/// A response, read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text))
    }

    /// Asserts the status and the error envelope; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["status_code"], status, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(
            self.headers["content-type"], "application/json",
            "{}",
            self.text
        );
        body["message"].as_str().unwrap().to_owned()
    }
}

/// `path` with `query` appended after `?` or `&`, whichever it needs.
pub fn with_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// `{"events": [..]}` as a string.
pub fn batch(events: &[Value]) -> String {
    serde_json::json!({ "events": events }).to_string()
}

/// A valid event of `event_type` at `now() - ago`.
pub fn event(event_type: &str, ago: Duration) -> Value {
    serde_json::json!({ "event_type": event_type, "timestamp": ts(now() - ago) })
}

// ===== test doubles =====

/// A store that fails every query with the error `make` builds.
pub struct FailingQuery(pub fn() -> QueryError);

#[async_trait]
impl MetricsQuery for FailingQuery {
    async fn performance(&self, _: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        Err((self.0)())
    }
    async fn usage(&self, _: &UsageQuery) -> Result<UsageReport, QueryError> {
        Err((self.0)())
    }
    async fn time_series(&self, _: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        Err((self.0)())
    }
    async fn user_event_count(&self, _: &str, _: &TimeRange) -> Result<u64, QueryError> {
        Err((self.0)())
    }
    async fn slowest_requests(&self, _: &SlowRequestsQuery) -> Result<SlowRequests, QueryError> {
        Err((self.0)())
    }
}

pub fn timeout() -> QueryError {
    QueryError::Timeout(Duration::from_secs(10))
}

pub fn internal() -> QueryError {
    QueryError::Internal("relation app_metrics.secret does not exist".into())
}

/// An admin check whose backend is down.
pub struct BrokenAdmins;

#[async_trait]
impl AdminCheck for BrokenAdmins {
    async fn is_admin(&self, _: &Identity) -> Result<bool, AdminCheckError> {
        Err(AdminCheckError::unavailable("connection refused"))
    }
}

/// A collector whose worker is never polled (keep it alive), holding at most
/// `capacity` records: the queue is full after that many.
pub fn stalled_collector(capacity: usize) -> (CollectorHandle, Worker<MemorySink>) {
    Collector::builder(MemorySink::new())
        .queue_capacity(capacity)
        .build()
        .unwrap()
}

/// A body of `chunk`-byte frames with no declared length (as a client
/// streaming its upload sends it).
pub struct Streamed {
    chunks: std::collections::VecDeque<bytes::Bytes>,
}

impl Streamed {
    pub fn new(data: Vec<u8>, chunk: usize) -> Self {
        let data = bytes::Bytes::from(data);
        let chunks = (0..data.len())
            .step_by(chunk)
            .map(|at| data.slice(at..(at + chunk).min(data.len())))
            .collect();
        Self { chunks }
    }
}

impl http_body::Body for Streamed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.chunks
                .pop_front()
                .map(|c| Ok(http_body::Frame::data(c))),
        )
    }
}
