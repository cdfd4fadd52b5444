//! The records the library produces: one [`RequestRecord`] per HTTP request and
//! one [`UsageEvent`] per product-usage event sent by an app's pages.
//!
//! Records are built on the request path, so they are cheap to move and never
//! own a `String` for values that are static or shared: route labels are
//! `&'static str` or `Arc<str>`, the method is an [`http::Method`] (no
//! allocation for the standard methods), the status is a `u16`, and the error
//! type is an enum that is only rendered to text when a sink writes it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::id::CorrelationId;

/// The HTTP method of a request (re-exported from the `http` crate).
pub use http::Method;

// ===== Route =====

/// A route label: the route *template* (`/users/{id}`), never the raw path, so
/// the number of distinct labels stays bounded.
///
/// ```
/// use metrics_core::Route;
/// let r = Route::from_static("/users/{id}");
/// assert_eq!(r.as_str(), "/users/{id}");
/// assert_eq!(Route::UNMATCHED.as_str(), "<unmatched>");
/// ```
#[derive(Clone)]
pub struct Route(RouteRepr);

#[derive(Clone)]
enum RouteRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Route {
    /// The label of every request that matched no route.
    pub const UNMATCHED: Self = Self::from_static("<unmatched>");
    /// The label used once the configured cap on distinct labels is reached.
    pub const OVERFLOW: Self = Self::from_static("<overflow>");

    /// A route label from a string known at compile time (no allocation).
    pub const fn from_static(route: &'static str) -> Self {
        Self(RouteRepr::Static(route))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            RouteRepr::Static(s) => s,
            RouteRepr::Shared(s) => s,
        }
    }
}

impl From<Arc<str>> for Route {
    fn from(route: Arc<str>) -> Self {
        Self(RouteRepr::Shared(route))
    }
}

impl From<String> for Route {
    fn from(route: String) -> Self {
        Self(RouteRepr::Shared(route.into()))
    }
}

impl From<&'static str> for Route {
    fn from(route: &'static str) -> Self {
        Self::from_static(route)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Route {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Route {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== UserId =====

/// The identity of the user behind a request or event (an email or user name,
/// as the app's authentication knows it). Cloning is a reference-count bump.
///
/// ```
/// use metrics_core::UserId;
/// let u = UserId::new("ada@example.com");
/// assert_eq!(u.as_str(), "ada@example.com");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// A user id from any string-like value.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self::new(id)
    }
}

// ===== ErrorType =====

/// Why a request counts as an error. `error_type` is `None` for statuses below
/// 400; otherwise it names the class.
///
/// ```
/// use metrics_core::ErrorType;
/// assert_eq!(ErrorType::Http(404).as_str(), "HTTP_404");
/// assert_eq!(ErrorType::Timeout.as_str(), "Timeout");
/// assert_eq!(ErrorType::for_status(200), None);
/// assert_eq!(ErrorType::for_status(503), Some(ErrorType::Http(503)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorType {
    /// The service answered with this 4xx/5xx status (`HTTP_<code>`).
    Http(u16),
    /// A timeout layer inside the metrics layer gave up (recorded as 504).
    Timeout,
    /// The client went away before the response was complete (recorded as 499).
    ClientClosed,
    /// The inner service returned an error instead of a response (recorded as 500).
    ServiceError,
    /// The handler panicked (recorded as 500) where a panic could be observed.
    Panic,
    /// An application-defined class.
    Other(Arc<str>),
}

impl ErrorType {
    /// The error type implied by a status: `Http(status)` at 400 and above.
    pub fn for_status(status: u16) -> Option<Self> {
        (status >= 400).then_some(Self::Http(status))
    }

    /// The text stored in the `error_type` column. Only `Http` formats (off the
    /// request path, when a sink writes the record).
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            Self::Http(code) => Cow::Owned(format!("HTTP_{code}")),
            Self::Timeout => Cow::Borrowed("Timeout"),
            Self::ClientClosed => Cow::Borrowed("ClientClosed"),
            Self::ServiceError => Cow::Borrowed("ServiceError"),
            Self::Panic => Cow::Borrowed("Panic"),
            Self::Other(s) => Cow::Owned(s.to_string()),
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(code) => write!(f, "HTTP_{code}"),
            Self::Other(s) => f.write_str(s),
            other => f.write_str(&other.as_str()),
        }
    }
}

// ===== RequestRecord =====

/// One HTTP request, as the `performance_metrics` table stores it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use metrics_core::{Method, RequestRecord, Route, ErrorType};
///
/// let r = RequestRecord::new(
///     SystemTime::now(),
///     Route::from_static("/users/{id}"),
///     Method::GET,
///     404,
///     Duration::from_micros(1_500),
/// );
/// assert_eq!(r.response_time_ms, 1.5);
/// assert_eq!(r.error_type, Some(ErrorType::Http(404)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestRecord {
    /// Wall-clock time the request started.
    pub timestamp: SystemTime,
    /// Route template (`endpoint` column).
    pub route: Route,
    /// HTTP method.
    pub method: Method,
    /// Status code recorded (499 for a client abort, 500 for an inner error,
    /// 504 for a timeout inside the layer).
    pub status: u16,
    /// Duration from the start of the request to the end (or drop) of the
    /// response body, in milliseconds.
    pub response_time_ms: f64,
    /// The authenticated user, when the app's identity extractor found one.
    pub user_id: Option<UserId>,
    /// `None` below 400, otherwise the error class.
    pub error_type: Option<ErrorType>,
    /// The request's correlation id.
    pub correlation_id: Option<CorrelationId>,
}

impl RequestRecord {
    /// A record with `error_type` derived from `status` and no user or
    /// correlation id.
    // Inlined: a record is ~160 bytes and each builder step would
    // otherwise move it (memcpy) across the crate boundary.
    #[inline]
    pub fn new(
        timestamp: SystemTime,
        route: Route,
        method: Method,
        status: u16,
        elapsed: Duration,
    ) -> Self {
        Self {
            timestamp,
            route,
            method,
            status,
            response_time_ms: elapsed.as_secs_f64() * 1_000.0,
            user_id: None,
            error_type: ErrorType::for_status(status),
            correlation_id: None,
        }
    }

    /// Sets the user.
    // Inlined: a record is ~160 bytes and each builder step would
    // otherwise move it (memcpy) across the crate boundary.
    #[inline]
    pub fn with_user(mut self, user: Option<UserId>) -> Self {
        self.user_id = user;
        self
    }

    /// Sets the correlation id.
    // Inlined: a record is ~160 bytes and each builder step would
    // otherwise move it (memcpy) across the crate boundary.
    #[inline]
    pub fn with_correlation_id(mut self, id: Option<CorrelationId>) -> Self {
        self.correlation_id = id;
        self
    }

    /// Overrides the error type (for example `Timeout` with status 504).
    // Inlined: a record is ~160 bytes and each builder step would
    // otherwise move it (memcpy) across the crate boundary.
    #[inline]
    pub fn with_error_type(mut self, error_type: Option<ErrorType>) -> Self {
        self.error_type = error_type;
        self
    }
}

// ===== UsageEvent =====

/// One product-usage event (a page view, a click, a search...), as the
/// `usage_events` table stores it. Usage events arrive in batches from pages,
/// not on every request, so their text fields are plain `String`s.
///
/// ```
/// use std::time::SystemTime;
/// use metrics_core::{UsageEvent, UserId};
/// let e = UsageEvent::new("page_view", UserId::new("ada@example.com"), SystemTime::now())
///     .with_page_name(Some("/dashboard".into()));
/// assert_eq!(e.event_type, "page_view");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UsageEvent {
    /// When the event happened (client clock, skew-bounded by the API).
    pub timestamp: SystemTime,
    /// When the server received it.
    pub received_at: SystemTime,
    /// Event type (`page_view`, `button_click`, ...).
    pub event_type: String,
    /// The authenticated user who sent it (never taken from the request body).
    pub user_id: UserId,
    /// Page the event happened on.
    pub page_name: Option<String>,
    /// Element the event concerns.
    pub element_id: Option<String>,
    /// Whether the action succeeded.
    pub success: Option<bool>,
    /// Free-form JSON object attached by the page.
    pub metadata: Option<serde_json::Value>,
}

impl UsageEvent {
    /// An event of `event_type` by `user_id` at `timestamp`, received now.
    pub fn new(event_type: impl Into<String>, user_id: UserId, timestamp: SystemTime) -> Self {
        Self {
            timestamp,
            received_at: SystemTime::now(),
            event_type: event_type.into(),
            user_id,
            page_name: None,
            element_id: None,
            success: None,
            metadata: None,
        }
    }

    /// Sets the server receive time.
    pub fn with_received_at(mut self, received_at: SystemTime) -> Self {
        self.received_at = received_at;
        self
    }

    /// Sets the page name.
    pub fn with_page_name(mut self, page_name: Option<String>) -> Self {
        self.page_name = page_name;
        self
    }

    /// Sets the element id.
    pub fn with_element_id(mut self, element_id: Option<String>) -> Self {
        self.element_id = element_id;
        self
    }

    /// Sets the success flag.
    pub fn with_success(mut self, success: Option<bool>) -> Self {
        self.success = success;
        self
    }

    /// Sets the metadata object.
    pub fn with_metadata(mut self, metadata: Option<serde_json::Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

// ===== Record =====

/// What travels through the collector's queue: either kind of record.
///
/// Usage events are boxed so a queue slot stays the size of a request record
/// (the hot case).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Record {
    /// An HTTP request.
    Request(RequestRecord),
    /// A usage event.
    Usage(Box<UsageEvent>),
}

impl Record {
    /// An estimate of the memory this record holds while the collector keeps
    /// it, in bytes: its own size plus what it owns on the heap. The
    /// collector's memory budget
    /// ([`CollectorBuilder::memory_budget`](crate::CollectorBuilder::memory_budget))
    /// is counted in these.
    ///
    /// Cheap by design, as `record()` calls it on the request path: for a
    /// request record it is a constant plus the lengths of its user and
    /// correlation ids (no allocation, no walk); a usage event adds its
    /// strings and a walk over its metadata JSON (a few nanoseconds per JSON
    /// value). Not counted: route labels and other `Arc`-shared labels, which
    /// many records share and the label cap bounds; allocator overhead. The
    /// estimate may change between versions; it is deterministic for a given
    /// record.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use metrics_core::{Method, Record, RequestRecord, Route, UsageEvent, UserId};
    ///
    /// let req = Record::from(RequestRecord::new(
    ///     SystemTime::now(), Route::from_static("/"), Method::GET, 200, Duration::ZERO,
    /// ));
    /// let event = UsageEvent::new("page_view", UserId::new("ada"), SystemTime::now())
    ///     .with_metadata(Some(serde_json::json!({ "note": "x".repeat(16 * 1024) })));
    /// let heavy = Record::from(event);
    /// assert!(req.approx_size() >= std::mem::size_of::<Record>());
    /// assert!(heavy.approx_size() > 16 * 1024);
    /// ```
    pub fn approx_size(&self) -> usize {
        size_of::<Self>()
            + match self {
                Self::Request(r) => r.heap_size(),
                Self::Usage(e) => size_of::<UsageEvent>() + e.heap_size(),
            }
    }
}

/// Bytes of an `Arc<str>`'s allocation: the two reference counts and the text.
fn arc_str_size(s: &str) -> usize {
    2 * size_of::<usize>() + s.len()
}

impl RequestRecord {
    /// Heap bytes this record owns (see [`Record::approx_size`]): the user id
    /// (one `Arc<str>` per request, made from its credentials), the correlation
    /// id (a caller's is copied; a generated one shares a buffer, counted as
    /// its own text) and an application-defined error type.
    #[inline]
    fn heap_size(&self) -> usize {
        let user = self
            .user_id
            .as_ref()
            .map_or(0, |u| arc_str_size(u.as_str()));
        // `HeaderValue::len`, not `as_str().len()`: `to_str` checks every byte.
        let correlation = self
            .correlation_id
            .as_ref()
            .map_or(0, |c| c.header_value().len());
        let error = match &self.error_type {
            Some(ErrorType::Other(s)) => arc_str_size(s),
            _ => 0,
        };
        user + correlation + error
    }
}

impl UsageEvent {
    /// Heap bytes this event owns (see [`Record::approx_size`]).
    fn heap_size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.event_type.capacity()
            + arc_str_size(self.user_id.as_str())
            + text(&self.page_name)
            + text(&self.element_id)
            + self.metadata.as_ref().map_or(0, json_heap_size)
    }
}

/// Heap bytes of a JSON value (not counting the value itself, which lives in
/// its parent): string buffers, array buffers, and per object entry its key
/// and value plus the map's node overhead.
///
/// Iterative, so a deeply nested value cannot overflow the stack; the stack
/// holds only nested containers, so a flat object allocates nothing.
fn json_heap_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    /// Per object entry, beyond its key and value: the map's share of node
    /// headers and spare slots (a B-tree node holds up to 11 entries and is
    /// on average about two thirds full).
    const MAP_ENTRY_OVERHEAD: usize = 16;
    const VALUE: usize = size_of::<Value>();
    const ENTRY: usize = size_of::<String>() + VALUE + MAP_ENTRY_OVERHEAD;

    // A scalar's heap bytes; a container is queued for its own visit.
    fn visit<'a>(v: &'a Value, nested: &mut Vec<&'a Value>) -> usize {
        match v {
            Value::String(s) => s.capacity(),
            Value::Array(_) | Value::Object(_) => {
                nested.push(v);
                0
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }

    let mut total = 0;
    let mut nested: Vec<&Value> = Vec::new();
    let mut next = Some(value);
    while let Some(v) = next.take().or_else(|| nested.pop()) {
        match v {
            Value::String(s) => total += s.capacity(),
            Value::Array(items) => {
                total += items.capacity() * VALUE;
                for item in items {
                    total += visit(item, &mut nested);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    total += ENTRY + key.capacity() + visit(item, &mut nested);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    total
}

impl From<RequestRecord> for Record {
    fn from(r: RequestRecord) -> Self {
        Self::Request(r)
    }
}

impl From<UsageEvent> for Record {
    fn from(e: UsageEvent) -> Self {
        Self::Usage(Box::new(e))
    }
}

impl From<Box<UsageEvent>> for Record {
    fn from(e: Box<UsageEvent>) -> Self {
        Self::Usage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_rendering() {
        assert_eq!(ErrorType::Http(500).to_string(), "HTTP_500");
        assert_eq!(ErrorType::ClientClosed.as_str(), "ClientClosed");
        assert_eq!(ErrorType::for_status(399), None);
        assert_eq!(ErrorType::for_status(400), Some(ErrorType::Http(400)));
    }

    fn request() -> RequestRecord {
        RequestRecord::new(
            SystemTime::UNIX_EPOCH,
            Route::from_static("/a/{id}"),
            Method::GET,
            200,
            Duration::ZERO,
        )
    }

    #[test]
    fn request_size_is_a_constant_plus_its_ids() {
        let bare = Record::from(request()).approx_size();
        assert_eq!(bare, size_of::<Record>());
        let with_ids = Record::from(
            request()
                .with_user(Some(UserId::new("ada@example.com")))
                .with_correlation_id(Some(CorrelationId::generate())),
        );
        // 15 bytes of user id in an `Arc` (two counts), 36 of UUID text.
        assert_eq!(
            with_ids.approx_size(),
            bare + 2 * size_of::<usize>() + 15 + 36
        );
        // A shared route label is not the record's own memory.
        let shared = Record::from(RequestRecord {
            route: Route::from(String::from("/b/{id}")),
            ..request()
        });
        assert_eq!(shared.approx_size(), bare);
    }

    #[test]
    fn usage_size_grows_with_its_metadata() {
        let event = || UsageEvent::new("page_view", UserId::new("ada"), SystemTime::UNIX_EPOCH);
        let bare = Record::from(event()).approx_size();
        assert!(bare >= size_of::<Record>() + size_of::<UsageEvent>() + 9 + 3);
        // 16 KiB of text in one string.
        let long = Record::from(event().with_metadata(Some(serde_json::json!("x".repeat(16_384)))));
        assert_eq!(long.approx_size(), bare + 16_384);
        // The same text as 1,024 object entries costs far more than its text.
        let map: serde_json::Map<String, serde_json::Value> = (0..1_024)
            .map(|i| (format!("k{i:05}"), serde_json::json!("0123456789")))
            .collect();
        let text_len = serde_json::to_string(&map).unwrap().len();
        let wide = Record::from(event().with_metadata(Some(serde_json::Value::Object(map))));
        assert!(
            wide.approx_size() - bare > 4 * text_len,
            "{}",
            wide.approx_size()
        );
    }

    #[test]
    fn deep_json_is_walked_without_recursion() {
        // Deeper than any parser would build (serde_json stops at 128) and
        // than a recursive walk could go on a small stack.
        let mut v = serde_json::json!("leaf");
        for _ in 0..100_000 {
            v = serde_json::Value::Array(vec![v]);
        }
        let size = json_heap_size(&v);
        assert!(size >= 100_000 * size_of::<serde_json::Value>() + 4);
        // Dropped iteratively, so the test itself cannot overflow its stack.
        while let serde_json::Value::Array(mut items) = v {
            v = items.pop().unwrap_or(serde_json::Value::Null);
        }
    }

    #[test]
    fn route_equality_ignores_representation() {
        let a = Route::from_static("/a/{id}");
        let b = Route::from(Arc::<str>::from("/a/{id}"));
        assert_eq!(a, b);
    }
}
