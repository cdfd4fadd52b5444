//! [`PgMetricsQuery`]: the dashboard's questions answered from PostgreSQL by
//! merging rollups (closed, rolled-up hours) with raw rows (everything else).
//!
//! # Where each instant of a range `[s, e)` comes from
//!
//! Each metric type (performance, usage) is planned on its own, from the
//! rollup bookkeeping read in the query's own snapshot:
//!
//! 1. Hours `[H, H + 1 h)` inside the range that are in `rollup_hours` are
//!    *rolled*. Of those, whole UTC days inside the range with a
//!    `rollup_days` row are read from `aggregated_metrics_daily` (one row per
//!    key and day instead of 24); the other rolled hours from
//!    `aggregated_metrics`.
//! 2. Every other part of the range — the open hour, closed hours the rollup
//!    job has not reached yet, and the partial first and last hour of a range
//!    that does not start or end on the hour — is read from the raw tables
//!    over exactly that sub-interval.
//! 3. The one approximation: a partial edge hour that is rolled but whose
//!    raw rows are gone (older than the 7-day raw retention) is read from its
//!    whole hourly row. So a range older than 7 days that starts or ends
//!    mid-hour may count up to one extra partial hour at each edge; ranges
//!    within the last 7 days are exact.
//!
//! Rollups and raw parts never overlap, so nothing is counted twice, and the
//! whole query runs in one read-only `REPEATABLE READ` transaction, so the
//! bookkeeping and the rows it points at are from the same snapshot even
//! while the rollup job commits a new hour.
//!
//! # How each answer is assembled
//!
//! * **raw requests** are read as 5-minute *pieces* (`raw.rs`): each whole
//!   slot inside a raw span, and the partial slots at the span's edges. A
//!   whole slot of the open (not rolled) hour is cached decoded (per-key
//!   counts and sketches, the all-endpoints sketch, its users) under its
//!   row count: every query counts the rows of those slots in its snapshot
//!   (a scan of one column, on two connections) and streams only slots
//!   whose count changed, plus the edge slots. Raw tables are append-only
//!   (the sink only inserts; retention drops whole rolled days), so an
//!   equal count means the same rows. Slots of a *rolled* hour (the partial
//!   first hour of a range read raw) are cached under the hour's rollup
//!   version instead, with no count, and an edge there is cut from the
//!   slot's cached rows: they follow the hour's rollup, which the job
//!   redoes when late rows arrive (so a late row in such an hour counts
//!   after the re-roll, as it does for the rest of the hour).
//! * **performance**: the `*` (all endpoints) rows give the summary, the
//!   per-(endpoint, method) rows the table; their latency sketches are
//!   decoded and merged ([`LatencySketch::merge`]: percentiles keep the
//!   sketch's guarantee, exact while a key holds at most 1,000 samples),
//!   counts and error counts are read as plain columns; decoded buckets are
//!   kept in a bounded cache keyed by their rollup version
//!   ([`PgMetricsQuery::cache_bytes`]). Raw pieces merge in as more
//!   buckets (with the `endpoint` filter: one set-based `GROUP BY endpoint,
//!   method` returning the latencies as an array). `active_users` merges
//!   the users sketches of both. The `endpoint` filter restricts all of it
//!   to that route's rows.
//! * **usage**: per-type rows give `event_distribution`; the `*` rows (or the
//!   type's rows, with the `event_type` filter) the totals and unique users;
//!   the `page_view` rows the page views (raw events count by page only when
//!   they are page views); `active_users` merges the users sketches of the performance
//!   and usage `*` rows (cached by rollup version) plus the raw pieces'
//!   users and the raw events' users; `active_users_current_hour` reads
//!   `[floor_hour(now), now]` from the same raw pieces and events. Raw
//!   events are streamed in one `COPY` for all of that, on a second
//!   connection.
//! * **time series**: the series covers whole UTC buckets from the bucket
//!   holding `s`. At 5 minutes, rolled hours are read from
//!   `aggregated_metrics_5min` (whole slots), at one hour from the hourly
//!   `*` rows (cached by rollup version); each such bucket is exactly one
//!   stored row, whose stored values are the point. Raw request buckets
//!   merge the raw pieces inside them; raw usage buckets are grouped in
//!   SQL. Buckets without data are zeros; a range without any data is an
//!   empty list.
//! * **user_event_count**: raw `usage_events` only (rollups keep no per-user
//!   counts), so the count covers the raw retention (7 days).
//! * **filtered time series** (`endpoint` / `method`, the drill-down): the
//!   performance buckets of rolled hours come from the per-(endpoint,
//!   method) hourly rows (one row is the point; several are merged), all
//!   other buckets, and every 5-minute bucket, from raw rows grouped in SQL
//!   through the `(endpoint, "timestamp")` index; usage buckets as above.
//!   See `drill.rs`.
//! * **slowest_requests**: the top rows of the window by the
//!   `(endpoint, response_time_ms DESC)` index, and the status codes planned
//!   like the performance report (rollups' `status_code_distribution` for
//!   rolled hours and days, raw rows for the rest). See `drill.rs`.
//!
//! Statements are prepared once per connection (`prepare_cached`); every
//! query sets its `statement_timeout` with `SET LOCAL`.

/// Evaluates `$body` (an expression that may use `.await` and `?`) with
/// `$t` bound to a read-only transaction of its own on a spare connection
/// (same isolation and statement timeout as [`PgMetricsQuery::read`]'s), so
/// the server works on it beside the query's other statements; or bound to
/// `$tx` when no connection is free right away. Gives `Result<_, Error>`.
/// Only for reads whose rows are disjoint from the rest of the query's: a
/// second snapshot can then only see rows that arrived meanwhile, never
/// count one twice. (A macro, not a method taking an async closure: such a
/// closure borrowing the query makes the trait's futures lose `Send`.)
macro_rules! beside {
    ($this:expr, $tx:expr, |$t:ident| $body:expr) => {{
        let this: &PgMetricsQuery = $this;
        match this.spare_connection().await {
            Some(mut conn) => {
                let run = async {
                    let side = this.side_transaction(&mut conn).await?;
                    let out = {
                        let $t = &side;
                        $body
                    };
                    side.commit()
                        .await
                        .map_err(|e| Error::db("ending a read-only transaction", e))?;
                    Ok::<_, Error>(out)
                };
                let result = run.await;
                if let Err(e) = &result {
                    $crate::conn::release_after_error(conn, e);
                }
                result
            }
            None => {
                async {
                    let $t = $tx;
                    Ok::<_, Error>($body)
                }
                .await
            }
        }
    }};
}

mod cache;
mod decode;
mod drill;
mod plan;
mod raw;
mod rolled;
mod scan;
mod sql;
mod store;

pub use self::store::PgMetricsQuery;

use self::decode::{decode_sketch, decode_users, merge_users, stored_point, times, to_u64};
use self::rolled::{plan, series_plan};
use self::sql::{Sql, prepare, prepare_all};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use metrics_core::aggregate::{
    DEFAULT_EXACT_LIMIT, DistinctUsers, LatencySketch, PerformanceSummary, Resolution, TimeRange,
};
use metrics_core::query::{
    DataPoint, EndpointMetrics, MetricsQuery, PAGE_VIEW, PerformanceMetrics, PerformancePoint,
    PerformanceQuery, PerformanceReport, QueryError, SlowRequests, SlowRequestsQuery, TimeSeries,
    TimeSeriesQuery, UsageMetrics, UsagePoint, UsageQuery, UsageReport, sort_slowest_first,
};
use tokio_postgres::types::ToSql;

use self::cache::{BucketKey, Part, PerfBucket, PointKey, SeriesPoint, Table, UsersKey};
use self::plan::{Plan, Rolled};
use crate::error::Error;
use crate::tables::{ALL, Kind};
use crate::units::{HOUR, floor_time, from_unix_secs, unix_secs};

#[async_trait]
impl MetricsQuery for PgMetricsQuery {
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        self.read(async |tx, this| performance(tx, this, query).await)
            .await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError> {
        self.read(async |tx, this| usage(tx, this, query).await)
            .await
    }

    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        query.check()?;
        self.read(async |tx, this| time_series(tx, this, query).await)
            .await
    }

    /// Reads raw rows of the window (the range clipped to the raw
    /// retention) for the list, rollups and raw rows for the status codes;
    /// see the `drill` module documentation.
    async fn slowest_requests(
        &self,
        query: &SlowRequestsQuery,
    ) -> Result<SlowRequests, QueryError> {
        let (lo, hi) = query.window();
        if lo >= hi {
            return Ok(SlowRequests::default());
        }
        self.read(async |tx, this| drill::slowest_requests(tx, this, query, lo, hi).await)
            .await
    }

    /// Counts raw `usage_events` only: rollups keep no per-user counts, so
    /// for ranges longer than the raw retention (7 days) this is the count
    /// of the last 7 days of the range.
    async fn user_event_count(&self, user_id: &str, range: &TimeRange) -> Result<u64, QueryError> {
        self.read(async |tx, this| {
            let stmt = prepare(tx, &this.sql.user_event_count).await?;
            let row = tx
                .query_one(&stmt, &[&user_id, &range.start(), &range.end()])
                .await
                .map_err(|e| Error::db("counting a user's events", e))?;
            Ok(to_u64(row.get::<_, i64>(0)))
        })
        .await
    }
}

// ===== the queries =====

/// One raw group of requests: its counts, its latencies as a sketch and
/// the users who sent them.
struct RawGroup {
    endpoint: String,
    method: String,
    acc: PerformanceSummary,
}

/// The raw requests of `plan.raw`, per (endpoint, method) (only `endpoint`
/// if given), and their users. One set-based statement per raw span, all
/// pipelined.
async fn raw_requests(
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

async fn performance(
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

type KeyMap = BTreeMap<(String, String), PerformanceSummary>;

/// The cache key of a rolled bucket at its current version.
fn bucket_key(rolled: &Rolled, table: Table, start: i64) -> BucketKey {
    BucketKey {
        table,
        start,
        version: match table {
            Table::Daily => rolled.day_versions.get(&start).copied().unwrap_or(0),
            Table::Hourly => rolled.hour_versions.get(&start).copied().unwrap_or(0),
            Table::RawSlot | Table::RawSlotOfRolledHour => 0,
        },
    }
}

/// The rolled buckets of one metric type, as (table, start) pairs.
struct RolledBuckets<'a> {
    rolled: &'a Rolled,
    days: &'a [i64],
    hours: &'a [i64],
}

impl RolledBuckets<'_> {
    fn keys(&self) -> impl Iterator<Item = BucketKey> + '_ {
        self.days
            .iter()
            .map(|&d| bucket_key(self.rolled, Table::Daily, d))
            .chain(
                self.hours
                    .iter()
                    .map(|&h| bucket_key(self.rolled, Table::Hourly, h)),
            )
    }
}

/// The merged `*` users sketches of the rolled performance and usage
/// buckets: from the bucket cache or the users cache when they hold the
/// bucket's current version, the rest read (and cached).
async fn star_users(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    perf: &RolledBuckets<'_>,
    usage: &RolledBuckets<'_>,
) -> Result<(DistinctUsers, DistinctUsers), Error> {
    let (mut perf_users, mut usage_users) = (DistinctUsers::new(), DistinctUsers::new());
    let mut missing: Vec<UsersKey> = Vec::new();
    for (is_usage, buckets) in [(false, perf), (true, usage)] {
        let into = if is_usage {
            &mut usage_users
        } else {
            &mut perf_users
        };
        for bucket in buckets.keys() {
            if !is_usage {
                if let Some(b) = this.cache.get(&bucket) {
                    if let Some(u) = &b.users {
                        into.merge(u);
                    }
                    continue;
                }
            }
            let key = UsersKey {
                usage: is_usage,
                bucket,
            };
            match this.users_cache.get(&key) {
                Some(u) => into.merge(&u),
                None => missing.push(key),
            }
        }
    }
    if missing.is_empty() {
        return Ok((perf_users, usage_users));
    }
    let pick = |usage: bool, table: Table| -> Vec<SystemTime> {
        missing
            .iter()
            .filter(|k| k.usage == usage && k.bucket.table == table)
            .map(|k| from_unix_secs(k.bucket.start))
            .collect()
    };
    let stmt = prepare(tx, &this.sql.star_users).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &pick(false, Table::Daily),
                &pick(false, Table::Hourly),
                &pick(true, Table::Daily),
                &pick(true, Table::Hourly),
            ],
        )
        .await
        .map_err(|e| Error::db("reading rolled users", e))?;
    let mut found: HashMap<(bool, Table, i64), DistinctUsers> = HashMap::new();
    for row in &rows {
        let is_usage: bool = row.get(0);
        let table = if row.get::<_, bool>(1) {
            Table::Hourly
        } else {
            Table::Daily
        };
        let users = match row.get::<_, Option<&[u8]>>(3) {
            Some(bytes) => decode_users(bytes, table_name(table), ALL)?,
            None => DistinctUsers::new(),
        };
        let _ = found.insert((is_usage, table, row.get(2)), users);
    }
    for key in missing {
        let users = found
            .remove(&(key.usage, key.bucket.table, key.bucket.start))
            .unwrap_or_default();
        if key.usage {
            usage_users.merge(&users);
        } else {
            perf_users.merge(&users);
        }
        if this.users_cache.is_enabled() {
            this.users_cache.insert(key, Arc::new(users));
        }
    }
    Ok((perf_users, usage_users))
}

/// The decoded performance buckets of `days` and `hours`: from the cache
/// when it holds their current version, else read (and cached).
async fn perf_buckets(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    rolled: &Rolled,
    days: &[i64],
    hours: &[i64],
) -> Result<Vec<Arc<PerfBucket>>, Error> {
    let wanted: Vec<BucketKey> = RolledBuckets {
        rolled,
        days,
        hours,
    }
    .keys()
    .collect();
    let mut out = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for k in wanted {
        match this.cache.get(&k) {
            Some(b) => out.push(b),
            None => missing.push(k),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let pick = |table| -> Vec<SystemTime> {
        missing
            .iter()
            .filter(|k| k.table == table)
            .map(|k| from_unix_secs(k.start))
            .collect()
    };
    let stmt = prepare(tx, &this.sql.perf_buckets).await?;
    let rows = tx
        .query(&stmt, &[&pick(Table::Daily), &pick(Table::Hourly)])
        .await
        .map_err(|e| Error::db("reading performance rollups", e))?;
    let mut built: HashMap<(Table, i64), PerfBucket> = HashMap::new();
    for row in &rows {
        let table = if row.get::<_, bool>(0) {
            Table::Hourly
        } else {
            Table::Daily
        };
        let (endpoint, method): (String, String) = (row.get(2), row.get(3));
        let bytes: Option<&[u8]> = row.get(6);
        let stored = match bytes {
            Some(b) => decode_sketch(b, table_name(table), &endpoint)?,
            None => LatencySketch::new(),
        };
        let part = Part::new(
            endpoint,
            method,
            to_u64(row.get(4)),
            to_u64(row.get::<_, Option<i64>>(5).unwrap_or(0)),
            stored,
        );
        let bucket = built.entry((table, row.get(1))).or_default();
        if part.endpoint == ALL && part.method == ALL {
            if let Some(u) = row.get::<_, Option<&[u8]>>(7) {
                bucket.users = Some(decode_users(u, table_name(table), ALL)?);
            }
            bucket.all = Some(part);
        } else {
            bucket.parts.push(part);
        }
    }
    for k in missing {
        let bucket = Arc::new(built.remove(&(k.table, k.start)).unwrap_or_default());
        if this.cache.is_enabled() {
            this.cache.insert(k, Arc::clone(&bucket));
        }
        out.push(bucket);
    }
    Ok(out)
}

fn table_name(table: Table) -> &'static str {
    match table {
        Table::Hourly => "aggregated_metrics",
        Table::Daily => "aggregated_metrics_daily",
        Table::RawSlot | Table::RawSlotOfRolledHour => "performance_metrics",
    }
}

/// Merges rolled buckets and raw groups: the `*` parts (plus every raw
/// group) give the total, the other parts the table. A key whose window
/// holds at most the exact limit of samples merges exact sketches (exact
/// percentiles); larger windows merge the binned forms, which gives the
/// same histogram as adding every sample.
fn merge_performance(
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
async fn filtered_rollups(
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
fn merge_filtered(mut keys: KeyMap, raw: Vec<RawGroup>) -> (PerformanceSummary, KeyMap) {
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

async fn usage(
    tx: &Transaction<'_>,
    this: &PgMetricsQuery,
    query: &UsageQuery,
) -> Result<UsageReport, Error> {
    use futures_util::future::{try_join, try_join4};

    let sql = &*this.sql;
    let (start, end) = (query.range.start(), query.range.end());
    let event_type = query.event_type.as_deref();
    let ((uplan, urolled), (pplan, prolled)) = try_join(
        plan(tx, sql, Kind::Usage, start, end, HOUR),
        plan(tx, sql, Kind::Performance, start, end, HOUR),
    )
    .await?;
    let (udays, uhours) = uplan.days_and_hours(&urolled, true);
    let (pdays, phours) = pplan.days_and_hours(&prolled, true);
    let has_usage_rollups = !udays.is_empty() || !uhours.is_empty();
    let hour_start = from_unix_secs(floor_time(query.now, HOUR));

    let [s_rolled, s_pages] = prepare_all(tx, [&sql.usage_rolled, &sql.usage_pages]).await?;
    let (udays_t, uhours_t) = (times(&udays), times(&uhours));
    // Every statement below is independent: they go out together and the
    // driver pipelines them on the connection.
    let rolled = async {
        if !has_usage_rollups {
            return Ok(None);
        }
        let params: [&(dyn ToSql + Sync); 3] = [&udays_t, &uhours_t, &event_type];
        try_join(tx.query(&s_rolled, &params), tx.query(&s_pages, &params))
            .await
            .map(Some)
            .map_err(|e| Error::db("reading usage rollups", e))
    };
    let (perf_rolled, usage_rolled) = (
        RolledBuckets {
            rolled: &prolled,
            days: &pdays,
            hours: &phours,
        },
        RolledBuckets {
            rolled: &urolled,
            days: &udays,
            hours: &uhours,
        },
    );
    let star = star_users(tx, this, &perf_rolled, &usage_rolled);
    // Raw rows of both tables over their raw spans and the current hour
    // `[hour_start, now]`: the union of both, cut where either starts or
    // ends, so each part lies wholly inside or outside each.
    let window = (hour_start, query.now + Duration::from_micros(1));
    let request_parts = cut_spans(&pplan.raw, window);
    let request_spans: Vec<(SystemTime, SystemTime)> =
        request_parts.iter().map(|p| (p.0, p.1)).collect();
    let event_parts = cut_spans(&uplan.raw, window);
    let event_spans: Vec<(SystemTime, SystemTime)> =
        event_parts.iter().map(|p| (p.0, p.1)).collect();
    let (rolled, (perf_users, usage_users), events, pieces) = try_join4(
        rolled,
        star,
        async {
            beside!(this, tx, |t| scan::stream_events(
                t,
                &this.schema,
                &event_spans,
                event_type
            )
            .await?)
        },
        this.raw_pieces(tx, &request_spans, &prolled),
    )
    .await?;

    let mut report = UsageReport::default();
    let mut total = 0u64;
    let mut unique = DistinctUsers::new();
    let mut active = DistinctUsers::new();
    let mut current_users = DistinctUsers::new();
    if let Some((rows, pages)) = &rolled {
        for row in rows {
            let t: &str = row.get(0);
            let n = to_u64(row.get(1));
            if t == ALL {
                total += n;
            } else {
                add_to(&mut report.event_distribution, t, n);
                if event_type.is_some() {
                    total += n;
                    merge_users(&mut unique, row.get(2), t)?;
                }
            }
        }
        for row in pages {
            add_to(&mut report.page_views, row.get(0), to_u64(row.get(1)));
        }
    }
    // The `*` users of both tables: active users, and (without a type
    // filter) the unique users of the events.
    active.merge(&perf_users);
    active.merge(&usage_users);
    if event_type.is_none() {
        unique.merge(&usage_users);
    }
    for (part, &(_, _, in_range, in_hour)) in events.iter().zip(&event_parts) {
        if in_range {
            for ((t, page), &n) in &part.counts {
                total += n;
                add_to(&mut report.event_distribution, t, n);
                if let (PAGE_VIEW, Some(page)) = (t.as_str(), page) {
                    add_to(&mut report.page_views, page, n);
                }
            }
            active.merge(&part.users);
            unique.merge(&part.users_of_type);
        }
        if in_hour {
            current_users.merge(&part.users);
        }
    }
    for piece in &pieces {
        let (_, _, in_range, in_hour) = request_parts[piece.span];
        if let Some(users) = &piece.bucket.users {
            if in_range {
                active.merge(users);
            }
            if in_hour {
                current_users.merge(users);
            }
        }
    }

    report.metrics = UsageMetrics::new(
        total,
        unique.estimate().value,
        active.estimate().value,
        current_users.estimate().value,
    );
    Ok(report)
}

async fn time_series(
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
fn any_data(perf: &[Option<PerformancePoint>], usage: &[Option<UsagePoint>]) -> bool {
    perf.iter()
        .any(|p| p.as_ref().is_some_and(|p| p.total_requests > 0))
        || usage
            .iter()
            .any(|u| u.as_ref().is_some_and(|u| u.total_events > 0))
}

fn usage_point(r: &tokio_postgres::Row) -> (i64, UsagePoint) {
    (
        r.get(0),
        UsagePoint::new(
            to_u64(r.get(1)),
            to_u64(r.get::<_, Option<i64>>(2).unwrap_or(0)),
        ),
    )
}

/// A stored `*` row of either series as a point.
fn series_point(r: &tokio_postgres::Row, usage: bool) -> (i64, SeriesPoint) {
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
async fn series_rolled(
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
async fn hourly_points(
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

/// The union of the disjoint, ascending `spans` and `window`, cut at every
/// bound of either: `(lo, hi, inside spans, inside window)`, ascending.
fn cut_spans(
    spans: &[(SystemTime, SystemTime)],
    window: (SystemTime, SystemTime),
) -> Vec<(SystemTime, SystemTime, bool, bool)> {
    let mut cuts: Vec<SystemTime> = spans.iter().flat_map(|&(lo, hi)| [lo, hi]).collect();
    if window.0 < window.1 {
        cuts.extend([window.0, window.1]);
    }
    cuts.sort();
    cuts.dedup();
    cuts.windows(2)
        .filter_map(|w| {
            let (lo, hi) = (w[0], w[1]);
            let in_spans = spans.iter().any(|&(a, b)| a <= lo && hi <= b);
            let in_window = window.0 <= lo && hi <= window.1;
            (in_spans || in_window).then_some((lo, hi, in_spans, in_window))
        })
        .collect()
}

/// The time span of the plan's rollup parts, for a range scan.
fn span_bounds(plan: &Plan) -> (SystemTime, SystemTime) {
    let lo = plan.rollup.first().map_or(0, |s| s.0);
    let hi = plan.rollup.last().map_or(0, |s| s.1);
    (from_unix_secs(lo), from_unix_secs(hi))
}

/// Whether the bucket `[start, start + width)` lies in a rollup part.
fn in_rollup(plan: &Plan, start: i64, width: i64) -> bool {
    plan.rollup
        .iter()
        .any(|&(lo, hi)| lo <= start && start + width <= hi)
}

fn add_to(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            let _ = map.insert(key.to_owned(), n);
        }
    }
}
