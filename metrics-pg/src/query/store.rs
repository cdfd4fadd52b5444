//! The query handle: its pool, schema, statement timeout, SQL and caches,
//! and the read-only transaction every answer runs in.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, Transaction};
use metrics_core::aggregate::DistinctUsers;
use metrics_core::query::QueryError;
use tokio_postgres::error::SqlState;

use super::cache::{BucketCache, BucketKey, PointKey, SeriesPoint, UsersKey};
use super::scan::SlotRows;
use super::sql::Sql;
use crate::conn;
use crate::error::{Error, pg_error_is_retryable};
use crate::schema::SchemaName;

/// The dashboard queries ([`MetricsQuery`](metrics_core::query::MetricsQuery)) over the tables of a
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
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    pub(super) pool: Pool,
    pub(super) schema: SchemaName,
    pub(super) statement_timeout: Duration,
    pub(super) sql: Arc<Sql>,
    pub(super) cache: Arc<BucketCache>,
    pub(super) users_cache: Arc<BucketCache<UsersKey, DistinctUsers>>,
    pub(super) points_cache: Arc<BucketCache<PointKey, SeriesPoint>>,
    pub(super) rows_cache: Arc<BucketCache<BucketKey, SlotRows>>,
}

/// How long [`PgMetricsQuery::spare_connection`] waits for a spare connection before
/// running on the query's own.
pub(super) const SPARE_CONNECTION_WAIT: Duration = Duration::from_millis(20);

impl PgMetricsQuery {
    /// The default server-side statement timeout of each query.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default size of the decoded-rollup cache.
    pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

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
            cache: Arc::new(BucketCache::new(0)),
            users_cache: Arc::new(BucketCache::new(0)),
            points_cache: Arc::new(BucketCache::new(0)),
            rows_cache: Arc::new(BucketCache::new(0)),
        }
        .cache_bytes(Self::DEFAULT_CACHE_BYTES))
    }

    /// Server-side `statement_timeout` of every statement of a query
    /// (default 10 s; at least 1 ms). A query cancelled by it answers
    /// [`QueryError::Timeout`] with this limit.
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.statement_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// Memory for the query caches (default 64 MiB; 0 turns them off):
    /// decoded rollup buckets (per-endpoint sketches, exact below 1,000
    /// samples, so 24 hours of a busy service are megabytes), the users
    /// sketches and hourly points of rollups, and decoded raw 5-minute
    /// slots. Rollup entries are keyed by the bucket's rollup version, raw
    /// slots by their row count in the query's snapshot (or, inside a
    /// rolled hour, by the hour's rollup version), so the answers are the
    /// same as without the caches; see the `query` module documentation.
    /// Clones of a `PgMetricsQuery` share the caches; this setting gives
    /// the value new, empty ones.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        // Three quarters for whole buckets (per-endpoint sketches), the
        // rest for the all-endpoints/all-types users sketches of usage
        // reports (16 KiB each) and the stored points of hourly series.
        self.cache = Arc::new(BucketCache::new(bytes / 8 * 5));
        self.users_cache = Arc::new(BucketCache::new(bytes / 16 * 3));
        self.points_cache = Arc::new(BucketCache::new(bytes / 16));
        self.rows_cache = Arc::new(BucketCache::new(bytes / 8));
        self
    }

    /// The schema queried.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Runs `body` in a read-only `REPEATABLE READ` transaction with the
    /// statement timeout set, mapping every failure to a [`QueryError`].
    pub(super) async fn read<T>(
        &self,
        body: impl AsyncFnOnce(&Transaction<'_>, &Self) -> Result<T, Error>,
    ) -> Result<T, QueryError> {
        let limit = self.statement_timeout;
        let mut conn = conn::acquire(&self.pool, limit)
            .await
            .map_err(|e| to_query_error(e, limit))?;
        let run = async {
            let tx = self.side_transaction(&mut conn).await?;
            let out = body(&tx, self).await?;
            tx.commit()
                .await
                .map_err(|e| Error::db("ending a read-only transaction", e))?;
            Ok::<T, Error>(out)
        };
        let result = conn::within_deadline(limit, run).await;
        if let Err(e) = &result {
            conn::release_after_error(conn, e);
        }
        result.map_err(|e| to_query_error(e, limit))
    }

    /// A pooled connection for a second scan beside the query's own, if one
    /// is free within [`SPARE_CONNECTION_WAIT`] (else the caller scans on its
    /// own connection: a busy pool must not slow the query down).
    pub(super) async fn spare_connection(&self) -> Option<Object> {
        conn::try_acquire_spare(&self.pool, SPARE_CONNECTION_WAIT).await
    }

    /// A read-only `REPEATABLE READ` transaction on `conn` with the
    /// statement timeout set.
    pub(super) async fn side_transaction<'c>(
        &self,
        conn: &'c mut Object,
    ) -> Result<Transaction<'c>, Error> {
        conn::read_transaction(conn, self.statement_timeout).await
    }
}

pub(super) fn to_query_error(e: Error, limit: Duration) -> QueryError {
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
