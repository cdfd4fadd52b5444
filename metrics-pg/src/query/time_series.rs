//! The time series: stored points of rolled buckets (one row per bucket),
//! raw pieces merged per bucket, raw usage grouped in SQL; the filtered
//! series is `drill.rs`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use metrics_core::aggregate::{DEFAULT_EXACT_LIMIT, PerformanceSummary, Resolution};
use metrics_core::query::{DataPoint, PerformancePoint, TimeSeries, TimeSeriesQuery, UsagePoint};

use super::cache::{Part, PointKey, SeriesPoint};
use super::decode::{stored_point, to_u64};
use super::drill;
use super::plan::{Plan, Rolled};
use super::rolled::series_plan;
use super::sql::prepare;
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::tables::Kind;
use crate::units::{HOUR, from_unix_secs, unix_secs};

pub(super) async fn time_series(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &TimeSeriesQuery,
) -> Result<TimeSeries, Error> {
    use futures_util::future::{try_join, try_join_all};

    let sql = &*this.sql;
    let starts: Vec<SystemTime> = query.range.buckets(query.resolution).collect();
    let Some(&first) = starts.first() else {
        return Ok(TimeSeries::default());
    };
    let end = query.range.end();
    let width = i64::try_from(query.resolution.duration().as_secs()).unwrap_or(HOUR);
    let first_secs = unix_secs(first);
    let kind = query.metric_type;
    let index = |bucket: i64| -> Option<usize> {
        if bucket < first_secs {
            return None;
        }
        usize::try_from((bucket - first_secs) / width)
            .ok()
            .filter(|&i| i < starts.len())
    };

    // Both series are read at once (pipelined): plans, then rows.
    let perf_series = async {
        if !kind.includes_performance() {
            return Ok::<_, Error>(Vec::new());
        }
        if query.is_filtered() {
            return drill::filtered_series(tx, this, query, first, end, width).await;
        }
        let (plan, rolled) = series_plan(tx, sql, Kind::Performance, first, end, width).await?;
        let (mut points, pieces) = try_join(
            async {
                let points = series_rolled(tx, this, &plan, &rolled, query, false).await?;
                Ok::<_, Error>(
                    points
                        .into_iter()
                        .filter_map(|(h, p)| Some((h, p.performance()?)))
                        .collect::<Vec<_>>(),
                )
            },
            this.raw_pieces(tx, &plan.raw, &rolled),
        )
        .await?;
        // Pieces are 5-minute slots (or parts of one); buckets are whole
        // multiples of 5 minutes, so each piece is in exactly one bucket.
        let mut by_bucket: BTreeMap<i64, Vec<&Part>> = BTreeMap::new();
        for piece in &pieces {
            if let Some(all) = &piece.bucket.all {
                by_bucket
                    .entry(crate::units::floor_to(piece.slot, width))
                    .or_default()
                    .push(all);
            }
        }
        for (bucket, parts) in by_bucket {
            let window: u64 = parts.iter().map(|p| p.count).sum();
            let mut acc = PerformanceSummary::default();
            for p in parts {
                acc.merge_counts(p.count, p.errors, p.sketch_for(window, DEFAULT_EXACT_LIMIT));
            }
            points.push((bucket, PerformancePoint::from_summary(&acc)));
        }
        Ok(points)
    };
    let usage_series = async {
        if !kind.includes_usage() {
            return Ok::<_, Error>(Vec::new());
        }
        let (plan, rolled) = series_plan(tx, sql, Kind::Usage, first, end, width).await?;
        let stmt = prepare(tx, &sql.series_raw_usage).await?;
        let (mut points, raw) = try_join(
            async {
                let points = series_rolled(tx, this, &plan, &rolled, query, true).await?;
                Ok::<_, Error>(
                    points
                        .into_iter()
                        .filter_map(|(h, p)| Some((h, p.usage()?)))
                        .collect::<Vec<_>>(),
                )
            },
            async {
                try_join_all(plan.raw.iter().map(|(lo, hi)| {
                    let stmt = &stmt;
                    async move { tx.query(stmt, &[lo, hi, &width]).await }
                }))
                .await
                .map_err(|e| Error::db("reading raw usage events per bucket", e))
            },
        )
        .await?;
        for row in raw.iter().flatten() {
            points.push((
                row.get(0),
                UsagePoint::new(to_u64(row.get(1)), to_u64(row.get(2))),
            ));
        }
        Ok(points)
    };
    let (perf_points, usage_points) = try_join(perf_series, usage_series).await?;

    // Each bucket has exactly one source (see the module docs).
    let mut perf: Vec<Option<PerformancePoint>> = vec![None; starts.len()];
    let mut usage: Vec<Option<UsagePoint>> = vec![None; starts.len()];
    for (bucket, point) in perf_points {
        if let Some(i) = index(bucket) {
            perf[i] = Some(point);
        }
    }
    for (bucket, point) in usage_points {
        if let Some(i) = index(bucket) {
            usage[i] = Some(point);
        }
    }
    if !any_data(&perf, &usage) {
        return Ok(TimeSeries::default());
    }
    let data_points = starts
        .into_iter()
        .zip(perf.into_iter().zip(usage))
        .map(|(timestamp, (p, u))| {
            DataPoint::new(
                timestamp,
                kind.includes_performance().then(|| p.unwrap_or_default()),
                kind.includes_usage().then(|| u.unwrap_or_default()),
            )
        })
        .collect();
    Ok(TimeSeries::new(data_points))
}

/// Whether any bucket holds data (a rollup row or a raw group).
pub(super) fn any_data(perf: &[Option<PerformancePoint>], usage: &[Option<UsagePoint>]) -> bool {
    perf.iter()
        .any(|p| p.as_ref().is_some_and(|p| p.total_requests > 0))
        || usage
            .iter()
            .any(|u| u.as_ref().is_some_and(|u| u.total_events > 0))
}

pub(super) fn usage_point(r: &tokio_postgres::Row) -> (i64, UsagePoint) {
    (
        r.get(0),
        UsagePoint::new(
            to_u64(r.get(1)),
            to_u64(r.get::<_, Option<i64>>(2).unwrap_or(0)),
        ),
    )
}

/// A stored `*` row of either series as a point.
pub(super) fn series_point(r: &tokio_postgres::Row, usage: bool) -> (i64, SeriesPoint) {
    if usage {
        let (h, p) = usage_point(r);
        (h, SeriesPoint::Usage(p))
    } else {
        let (h, p) = stored_point(r);
        (h, SeriesPoint::Performance(p))
    }
}

/// The rolled buckets of the usage (`usage`) or performance series:
/// `(bucket start, point)`.
pub(super) async fn series_rolled(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    plan: &Plan,
    rolled: &Rolled,
    query: &TimeSeriesQuery,
    usage: bool,
) -> Result<Vec<(i64, SeriesPoint)>, Error> {
    if plan.rollup.is_empty() {
        return Ok(Vec::new());
    }
    if query.resolution != Resolution::FiveMinutes {
        // Hourly (`plan` holds no rollup parts at other widths).
        return hourly_points(tx, this, plan, rolled, usage).await;
    }
    let (lo, hi) = span_bounds(plan);
    let sql = if usage {
        &this.sql.series_5min_usage
    } else {
        &this.sql.series_5min_perf
    };
    let stmt = prepare(tx, sql).await?;
    let rows = tx
        .query(&stmt, &[&lo, &hi])
        .await
        .map_err(|e| Error::db("reading rolled 5-minute buckets", e))?;
    Ok(rows
        .iter()
        .map(|r| series_point(r, usage))
        .filter(|(b, _)| in_rollup(plan, *b, 300))
        .collect())
}

/// The stored points of the rolled hours of `plan` (their `*` rows): from
/// the points cache when it holds the hour's current version, the rest
/// read (and cached; an hour without a `*` row is a zero point). A 90-day
/// hourly series is ~2,000 of them, and a refresh asks for the same ones.
pub(super) async fn hourly_points(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    plan: &Plan,
    rolled: &Rolled,
    usage: bool,
) -> Result<Vec<(i64, SeriesPoint)>, Error> {
    let (_, hours) = plan.days_and_hours(rolled, false);
    let mut out = Vec::with_capacity(hours.len());
    let mut missing = Vec::new();
    for &hour in &hours {
        let key = PointKey {
            usage,
            hour,
            version: rolled.hour_versions.get(&hour).copied().unwrap_or(0),
        };
        match this.points_cache.get(&key) {
            Some(p) => out.push((hour, (*p).clone())),
            None => missing.push(key),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let sql = if usage {
        &this.sql.series_hourly_usage
    } else {
        &this.sql.series_hourly_perf
    };
    let stmt = prepare(tx, sql).await?;
    let wanted: Vec<SystemTime> = missing.iter().map(|k| from_unix_secs(k.hour)).collect();
    let rows = tx
        .query(&stmt, &[&wanted])
        .await
        .map_err(|e| Error::db("reading rolled hourly points", e))?;
    let mut found: HashMap<i64, SeriesPoint> =
        rows.iter().map(|r| series_point(r, usage)).collect();
    for key in missing {
        let point = found.remove(&key.hour).unwrap_or(if usage {
            SeriesPoint::Usage(UsagePoint::default())
        } else {
            SeriesPoint::Performance(PerformancePoint::default())
        });
        if this.points_cache.is_enabled() {
            this.points_cache.insert(key, Arc::new(point.clone()));
        }
        out.push((key.hour, point));
    }
    Ok(out)
}

/// The time span of the plan's rollup parts, for a range scan.
pub(super) fn span_bounds(plan: &Plan) -> (SystemTime, SystemTime) {
    let lo = plan.rollup.first().map_or(0, |s| s.0);
    let hi = plan.rollup.last().map_or(0, |s| s.1);
    (from_unix_secs(lo), from_unix_secs(hi))
}

/// Whether the bucket `[start, start + width)` lies in a rollup part.
pub(super) fn in_rollup(plan: &Plan, start: i64, width: i64) -> bool {
    plan.rollup
        .iter()
        .any(|&(lo, hi)| lo <= start && start + width <= hi)
}
