//! Dashboard time ranges (`24h|7d|30d|90d` or a custom RFC 3339 start/end,
//! validated by the API's rules, see [`RangeError`]) and UTC bucketing at
//! hour / 5-minute resolution.
//!
//! Every function that needs the current time takes `now` as an argument, so
//! callers pass their clock and tests need no sleeping.
//!
//! Bucketing needs no calendar: Unix time has no leap seconds and UTC hours
//! and 5-minute slots start at multiples of 3,600 s and 300 s since the
//! epoch, so flooring is integer arithmetic on the seconds since 1970.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DAY: Duration = Duration::from_secs(86_400);

/// The longest range the dashboard serves (and how far back rollups are kept).
pub const MAX_RANGE: Duration = Duration::from_secs(90 * 86_400);

/// A quick range: the last 24 hours, 7, 30 or 90 days up to `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Preset {
    /// `24h` (the default).
    #[default]
    Last24Hours,
    /// `7d`.
    Last7Days,
    /// `30d`.
    Last30Days,
    /// `90d`.
    Last90Days,
}

/// Bucket width of a time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resolution {
    /// 5-minute buckets (`5min`), the default for 24 h ranges.
    FiveMinutes,
    /// Hourly buckets (`hourly`), the default beyond 24 h and the rollup grain.
    Hour,
}

/// A validated, half-open time range `[start, end)`.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use metrics_core::aggregate::{Resolution, TimeRange};
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_243_200); // 2024-06-01T12:00:00Z
/// let r = TimeRange::from_query(Some("7d"), None, None, now)?;
/// assert_eq!(r.duration(), Duration::from_secs(7 * 86_400));
/// assert_eq!(r.default_resolution(), Resolution::Hour);
///
/// let err = TimeRange::from_query(
///     None,
///     Some("2024-06-01T10:00:00Z"),
///     Some("2024-06-01T13:00:00Z"),
///     now,
/// )
/// .unwrap_err();
/// assert_eq!(err.to_string(), "end_date must not be in the future");
/// # Ok::<(), metrics_core::aggregate::TimeRangeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    start: SystemTime,
    end: SystemTime,
    preset: Option<Preset>,
}

/// Why a time range or interval parameter was refused. Each rule of a custom
/// range has its own variant and message, written for the API's `message`
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeRangeError {
    /// `time_range` is not one of the presets.
    #[error("time_range must be one of 24h, 7d, 30d, 90d (got {0:?})")]
    UnknownPreset(String),
    /// `interval` is not one of the resolutions.
    #[error("interval must be one of 5min, hourly (got {0:?})")]
    UnknownInterval(String),
    /// Only one of `start_date` / `end_date` was given.
    #[error("start_date and end_date must be given together ({missing} is missing)")]
    MissingBound {
        /// The parameter that is missing.
        missing: &'static str,
    },
    /// A bound is not an RFC 3339 timestamp.
    #[error("{field} must be an RFC 3339 timestamp such as 2024-06-01T00:00:00Z (got {value:?})")]
    InvalidTimestamp {
        /// The parameter (`start_date` or `end_date`).
        field: &'static str,
        /// The text received.
        value: String,
    },
    /// `start_date` is not strictly before `end_date`.
    #[error("start_date must be before end_date")]
    StartNotBeforeEnd,
    /// `end_date` lies after `now`.
    #[error("end_date must not be in the future")]
    EndInFuture,
    /// The range spans more than 90 days.
    #[error("the range from start_date to end_date must not span more than 90 days")]
    SpanTooLong,
    /// `start_date` lies more than 90 days before `now`.
    #[error("start_date must not be more than 90 days ago (data is kept for 90 days)")]
    StartTooOld,
}

// ===== impl Preset =====

impl Preset {
    /// How far back from `now` the preset reaches.
    pub fn duration(self) -> Duration {
        match self {
            Self::Last24Hours => DAY,
            Self::Last7Days => 7 * DAY,
            Self::Last30Days => 30 * DAY,
            Self::Last90Days => 90 * DAY,
        }
    }

    /// The query-string form (`24h`, `7d`, `30d`, `90d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Last24Hours => "24h",
            Self::Last7Days => "7d",
            Self::Last30Days => "30d",
            Self::Last90Days => "90d",
        }
    }
}

impl FromStr for Preset {
    type Err = TimeRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "24h" => Ok(Self::Last24Hours),
            "7d" => Ok(Self::Last7Days),
            "30d" => Ok(Self::Last30Days),
            "90d" => Ok(Self::Last90Days),
            other => Err(TimeRangeError::UnknownPreset(other.to_owned())),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== impl Resolution =====

impl Resolution {
    /// The bucket width.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.secs())
    }

    fn secs(self) -> u64 {
        match self {
            Self::FiveMinutes => 300,
            Self::Hour => 3_600,
        }
    }

    /// The query-string form (`5min`, `hourly`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveMinutes => "5min",
            Self::Hour => "hourly",
        }
    }

    /// The start of the UTC bucket containing `t`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use metrics_core::aggregate::Resolution;
    /// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(3_600_000 * 5 + 1_234_567);
    /// let h = Resolution::Hour.floor(t);
    /// assert_eq!(h, SystemTime::UNIX_EPOCH + Duration::from_secs(3_600 * 5));
    /// let m = Resolution::FiveMinutes.floor(t);
    /// assert_eq!(m, SystemTime::UNIX_EPOCH + Duration::from_secs(3_600 * 5 + 1_200));
    /// ```
    pub fn floor(self, t: SystemTime) -> SystemTime {
        let w = self.secs();
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs() - d.as_secs() % w),
            Err(e) => {
                // Before 1970: round the distance *up* to whole buckets.
                let d = e.duration();
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.div_ceil(w) * w)
            }
        }
    }
}

impl FromStr for Resolution {
    type Err = TimeRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "5min" => Ok(Self::FiveMinutes),
            "hourly" => Ok(Self::Hour),
            other => Err(TimeRangeError::UnknownInterval(other.to_owned())),
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== impl TimeRange =====

impl TimeRange {
    /// `[now − preset, now)`.
    pub fn preset(preset: Preset, now: SystemTime) -> Self {
        Self {
            start: now - preset.duration(),
            end: now,
            preset: Some(preset),
        }
    }

    /// A custom range, checked in this order (so every rule can be the one
    /// reported): `start < end`; `end ≤ now`; `end − start ≤ 90 days`;
    /// `start ≥ now − 90 days`. Exactly 90 days is accepted.
    pub fn custom(
        start: SystemTime,
        end: SystemTime,
        now: SystemTime,
    ) -> Result<Self, TimeRangeError> {
        if start >= end {
            return Err(TimeRangeError::StartNotBeforeEnd);
        }
        if end > now {
            return Err(TimeRangeError::EndInFuture);
        }
        // `start < end`, so the difference exists.
        if end.duration_since(start).unwrap_or_default() > MAX_RANGE {
            return Err(TimeRangeError::SpanTooLong);
        }
        if now.duration_since(start).unwrap_or_default() > MAX_RANGE {
            return Err(TimeRangeError::StartTooOld);
        }
        Ok(Self {
            start,
            end,
            preset: None,
        })
    }

    /// The range the API's query parameters ask for. A custom range is used
    /// when either of `start_date` / `end_date` is present (both are then
    /// required, RFC 3339); otherwise `time_range` (default `24h`).
    pub fn from_query(
        time_range: Option<&str>,
        start_date: Option<&str>,
        end_date: Option<&str>,
        now: SystemTime,
    ) -> Result<Self, TimeRangeError> {
        match (start_date, end_date) {
            (None, None) => {
                let preset = time_range.map(str::parse).transpose()?.unwrap_or_default();
                Ok(Self::preset(preset, now))
            }
            (Some(_), None) => Err(TimeRangeError::MissingBound {
                missing: "end_date",
            }),
            (None, Some(_)) => Err(TimeRangeError::MissingBound {
                missing: "start_date",
            }),
            (Some(s), Some(e)) => {
                let start = parse_rfc3339("start_date", s)?;
                let end = parse_rfc3339("end_date", e)?;
                Self::custom(start, end, now)
            }
        }
    }

    /// Inclusive start.
    pub fn start(&self) -> SystemTime {
        self.start
    }

    /// Exclusive end.
    pub fn end(&self) -> SystemTime {
        self.end
    }

    /// `end − start`.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// The preset this range came from, if any.
    pub fn preset_kind(&self) -> Option<Preset> {
        self.preset
    }

    /// Whether `t` lies in `[start, end)`.
    pub fn contains(&self, t: SystemTime) -> bool {
        self.start <= t && t < self.end
    }

    /// The time-series default: 5-minute buckets up to 24 h, hourly beyond.
    pub fn default_resolution(&self) -> Resolution {
        if self.duration() <= DAY {
            Resolution::FiveMinutes
        } else {
            Resolution::Hour
        }
    }

    /// The starts of the UTC buckets that overlap the range, ascending: from
    /// the bucket containing `start` up to the one containing the last
    /// instant before `end` (at most 25,921 buckets for 90 days at 5 min).
    pub fn buckets(&self, resolution: Resolution) -> Buckets {
        Buckets {
            next: resolution.floor(self.start),
            end: self.end,
            step: resolution.duration(),
        }
    }
}

fn parse_rfc3339(field: &'static str, value: &str) -> Result<SystemTime, TimeRangeError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| TimeRangeError::InvalidTimestamp {
            field,
            value: value.to_owned(),
        })
}

/// Iterator over bucket starts, from [`TimeRange::buckets`].
#[derive(Clone, Debug)]
pub struct Buckets {
    next: SystemTime,
    end: SystemTime,
    step: Duration,
}

impl Iterator for Buckets {
    type Item = SystemTime;
    fn next(&mut self) -> Option<SystemTime> {
        if self.next >= self.end {
            return None;
        }
        let current = self.next;
        self.next = current + self.step;
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2024-06-01T12:00:00Z.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_243_200)
    }

    fn ts(t: SystemTime) -> String {
        OffsetDateTime::from(t).format(&Rfc3339).unwrap()
    }

    #[test]
    fn presets_and_default() {
        for (s, days) in [("7d", 7), ("30d", 30), ("90d", 90)] {
            let r = TimeRange::from_query(Some(s), None, None, now()).unwrap();
            assert_eq!(r.end(), now());
            assert_eq!(r.duration(), Duration::from_secs(days * 86_400));
            assert_eq!(r.preset_kind().unwrap().as_str(), s);
        }
        let d = TimeRange::from_query(None, None, None, now()).unwrap();
        assert_eq!(d.duration(), DAY);
        assert_eq!(d.default_resolution(), Resolution::FiveMinutes);
        assert_eq!(
            TimeRange::from_query(Some("1y"), None, None, now()),
            Err(TimeRangeError::UnknownPreset("1y".into()))
        );
    }

    #[test]
    fn exactly_ninety_days_is_accepted_and_one_second_more_is_not() {
        let start = now() - MAX_RANGE;
        let r = TimeRange::from_query(None, Some(&ts(start)), Some(&ts(now())), now()).unwrap();
        assert_eq!(r.duration(), MAX_RANGE);
        let too_long = start - Duration::from_secs(1);
        assert_eq!(
            TimeRange::from_query(None, Some(&ts(too_long)), Some(&ts(now())), now()),
            Err(TimeRangeError::SpanTooLong)
        );
    }

    #[test]
    fn each_rule_has_its_own_error_and_message() {
        let hour = Duration::from_secs(3_600);
        let cases = [
            (
                now() - hour,
                now() - 2 * hour,
                TimeRangeError::StartNotBeforeEnd,
            ),
            (
                now() - hour,
                now() - hour,
                TimeRangeError::StartNotBeforeEnd,
            ),
            (
                now() - hour,
                now() + Duration::from_secs(1),
                TimeRangeError::EndInFuture,
            ),
            (
                now() - 100 * DAY,
                now() - 5 * DAY,
                TimeRangeError::SpanTooLong,
            ),
            (
                now() - 95 * DAY,
                now() - 10 * DAY,
                TimeRangeError::StartTooOld,
            ),
        ];
        let mut messages = std::collections::HashSet::new();
        for (start, end, expected) in cases {
            let got = TimeRange::custom(start, end, now()).unwrap_err();
            assert_eq!(got, expected);
            let _ = messages.insert(got.to_string());
        }
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(TimeRange::custom(now() - hour, now(), now()).is_ok());
    }

    #[test]
    fn query_parse_errors() {
        assert_eq!(
            TimeRange::from_query(None, Some("2024-06-01T00:00:00Z"), None, now()),
            Err(TimeRangeError::MissingBound {
                missing: "end_date"
            })
        );
        assert_eq!(
            TimeRange::from_query(None, None, Some("2024-06-01T00:00:00Z"), now()),
            Err(TimeRangeError::MissingBound {
                missing: "start_date"
            })
        );
        let err =
            TimeRange::from_query(None, Some("yesterday"), Some("2024-06-01T00:00:00Z"), now())
                .unwrap_err();
        assert!(matches!(
            err,
            TimeRangeError::InvalidTimestamp {
                field: "start_date",
                ..
            }
        ));
        // Offsets are honoured: 13:00+02:00 is 11:00Z, in the past.
        let r = TimeRange::from_query(
            Some("90d"),
            Some("2024-06-01T10:00:00+02:00"),
            Some("2024-06-01T13:00:00+02:00"),
            now(),
        )
        .unwrap();
        assert_eq!(r.duration(), Duration::from_secs(3 * 3_600));
        assert_eq!(r.preset_kind(), None);
        assert_eq!("5min".parse(), Ok(Resolution::FiveMinutes));
        assert!("daily".parse::<Resolution>().is_err());
    }

    #[test]
    fn buckets_cover_the_range() {
        // 10:07:30 .. 12:00:00 hourly: 10:00, 11:00.
        let start = now() - Duration::from_secs(6_750);
        let r = TimeRange::custom(start, now(), now()).unwrap();
        let hours: Vec<_> = r.buckets(Resolution::Hour).collect();
        assert_eq!(
            hours,
            [
                now() - Duration::from_secs(7_200),
                now() - Duration::from_secs(3_600)
            ]
        );
        let five: Vec<_> = r.buckets(Resolution::FiveMinutes).collect();
        assert_eq!(five.len(), 23); // 10:05 .. 11:55
        assert_eq!(five[0], now() - Duration::from_secs(6_900));
        let day = TimeRange::preset(Preset::Last90Days, now());
        assert_eq!(day.buckets(Resolution::Hour).count(), 90 * 24);
    }

    #[test]
    fn floor_before_the_epoch() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(
            Resolution::Hour.floor(t),
            SystemTime::UNIX_EPOCH - Duration::from_secs(3_600)
        );
        let t = SystemTime::UNIX_EPOCH - Duration::from_secs(3_600);
        assert_eq!(Resolution::Hour.floor(t), t);
    }

    proptest! {
        #[test]
        fn floor_is_aligned_and_idempotent(secs in 0u64..4_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            for res in [Resolution::Hour, Resolution::FiveMinutes] {
                let f = res.floor(t);
                prop_assert!(f <= t);
                prop_assert!(t.duration_since(f).unwrap() < res.duration());
                prop_assert_eq!(res.floor(f), f);
                let s = f.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
                prop_assert_eq!(s % res.duration().as_secs(), 0);
            }
        }

        #[test]
        fn custom_ranges_follow_the_rules(start_ago in 0u64..200 * 86_400, len in 0u64..200 * 86_400) {
            let start = now() - Duration::from_secs(start_ago);
            let end = start + Duration::from_secs(len);
            let res = TimeRange::custom(start, end, now());
            let ok = len > 0 && end <= now() && len <= 90 * 86_400 && start_ago <= 90 * 86_400;
            prop_assert_eq!(res.is_ok(), ok, "{:?}", res);
        }
    }
}
