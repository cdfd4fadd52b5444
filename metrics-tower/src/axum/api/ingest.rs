//! `POST /usage-events`: the browser's usage events, validated and queued.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics_core::{UsageEvent, UserId};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::contract::MAX_BATCH_SIZE;
use super::error::{ApiError, FieldError, json};
use super::handlers::Caller;
use super::params::parse_rfc3339;
use super::state::ApiState;
use super::storable::{is_storable, is_storable_json, nul_message};

/// Longest `event_type`, in characters.
pub(super) const MAX_EVENT_TYPE_CHARS: usize = 100;
/// Longest `page_name` / `element_id`, in characters.
const MAX_NAME_CHARS: usize = 255;
/// Largest `metadata`, serialised as compact JSON.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Deepest `metadata` (`{}` is one level).
const MAX_METADATA_DEPTH: usize = 10;

#[derive(Serialize)]
struct Accepted {
    message: &'static str,
    events_received: usize,
    status: &'static str,
}

/// The handler. Extractors run in order, so the identity is checked before
/// anything else and the body is read last.
pub(super) async fn usage_events(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let bytes = read_limited(&headers, body, state.max_body_bytes).await?;
    let batch = parse_batch(&bytes)?;
    drop(bytes);
    if batch.received == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "events must hold at least one event",
        ));
    }
    if batch.received > MAX_BATCH_SIZE {
        return Err(ApiError::BatchTooLarge {
            received: batch.received,
        });
    }
    if !is_storable(caller.user_id().as_str()) {
        // The app's own authentication produced it: nothing the client can
        // fix, but stored it would be refused row by row.
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            nul_message("The caller's user id"),
        ));
    }
    let now = state.now();
    let events = validate(&state, batch.events, caller.user_id(), now)?;
    let received = events.len();
    let refused = events
        .into_iter()
        .map(|event| state.collector.record(event))
        .filter(|queued| !queued)
        .count();
    if refused > 0 {
        // The collector counted each refused event as dropped.
        tracing::warn!(
            refused,
            received,
            "usage events refused by the collector (queue full or shut down): 503"
        );
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The metrics queue is full; retry later",
        ));
    }
    Ok(json(
        StatusCode::ACCEPTED,
        &Accepted {
            message: "Events accepted",
            events_received: received,
            status: "queued",
        },
    ))
}

/// JSON, or `text/plain` as `navigator.sendBeacon` sends a string; parameters
/// (a charset) are ignored. No content type at all is read as JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match essence {
        Some(e) if e.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(e) if e.eq_ignore_ascii_case("text/plain") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or text/plain",
        )),
    }
}

/// The body, read up to `limit` bytes and no further.
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body exceeds the limit of {limit} bytes"),
        )
    };
    // A declared length over the limit is refused without reading a byte.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => {
            tracing::debug!(%error, "could not read a usage-events body");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "The request body could not be read",
            ))
        }
    }
}

fn parse_batch(bytes: &[u8]) -> Result<Batch, ApiError> {
    serde_json::from_slice::<Batch>(bytes).map_err(|error| match error.classify() {
        // Well-formed JSON of the wrong shape.
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The body must be an object with an events array: {error}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid JSON: {error}"),
        ),
    })
}

// ===== the batch =====

/// `{"events": [...]}`: the first [`MAX_BATCH_SIZE`] events as JSON values
/// (checked field by field afterwards, so every problem can be reported),
/// and how many there were. Past the limit the events are only counted, so
/// an over-sized batch costs no more memory than a full one.
#[derive(Debug)]
struct Batch {
    events: Vec<Value>,
    received: usize,
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BatchVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum BatchField {
    Events,
    #[serde(other)]
    Other,
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object with an "events" array"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch, A::Error> {
        let mut batch = None;
        while let Some(field) = map.next_key::<BatchField>()? {
            match field {
                BatchField::Events if batch.is_some() => {
                    return Err(de::Error::duplicate_field("events"));
                }
                BatchField::Events => batch = Some(map.next_value::<EventsSeq>()?.0),
                BatchField::Other => {
                    let IgnoredAny = map.next_value()?;
                }
            }
        }
        batch.ok_or_else(|| de::Error::missing_field("events"))
    }
}

struct EventsSeq(Batch);

impl<'de> Deserialize<'de> for EventsSeq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EventsVisitor)
    }
}

struct EventsVisitor;

impl<'de> Visitor<'de> for EventsVisitor {
    type Value = EventsSeq;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventsSeq, A::Error> {
        let mut events = Vec::new();
        let mut received = 0_usize;
        loop {
            if received < MAX_BATCH_SIZE {
                match seq.next_element::<Value>()? {
                    Some(event) => events.push(event),
                    None => break,
                }
            } else {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                if received == MAX_BATCH_SIZE {
                    // One too many: the batch will be refused, free what was kept.
                    events = Vec::new();
                }
            }
            received += 1;
        }
        Ok(EventsSeq(Batch { events, received }))
    }
}

// ===== validation =====

/// Every event of the batch as a [`UsageEvent`] of `user`, or every problem
/// found.
fn validate(
    state: &ApiState,
    events: Vec<Value>,
    user: &UserId,
    now: SystemTime,
) -> Result<Vec<UsageEvent>, ApiError> {
    let window = Window {
        earliest: now.checked_sub(state.skew_past),
        latest: now.checked_add(state.skew_future),
        past: state.skew_past,
        future: state.skew_future,
    };
    let mut problems = Vec::new();
    let mut valid = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let mut check = Check {
            index,
            problems: &mut problems,
        };
        if let Some(event) = check.event(state, event, &window) {
            valid.push(
                UsageEvent::new(event.event_type, user.clone(), event.timestamp)
                    .with_received_at(now)
                    .with_page_name(event.page_name)
                    .with_element_id(event.element_id)
                    .with_success(event.success)
                    .with_metadata(event.metadata),
            );
        }
    }
    if problems.is_empty() {
        Ok(valid)
    } else {
        Err(ApiError::invalid_events(problems))
    }
}

/// The accepted `timestamp`s: `[earliest, latest]` (`None`: unbounded, for a
/// skew setting too large for `SystemTime`).
struct Window {
    earliest: Option<SystemTime>,
    latest: Option<SystemTime>,
    past: Duration,
    future: Duration,
}

/// An event's fields once they passed.
struct Valid {
    event_type: String,
    timestamp: SystemTime,
    page_name: Option<String>,
    element_id: Option<String>,
    success: Option<bool>,
    metadata: Option<Value>,
}

/// The checks of one event, collecting its problems.
struct Check<'a> {
    index: usize,
    problems: &'a mut Vec<FieldError>,
}

impl Check<'_> {
    fn problem(&mut self, field: &'static str, message: impl Into<Cow<'static, str>>) {
        self.problems.push(FieldError {
            index: self.index,
            field,
            message: message.into(),
        });
    }

    fn event(&mut self, state: &ApiState, event: Value, window: &Window) -> Option<Valid> {
        let Value::Object(mut fields) = event else {
            self.problem("event", "each event must be a JSON object");
            return None;
        };
        let before = self.problems.len();
        let event_type = self.event_type(state, &mut fields);
        let timestamp = self.timestamp(&mut fields, window);
        let page_name = self.name(&mut fields, "page_name");
        let element_id = self.name(&mut fields, "element_id");
        let success = self.success(&mut fields);
        let metadata = self.metadata(&mut fields);
        if self.problems.len() != before {
            return None;
        }
        Some(Valid {
            event_type: event_type?,
            timestamp: timestamp?,
            page_name: page_name?,
            element_id: element_id?,
            success: success?,
            metadata: metadata?,
        })
    }

    /// A required string field.
    fn required_str(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &'static str,
    ) -> Option<String> {
        match fields.remove(field) {
            None | Some(Value::Null) => {
                self.problem(field, format!("{field} is required"));
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(field, format!("{field} must be a string"));
                None
            }
        }
    }

    fn event_type(&mut self, state: &ApiState, fields: &mut Map<String, Value>) -> Option<String> {
        let event_type = self.required_str(fields, "event_type")?;
        if event_type.chars().count() > MAX_EVENT_TYPE_CHARS {
            self.problem(
                "event_type",
                format!("event_type must be at most {MAX_EVENT_TYPE_CHARS} characters"),
            );
            return None;
        }
        if !is_storable(&event_type) {
            self.problem("event_type", nul_message("event_type"));
            return None;
        }
        if !state.event_types.contains(&event_type) {
            self.problem(
                "event_type",
                format!(
                    "Invalid event_type: '{event_type}'; use one of: {}",
                    state.event_types_list
                ),
            );
            return None;
        }
        Some(event_type)
    }

    fn timestamp(
        &mut self,
        fields: &mut Map<String, Value>,
        window: &Window,
    ) -> Option<SystemTime> {
        let text = self.required_str(fields, "timestamp")?;
        let Some(t) = parse_rfc3339(&text) else {
            self.problem(
                "timestamp",
                "timestamp must be an RFC 3339 timestamp such as 2024-06-01T12:00:00Z",
            );
            return None;
        };
        if window.earliest.is_some_and(|earliest| t < earliest) {
            self.problem(
                "timestamp",
                format!(
                    "timestamp must not be more than {} before the server time",
                    Span(window.past)
                ),
            );
            return None;
        }
        if window.latest.is_some_and(|latest| t > latest) {
            self.problem(
                "timestamp",
                format!(
                    "timestamp must not be more than {} after the server time",
                    Span(window.future)
                ),
            );
            return None;
        }
        Some(t)
    }

    /// `page_name` / `element_id`: optional, at most 255 characters, no
    /// NUL. `Some(None)` is a valid absence; `None` a problem.
    fn name(
        &mut self,
        fields: &mut Map<String, Value>,
        field: &'static str,
    ) -> Option<Option<String>> {
        match fields.remove(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() > MAX_NAME_CHARS => {
                self.problem(
                    field,
                    format!("{field} must be at most {MAX_NAME_CHARS} characters"),
                );
                None
            }
            Some(Value::String(s)) if !is_storable(&s) => {
                self.problem(field, nul_message(field));
                None
            }
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => {
                self.problem(field, format!("{field} must be a string"));
                None
            }
        }
    }

    fn success(&mut self, fields: &mut Map<String, Value>) -> Option<Option<bool>> {
        match fields.remove("success") {
            None | Some(Value::Null) => Some(None),
            Some(Value::Bool(b)) => Some(Some(b)),
            Some(_) => {
                self.problem("success", "success must be a boolean");
                None
            }
        }
    }

    fn metadata(&mut self, fields: &mut Map<String, Value>) -> Option<Option<Value>> {
        match fields.remove("metadata") {
            None | Some(Value::Null) => Some(None),
            Some(value @ Value::Object(_)) => {
                if depth(&value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH {
                    self.problem(
                        "metadata",
                        format!("metadata must be at most {MAX_METADATA_DEPTH} levels deep"),
                    );
                    return None;
                }
                if !fits(&value, MAX_METADATA_BYTES) {
                    self.problem(
                        "metadata",
                        format!("metadata must be at most {MAX_METADATA_BYTES} bytes as JSON"),
                    );
                    return None;
                }
                if !is_storable_json(&value) {
                    self.problem("metadata", nul_message("metadata keys and strings"));
                    return None;
                }
                Some(Some(value))
            }
            Some(_) => {
                self.problem("metadata", "metadata must be a JSON object");
                None
            }
        }
    }
}

/// Nesting depth of `value` (a scalar is 0, `{}` and `[]` are 1), counted
/// only up to `limit + 1`: deeper values are not walked further.
fn depth(value: &Value, limit: usize) -> usize {
    fn walk<'a>(children: impl Iterator<Item = &'a Value>, limit: usize) -> usize {
        let mut deepest = 0;
        for child in children {
            deepest = deepest.max(depth(child, limit.saturating_sub(1)));
            if deepest >= limit {
                break;
            }
        }
        1 + deepest
    }
    if limit == 0 && matches!(value, Value::Object(_) | Value::Array(_)) {
        return 1;
    }
    match value {
        Value::Object(map) => walk(map.values(), limit),
        Value::Array(items) => walk(items.iter(), limit),
        _ => 0,
    }
}

/// Whether `value` serialises (compact) to at most `limit` bytes. Stops at
/// the first byte over, so a large value is never written out in full.
fn fits(value: &Value, limit: usize) -> bool {
    struct Budget(usize);
    impl io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| io::Error::other("over budget"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Budget(limit), value).is_ok()
}

/// A skew limit for messages: `24 h`, `5 min`, `90 s`.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s >= 3_600 && s % 3_600 == 0 {
            write!(f, "{} h", s / 3_600)
        } else if s >= 60 && s % 60 == 0 {
            write!(f, "{} min", s / 60)
        } else {
            write!(f, "{s} s")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut v = json!({});
        for _ in 1..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_counts_levels_and_stops_early() {
        assert_eq!(depth(&json!(1), 10), 0);
        assert_eq!(depth(&json!({}), 10), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]}), 10), 3);
        assert_eq!(depth(&nested(10), 10), 10);
        assert_eq!(depth(&nested(11), 10), 11);
        // Deeper values are reported as just over the limit.
        assert_eq!(depth(&nested(50), 10), 11);
    }

    #[test]
    fn fits_measures_compact_json() {
        let v = json!({"k": "x".repeat(10)}); // {"k":"xxxxxxxxxx"} = 18 bytes
        assert!(fits(&v, 18));
        assert!(!fits(&v, 17));
    }

    #[test]
    fn batch_counts_past_the_limit_without_keeping() {
        let events = vec![json!({}); MAX_BATCH_SIZE + 5];
        let body = serde_json::to_vec(&json!({"x": 1, "events": events})).unwrap();
        let batch = parse_batch(&body).unwrap();
        assert_eq!(batch.received, MAX_BATCH_SIZE + 5);
        assert!(batch.events.is_empty());
        let full = vec![json!({}); MAX_BATCH_SIZE];
        let body = serde_json::to_vec(&json!({ "events": full })).unwrap();
        let batch = parse_batch(&body).unwrap();
        assert_eq!(
            (batch.received, batch.events.len()),
            (MAX_BATCH_SIZE, MAX_BATCH_SIZE)
        );
        let batch = parse_batch(br#"{"events":[{"a":1},2]}"#).unwrap();
        assert_eq!((batch.received, batch.events.len()), (2, 2));
    }

    #[test]
    fn shape_errors_are_422_and_syntax_errors_400() {
        for (body, status) in [
            (&br#"{"events":{}}"#[..], StatusCode::UNPROCESSABLE_ENTITY),
            (br#"{"other":[]}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (br#"[]"#, StatusCode::UNPROCESSABLE_ENTITY),
            (
                br#"{"events":[],"events":[]}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (br#"{"events":["#, StatusCode::BAD_REQUEST),
            (br#"{"events":[]} x"#, StatusCode::BAD_REQUEST),
            (b"", StatusCode::BAD_REQUEST),
        ] {
            let Err(ApiError::Status { status: got, .. }) = parse_batch(body) else {
                panic!("{:?} parsed", String::from_utf8_lossy(body));
            };
            assert_eq!(got, status, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(Span(Duration::from_secs(86_400)).to_string(), "24 h");
        assert_eq!(Span(Duration::from_secs(300)).to_string(), "5 min");
        assert_eq!(Span(Duration::from_secs(90)).to_string(), "90 s");
    }
}
