//! Every time unit of the storage layout and every conversion between
//! instants, Unix seconds and the literals the SQL text carries, in one
//! place: the rollups, retention, partitions and queries must agree on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An hour, in seconds: the rollup unit of `aggregated_metrics`.
pub(crate) const HOUR: i64 = 3_600;
/// A UTC day, in seconds: the raw partitions' and daily rollups' unit.
pub(crate) const DAY: i64 = 86_400;
/// A 5-minute slot, in seconds: the unit of `aggregated_metrics_5min` (the
/// table's CHECK constraint requires buckets aligned to it).
pub(crate) const SLOT: i64 = 300;
/// Slots per hour.
pub(crate) const SLOTS_PER_HOUR: usize = (HOUR / SLOT) as usize;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC), the origin
/// of binary `timestamptz` values.
pub(crate) const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
/// [`PG_EPOCH_UNIX_SECS`] in microseconds (binary `timestamptz` is in them).
pub(crate) const PG_EPOCH_UNIX_MICROS: i64 = PG_EPOCH_UNIX_SECS * 1_000_000;

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // -0.5 s is in the hour/second before the epoch.
            if d.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

/// The instant `secs` seconds after the Unix epoch.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A duration in whole seconds, saturating far below `i64::MAX` so that
/// sums and differences with instants cannot overflow.
pub(crate) fn duration_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// The `unit` boundary at or before `secs`.
pub(crate) fn floor_to(secs: i64, unit: i64) -> i64 {
    secs.div_euclid(unit) * unit
}

/// The `unit` boundary at or after `secs`.
pub(crate) fn ceil_to(secs: i64, unit: i64) -> i64 {
    let f = floor_to(secs, unit);
    if f == secs { f } else { f + unit }
}

/// The `unit` boundary at or before `t`, in Unix seconds.
pub(crate) fn floor_time(t: SystemTime, unit: i64) -> i64 {
    floor_to(unix_secs(t), unit)
}

/// The `unit` boundary at or after `t`, in Unix seconds.
pub(crate) fn ceil_time(t: SystemTime, unit: i64) -> i64 {
    let f = floor_time(t, unit);
    if from_unix_secs(f) == t { f } else { f + unit }
}

/// Start of the hour containing `secs`.
pub(crate) fn floor_hour(secs: i64) -> i64 {
    floor_to(secs, HOUR)
}

/// Start of the UTC day containing `secs`.
pub(crate) fn floor_day(secs: i64) -> i64 {
    floor_to(secs, DAY)
}

/// The 5-minute slot (0..12) of an instant `secs` within the hour `hour`.
/// Rows outside the hour (cannot happen: the `COPY` selects the hour) are
/// clamped rather than dropped.
#[inline]
pub(crate) fn slot_of(hour: i64, secs: i64) -> usize {
    usize::try_from((secs - hour).div_euclid(SLOT))
        .unwrap_or(0)
        .min(SLOTS_PER_HOUR - 1)
}

/// `'YYYY-MM-DD HH:MM:SS+00'`, a timestamptz literal (COPY takes no
/// parameters). Only ever built from our own integers.
pub(crate) fn ts_literal(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00'",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `'YYYY-MM-DD HH:MM:SS.ffffff+00'`, a timestamptz literal truncated to
/// microseconds like a bound parameter (COPY takes no parameters).
pub(crate) fn micros_literal(t: SystemTime) -> String {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_micros()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos().div_ceil(1_000)).unwrap_or(i128::MAX),
    };
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00'",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

/// `t` as PostgreSQL's binary timestamptz: microseconds since 2000-01-01
/// UTC (rounded down, like the server's literal).
pub(crate) fn pg_micros(t: SystemTime) -> i64 {
    let unix = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    unix.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_nest() {
        assert_eq!(DAY % HOUR, 0);
        assert_eq!(HOUR % SLOT, 0);
        assert_eq!(SLOTS_PER_HOUR, 12);
        // 2000-01-01T00:00:00Z.
        assert_eq!(
            time::OffsetDateTime::from_unix_timestamp(PG_EPOCH_UNIX_SECS)
                .unwrap()
                .date(),
            time::macros::date!(2000 - 01 - 01)
        );
    }

    #[test]
    fn unix_secs_floors_before_the_epoch() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_millis(500)), -1);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(2)), -2);
        assert_eq!(unix_secs(from_unix_secs(1_700_000_000)), 1_700_000_000);
        assert_eq!(unix_secs(from_unix_secs(-7)), -7);
    }

    #[test]
    fn unix_seconds_round_trip() {
        for s in [-7201, -3600, -1, 0, 1, 3599, 1_767_225_600] {
            assert_eq!(unix_secs(from_unix_secs(s)), s);
        }
    }

    #[test]
    fn floors_and_ceilings() {
        assert_eq!(floor_hour(-1), -HOUR);
        assert_eq!(floor_day(DAY + 5), DAY);
        assert_eq!(ceil_to(301, SLOT), 600);
        assert_eq!(ceil_to(300, SLOT), 300);
        let t = from_unix_secs(600) + Duration::from_millis(1);
        assert_eq!((floor_time(t, SLOT), ceil_time(t, SLOT)), (600, 900));
        assert_eq!(slot_of(0, HOUR - 1), 11);
        assert_eq!(slot_of(0, HOUR + 10), 11);
    }

    #[test]
    fn pg_micros_counts_from_2000() {
        assert_eq!(pg_micros(from_unix_secs(946_684_800)), 0);
        assert_eq!(pg_micros(from_unix_secs(946_684_801)), 1_000_000);
    }

    #[test]
    fn literals() {
        assert_eq!(ts_literal(0), "'1970-01-01 00:00:00+00'");
        assert_eq!(ts_literal(1_767_225_600 + 3661), "'2026-01-01 01:01:01+00'");
        let t = from_unix_secs(86_400) + Duration::from_nanos(1_234_567);
        assert_eq!(micros_literal(t), "'1970-01-02 00:00:00.001234+00'");
    }
}
