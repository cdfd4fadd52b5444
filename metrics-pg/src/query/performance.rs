//! The performance report: the `*` rows of rolled buckets and raw pieces
//! give the summary, the per-(endpoint, method) rows the table; with an
//! `endpoint` filter, that route's rollup rows and raw groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use metrics_core::aggregate::{
    DEFAULT_EXACT_LIMIT, DistinctUsers, LatencySketch, PerformanceSummary,
};
use metrics_core::query::{
    EndpointMetrics, PerformanceMetrics, PerformanceQuery, PerformanceReport, sort_slowest_first,
};

use super::buckets::perf_buckets;
use super::cache::PerfBucket;
use super::decode::{decode_sketch, merge_users, times, to_u64};
use super::plan::Plan;
use super::rolled::plan;
use super::sql::{Sql, prepare};
use super::store::PgMetricsQuery;
use crate::error::Error;
use crate::tables::Kind;
use crate::units::HOUR;

/// One raw group of requests: its counts, its latencies as a sketch and
/// the users who sent them.
pub(super) struct RawGroup {
    endpoint: String,
    method: String,
    acc: PerformanceSummary,
}

/// The raw requests of `plan.raw`, per (endpoint, method) (only `endpoint`
/// if given), and their users. One set-based statement per raw span, all
/// pipelined.
pub(super) async fn raw_requests(
    tx: &Transaction<'_>,
    sql: &Sql,
    plan: &Plan,
    endpoint: Option<&str>,
) -> Result<(Vec<RawGroup>, DistinctUsers), Error> {
    let stmt = prepare(tx, &sql.perf_raw).await?;
    let results = futures_util::future::try_join_all(plan.raw.iter().map(|(lo, hi)| {
        let stmt = &stmt;
        async move { tx.query(stmt, &[lo, hi, &endpoint]).await }
    }))
    .await
    .map_err(|e| Error::db("reading raw requests", e))?;
    let mut groups = Vec::new();
    let mut users = DistinctUsers::new();
    for row in results.iter().flatten() {
        let mut sketch = LatencySketch::new();
        for v in row.get::<_, Vec<f64>>(4) {
            sketch.add(v);
        }
        let acc = PerformanceSummary::from_counts(sketch, to_u64(row.get(2)), to_u64(row.get(3)));
        for u in row.get::<_, Option<Vec<&str>>>(5).into_iter().flatten() {
            users.add(u);
        }
        groups.push(RawGroup {
            endpoint: row.get(0),
            method: row.get(1),
            acc,
        });
    }
    Ok((groups, users))
}

pub(super) async fn performance(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &PerformanceQuery,
) -> Result<PerformanceReport, Error> {
    let sql = &*this.sql;
    let (start, end) = (query.range.start(), query.range.end());
    let (plan, rolled) = plan(tx, sql, Kind::Performance, start, end, HOUR).await?;
    let (days, hours) = plan.days_and_hours(&rolled, true);
    // The raw spans and the rollups are read at once (pipelined).
    let mut users;
    let (total, keys) = match query.endpoint.as_deref() {
        Some(endpoint) => {
            let ((raw, raw_users), (keys, rolled_users)) = futures_util::future::try_join(
                raw_requests(tx, sql, &plan, Some(endpoint)),
                filtered_rollups(tx, sql, &days, &hours, endpoint),
            )
            .await?;
            users = raw_users;
            users.merge(&rolled_users);
            merge_filtered(keys, raw)
        }
        None => {
            let (pieces, mut buckets) = futures_util::future::try_join(
                this.raw_pieces(tx, &plan.raw, &rolled),
                perf_buckets(tx, this, &rolled, &days, &hours),
            )
            .await?;
            buckets.extend(pieces.into_iter().map(|p| p.bucket));
            users = DistinctUsers::new();
            merge_performance(&buckets, &[], &mut users)
        }
    };
    let mut endpoints: Vec<EndpointMetrics> = keys
        .into_iter()
        .map(|((endpoint, method), acc)| EndpointMetrics::from_summary(endpoint, method, &acc))
        .collect();
    sort_slowest_first(&mut endpoints);
    let metrics = PerformanceMetrics::from_summary(&total, users.estimate().value);
    Ok(PerformanceReport::new(metrics, endpoints))
}

pub(super) type KeyMap = BTreeMap<(String, String), PerformanceSummary>;

/// Merges rolled buckets and raw groups: the `*` parts (plus every raw
/// group) give the total, the other parts the table. A key whose window
/// holds at most the exact limit of samples merges exact sketches (exact
/// percentiles); larger windows merge the binned forms, which gives the
/// same histogram as adding every sample.
pub(super) fn merge_performance(
    buckets: &[Arc<PerfBucket>],
    raw: &[RawGroup],
    users: &mut DistinctUsers,
) -> (PerformanceSummary, KeyMap) {
    let mut window: HashMap<(&str, &str), u64> = HashMap::new();
    let mut window_all = 0u64;
    for b in buckets {
        for p in &b.parts {
            *window.entry((&p.endpoint, &p.method)).or_insert(0) += p.count;
        }
        window_all += b.all.as_ref().map_or(0, |p| p.count);
    }
    for g in raw {
        *window.entry((&g.endpoint, &g.method)).or_insert(0) += g.acc.count();
        window_all += g.acc.count();
    }
    let limit = DEFAULT_EXACT_LIMIT;
    let mut acc: HashMap<(&str, &str), PerformanceSummary> = HashMap::new();
    let mut total = PerformanceSummary::default();
    for b in buckets {
        for p in &b.parts {
            let key = (p.endpoint.as_str(), p.method.as_str());
            let n = window.get(&key).copied().unwrap_or(0);
            acc.entry(key)
                .or_default()
                .merge_counts(p.count, p.errors, p.sketch_for(n, limit));
        }
        if let Some(p) = &b.all {
            total.merge_counts(p.count, p.errors, p.sketch_for(window_all, limit));
        }
        if let Some(u) = &b.users {
            users.merge(u);
        }
    }
    for g in raw {
        total.merge(&g.acc);
        acc.entry((&g.endpoint, &g.method))
            .or_default()
            .merge(&g.acc);
    }
    let keys = acc
        .into_iter()
        .map(|((e, m), a)| ((e.to_owned(), m.to_owned()), a))
        .collect();
    (total, keys)
}

/// One route's rollup rows (all methods) and their users, read without the
/// cache: a handful of small rows per bucket.
pub(super) async fn filtered_rollups(
    tx: &Transaction<'_>,
    sql: &Sql,
    days: &[i64],
    hours: &[i64],
    endpoint: &str,
) -> Result<(KeyMap, DistinctUsers), Error> {
    let mut keys: KeyMap = BTreeMap::new();
    let mut users = DistinctUsers::new();
    if days.is_empty() && hours.is_empty() {
        return Ok((keys, users));
    }
    let stmt = prepare(tx, &sql.perf_rolled).await?;
    let rows = tx
        .query(&stmt, &[&times(days), &times(hours), &endpoint])
        .await
        .map_err(|e| Error::db("reading performance rollups", e))?;
    for row in &rows {
        let e: &str = row.get(0);
        let m: &str = row.get(1);
        let mut sketch = LatencySketch::new();
        let sketches: Vec<Option<&[u8]>> = row.get(4);
        for bytes in sketches.into_iter().flatten() {
            sketch.merge(&decode_sketch(bytes, "aggregated_metrics", e)?);
        }
        let acc = PerformanceSummary::from_counts(sketch, to_u64(row.get(2)), to_u64(row.get(3)));
        merge_users(&mut users, row.get(5), e)?;
        let _ = keys.insert((e.to_owned(), m.to_owned()), acc);
    }
    Ok((keys, users))
}

/// One route's rolled keys plus its raw groups; the summary is their merge.
pub(super) fn merge_filtered(mut keys: KeyMap, raw: Vec<RawGroup>) -> (PerformanceSummary, KeyMap) {
    for g in raw {
        keys.entry((g.endpoint, g.method))
            .or_default()
            .merge(&g.acc);
    }
    let mut total = PerformanceSummary::default();
    for acc in keys.values() {
        total.merge(acc);
    }
    (total, keys)
}
