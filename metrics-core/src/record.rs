//! The records the library produces: one [`RequestRecord`] per HTTP request and
//! one [`UsageEvent`] per product-usage event sent by an app's pages.
//!
//! Records are built on the request path, so they are cheap to move and never
//! own a `String` for values that are static or shared: route labels are
//! `&'static str` or `Arc<str>`, the method is an [`http::Method`] (no
//! allocation for the standard methods), the status is a `u16`, and the error
//! type is an enum that is only rendered to text when a sink writes it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

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

// ===== CorrelationId =====

/// The correlation id of a request: the caller's `X-Correlation-ID` when it is
/// acceptable, otherwise a generated UUID.
///
/// It wraps an [`http::HeaderValue`], so echoing it on the response and copying
/// it into the record are reference-count bumps, not string copies. Only
/// visible ASCII is ever stored, so [`CorrelationId::as_str`] cannot fail.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// The longest correlation id accepted from a caller, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Accepts `value` as a correlation id when it is 1..=[`Self::MAX_LEN`]
    /// bytes of visible ASCII (`!`..=`~`); otherwise `None`.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let acceptable = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes.iter().all(|b| (b'!'..=b'~').contains(b));
        acceptable.then(|| Self(value.clone()))
    }

    /// A fresh id: a UUIDv7 of the current time (see [`Self::generate_at`]).
    pub fn generate() -> Self {
        Self::generate_at(SystemTime::now())
    }

    /// A fresh id for a request that started at `time`: a UUIDv7 whose
    /// timestamp is `time` (milliseconds) and whose other 74 bits are random.
    ///
    /// Built for the request path, where it costs tens of nanoseconds:
    ///
    /// - the caller passes the wall clock it already read (the request's
    ///   timestamp), so no second clock read is needed;
    /// - the random bits come from a thread-local `fastrand` generator: no
    ///   lock, no shared counter, never the OS. Ids need to be unique, not
    ///   unpredictable; 74 random bits make a collision within one
    ///   millisecond practically impossible. (uuid's `now_v7` instead goes
    ///   through a process-wide mutex, reads the clock itself and runs
    ///   ChaCha.)
    /// - the 36 characters are carved out of a per-thread buffer shared by
    ///   [`IDS_PER_BUFFER`](Self::IDS_PER_BUFFER) ids, so an id costs an
    ///   allocation only once per 64; the buffer is freed when its last id is
    ///   dropped. Echoing the id on a response or copying it into a record
    ///   is then a reference-count bump.
    ///
    /// Ids generated in the same millisecond are not ordered among
    /// themselves (only their millisecond is); nothing relies on that order.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use metrics_core::CorrelationId;
    ///
    /// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    /// let id = CorrelationId::generate_at(t);
    /// let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
    /// assert_eq!(uuid.get_version_num(), 7);
    /// assert_eq!(uuid.get_timestamp().unwrap().to_unix(), (1_700_000_000, 123_000_000));
    /// ```
    pub fn generate_at(time: SystemTime) -> Self {
        let millis = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::generate_at_unix_millis(millis)
    }

    /// [`Self::generate_at`] for a time given as milliseconds since the Unix
    /// epoch: for callers that already hold the time as a duration since the
    /// epoch, which spares the checked `SystemTime` subtraction (a third of
    /// the cost of generating an id besides the text itself).
    ///
    /// ```
    /// use metrics_core::CorrelationId;
    ///
    /// let id = CorrelationId::generate_at_unix_millis(1_700_000_000_123);
    /// let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
    /// assert_eq!(uuid.get_version_num(), 7);
    /// assert_eq!(uuid.get_timestamp().unwrap().to_unix(), (1_700_000_000, 123_000_000));
    /// ```
    pub fn generate_at_unix_millis(millis: u64) -> Self {
        // RFC 9562 layout, built by hand (uuid's builder and formatter cost
        // several times more): 48 bits of milliseconds, version 7, 12 random
        // bits, variant `10`, 62 random bits.
        let random = fastrand::u128(..);
        let high = (millis << 16) | 0x7000 | ((random >> 64) as u64 & 0x0fff);
        let low = (random as u64 & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        Self(generated_header_value(&hyphenated(&bytes)))
    }

    /// How many generated ids share one buffer allocation.
    pub const IDS_PER_BUFFER: usize = 64;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Construction guarantees visible ASCII; the fallback is unreachable.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value, for echoing on a response.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as a header value, without the reference-count bump of
    /// cloning [`Self::header_value`].
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

const UUID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// Lower-case hex digit pairs for every byte value: one table load per byte
/// instead of two nibble conversions.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    table
};

/// `bytes` as a hyphenated lower-case UUID (`8-4-4-4-12` hex digits).
fn hyphenated(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    let mut text = [b'-'; UUID_LEN];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        // Hyphens sit before bytes 4, 6, 8 and 10.
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        let pair = HEX_PAIRS[usize::from(*byte)];
        text[at] = pair[0];
        text[at + 1] = pair[1];
        at += 2;
    }
    text
}

thread_local! {
    // See `CorrelationId::generate_at`: generated ids are carved out of a
    // per-thread buffer, because a `HeaderValue` needs heap bytes and one
    // allocation per 36-byte id would be the largest cost of generating it.
    static ID_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `text` (a hyphenated UUID) as a header value in the thread's id buffer.
fn generated_header_value(text: &[u8; UUID_LEN]) -> HeaderValue {
    let shared = ID_BUFFER.try_with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.capacity() - buf.len() < UUID_LEN {
            *buf = BytesMut::with_capacity(UUID_LEN * CorrelationId::IDS_PER_BUFFER);
        }
        buf.extend_from_slice(text);
        buf.split().freeze()
    });
    // Without the buffer (only while the thread is being torn down) the id
    // gets an allocation of its own.
    let bytes = shared.unwrap_or_else(|_| Bytes::copy_from_slice(text));
    // A hyphenated UUID is always a valid header value (the check scans 36
    // bytes; no allocation: `Bytes` is taken as is).
    HeaderValue::from_maybe_shared(bytes)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn correlation_id_accepts_visible_ascii_only() {
        assert!(CorrelationId::from_header(&HeaderValue::from_static("abc-123_X")).is_some());
        assert!(CorrelationId::from_header(&HeaderValue::from_static("has space")).is_none());
        assert!(CorrelationId::from_header(&HeaderValue::from_static("")).is_none());
        let long = "a".repeat(CorrelationId::MAX_LEN + 1);
        assert!(CorrelationId::from_header(&HeaderValue::from_str(&long).unwrap()).is_none());
        let max = "a".repeat(CorrelationId::MAX_LEN);
        assert!(CorrelationId::from_header(&HeaderValue::from_str(&max).unwrap()).is_some());
        let non_ascii = HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap();
        assert!(CorrelationId::from_header(&non_ascii).is_none());
    }

    #[test]
    fn hand_built_ids_match_uuid_formatting_and_layout() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1_000 {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes);
            let text = hyphenated(&bytes);
            let expected = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            assert_eq!(std::str::from_utf8(&text).unwrap(), expected);
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(0x0123_4567_89ab);
        for _ in 0..100 {
            let id = CorrelationId::generate_at(t);
            let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(uuid.get_version_num(), 7);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            assert!(id.as_str().starts_with("01234567-89ab-7"), "{id}");
        }
    }

    #[test]
    fn generated_correlation_ids_are_uuids_and_distinct() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
        assert_eq!(a.as_str().len(), 36);
    }

    #[test]
    fn error_type_rendering() {
        assert_eq!(ErrorType::Http(500).to_string(), "HTTP_500");
        assert_eq!(ErrorType::ClientClosed.as_str(), "ClientClosed");
        assert_eq!(ErrorType::for_status(399), None);
        assert_eq!(ErrorType::for_status(400), Some(ErrorType::Http(400)));
    }

    #[test]
    fn route_equality_ignores_representation() {
        let a = Route::from_static("/a/{id}");
        let b = Route::from(Arc::<str>::from("/a/{id}"));
        assert_eq!(a, b);
    }
}
