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
//! * **performance** (`performance.rs`, rolled buckets through the cache
//!   in `buckets.rs`): the `*` (all endpoints) rows give the summary, the
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
//! * **usage** (`usage.rs`): per-type rows give `event_distribution`; the `*` rows (or the
//!   type's rows, with the `event_type` filter) the totals and unique users;
//!   the `page_view` rows the page views (raw events count by page only when
//!   they are page views); `active_users` merges the users sketches of the performance
//!   and usage `*` rows (cached by rollup version) plus the raw pieces'
//!   users and the raw events' users; `active_users_current_hour` reads
//!   `[floor_hour(now), now]` from the same raw pieces and events. Raw
//!   events are streamed in one `COPY` for all of that, on a second
//!   connection.
//! * **time series** (`time_series.rs`): the series covers whole UTC buckets from the bucket
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

mod buckets;
mod cache;
mod decode;
mod drill;
mod performance;
mod plan;
mod raw;
mod rolled;
mod scan;
mod sql;
mod store;
mod time_series;
mod usage;

pub use self::store::PgMetricsQuery;

use async_trait::async_trait;
use metrics_core::aggregate::TimeRange;
use metrics_core::query::{
    MetricsQuery, PerformanceQuery, PerformanceReport, QueryError, SlowRequests, SlowRequestsQuery,
    TimeSeries, TimeSeriesQuery, UsageQuery, UsageReport,
};

use self::decode::to_u64;
use self::sql::prepare;
use crate::error::Error;

#[async_trait]
impl MetricsQuery for PgMetricsQuery {
    async fn performance(&self, query: &PerformanceQuery) -> Result<PerformanceReport, QueryError> {
        self.read(async |tx, this| performance::performance(tx, this, query).await)
            .await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, QueryError> {
        self.read(async |tx, this| usage::usage(tx, this, query).await)
            .await
    }

    async fn time_series(&self, query: &TimeSeriesQuery) -> Result<TimeSeries, QueryError> {
        query.check()?;
        self.read(async |tx, this| time_series::time_series(tx, this, query).await)
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
