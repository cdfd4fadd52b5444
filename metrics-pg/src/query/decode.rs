//! Turning stored values into answers: rollup sketches decoded (a value
//! that does not decode is a corrupt rollup), and number conversions.

use std::time::SystemTime;

use metrics_core::aggregate::{DistinctUsers, LatencySketch};
use metrics_core::query::PerformancePoint;

use crate::error::Error;
use crate::units::from_unix_secs;

pub(super) fn times(secs: &[i64]) -> Vec<SystemTime> {
    secs.iter().map(|&s| from_unix_secs(s)).collect()
}

/// A stored rollup row's time-series point, `(bucket start, point)`, from
/// the columns `bucket, count, error_count, avg, p50, p95, p99`.
pub(super) fn stored_point(r: &tokio_postgres::Row) -> (i64, PerformancePoint) {
    let count = to_u64(r.get(1));
    let errors = to_u64(r.get::<_, Option<i64>>(2).unwrap_or(0));
    let f = |i: usize| r.get::<_, Option<f64>>(i).unwrap_or(0.0);
    // The row stores the point's values already; a summary would have to
    // decode the sketch to compute them again.
    let mut point = PerformancePoint::default();
    point.total_requests = count;
    point.avg_response_time_ms = f(3);
    point.p50_response_time_ms = f(4);
    point.p95_response_time_ms = f(5);
    point.p99_response_time_ms = f(6);
    point.error_count = errors;
    point.error_rate = ratio(errors, count);
    (r.get(0), point)
}

pub(super) fn decode_sketch(
    bytes: &[u8],
    table: &'static str,
    key: &str,
) -> Result<LatencySketch, Error> {
    LatencySketch::from_bytes(bytes).map_err(|e| corrupt(table, key, &e))
}

pub(super) fn decode_users(
    bytes: &[u8],
    table: &'static str,
    key: &str,
) -> Result<DistinctUsers, Error> {
    DistinctUsers::from_bytes(bytes).map_err(|e| corrupt(table, key, &e))
}

pub(super) fn corrupt(table: &'static str, key: &str, e: &dyn std::fmt::Display) -> Error {
    Error::CorruptRollup {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

/// Merges every non-null users sketch of `arr` into `users`.
pub(super) fn merge_users(
    users: &mut DistinctUsers,
    arr: Option<Vec<Option<&[u8]>>>,
    key: &str,
) -> Result<(), Error> {
    for bytes in arr.into_iter().flatten().flatten() {
        users.merge(&decode_users(bytes, "aggregated_metrics", key)?);
    }
    Ok(())
}

pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
