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
//! * **performance**: the `*` (all endpoints) rows give the summary, the
//!   per-(endpoint, method) rows the table; their latency sketches are
//!   decoded and merged ([`LatencySketch::merge`]: percentiles keep the
//!   sketch's guarantee, exact while a key holds at most 1,000 samples),
//!   counts and error counts are summed in SQL. Raw parts come from one
//!   set-based `GROUP BY endpoint, method` per raw span returning the
//!   latencies as an array, added to the same sketches. `active_users` merges
//!   the users sketches (plus the raw rows' distinct users). The `endpoint`
//!   filter restricts all of it to that route's rows.
//! * **usage**: per-type rows give `event_distribution`; the `*` rows (or the
//!   type's rows, with the `event_type` filter) the totals, unique users and
//!   page views; `active_users` merges the users sketches of the performance
//!   and usage `*` rows (plus raw distinct users of both tables);
//!   `active_users_current_hour` is read raw over `[floor_hour(now), now]`.
//! * **time series**: the series covers whole UTC buckets from the bucket
//!   holding `s`. At 5 minutes, rolled hours are read from
//!   `aggregated_metrics_5min` (whole slots), at one hour from the hourly
//!   `*` rows; each such bucket is exactly one stored row, whose stored
//!   values are the point. Raw parts are grouped per bucket in SQL. Buckets
//!   without data are zeros; a range without any data is an empty list.
//! * **user_event_count**: raw `usage_events` only (rollups keep no per-user
//!   counts), so the count covers the raw retention (7 days).
//!
//! Statements are prepared once per connection (`prepare_cached`); every
//! query sets its `statement_timeout` with `SET LOCAL`.

mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError, Transaction};
use metrics_core::aggregate::{DistinctUsers, LatencySketch, Resolution, TimeRange};
use metrics_core::query::{
    DataPoint, EndpointMetrics, MetricsQuery, PerformanceMetrics, PerformancePoint,
    PerformanceQuery, PerformanceReport, QueryError, TimeSeries, TimeSeriesQuery, UsageMetrics,
    UsagePoint, UsageQuery, UsageReport, sort_slowest_first,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use self::plan::{HOUR, Plan, Rolled, floor_time};
use crate::error::{Error, pg_error_is_retryable};
use crate::job::{from_unix_secs, unix_secs};
use crate::rollup::{ALL, Kind};
use crate::schema::SchemaName;

/// Added to the statement timeout for the client-side deadline of a whole
/// query: the server gives up first; this catches a peer that vanished
/// without closing the socket.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// How often a connection found closed right after leaving the pool is
/// replaced before giving up.
const MAX_CLOSED_CONNECTIONS_SKIPPED: usize = 3;

/// The dashboard queries ([`MetricsQuery`]) over the tables of a
/// [`PgSink`](crate::PgSink) and its [`RollupJob`](crate::RollupJob): closed,
/// rolled-up hours come from the rollups (merged sketches; whole days from
/// the daily rollups), everything else from raw rows, never both. The module
/// documentation of `metrics_pg::query` (this file's source) spells out the
/// algorithm.
///
/// Each query is one read-only `REPEATABLE READ` transaction on a pooled
/// connection with a server-side `statement_timeout` (default 10 s,
/// [`statement_timeout`](Self::statement_timeout)). Errors map to
/// [`QueryError`]: the timeout (SQLSTATE 57014) to
/// [`Timeout`](QueryError::Timeout), connection and pool failures to
/// [`Unavailable`](QueryError::Unavailable), anything else (a rollup row that
/// cannot be decoded, a schema that was never migrated) to
/// [`Internal`](QueryError::Internal).
///
/// `user_event_count` reads raw `usage_events` only (rollups keep no
/// per-user counts), so it counts the events of the raw retention (7 days)
/// even for longer ranges.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::{Duration, SystemTime};
/// use metrics_core::aggregate::{Preset, TimeRange};
/// use metrics_core::query::{MetricsQuery, PerformanceQuery};
/// use metrics_pg::PgMetricsQuery;
///
/// let pool = metrics_pg::create_pool("postgres://app@localhost/app", 4)?;
/// let queries = PgMetricsQuery::new(pool, "app_metrics")?
///     .statement_timeout(Duration::from_secs(5));
/// let now = SystemTime::now();
/// let range = TimeRange::preset(Preset::Last7Days, now);
/// let report = queries.performance(&PerformanceQuery::new(range, now)).await?;
/// println!(
///     "{} requests, p95 {:.1} ms, {} users",
///     report.metrics.total_requests,
///     report.metrics.p95_response_time_ms,
///     report.metrics.active_users
/// );
/// for row in &report.endpoints {
///     println!("{} {} p95 {:.1} ms", row.method, row.endpoint, row.p95_response_time_ms);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgMetricsQuery {
    pool: Pool,
    schema: SchemaName,
    statement_timeout: Duration,
    sql: Arc<Sql>,
}

/// The SQL text of every statement, qualified with the schema once.
#[derive(Debug)]
struct Sql {
    rolled_hours: String,
    rolled_days: String,
    perf_rolled: String,
    perf_raw: String,
    perf_raw_users: String,
    usage_rolled: String,
    usage_pages: String,
    star_users: String,
    usage_raw: String,
    usage_raw_users: String,
    current_hour_users: String,
    series_hourly_perf: String,
    series_hourly_usage: String,
    series_5min_perf: String,
    series_5min_usage: String,
    series_raw_perf: String,
    series_raw_usage: String,
    user_event_count: String,
}

/// Count, error count and merged latency sketch of one key.
#[derive(Debug, Default)]
struct PerfAcc {
    count: u64,
    errors: u64,
    sketch: LatencySketch,
}

impl PerfAcc {
    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.errors += other.errors;
        self.sketch.merge(&other.sketch);
    }

    fn quantile(&self, q: f64) -> f64 {
        self.sketch.quantile(q).map_or(0.0, |e| e.value)
    }

    fn error_rate(&self) -> f64 {
        ratio(self.errors, self.count)
    }
}

// ===== impl PgMetricsQuery =====

impl PgMetricsQuery {
    /// The default server-side statement timeout of each query.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Queries over the tables in `schema` (the schema given to
    /// [`migrate`](crate::migrate) and the sink), on connections of `pool`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSchemaName`] when `schema` is not a plain lower-case
    /// identifier.
    pub fn new(pool: Pool, schema: &str) -> Result<Self, Error> {
        let schema = SchemaName::new(schema)?;
        let sql = Arc::new(Sql::new(&schema));
        Ok(Self {
            pool,
            schema,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            sql,
        })
    }

    /// Server-side `statement_timeout` of every statement of a query
    /// (default 10 s; at least 1 ms). A query cancelled by it answers
    /// [`QueryError::Timeout`] with this limit.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.statement_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// The schema queried.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Runs `body` in a read-only `REPEATABLE READ` transaction with the
    /// statement timeout set, mapping every failure to a [`QueryError`].
    async fn read<T>(
        &self,
        body: impl AsyncFnOnce(&Transaction<'_>, &Sql) -> Result<T, Error>,
    ) -> Result<T, QueryError> {
        let limit = self.statement_timeout;
        let mut conn = self.acquire().await.map_err(|e| to_query_error(e, limit))?;
        let deadline = limit + CLIENT_DEADLINE_MARGIN;
        let run = async {
            let tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| Error::db("starting a read-only transaction", e))?;
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                limit.as_millis().max(1)
            ))
            .await
            .map_err(|e| Error::db("setting statement_timeout", e))?;
            let out = body(&tx, &self.sql).await?;
            tx.commit()
                .await
                .map_err(|e| Error::db("ending a read-only transaction", e))?;
            Ok::<T, Error>(out)
        };
        let result = match tokio::time::timeout(deadline, run).await {
            Ok(r) => r,
            Err(_elapsed) => Err(Error::Timeout(deadline)),
        };
        if let Err(e) = &result {
            // A connection that broke, or that we stopped waiting for, goes
            // away instead of back to the pool; a server-side error (the
            // timeout included) leaves it usable once the rollback ran.
            if e.code().is_none() {
                drop(Object::take(conn));
            }
        }
        result.map_err(|e| to_query_error(e, limit))
    }

    async fn acquire(&self) -> Result<Object, Error> {
        let wait = self.statement_timeout;
        for _ in 0..MAX_CLOSED_CONNECTIONS_SKIPPED {
            // Our own timeout: the pool may have been built without one.
            let conn = match tokio::time::timeout(wait, self.pool.get()).await {
                Err(_) | Ok(Err(PoolError::Timeout(_))) => return Err(Error::PoolTimeout(wait)),
                Ok(Err(e)) => return Err(Error::Pool(e)),
                Ok(Ok(conn)) => conn,
            };
            if conn.is_closed() {
                drop(Object::take(conn));
                continue;
            }
            return Ok(conn);
        }
        Err(Error::PoolTimeout(wait))
    }
}

fn to_query_error(e: Error, limit: Duration) -> QueryError {
    match &e {
        Error::Timeout(_) => QueryError::Timeout(limit),
        Error::Db { source, .. } if source.code() == Some(&SqlState::QUERY_CANCELED) => {
            QueryError::Timeout(limit)
        }
        Error::Db { source, .. } if pg_error_is_retryable(source) => {
            QueryError::Unavailable(Box::new(e))
        }
        Error::PoolTimeout(_) | Error::Pool(_) => QueryError::Unavailable(Box::new(e)),
        _ => QueryError::Internal(Box::new(e)),
    }
}

#[async_trait]
impl MetricsQuery for PgMetricsQuery {
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        self.read(async |tx, sql| performance(tx, sql, query).await)
            .await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError> {
        self.read(async |tx, sql| usage(tx, sql, query).await).await
    }

    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        self.read(async |tx, sql| time_series(tx, sql, query).await)
            .await
    }

    /// Counts raw `usage_events` only: rollups keep no per-user counts, so
    /// for ranges longer than the raw retention (7 days) this is the count
    /// of the last 7 days of the range.
    async fn user_event_count(&self, user_id: &str, range: &TimeRange) -> Result<u64, QueryError> {
        self.read(async |tx, sql| {
            let stmt = prepare(tx, &sql.user_event_count).await?;
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

async fn prepare(tx: &Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, Error> {
    tx.prepare_cached(sql)
        .await
        .map_err(|e| Error::db("preparing a dashboard query", e))
}

/// The rollup bookkeeping of `kind` for the hours overlapping `[start, end)`.
async fn rolled(
    tx: &Transaction<'_>,
    sql: &Sql,
    kind: Kind,
    start: SystemTime,
    end: SystemTime,
) -> Result<Rolled, Error> {
    let lo = from_unix_secs(floor_time(start, HOUR));
    let hours_stmt = prepare(tx, &sql.rolled_hours).await?;
    let days_stmt = prepare(tx, &sql.rolled_days).await?;
    let params: [&(dyn ToSql + Sync); 3] = [&kind.metric_type(), &lo, &end];
    // Both go out at once (the driver pipelines them on the connection).
    let (hours, days) = futures_util::future::try_join(
        tx.query(&hours_stmt, &params),
        tx.query(&days_stmt, &params),
    )
    .await
    .map_err(|e| Error::db("reading the rollup bookkeeping", e))?;
    Ok(Rolled {
        hours: hours
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1)))
            .collect(),
        days: days.iter().map(|r| r.get::<_, i64>(0)).collect(),
    })
}

/// The plan of `kind` over `[start, end)` read from rollups at `unit`.
async fn plan(
    tx: &Transaction<'_>,
    sql: &Sql,
    kind: Kind,
    start: SystemTime,
    end: SystemTime,
    unit: i64,
) -> Result<(Plan, Rolled), Error> {
    let rolled = rolled(tx, sql, kind, start, end).await?;
    Ok((Plan::new(start, end, &rolled, unit), rolled))
}

/// The plan of a time series: rollup rows exist only at 5 minutes and one
/// hour; any other width reads raw rows only.
async fn series_plan(
    tx: &Transaction<'_>,
    sql: &Sql,
    kind: Kind,
    start: SystemTime,
    end: SystemTime,
    width: i64,
) -> Result<(Plan, Rolled), Error> {
    if width == 300 || width == HOUR {
        plan(tx, sql, kind, start, end, width).await
    } else {
        let none = Rolled::default();
        Ok((Plan::new(start, end, &none, width), none))
    }
}

fn times(secs: &[i64]) -> Vec<SystemTime> {
    secs.iter().map(|&s| from_unix_secs(s)).collect()
}

fn decode_sketch(bytes: &[u8], table: &'static str, key: &str) -> Result<LatencySketch, Error> {
    LatencySketch::from_bytes(bytes).map_err(|e| corrupt(table, key, &e))
}

fn decode_users(bytes: &[u8], table: &'static str, key: &str) -> Result<DistinctUsers, Error> {
    DistinctUsers::from_bytes(bytes).map_err(|e| corrupt(table, key, &e))
}

fn corrupt(table: &'static str, key: &str, e: &dyn std::fmt::Display) -> Error {
    Error::CorruptRollup {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

/// Merges every non-null users sketch of `arr` into `users`.
fn merge_users(
    users: &mut DistinctUsers,
    arr: Option<Vec<Option<&[u8]>>>,
    key: &str,
) -> Result<(), Error> {
    for bytes in arr.into_iter().flatten().flatten() {
        users.merge(&decode_users(bytes, "aggregated_metrics", key)?);
    }
    Ok(())
}

async fn performance(
    tx: &Transaction<'_>,
    sql: &Sql,
    query: &PerformanceQuery,
) -> Result<PerformanceReport, Error> {
    let (start, end) = (query.range.start(), query.range.end());
    let (plan, rolled) = plan(tx, sql, Kind::Performance, start, end, HOUR).await?;
    let (days, hours) = plan.days_and_hours(&rolled, true);
    let endpoint = query.endpoint.as_deref();

    let mut keys: BTreeMap<(String, String), PerfAcc> = BTreeMap::new();
    let mut total = PerfAcc::default();
    let mut users = DistinctUsers::new();

    if !days.is_empty() || !hours.is_empty() {
        let stmt = prepare(tx, &sql.perf_rolled).await?;
        let rows = tx
            .query(&stmt, &[&times(&days), &times(&hours), &endpoint])
            .await
            .map_err(|e| Error::db("reading performance rollups", e))?;
        for row in &rows {
            let e: &str = row.get(0);
            let m: &str = row.get(1);
            let mut acc = PerfAcc {
                count: to_u64(row.get(2)),
                errors: to_u64(row.get(3)),
                sketch: LatencySketch::new(),
            };
            let sketches: Vec<Option<&[u8]>> = row.get(4);
            for bytes in sketches.into_iter().flatten() {
                acc.sketch
                    .merge(&decode_sketch(bytes, "aggregated_metrics", e)?);
            }
            merge_users(&mut users, row.get(5), e)?;
            if e == ALL && m == ALL {
                total = acc;
            } else {
                let _ = keys.insert((e.to_owned(), m.to_owned()), acc);
            }
        }
    }

    let mut raw_total = PerfAcc::default();
    for &(lo, hi) in &plan.raw {
        let stmt = prepare(tx, &sql.perf_raw).await?;
        let users_stmt = prepare(tx, &sql.perf_raw_users).await?;
        let params: [&(dyn ToSql + Sync); 3] = [&lo, &hi, &endpoint];
        let (rows, user_rows) = futures_util::future::try_join(
            tx.query(&stmt, &params),
            tx.query(&users_stmt, &params),
        )
        .await
        .map_err(|e| Error::db("reading raw requests", e))?;
        for row in &rows {
            let e: &str = row.get(0);
            let m: &str = row.get(1);
            let mut acc = PerfAcc {
                count: to_u64(row.get(2)),
                errors: to_u64(row.get(3)),
                sketch: LatencySketch::new(),
            };
            let values: Vec<f64> = row.get(4);
            for v in values {
                acc.sketch.add(v);
            }
            raw_total.merge(&acc);
            match keys.get_mut(&(e.to_owned(), m.to_owned())) {
                Some(k) => k.merge(&acc),
                None => {
                    let _ = keys.insert((e.to_owned(), m.to_owned()), acc);
                }
            }
        }
        for row in &user_rows {
            users.add(row.get::<_, &str>(0));
        }
    }
    if endpoint.is_some() {
        // No `*` rows were read: the summary is the merge of the route's keys.
        total = PerfAcc::default();
        for acc in keys.values() {
            total.merge(acc);
        }
    } else {
        total.merge(&raw_total);
    }

    let mut endpoints: Vec<EndpointMetrics> = keys
        .into_iter()
        .map(|((endpoint, method), acc)| EndpointMetrics {
            endpoint,
            method,
            request_count: acc.count,
            error_count: acc.errors,
            error_rate: acc.error_rate(),
            avg_response_time_ms: acc.sketch.mean().unwrap_or(0.0),
            p50_response_time_ms: acc.quantile(0.5),
            p95_response_time_ms: acc.quantile(0.95),
            p99_response_time_ms: acc.quantile(0.99),
        })
        .collect();
    sort_slowest_first(&mut endpoints);
    Ok(PerformanceReport {
        metrics: PerformanceMetrics {
            total_requests: total.count,
            avg_response_time_ms: total.sketch.mean().unwrap_or(0.0),
            p50_response_time_ms: total.quantile(0.5),
            p95_response_time_ms: total.quantile(0.95),
            p99_response_time_ms: total.quantile(0.99),
            error_rate: total.error_rate(),
            active_users: users.estimate().value,
        },
        endpoints,
    })
}

async fn usage(tx: &Transaction<'_>, sql: &Sql, query: &UsageQuery) -> Result<UsageReport, Error> {
    let (start, end) = (query.range.start(), query.range.end());
    let event_type = query.event_type.as_deref();
    let (uplan, urolled) = plan(tx, sql, Kind::Usage, start, end, HOUR).await?;
    let (pplan, prolled) = plan(tx, sql, Kind::Performance, start, end, HOUR).await?;
    let (udays, uhours) = uplan.days_and_hours(&urolled, true);
    let (pdays, phours) = pplan.days_and_hours(&prolled, true);

    let mut report = UsageReport::default();
    let mut total = 0u64;
    let mut unique = DistinctUsers::new();
    let mut active = DistinctUsers::new();

    if !udays.is_empty() || !uhours.is_empty() {
        let (udays, uhours) = (times(&udays), times(&uhours));
        let stmt = prepare(tx, &sql.usage_rolled).await?;
        let pages_stmt = prepare(tx, &sql.usage_pages).await?;
        let params: [&(dyn ToSql + Sync); 3] = [&udays, &uhours, &event_type];
        let (rows, pages) = futures_util::future::try_join(
            tx.query(&stmt, &params),
            tx.query(&pages_stmt, &params),
        )
        .await
        .map_err(|e| Error::db("reading usage rollups", e))?;
        for row in &rows {
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
        for row in &pages {
            add_to(&mut report.page_views, row.get(0), to_u64(row.get(1)));
        }
    }
    if !udays.is_empty() || !uhours.is_empty() || !pdays.is_empty() || !phours.is_empty() {
        // The `*` users of both tables: active users, and (without a type
        // filter) the unique users of the events.
        let stmt = prepare(tx, &sql.star_users).await?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &times(&pdays),
                    &times(&phours),
                    &times(&udays),
                    &times(&uhours),
                ],
            )
            .await
            .map_err(|e| Error::db("reading users of rollups", e))?;
        for row in &rows {
            let is_usage: bool = row.get(0);
            let users = decode_users(row.get(1), "aggregated_metrics", ALL)?;
            if is_usage && event_type.is_none() {
                unique.merge(&users);
            }
            active.merge(&users);
        }
    }

    for &(lo, hi) in &uplan.raw {
        let stmt = prepare(tx, &sql.usage_raw).await?;
        let users_stmt = prepare(tx, &sql.usage_raw_users).await?;
        let params: [&(dyn ToSql + Sync); 3] = [&lo, &hi, &event_type];
        let (rows, user_rows) = futures_util::future::try_join(
            tx.query(&stmt, &params),
            tx.query(&users_stmt, &params),
        )
        .await
        .map_err(|e| Error::db("reading raw usage events", e))?;
        for row in &rows {
            let n = to_u64(row.get(2));
            total += n;
            add_to(&mut report.event_distribution, row.get(0), n);
            if let Some(page) = row.get::<_, Option<&str>>(1) {
                add_to(&mut report.page_views, page, n);
            }
        }
        for row in &user_rows {
            let u: &str = row.get(0);
            active.add(u);
            if row.get::<_, bool>(1) {
                unique.add(u);
            }
        }
    }
    for &(lo, hi) in &pplan.raw {
        let stmt = prepare(tx, &sql.perf_raw_users).await?;
        let rows = tx
            .query(&stmt, &[&lo, &hi, &None::<&str>])
            .await
            .map_err(|e| Error::db("reading raw request users", e))?;
        for row in &rows {
            active.add(row.get::<_, &str>(0));
        }
    }

    // The current UTC hour, up to and including `now`.
    let hour_start = from_unix_secs(floor_time(query.now, HOUR));
    let stmt = prepare(tx, &sql.current_hour_users).await?;
    let rows = tx
        .query(&stmt, &[&hour_start, &query.now])
        .await
        .map_err(|e| Error::db("reading this hour's users", e))?;
    let mut current = DistinctUsers::new();
    for row in &rows {
        current.add(row.get::<_, &str>(0));
    }

    report.metrics = UsageMetrics {
        total_events: total,
        unique_users: unique.estimate().value,
        active_users: active.estimate().value,
        active_users_current_hour: current.estimate().value,
    };
    Ok(report)
}

async fn time_series(
    tx: &Transaction<'_>,
    sql: &Sql,
    query: &TimeSeriesQuery,
) -> Result<TimeSeries, Error> {
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
    let mut perf: Vec<Option<PerformancePoint>> = vec![None; starts.len()];
    let mut usage: Vec<Option<UsagePoint>> = vec![None; starts.len()];

    if kind.includes_performance() {
        let (plan, rolled) = series_plan(tx, sql, Kind::Performance, first, end, width).await?;
        for (bucket, point) in series_rolled_perf(tx, sql, &plan, &rolled, query).await? {
            if let Some(i) = index(bucket) {
                perf[i] = Some(point);
            }
        }
        for &(lo, hi) in &plan.raw {
            let stmt = prepare(tx, &sql.series_raw_perf).await?;
            let rows = tx
                .query(&stmt, &[&lo, &hi, &width])
                .await
                .map_err(|e| Error::db("reading raw requests per bucket", e))?;
            for row in &rows {
                let Some(i) = index(row.get(0)) else {
                    continue;
                };
                let mut acc = PerfAcc {
                    count: to_u64(row.get(1)),
                    errors: to_u64(row.get(2)),
                    sketch: LatencySketch::new(),
                };
                for v in row.get::<_, Vec<f64>>(3) {
                    acc.sketch.add(v);
                }
                perf[i] = Some(PerformancePoint {
                    request_count: acc.count,
                    avg_response_time_ms: acc.sketch.mean().unwrap_or(0.0),
                    p50_response_time_ms: acc.quantile(0.5),
                    p95_response_time_ms: acc.quantile(0.95),
                    p99_response_time_ms: acc.quantile(0.99),
                    error_count: acc.errors,
                    error_rate: acc.error_rate(),
                });
            }
        }
    }
    if kind.includes_usage() {
        let (plan, rolled) = series_plan(tx, sql, Kind::Usage, first, end, width).await?;
        for (bucket, point) in series_rolled_usage(tx, sql, &plan, &rolled, query).await? {
            if let Some(i) = index(bucket) {
                usage[i] = Some(point);
            }
        }
        for &(lo, hi) in &plan.raw {
            let stmt = prepare(tx, &sql.series_raw_usage).await?;
            let rows = tx
                .query(&stmt, &[&lo, &hi, &width])
                .await
                .map_err(|e| Error::db("reading raw usage events per bucket", e))?;
            for row in &rows {
                if let Some(i) = index(row.get(0)) {
                    usage[i] = Some(UsagePoint {
                        event_count: to_u64(row.get(1)),
                        unique_users: to_u64(row.get(2)),
                    });
                }
            }
        }
    }

    if !any_data(&perf, &usage) {
        return Ok(TimeSeries::default());
    }
    let data_points = starts
        .into_iter()
        .zip(perf.into_iter().zip(usage))
        .map(|(timestamp, (p, u))| DataPoint {
            timestamp,
            performance: kind.includes_performance().then(|| p.unwrap_or_default()),
            usage: kind.includes_usage().then(|| u.unwrap_or_default()),
        })
        .collect();
    Ok(TimeSeries { data_points })
}

/// Whether any bucket holds data (a rollup row or a raw group).
fn any_data(perf: &[Option<PerformancePoint>], usage: &[Option<UsagePoint>]) -> bool {
    perf.iter()
        .any(|p| p.as_ref().is_some_and(|p| p.request_count > 0))
        || usage
            .iter()
            .any(|u| u.as_ref().is_some_and(|u| u.event_count > 0))
}

/// The rolled buckets of the performance series: `(bucket start, point)`.
async fn series_rolled_perf(
    tx: &Transaction<'_>,
    sql: &Sql,
    plan: &Plan,
    rolled: &Rolled,
    query: &TimeSeriesQuery,
) -> Result<Vec<(i64, PerformancePoint)>, Error> {
    if plan.rollup.is_empty() {
        return Ok(Vec::new());
    }
    let rows = if query.resolution == Resolution::FiveMinutes {
        let (lo, hi) = span_bounds(plan);
        let stmt = prepare(tx, &sql.series_5min_perf).await?;
        tx.query(&stmt, &[&lo, &hi]).await
    } else {
        // Hourly (`plan` holds no rollup parts at other widths).
        let (_, hours) = plan.days_and_hours(rolled, false);
        let stmt = prepare(tx, &sql.series_hourly_perf).await?;
        tx.query(&stmt, &[&times(&hours)]).await
    }
    .map_err(|e| Error::db("reading rolled performance buckets", e))?;
    let width = i64::try_from(query.resolution.duration().as_secs()).unwrap_or(HOUR);
    Ok(rows
        .iter()
        .filter(|r| in_rollup(plan, r.get::<_, i64>(0), width))
        .map(|r| {
            let count = to_u64(r.get(1));
            let errors = to_u64(r.get::<_, Option<i64>>(2).unwrap_or(0));
            let f = |i: usize| r.get::<_, Option<f64>>(i).unwrap_or(0.0);
            (
                r.get(0),
                PerformancePoint {
                    request_count: count,
                    avg_response_time_ms: f(3),
                    p50_response_time_ms: f(4),
                    p95_response_time_ms: f(5),
                    p99_response_time_ms: f(6),
                    error_count: errors,
                    error_rate: ratio(errors, count),
                },
            )
        })
        .collect())
}

/// The rolled buckets of the usage series: `(bucket start, point)`.
async fn series_rolled_usage(
    tx: &Transaction<'_>,
    sql: &Sql,
    plan: &Plan,
    rolled: &Rolled,
    query: &TimeSeriesQuery,
) -> Result<Vec<(i64, UsagePoint)>, Error> {
    if plan.rollup.is_empty() {
        return Ok(Vec::new());
    }
    let rows = if query.resolution == Resolution::FiveMinutes {
        let (lo, hi) = span_bounds(plan);
        let stmt = prepare(tx, &sql.series_5min_usage).await?;
        tx.query(&stmt, &[&lo, &hi]).await
    } else {
        // Hourly (`plan` holds no rollup parts at other widths).
        let (_, hours) = plan.days_and_hours(rolled, false);
        let stmt = prepare(tx, &sql.series_hourly_usage).await?;
        tx.query(&stmt, &[&times(&hours)]).await
    }
    .map_err(|e| Error::db("reading rolled usage buckets", e))?;
    let width = i64::try_from(query.resolution.duration().as_secs()).unwrap_or(HOUR);
    Ok(rows
        .iter()
        .filter(|r| in_rollup(plan, r.get::<_, i64>(0), width))
        .map(|r| {
            (
                r.get(0),
                UsagePoint {
                    event_count: to_u64(r.get(1)),
                    unique_users: to_u64(r.get::<_, Option<i64>>(2).unwrap_or(0)),
                },
            )
        })
        .collect())
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

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

// ===== impl Sql =====

impl Sql {
    fn new(schema: &SchemaName) -> Self {
        let hourly = schema.qualify("aggregated_metrics");
        let daily = schema.qualify("aggregated_metrics_daily");
        let five = schema.qualify("aggregated_metrics_5min");
        let pm = schema.qualify("performance_metrics");
        let ue = schema.qualify("usage_events");
        // Rolled rows of one metric type: whole days from the daily table
        // ($1), other hours from the hourly one ($2).
        let rolled_rows = |cols: &str, metric_type: &str, cond: &str| {
            format!(
                "SELECT {cols} FROM {daily} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = '{metric_type}' AND {cond} \
                 UNION ALL \
                 SELECT {cols} FROM {hourly} WHERE time_bucket = ANY($2::timestamptz[]) \
                   AND metric_type = '{metric_type}' AND {cond}"
            )
        };
        let star_perf = "endpoint_path = '*' AND method = '*' AND event_type IS NULL";
        let star_usage = "endpoint_path IS NULL AND method IS NULL AND event_type = '*'";
        let series_values = "extract(epoch FROM time_bucket)::int8, sample_count, \
             (aggregated_values->>'error_count')::int8, (aggregated_values->>'avg')::float8, \
             (aggregated_values->>'p50')::float8, (aggregated_values->>'p95')::float8, \
             (aggregated_values->>'p99')::float8";
        let series_usage_values = "extract(epoch FROM time_bucket)::int8, sample_count, \
             (aggregated_values->>'unique_users')::int8";
        Self {
            rolled_hours: format!(
                "SELECT extract(epoch FROM hour)::int8, raw_dropped FROM {} \
                 WHERE metric_type = $1 AND hour >= $2 AND hour < $3",
                schema.qualify("rollup_hours")
            ),
            rolled_days: format!(
                "SELECT extract(epoch FROM day)::int8 FROM {} \
                 WHERE metric_type = $1 AND day >= $2 AND day < $3",
                schema.qualify("rollup_days")
            ),
            perf_rolled: format!(
                "SELECT endpoint_path, method, sum(sample_count)::int8, \
                        sum((aggregated_values->>'error_count')::int8)::int8, \
                        array_agg(latency_sketch), \
                        array_agg(users_sketch) FILTER (WHERE endpoint_path = '*' OR $3::text IS NOT NULL) \
                 FROM ({}) r GROUP BY endpoint_path, method",
                rolled_rows(
                    "endpoint_path, method, sample_count, aggregated_values, latency_sketch, users_sketch",
                    "performance",
                    "($3::text IS NULL OR endpoint_path = $3::text)"
                )
            ),
            perf_raw: format!(
                "SELECT endpoint, method, count(*)::int8, \
                        count(*) FILTER (WHERE status_code >= 400)::int8, array_agg(response_time_ms) \
                 FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 \
                   AND ($3::text IS NULL OR endpoint = $3::text) \
                 GROUP BY endpoint, method"
            ),
            perf_raw_users: format!(
                "SELECT DISTINCT user_id FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 \
                   AND user_id IS NOT NULL AND ($3::text IS NULL OR endpoint = $3::text)"
            ),
            usage_rolled: format!(
                "SELECT event_type, sum(sample_count)::int8, \
                        array_agg(users_sketch) FILTER (WHERE $3::text IS NOT NULL) \
                 FROM ({}) r GROUP BY event_type",
                rolled_rows(
                    "event_type, sample_count, users_sketch",
                    "usage",
                    "endpoint_path IS NULL AND method IS NULL \
                     AND ($3::text IS NULL OR event_type = $3::text)"
                )
            ),
            usage_pages: format!(
                "SELECT p.key, sum(p.value::int8)::int8 FROM ({}) r \
                 CROSS JOIN LATERAL jsonb_each_text(r.aggregated_values->'event_count_by_page') p \
                 GROUP BY p.key",
                rolled_rows(
                    "aggregated_values",
                    "usage",
                    "endpoint_path IS NULL AND method IS NULL AND event_type = coalesce($3::text, '*')"
                )
            ),
            star_users: format!(
                "SELECT false, users_sketch FROM {daily} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = 'performance' AND {star_perf} \
                 UNION ALL \
                 SELECT false, users_sketch FROM {hourly} WHERE time_bucket = ANY($2::timestamptz[]) \
                   AND metric_type = 'performance' AND {star_perf} \
                 UNION ALL \
                 SELECT true, users_sketch FROM {daily} WHERE time_bucket = ANY($3::timestamptz[]) \
                   AND metric_type = 'usage' AND {star_usage} \
                 UNION ALL \
                 SELECT true, users_sketch FROM {hourly} WHERE time_bucket = ANY($4::timestamptz[]) \
                   AND metric_type = 'usage' AND {star_usage}"
            ),
            usage_raw: format!(
                "SELECT event_type, page_name, count(*)::int8 FROM {ue} \
                 WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 \
                   AND ($3::text IS NULL OR event_type = $3::text) \
                 GROUP BY event_type, page_name"
            ),
            usage_raw_users: format!(
                "SELECT user_id, bool_or($3::text IS NULL OR event_type = $3::text) FROM {ue} \
                 WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY user_id"
            ),
            current_hour_users: format!(
                "SELECT user_id FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" <= $2 \
                   AND user_id IS NOT NULL \
                 UNION \
                 SELECT user_id FROM {ue} WHERE \"timestamp\" >= $1 AND \"timestamp\" <= $2"
            ),
            series_hourly_perf: format!(
                "SELECT {series_values} FROM {hourly} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = 'performance' AND {star_perf}"
            ),
            series_hourly_usage: format!(
                "SELECT {series_usage_values} FROM {hourly} WHERE time_bucket = ANY($1::timestamptz[]) \
                   AND metric_type = 'usage' AND {star_usage}"
            ),
            series_5min_perf: format!(
                "SELECT {series_values} FROM {five} \
                 WHERE metric_type = 'performance' AND time_bucket >= $1 AND time_bucket < $2"
            ),
            series_5min_usage: format!(
                "SELECT {series_usage_values} FROM {five} \
                 WHERE metric_type = 'usage' AND time_bucket >= $1 AND time_bucket < $2"
            ),
            series_raw_perf: format!(
                "SELECT floor(extract(epoch FROM \"timestamp\") / $3::int8)::int8 * $3::int8, \
                        count(*)::int8, count(*) FILTER (WHERE status_code >= 400)::int8, \
                        array_agg(response_time_ms) \
                 FROM {pm} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1"
            ),
            series_raw_usage: format!(
                "SELECT floor(extract(epoch FROM \"timestamp\") / $3::int8)::int8 * $3::int8, \
                        count(*)::int8, count(DISTINCT user_id)::int8 \
                 FROM {ue} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1"
            ),
            user_event_count: format!(
                "SELECT count(*)::int8 FROM {ue} \
                 WHERE user_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3"
            ),
        }
    }
}
