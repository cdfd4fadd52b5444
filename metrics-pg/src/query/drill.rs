//! The drill-down into one endpoint: its filtered time series and its
//! slowest raw requests.
//!
//! # Filtered time series
//!
//! Each bucket has exactly one source, as in the unfiltered series:
//!
//! * **hourly buckets of rolled hours** come from the per-(endpoint, method)
//!   rows of `aggregated_metrics` that match the filter. A bucket with one
//!   such row (one method, or `method` given) is that row's stored values;
//!   a bucket with several (an endpoint served with several methods) merges
//!   their latency sketches, which `count(*) OVER (PARTITION BY
//!   time_bucket)` makes the statement send only for those buckets.
//! * **everything else** — the open hour, hours the job has not rolled, and
//!   every 5-minute bucket (the 5-minute rollups hold the all-endpoints key
//!   only) — is grouped from raw rows in SQL, one statement per raw span
//!   through the `(endpoint, "timestamp")` index, latencies returned as an
//!   array and added to a sketch, as the memory store adds them.
//!
//! A filtered 5-minute series must start within the raw retention
//! ([`TimeSeriesQuery::check`]): older raw rows are gone.
//!
//! # Slowest requests
//!
//! Two reads side by side over the window (the range clipped to the raw
//! retention, [`SlowRequestsQuery::window`]):
//!
//! * the top `limit` raw rows of the endpoint by `response_time_ms`, which
//!   the `(endpoint, response_time_ms DESC)` index of migration 0006 answers
//!   by reading about `limit` entries per day partition (a merge of the
//!   partitions' index scans, no sort of the endpoint's rows);
//! * the status-code breakdown, planned like `/performance` (rolled hours
//!   and whole days from the `status_code_distribution` of their rollup
//!   rows, the rest from raw rows), so a week of a busy endpoint is ~170
//!   small rows plus at most two partial hours of raw rows. Like every
//!   rolled count, a row that arrives late in a rolled hour is counted in
//!   the breakdown once the job has rolled the hour again (within a
//!   minute); it is listed among the slowest requests at once.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use futures_util::future::{try_join, try_join_all};
use metrics_core::aggregate::{LatencySketch, PerformanceSummary};
use metrics_core::query::{
    PerformancePoint, SlowRequest, SlowRequests, SlowRequestsQuery, TimeSeriesQuery,
};
use tokio_postgres::types::ToSql;

use super::decode::{decode_sketch, stored_point, times, to_u64};
use super::plan::{Plan, Rolled};
use super::rolled::plan;
use super::sql::prepare;
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::tables::Kind;
use crate::units::{HOUR, from_unix_secs};

/// The performance points `(bucket start, point)` of a filtered series over
/// the whole buckets `[first, end)` of `width` seconds (see the module
/// docs for where each comes from).
pub(super) async fn filtered_series(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &TimeSeriesQuery,
    first: SystemTime,
    end: SystemTime,
    width: i64,
) -> Result<Vec<(i64, PerformancePoint)>, Error> {
    let sql = &this.sql.drill;
    let endpoint = query.endpoint.as_deref();
    let method = query.method.as_deref();
    // Only hourly buckets have per-endpoint rollups.
    let (plan, rolled) = if width == HOUR {
        plan(tx, &this.sql, Kind::Performance, first, end, HOUR).await?
    } else {
        let none = Rolled::default();
        (Plan::new(first, end, &none, width), none)
    };
    let (_, hours) = plan.days_and_hours(&rolled, false);
    let raw_sql = if endpoint.is_some() {
        &sql.series_raw_endpoint
    } else {
        &sql.series_raw_method
    };
    let rolled_rows = async {
        if hours.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = prepare(tx, &sql.series_rolled).await?;
        // A range scan over the rolled hours' span (rows outside `hours`
        // are dropped below): on the bench data a quarter of the buffers of
        // `time_bucket = ANY(hours)` and no planning over a 2,000-element
        // array.
        let (lo, hi) = (
            from_unix_secs(hours.first().copied().unwrap_or(0)),
            from_unix_secs(hours.last().copied().unwrap_or(0) + HOUR),
        );
        let params: [&(dyn ToSql + Sync); 4] = [&lo, &hi, &endpoint, &method];
        tx.query(&stmt, &params)
            .await
            .map_err(|e| Error::db("reading one endpoint's hourly rollups", e))
    };
    let raw_rows = async {
        let stmt = prepare(tx, raw_sql).await?;
        try_join_all(plan.raw.iter().map(|(lo, hi)| {
            let stmt = &stmt;
            async move { tx.query(stmt, &[lo, hi, &endpoint, &method, &width]).await }
        }))
        .await
        .map_err(|e| Error::db("reading one endpoint's raw requests per bucket", e))
    };
    let (rolled_rows, raw_rows) = try_join(rolled_rows, raw_rows).await?;

    let mut points = Vec::new();
    // Rolled hours: one stored row is the point; several (methods) merge.
    // Rows of hours the plan reads raw (a rolled last hour cut by the
    // range's end) are not rolled sources here.
    let rolled_hours: HashSet<i64> = hours.iter().copied().collect();
    let mut by_hour: BTreeMap<i64, Vec<&tokio_postgres::Row>> = BTreeMap::new();
    for row in &rolled_rows {
        let hour: i64 = row.get(0);
        if rolled_hours.contains(&hour) {
            by_hour.entry(hour).or_default().push(row);
        }
    }
    for (hour, rows) in by_hour {
        if let [row] = rows.as_slice() {
            points.push((hour, stored_point(row).1));
            continue;
        }
        let mut acc = PerformanceSummary::default();
        for row in rows {
            let count = to_u64(row.get(1));
            let errors = to_u64(row.get::<_, Option<i64>>(2).unwrap_or(0));
            let sketch = match row.get::<_, Option<&[u8]>>(7) {
                Some(bytes) => {
                    let key = query.endpoint.as_deref().unwrap_or("*");
                    decode_sketch(bytes, "aggregated_metrics", key)?
                }
                None => LatencySketch::new(),
            };
            acc.merge_counts(count, errors, &sketch);
        }
        points.push((hour, PerformancePoint::from_summary(&acc)));
    }
    // Raw buckets: a raw span lies inside whole buckets (the plan cuts at
    // hours, buckets are 5 minutes or an hour), so each bucket is one row.
    for row in raw_rows.iter().flatten() {
        let mut sketch = LatencySketch::new();
        for v in row.get::<_, Vec<f64>>(3) {
            sketch.add(v);
        }
        let acc = PerformanceSummary::from_counts(sketch, to_u64(row.get(1)), to_u64(row.get(2)));
        points.push((row.get(0), PerformancePoint::from_summary(&acc)));
    }
    Ok(points)
}

/// The slowest requests of `query.endpoint` in `[lo, hi)` (a non-empty
/// window inside the raw retention) and its status codes there.
pub(super) async fn slowest_requests(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &SlowRequestsQuery,
    lo: SystemTime,
    hi: SystemTime,
) -> Result<SlowRequests, Error> {
    let sql = &this.sql.drill;
    let endpoint = query.endpoint.as_str();
    let method = query.method.as_deref();
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let top = async {
        let stmt = prepare(tx, &sql.slowest).await?;
        let params: [&(dyn ToSql + Sync); 5] = [&endpoint, &method, &lo, &hi, &limit];
        tx.query(&stmt, &params)
            .await
            .map_err(|e| Error::db("reading an endpoint's slowest requests", e))
    };
    let statuses = async {
        let (plan, rolled) = plan(tx, &this.sql, Kind::Performance, lo, hi, HOUR).await?;
        let (days, hours) = plan.days_and_hours(&rolled, true);
        let rolled_rows = async {
            if days.is_empty() && hours.is_empty() {
                return Ok(Vec::new());
            }
            let stmt = prepare(tx, &sql.status_rolled).await?;
            let params: [&(dyn ToSql + Sync); 4] =
                [&times(&days), &times(&hours), &endpoint, &method];
            tx.query(&stmt, &params)
                .await
                .map_err(|e| Error::db("reading an endpoint's rolled status codes", e))
        };
        let raw_rows = async {
            let stmt = prepare(tx, &sql.status_raw).await?;
            try_join_all(plan.raw.iter().map(|(lo, hi)| {
                let stmt = &stmt;
                async move { tx.query(stmt, &[lo, hi, &endpoint, &method]).await }
            }))
            .await
            .map_err(|e| Error::db("reading an endpoint's raw status codes", e))
        };
        let (rolled_rows, raw_rows) = try_join(rolled_rows, raw_rows).await?;
        let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
        for row in rolled_rows.iter().chain(raw_rows.iter().flatten()) {
            let code = u16::try_from(row.get::<_, i32>(0)).unwrap_or(0);
            *codes.entry(code).or_insert(0) += to_u64(row.get(1));
        }
        Ok::<_, Error>(codes)
    };
    let (rows, status_codes) = try_join(top, statuses).await?;
    let requests = rows
        .iter()
        .map(|row| {
            SlowRequest::new(
                row.get(0),
                row.get::<_, String>(1),
                u16::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
        .collect();
    Ok(SlowRequests::new(requests, status_codes))
}
