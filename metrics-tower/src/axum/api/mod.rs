//! The dashboard API: a mountable axum router ([`MetricsApi`]) serving the
//! dashboard's queries, the browser's usage-event ingest and the API's own
//! OpenAPI document.
//!
//! Mount it with `.nest("/api/v1/metrics", api.router())`. The API does no
//! authentication of its own: it reads the caller's
//! [`Identity`](metrics_core::Identity) from the request extensions, and
//! when none is there it asks its own [`MakeIdentity`] (the
//! [`identity_with`](MetricsApi::identity_with) source, the `Identity`
//! extension only by default). So it answers the same wherever it is
//! mounted: inside the [`MetricsLayer`](crate::MetricsLayer) (then its calls
//! are recorded too) or beside it, where its calls are not recorded but are
//! still identified. Give it the source the metrics layer uses.
//!
//! | method, path | who | success |
//! |---|---|---|
//! | GET `/performance?time_range=&start_date=&end_date=&endpoint=` | admin | 200 summary + per-endpoint table |
//! | GET `/usage?time_range=&start_date=&end_date=&event_type=` | admin | 200 usage summary |
//! | GET `/time-series?metric_type=&time_range=&start_date=&end_date=&interval=&endpoint=&method=` | admin | 200 buckets |
//! | GET `/requests?endpoint=&method=&time_range=&start_date=&end_date=&limit=` | admin | 200 one endpoint's slowest raw requests + status codes |
//! | POST `/usage-events` | any authenticated user | 202 queued |
//! | GET `/usage/count?time_range=&start_date=&end_date=` | any authenticated user | 200 the caller's own count |
//! | GET `/openapi.json` | anyone | 200 the OpenAPI 3.1 document ([`MetricsApi::openapi_json`]) |
//!
//! # The OpenAPI document
//!
//! The document is the precise contract. Its schemas state every
//! constraint JSON Schema can express: the `event_type` enum of the
//! configured vocabulary, string lengths (`page_name` / `element_id` ≤ 255,
//! `event_type` ≤ 100, the `endpoint=` filter ≤ 500), 1 to 1000 `events`,
//! `date-time` formats, `allowEmptyValue` where an empty parameter counts as
//! absent, and for each operation every error status it can give, with the
//! error envelope pinned to that status. Its descriptions state, with their
//! exact messages, the rules JSON Schema cannot express: a custom range
//! needs both `start_date` and `end_date`, the four custom-range rules (the
//! 90-day window) and the 60 s clamp, the event timestamp window, the body
//! limit, the metadata size and depth.
//!
//! The committed file ([`OPENAPI_JSON`]) holds the defaults. The router
//! builds the served document once, from that file with this API's
//! settings filled in ([`MetricsApi::openapi_json`]): the enum lists the
//! configured event types, `x-max-body-bytes` the body limit and
//! `x-accepted-window` the timestamp skew, so a client or a fuzzer reading
//! the document sees the rules this server applies.
//!
//! A test drives the router into every status the document lists and
//! validates each body against its schema, and checks that every refusal
//! of a request the schemas allow is one the descriptions state.
//! `scripts/fuzz-api` fuzzes the example app through the served document
//! with schemathesis.
//!
//! # Access
//!
//! Every endpoint but `/openapi.json` answers 401 without an identity,
//! before anything else is looked at (an unauthenticated empty batch is a
//! 401, not a 422). The four admin endpoints go through the admin guard,
//! [`RequireAdminLayer`] (403 for non-admins, 503 when the admin check
//! fails: fail secure), with the bodies of
//! [`AdminRejection`](crate::admin::AdminRejection).
//!
//! # Errors
//!
//! Every error has the envelope `{"error": "<reason phrase>", "message":
//! "...", "status_code": n}` (`details`, an object, added for invalid
//! events), except
//! the over-sized batch's 413, whose body the original API fixed as
//! `{"detail":"Batch size exceeds maximum of 1000 events","max_batch_size":1000,"received":n}`.
//!
//! - Malformed parameters (unknown `time_range`, `interval` or
//!   `metric_type`, a missing `metric_type` on `/time-series`, an
//!   `endpoint=` filter over 500 characters on `/performance`, an
//!   unparseable date, only one of `start_date` / `end_date`, a repeated
//!   parameter): **422** (a value that cannot be read is reported before a
//!   range rule is checked). The custom-range rules
//!   (start before end, end not in the future, span ≤ 90 days, start not
//!   older than 90 days; exactly 90 days is accepted): **400**. The message
//!   is the [`TimeRangeError`](metrics_core::aggregate::TimeRangeError)
//!   text.
//!   Unknown parameters are ignored, and so are empty ones (`?start_date=`
//!   is no start date), as HTML forms send them.
//! - An `end_date` up to [`END_DATE_SLACK`] (60 s) ahead of the server clock
//!   is clamped to "now" rather than refused, and a `start_date` up to that
//!   much older than 90 days is clamped to the 90-day horizon: a browser
//!   asking for "the last 90 days until now" with its own clock should not
//!   get a 400. Beyond that the strict rules hold.
//! - Store errors: [`QueryError::Timeout`](metrics_core::query::QueryError)
//!   answers 503 with the error's message (it names the limit);
//!   `Unavailable` 503 with a generic message; anything else 500 with a
//!   generic message (the details are logged, never sent to clients).
//!
//! # Drill-down into one endpoint
//!
//! - `/time-series` with `endpoint=` (the route template as `/performance`
//!   lists it, at most 500 characters) counts only that endpoint's requests
//!   in the performance fields, and with `method=` (as recorded, e.g. `GET`,
//!   at most 32 characters) only that method's; `method` without `endpoint`
//!   is a 422 (it would scan every raw row of the range). Usage fields are
//!   never filtered (usage events belong to no endpoint). There are no
//!   per-endpoint 5-minute rollups, so filtered 5-minute buckets come from
//!   raw rows, kept for 7 days ([`RAW_RETENTION`](metrics_core::query::RAW_RETENTION)):
//!   `interval=5min` with `endpoint=` over a range that starts earlier is a
//!   **400** saying to use `interval=hourly` or a shorter range (hourly
//!   buckets come from the per-endpoint hourly rollups, 90 days).
//! - `/requests?endpoint=` (required, 422 without) lists the endpoint's
//!   slowest raw requests, slowest first (ties newest first, then by
//!   correlation id), at most `limit` (1 to 100, default 20; anything else a
//!   422), each `{timestamp, method, status_code, response_time_ms,
//!   user_id, correlation_id}` (`null` when absent), plus `status_codes`,
//!   the endpoint's requests per status code over the same window, as
//!   `{"200": n, ...}`. The window is the range clipped to the raw
//!   retention: `start_time` / `end_time` are what was searched (the last 7
//!   days for `30d`; an empty window at the horizon for a range that ended
//!   before it). The body also echoes `endpoint`, `method` (`null` for
//!   every method) and `limit`.
//!
//! # Usage-event ingest
//!
//! `POST /usage-events` takes `{"events": [...]}` as `application/json` or
//! `text/plain` (what `navigator.sendBeacon` sends for a string; a charset
//! parameter is fine; no `Content-Type` at all is read as JSON); any other
//! type is a 415. The body is read with a limit ([`MetricsApi::max_body_bytes`],
//! default 1 MiB) and never buffered beyond it (413). Then, in this order:
//! invalid JSON syntax is a 400; valid JSON of the wrong shape (no
//! `events` array) a 422; zero events a 422; more than [`MAX_BATCH_SIZE`] a
//! 413 with the fixed body above (the events past the limit are counted,
//! not kept); then every event is checked, and any invalid one rejects the
//! whole batch with a 422 listing `details: {"errors": [{"index", "field",
//! "message"}]}` for every problem found; nothing is queued then.
//!
//! | field | rule |
//! |---|---|
//! | `event_type` | required string, ≤ 100 characters, no NUL, one of the vocabulary |
//! | `timestamp` | required RFC 3339 string within `[now − 24 h, now + 5 min]` ([`MetricsApi::clock_skew`]) |
//! | `page_name`, `element_id` | optional strings, ≤ 255 characters each, no NUL |
//! | `success` | optional boolean |
//! | `metadata` | optional object, ≤ 16 KiB serialised (compact JSON), ≤ 10 levels deep (`{}` is 1 level, `{"a":{}}` 2), no NUL in any key or string at any depth |
//!
//! `null` counts as absent. Other fields are ignored, in particular a
//! `user_id`: the user is always the caller's identity.
//!
//! NUL (U+0000) is refused wherever it would be stored, because PostgreSQL
//! cannot keep it (in `text`, nor as `\u0000` in `jsonb`): accepted, such an
//! event would be lost later as rejected by the store. A caller whose user
//! id (from the app's own authentication) holds one gets a 422 too. Invalid
//! UTF-8 and lone surrogates (`"\ud800"`) never get that far: they are
//! invalid JSON (400).
//!
//! Valid events become [`UsageEvent`](metrics_core::UsageEvent)s
//! (`received_at` = the server's now) handed to the collector's
//! [`CollectorHandle`], so the 202 means *queued*; the collector writes
//! them in its next batch. When the
//! collector refuses an event (queue full, or shut down) the answer is 503
//! `The metrics queue is full; retry later`. The collector counts every
//! refused event as dropped; events of the same batch queued before the
//! refusal stay queued, so a client retrying the whole batch may store some
//! twice (the tracker's retries are for network failures, where this does
//! not arise).
//!
//! ## Default vocabulary
//!
//! The defaults ([`DEFAULT_EVENT_TYPES`]) are exactly the original API's
//! ten: `page_view`, `button_click`, `form_submit`, `query_executed`,
//! `model_invoked`, `preference_changed`, `data_source_selected`,
//! `schema_detected`, `file_uploaded`, `export_triggered`. Replace them with
//! [`MetricsApi::event_types`] or extend them with
//! [`MetricsApi::allow_event_types`]. Types longer than 100 characters can
//! never be accepted. An unknown type rejects its batch with a 422 whose
//! message starts `Invalid event_type: '<type>'`.
//!
//! # Time
//!
//! "Now" (ranges, the open hour, skew, `received_at`) comes from the clock
//! given to [`MetricsApi::clock`], the system clock by default, so tests can
//! fix it.

mod contract;
mod document;
mod error;
mod handlers;
mod ingest;
mod params;
mod state;
mod storable;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use metrics_core::query::SharedMetricsQuery;
use metrics_core::{CollectorHandle, SharedAdminCheck};

pub use contract::{
    DEFAULT_EVENT_TYPES, DEFAULT_MAX_BODY_BYTES, END_DATE_SLACK, MAX_BATCH_SIZE, OPENAPI_JSON,
};
use state::{ApiState, Clock};

use super::SharedIdentity;
use crate::admin::RequireAdminLayer;
use crate::identity::{IdentityLayer, MakeIdentity};

/// The dashboard API and usage-event ingest, as a mountable axum router.
///
/// Configure it with the builder methods (the caller's identity with
/// [`identity_with`](Self::identity_with)), then mount
/// [`router`](Self::router) under `/api/v1/metrics`. See the
/// [module docs](self) for every endpoint, status and rule.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, body::Body};
/// use http::{Request, StatusCode};
/// use metrics_core::{Collector, MemorySink, SharedAdminCheck, StaticAdmins};
/// use metrics_tower::MetricsLayer;
/// use metrics_tower::axum::api::MetricsApi;
/// use metrics_tower::identity::TrustedProxyHeaders;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemorySink::new();
/// let collector = Collector::builder(store.clone()).spawn().unwrap();
/// let api = MetricsApi::new(
///     Arc::new(store.clone()),
///     collector.clone(),
///     SharedAdminCheck::new(StaticAdmins::parse("ada@example.com")),
/// )
/// .identity_with(TrustedProxyHeaders)
/// .allow_event_types(["checkout"]);
/// let app: Router = Router::new()
///     .nest("/api/v1/metrics", api.router())
///     // Last, so it wraps every route above: records each request, the API's too.
///     .layer(MetricsLayer::new(collector.clone()).identity_with(TrustedProxyHeaders));
///
/// let beacon = Request::post("/api/v1/metrics/usage-events")
///     .header("x-forwarded-email", "bob@example.com")
///     .header("content-type", "text/plain;charset=UTF-8")
///     .body(Body::from(format!(
///         r#"{{"events":[{{"event_type":"checkout","timestamp":"{}"}}]}}"#,
///         metrics_core::query::format_rfc3339(std::time::SystemTime::now()),
///     )))
///     .unwrap();
/// assert_eq!(app.clone().oneshot(beacon).await.unwrap().status(), StatusCode::ACCEPTED);
///
/// let report = Request::get("/api/v1/metrics/usage?time_range=7d")
///     .header("x-forwarded-email", "ada@example.com")
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(app.oneshot(report).await.unwrap().status(), StatusCode::OK);
///
/// collector.flush().await.unwrap();
/// assert_eq!(store.snapshot().usage_events()[0].user_id.as_str(), "bob@example.com");
/// # }
/// ```
#[derive(Clone)]
pub struct MetricsApi {
    query: SharedMetricsQuery,
    collector: CollectorHandle,
    admins: SharedAdminCheck,
    identity: SharedIdentity,
    event_types: BTreeSet<String>,
    max_body_bytes: usize,
    skew_future: Duration,
    skew_past: Duration,
    clock: Clock,
}

impl MetricsApi {
    /// An API answering queries from `query`, queueing usage events into
    /// `collector` and asking `admins` who may read the dashboard; with the
    /// caller from the `Identity` extension only, the default vocabulary, a
    /// 1 MiB body limit and a +5 min / −24 h skew window.
    pub fn new(
        query: SharedMetricsQuery,
        collector: CollectorHandle,
        admins: SharedAdminCheck,
    ) -> Self {
        Self {
            query,
            collector,
            admins,
            identity: SharedIdentity::default(),
            event_types: DEFAULT_EVENT_TYPES.iter().map(|&t| t.to_owned()).collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            skew_future: Duration::from_secs(5 * 60),
            skew_past: Duration::from_secs(24 * 3_600),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Finds the caller of requests that reach the API without an
    /// [`Identity`](metrics_core::Identity) extension with `make_identity`
    /// (default: none, so they answer 401); see
    /// [`IdentityLayer`] for the rule. Use
    /// the metrics layer's source, so the API works whether or not it is
    /// mounted inside that layer.
    pub fn identity_with<I>(mut self, make_identity: I) -> Self
    where
        I: MakeIdentity<axum::body::Body> + Send + Sync + 'static,
    {
        self.identity = SharedIdentity::new(make_identity);
        self
    }

    /// Replaces the accepted event types (default [`DEFAULT_EVENT_TYPES`]).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Adds event types to the accepted ones.
    pub fn allow_event_types<I, S>(mut self, more: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types.extend(more.into_iter().map(Into::into));
        self
    }

    /// The largest `POST /usage-events` body read, in bytes (default 1 MiB);
    /// larger bodies get a 413 without being buffered.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// How far an event's `timestamp` may lie ahead of (`future`) or behind
    /// (`past`) the server clock (default 5 min and 24 h).
    pub fn clock_skew(mut self, future: Duration, past: Duration) -> Self {
        self.skew_future = future;
        self.skew_past = past;
        self
    }

    /// Where "now" comes from (default [`SystemTime::now`]); tests pass a
    /// fixed time.
    pub fn clock<F>(mut self, now: F) -> Self
    where
        F: Fn() -> SystemTime + Send + Sync + 'static,
    {
        self.clock = Arc::new(now);
        self
    }

    /// The OpenAPI document this API serves at `/openapi.json`:
    /// [`OPENAPI_JSON`] with this API's settings filled in, so a client or
    /// fuzzer reading it sees the rules this server applies. The
    /// `event_type` enum of `UsageEvent` lists the accepted types ([`event_types`](Self::event_types),
    /// [`allow_event_types`](Self::allow_event_types); types over 100
    /// characters, which are never accepted, are left out), `x-max-body-bytes`
    /// of the `POST /usage-events` request body holds
    /// [`max_body_bytes`](Self::max_body_bytes), and `x-accepted-window` of
    /// the event `timestamp` the [`clock_skew`](Self::clock_skew) in seconds.
    /// With the default settings it is [`OPENAPI_JSON`], byte for byte.
    ///
    /// [`router`](Self::router) builds it once; calling this is only for
    /// apps that publish the document elsewhere.
    pub fn openapi_json(&self) -> String {
        document::served(
            &self.event_types,
            self.max_body_bytes,
            self.skew_future,
            self.skew_past,
        )
    }

    /// The router, for `.nest("/api/v1/metrics", api.router())`, before or
    /// after the metrics layer. Works with any router state. Unknown paths
    /// under it answer 404 and known paths with another method 405 (with
    /// `Allow`), both with the error envelope.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let state = Arc::new(self.state());
        let admin_only = Router::new()
            .route("/performance", get(handlers::performance))
            .route("/usage", get(handlers::usage))
            .route("/time-series", get(handlers::time_series))
            .route("/requests", get(handlers::requests))
            // `route_layer`: only matched routes are guarded, so a 404 / 405
            // stays a 404 / 405 for everyone.
            .route_layer(RequireAdminLayer::new(self.admins.clone()));
        Router::new()
            .merge(admin_only)
            .route("/usage-events", post(ingest::usage_events))
            .route("/usage/count", get(handlers::usage_count))
            .route("/openapi.json", get(handlers::openapi))
            .method_not_allowed_fallback(handlers::method_not_allowed)
            .fallback(handlers::not_found)
            .with_state(state)
            .layer(IdentityLayer::new(self.identity.clone()))
    }

    /// The handlers' state: these settings, frozen.
    fn state(&self) -> ApiState {
        let event_types_list = self
            .event_types
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        ApiState {
            query: Arc::clone(&self.query),
            collector: self.collector.clone(),
            event_types: self.event_types.clone(),
            event_types_list,
            max_body_bytes: self.max_body_bytes,
            skew_future: self.skew_future,
            skew_past: self.skew_past,
            clock: Arc::clone(&self.clock),
            openapi: self.openapi_json().into(),
        }
    }
}

impl fmt::Debug for MetricsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query store and the clock need not be `Debug`.
        f.debug_struct("MetricsApi")
            .field("collector", &self.collector)
            .field("admins", &self.admins)
            .field("identity", &self.identity)
            .field("event_types", &self.event_types)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("skew_future", &self.skew_future)
            .field("skew_past", &self.skew_past)
            .finish_non_exhaustive()
    }
}
