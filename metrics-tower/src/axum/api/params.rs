//! Query-string parameters of the read endpoints and the time range they
//! ask for.

use std::time::SystemTime;

use axum::extract::Query;
use http::{StatusCode, Uri};
use metrics_core::aggregate::{TimeRange, TimeRangeError};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::END_DATE_SLACK;
use super::error::ApiError;

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

    pub(super) fn endpoint(&self) -> Option<&str> {
        present(&self.endpoint)
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

/// [`TimeRange::from_query`], except that an `end_date` at most
/// [`END_DATE_SLACK`] ahead of `now` is clamped to `now` (a browser clock a
/// few seconds fast must not turn "until now" into a 400).
pub(super) fn resolve_range(
    time_range: Option<&str>,
    start_date: Option<&str>,
    end_date: Option<&str>,
    now: SystemTime,
) -> Result<TimeRange, TimeRangeError> {
    match TimeRange::from_query(time_range, start_date, end_date, now) {
        Err(TimeRangeError::EndInFuture) => {
            // That rule is only reached with both bounds present and parsed.
            let (Some(start), Some(end)) = (
                start_date.and_then(parse_rfc3339),
                end_date.and_then(parse_rfc3339),
            ) else {
                return Err(TimeRangeError::EndInFuture);
            };
            if end <= now + END_DATE_SLACK {
                TimeRange::custom(start, now, now)
            } else {
                Err(TimeRangeError::EndInFuture)
            }
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
