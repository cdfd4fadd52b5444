//! Query-string parameters of the read endpoints and the time range they
//! ask for.

use std::time::SystemTime;

use axum::extract::Query;
use http::{StatusCode, Uri};
use metrics_core::aggregate::{MAX_RANGE, TimeRange, TimeRangeError};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::contract::END_DATE_SLACK;
use super::error::ApiError;

/// Longest `endpoint=` filter, in characters (the original contract's
/// limit; no route template is that long).
pub(super) const MAX_ENDPOINT_CHARS: usize = 500;

/// The longest `method` accepted, in characters (registered methods are at
/// most 7; extension methods rarely longer).
pub(super) const MAX_METHOD_CHARS: usize = 32;

/// Every parameter of every read endpoint. Each endpoint reads the ones it
/// documents; the rest, and unknown ones, are ignored.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Params {
    time_range: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    endpoint: Option<String>,
    event_type: Option<String>,
    metric_type: Option<String>,
    interval: Option<String>,
    method: Option<String>,
    limit: Option<String>,
}

impl Params {
    pub(super) fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        // Fails only on a repeated parameter (`?time_range=7d&time_range=30d`).
        let Query(params) = Query::<Self>::try_from_uri(uri).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid query string: {}", e.body_text()),
            )
        })?;
        Ok(params)
    }

    pub(super) fn time_range(&self) -> Option<&str> {
        present(&self.time_range)
    }

    /// The `endpoint=` filter: 422 over [`MAX_ENDPOINT_CHARS`] characters.
    pub(super) fn endpoint(&self) -> Result<Option<&str>, ApiError> {
        match present(&self.endpoint) {
            Some(e) if e.chars().count() > MAX_ENDPOINT_CHARS => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "endpoint must be at most {MAX_ENDPOINT_CHARS} characters (got {})",
                    e.chars().count()
                ),
            )),
            other => Ok(other),
        }
    }

    pub(super) fn event_type(&self) -> Option<&str> {
        present(&self.event_type)
    }

    pub(super) fn metric_type(&self) -> Option<&str> {
        present(&self.metric_type)
    }

    pub(super) fn interval(&self) -> Option<&str> {
        present(&self.interval)
    }

    /// The drill-down's `method`, exactly as recorded (e.g. `GET`; at most
    /// [`MAX_METHOD_CHARS`], 422 beyond).
    pub(super) fn method(&self) -> Result<Option<&str>, ApiError> {
        let method = present(&self.method);
        if method.is_some_and(|m| m.chars().count() > MAX_METHOD_CHARS) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "method must be an HTTP method such as GET, at most {MAX_METHOD_CHARS} characters"
                ),
            ));
        }
        Ok(method)
    }

    /// `/requests`' `limit`: a whole number from 1 to `max` (default
    /// `default`); anything else is a 422 naming the bounds.
    pub(super) fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        let Some(text) = present(&self.limit) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) && !text.starts_with('+') => Ok(n),
            _ => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("limit must be a whole number from 1 to {max} (got {text:?})"),
            )),
        }
    }

    /// The range asked for, validated at `now` (see [`resolve_range`]).
    pub(super) fn range(&self, now: SystemTime) -> Result<TimeRange, ApiError> {
        Ok(resolve_range(
            self.time_range(),
            present(&self.start_date),
            present(&self.end_date),
            now,
        )?)
    }
}

/// Empty parameters count as absent: forms send `?start_date=&end_date=`
/// with a quick range selected.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// [`TimeRange::from_query`], except that the two rules that compare a
/// bound with the server's "now" allow [`END_DATE_SLACK`]: an `end_date` at
/// most that far ahead of `now` is clamped to `now`, and a `start_date` at
/// most that far beyond the 90-day horizon is clamped to it. A client's
/// clock is never exactly the server's, so "the last 90 days until now"
/// (start = end − 90 d, end = the client's now) must not turn into a 400
/// because a few milliseconds passed on the way. Beyond the slack the
/// strict rules hold.
pub(super) fn resolve_range(
    time_range: Option<&str>,
    start_date: Option<&str>,
    end_date: Option<&str>,
    now: SystemTime,
) -> Result<TimeRange, TimeRangeError> {
    match TimeRange::from_query(time_range, start_date, end_date, now) {
        Err(error @ (TimeRangeError::EndInFuture | TimeRangeError::StartTooOld)) => {
            // Both rules are only reached with both bounds present and parsed.
            let (Some(start), Some(end)) = (
                start_date.and_then(parse_rfc3339),
                end_date.and_then(parse_rfc3339),
            ) else {
                return Err(error);
            };
            if end > now + END_DATE_SLACK {
                return Err(TimeRangeError::EndInFuture);
            }
            let horizon = now.checked_sub(MAX_RANGE).unwrap_or(SystemTime::UNIX_EPOCH);
            if start + END_DATE_SLACK < horizon {
                return Err(TimeRangeError::StartTooOld);
            }
            // The remaining rules (start before end, span) are checked again
            // on the clamped bounds.
            TimeRange::custom(start.max(horizon), end.min(now), now)
        }
        other => other,
    }
}

/// An RFC 3339 timestamp (any offset) as a `SystemTime`.
pub(super) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// How the range is named in response bodies: the preset or `custom`.
pub(super) fn range_name(range: &TimeRange) -> &'static str {
    range.preset_kind().map_or("custom", |p| p.as_str())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_core::query::format_rfc3339;

    use super::*;

    /// 2024-06-01T12:00:00Z.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_243_200)
    }

    fn custom(start: SystemTime, end: SystemTime) -> Result<TimeRange, TimeRangeError> {
        resolve_range(
            None,
            Some(&format_rfc3339(start)),
            Some(&format_rfc3339(end)),
            now(),
        )
    }

    #[test]
    fn end_date_slightly_ahead_is_clamped_to_now() {
        let start = now() - Duration::from_secs(3_600);
        for ahead in [1, 30, 60] {
            let r = custom(start, now() + Duration::from_secs(ahead)).unwrap();
            assert_eq!((r.start(), r.end()), (start, now()), "{ahead} s ahead");
        }
        assert_eq!(
            custom(start, now() + Duration::from_secs(61)),
            Err(TimeRangeError::EndInFuture)
        );
        // A start inside the slack leaves nothing before now.
        assert_eq!(
            custom(
                now() + Duration::from_secs(10),
                now() + Duration::from_secs(20)
            ),
            Err(TimeRangeError::StartNotBeforeEnd)
        );
    }

    #[test]
    fn exactly_90_days_until_a_client_now_is_accepted() {
        let day = Duration::from_secs(86_400);
        // The client's "now" a little before or after the server's.
        for skew_ms in [0_u64, 5, 900, 30_000] {
            let client_now = now() - Duration::from_millis(skew_ms);
            let r = custom(client_now - 90 * day, client_now).unwrap();
            assert!(r.duration() <= 90 * day, "{skew_ms} ms");
            assert!(r.duration() >= 90 * day - Duration::from_secs(60));
            let ahead = now() + Duration::from_millis(skew_ms);
            assert!(
                custom(ahead - 90 * day, ahead).is_ok(),
                "{skew_ms} ms ahead"
            );
        }
        // Beyond the slack the rules hold.
        assert_eq!(
            custom(now() - 90 * day - Duration::from_secs(61), now() - day),
            Err(TimeRangeError::StartTooOld)
        );
        assert_eq!(
            custom(now() - 91 * day, now()),
            Err(TimeRangeError::SpanTooLong)
        );
    }

    #[test]
    fn endpoint_filter_is_at_most_500_characters() {
        let at = |n: usize| {
            let uri: Uri = format!("/x?endpoint=/{}", "%C3%A9".repeat(n - 1))
                .parse()
                .unwrap();
            Params::from_uri(&uri).unwrap()
        };
        // Characters, not bytes: `é` (`%C3%A9`) is two bytes.
        assert_eq!(
            at(500).endpoint().unwrap().map(|e| e.chars().count()),
            Some(500)
        );
        let Err(ApiError::Status {
            status, message, ..
        }) = at(501).endpoint()
        else {
            panic!("501 characters accepted");
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(message, "endpoint must be at most 500 characters (got 501)");
        let empty: Uri = "/x?endpoint=".parse().unwrap();
        assert_eq!(Params::from_uri(&empty).unwrap().endpoint().unwrap(), None);
    }

    #[test]
    fn limit_is_a_whole_number_within_bounds() {
        let limit = |q: &str| {
            let uri: Uri = format!("/x?{q}").parse().unwrap();
            Params::from_uri(&uri).unwrap().limit(20, 100)
        };
        assert_eq!(limit("").unwrap(), 20);
        assert_eq!(limit("limit=").unwrap(), 20);
        assert_eq!(limit("limit=1").unwrap(), 1);
        assert_eq!(limit("limit=100").unwrap(), 100);
        // (as sent in the query string, as decoded): a raw `+` is a space.
        for (sent, bad) in [
            ("0", "0"),
            ("101", "101"),
            ("-1", "-1"),
            ("%2B5", "+5"),
            ("+5", " 5"),
            ("1.5", "1.5"),
            ("ten", "ten"),
            ("99999999999999999999999", "99999999999999999999999"),
        ] {
            let Err(ApiError::Status {
                status, message, ..
            }) = limit(&format!("limit={sent}"))
            else {
                panic!("limit={bad} accepted");
            };
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                message,
                format!("limit must be a whole number from 1 to 100 (got {bad:?})")
            );
        }
    }

    #[test]
    fn endpoint_and_method_are_bounded() {
        let params = |q: String| Params::from_uri(&format!("/x?{q}").parse().unwrap()).unwrap();
        let ok = params(format!("endpoint={}&method=GET", "e".repeat(500)));
        assert_eq!(ok.endpoint().unwrap().map(str::len), Some(500));
        assert_eq!(ok.method().unwrap(), Some("GET"));
        // Characters, not bytes: 500 two-byte characters are fine.
        assert!(
            params(format!("endpoint={}", "%C3%A9".repeat(500)))
                .endpoint()
                .is_ok()
        );
        assert!(
            params(format!("endpoint={}", "e".repeat(501)))
                .endpoint()
                .is_err()
        );
        assert!(
            params(format!("method={}", "M".repeat(33)))
                .method()
                .is_err()
        );
        assert_eq!(params(String::new()).endpoint().unwrap(), None);
    }

    #[test]
    fn empty_parameters_are_absent_and_repeats_are_refused() {
        let uri: Uri = "/x?time_range=7d&start_date=&end_date=&junk=1"
            .parse()
            .unwrap();
        let p = Params::from_uri(&uri).unwrap();
        let r = p.range(now()).unwrap();
        assert_eq!(range_name(&r), "7d");
        let uri: Uri = "/x?time_range=7d&time_range=30d".parse().unwrap();
        assert!(Params::from_uri(&uri).is_err());
        let r = Params::default().range(now()).unwrap();
        assert_eq!(range_name(&r), "24h");
    }
}
