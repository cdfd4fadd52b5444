//! Daily rollups: one `aggregated_metrics_daily` row per (UTC day, key), the
//! merge of that day's 24 hourly rows, built once the day is complete.
//!
//! The contract with the query side is described in the `rollup` module docs
//! (and `docs/operations.md`): a `rollup_days` row means the day's daily rows
//! equal the merge of its hourly rows. This module keeps that true:
//!
//! * a day is built only when all 24 of its hours are in `rollup_hours`;
//! * building is one transaction per day that reads the day's hourly rows,
//!   merges their sketches in Rust ([`LatencySketch::merge`],
//!   [`DistinctUsers::merge`]: the same state as rolling the day's raw rows
//!   directly, so percentiles keep their guarantees), replaces the daily
//!   rows and upserts the `rollup_days` row;
//! * rolling an hour again deletes its day's `rollup_days` row in the hour's
//!   own transaction ([`roll_hour`](crate::jobs::rollup::roll_hour)), so a rebuilt
//!   hour makes its day "to build" again, and the next pass (at the end of the
//!   same run, or of the next run after a failure) rebuilds it.
//!
//! Every job that rolls hours holds the rollup advisory lock, so hours and
//! days are never written concurrently by two runs.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use deadpool_postgres::Pool;
use futures_util::{StreamExt, pin_mut};
use metrics_core::aggregate::{
    DistinctUsers, LatencySketch, PerformanceSummary, PerformanceValues, UsageSummary, UsageValues,
};
use tokio_postgres::{Client, Transaction};

use crate::conn;
use crate::error::Error;
use crate::jobs::lock::JobLimits;
use crate::jobs::task::AbortOnDrop;
use crate::schema::SchemaName;
use crate::tables::{ALL, Kind};
use crate::units::{DAY, HOUR, from_unix_secs};

/// What a pass of [`build_complete_days`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DaysBuilt {
    /// Days (re)built, both metric types.
    pub(crate) days: u64,
    /// `aggregated_metrics_daily` rows written.
    pub(crate) rows: u64,
}

/// Builds every complete day (all 24 hours in `rollup_hours`) of both metric
/// types that has no `rollup_days` row, up to `concurrency` days at once, one
/// transaction each on connections of `pool`. `client` (the job's locked
/// session) only finds the days.
pub(crate) async fn build_complete_days(
    client: &Client,
    pool: &Pool,
    schema: &SchemaName,
    concurrency: usize,
    mut accs: DayAccs,
    limits: &JobLimits,
) -> Result<DaysBuilt, Error> {
    let limits = *limits;
    let mut built = DaysBuilt::default();
    for kind in Kind::ALL {
        let days = limits.within(days_to_build(client, schema, kind)).await?;
        let results = futures_util::stream::iter(days)
            .map(|day| {
                let acc = accs.remove(&(kind, day)).filter(|a| !a.overflow);
                let (pool, schema) = (pool.clone(), schema.clone());
                // A task per day, like the hours: days merge on all cores.
                AbortOnDrop::spawn(async move {
                    limits
                        .within(build_day_on(&pool, &schema, kind, day, acc, &limits))
                        .await
                })
            })
            .buffered(concurrency.max(1));
        pin_mut!(results);
        while let Some(done) = results.next().await {
            if let Some(rows) = done? {
                built.days += 1;
                built.rows += rows;
            }
        }
    }
    Ok(built)
}

/// Complete days of `kind` without a `rollup_days` row, ascending.
async fn days_to_build(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
) -> Result<Vec<i64>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT extract(epoch FROM h.day)::bigint FROM ( \
                   SELECT date_bin('1 day', hour, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, \
                          count(*) AS n \
                   FROM {hours} WHERE metric_type = $1 GROUP BY 1) h \
                 LEFT JOIN {days} d ON d.metric_type = $1 AND d.day = h.day \
                 WHERE h.n = 24 AND d.day IS NULL \
                 ORDER BY 1",
                hours = schema.qualify("rollup_hours"),
                days = schema.qualify("rollup_days"),
            ),
            &[&kind.metric_type()],
        )
        .await
        .map_err(|e| Error::db("finding complete days to build", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn build_day_on(
    pool: &Pool,
    schema: &SchemaName,
    kind: Kind,
    day: i64,
    acc: Option<DayAcc>,
    limits: &JobLimits,
) -> Result<Option<u64>, Error> {
    // Closed, not pooled, if the run is cancelled or times out mid-day.
    let mut conn = conn::DiscardOnDrop::new(limits.acquire(pool).await?);
    let client: &mut Client = conn.get();
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting a daily rollup transaction", e))?;
    tx.batch_execute(&limits.set_local())
        .await
        .map_err(|e| Error::db("setting statement_timeout", e))?;
    let written = build_day(&tx, schema, kind, day, acc).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing a daily rollup", e))?;
    conn.keep();
    tracing::debug!(schema = %schema, metric_type = kind.metric_type(), day, ?written, "built day");
    Ok(written)
}

/// The key columns of a rollup row: `(endpoint_path, method, event_type)`.
pub(crate) type Key = (Option<String>, Option<String>, Option<String>);

/// A key's merged state: what an hourly row stores, before serialisation.
#[derive(Debug)]
pub(crate) enum Acc {
    Performance(PerformanceSummary, DistinctUsers),
    Usage(UsageSummary),
}

impl Acc {
    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Performance(s, u), Self::Performance(os, ou)) => {
                s.merge(os);
                u.merge(ou);
            }
            (Self::Usage(s), Self::Usage(os)) => s.merge(os),
            // One day accumulates one metric type; keys never mix kinds.
            _ => {}
        }
    }
}

fn merge_into(merged: &mut BTreeMap<Key, Acc>, key: Key, acc: Acc) {
    match merged.get_mut(&key) {
        Some(mine) => mine.merge(&acc),
        None => {
            let _ = merged.insert(key, acc);
        }
    }
}

/// Above this many keys a day's in-memory accumulator is given up (the day
/// is then built from the stored hourly rows): bounds the run's memory when
/// a service has very many endpoints.
const MAX_ACC_KEYS: usize = 10_000;

/// The merged states of the hours of one day that this run rolled, kept so
/// that building the day reads only the hours rolled by earlier runs from
/// the database (a catch-up or backfill run rolls whole days; re-reading
/// and decoding its own hourly rows was most of the day build's time).
#[derive(Debug, Default)]
pub(crate) struct DayAcc {
    hours: Vec<i64>,
    merged: BTreeMap<Key, Acc>,
    overflow: bool,
}

impl DayAcc {
    /// Folds in the states of `hour`, exactly as written to its hourly rows.
    pub(crate) fn add_hour(&mut self, hour: i64, states: Vec<(Key, Acc)>) {
        if self.overflow {
            return;
        }
        self.hours.push(hour);
        for (key, acc) in states {
            merge_into(&mut self.merged, key, acc);
        }
        if self.merged.len() > MAX_ACC_KEYS {
            *self = Self {
                overflow: true,
                ..Self::default()
            };
        }
    }
}

/// Day accumulators of a run, by metric type and day.
pub(crate) type DayAccs = HashMap<(Kind, i64), DayAcc>;

fn corrupt(day: i64, key: &Key, reason: impl std::fmt::Display) -> Error {
    Error::CorruptRollup {
        table: "aggregated_metrics",
        key: format!("(day {day}, {key:?})"),
        reason: reason.to_string(),
    }
}

/// Builds one day inside `tx`: `None` when the day is not complete (any more),
/// else the number of daily rows written. `acc` holds the merged states of
/// the hours this run rolled; the other hours are read from the database.
pub(crate) async fn build_day(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    day: i64,
    acc: Option<DayAcc>,
) -> Result<Option<u64>, Error> {
    let (from, to) = (from_unix_secs(day), from_unix_secs(day + DAY));
    // Checked again inside the transaction: the list was read outside it.
    let hours: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE metric_type = $1 AND hour >= $2 AND hour < $3",
                schema.qualify("rollup_hours")
            ),
            &[&kind.metric_type(), &from, &to],
        )
        .await
        .map_err(|e| Error::db("checking that a day is complete", e))?
        .get(0);
    if hours != DAY / HOUR {
        return Ok(None);
    }
    let t0 = std::time::Instant::now();
    let (in_memory, mut merged) = match acc {
        Some(acc) => (
            acc.hours
                .iter()
                .map(|&h| from_unix_secs(h))
                .collect::<Vec<_>>(),
            acc.merged,
        ),
        None => (Vec::new(), BTreeMap::new()),
    };
    let rows = if in_memory.len() as i64 == DAY / HOUR {
        Vec::new()
    } else {
        tx.query(
            &format!(
                "SELECT endpoint_path, method, event_type, aggregated_values, latency_sketch, \
                        users_sketch \
                 FROM {} WHERE metric_type = $1 AND time_bucket >= $2 AND time_bucket < $3 \
                   AND time_bucket <> ALL($4)",
                schema.qualify("aggregated_metrics")
            ),
            &[&kind.metric_type(), &from, &to, &in_memory],
        )
        .await
        .map_err(|e| Error::db("reading a day's hourly rollups", e))?
    };
    let t1 = std::time::Instant::now();
    merge_hourly_rows(&rows, kind, day, &mut merged)?;
    let t2 = std::time::Instant::now();
    let written = write_day(tx, schema, kind, from, merged).await?;
    tracing::trace!(read = ?(t1 - t0), merge = ?(t2 - t1), write = ?t2.elapsed(), day, "built day phases");
    let _ = tx
        .execute(
            &format!(
                "INSERT INTO {} (metric_type, day) VALUES ($1, $2) \
                 ON CONFLICT (metric_type, day) DO UPDATE SET built_at = now()",
                schema.qualify("rollup_days")
            ),
            &[&kind.metric_type(), &from],
        )
        .await
        .map_err(|e| Error::db("recording a built day", e))?;
    Ok(Some(written))
}

/// Merges hourly rollup rows of `day` into `merged`, by key.
fn merge_hourly_rows(
    rows: &[tokio_postgres::Row],
    kind: Kind,
    day: i64,
    merged: &mut BTreeMap<Key, Acc>,
) -> Result<(), Error> {
    for row in rows {
        let key: Key = (row.get(0), row.get(1), row.get(2));
        let values: serde_json::Value = row.get(3);
        let latency: Option<&[u8]> = row.get(4);
        let users: Option<&[u8]> = row.get(5);
        let users = match users {
            Some(b) => DistinctUsers::from_bytes(b).map_err(|e| corrupt(day, &key, e))?,
            None => DistinctUsers::new(),
        };
        match kind {
            Kind::Performance => {
                let v: PerformanceValues =
                    serde_json::from_value(values).map_err(|e| corrupt(day, &key, e))?;
                let sketch = match latency {
                    Some(b) => LatencySketch::from_bytes(b).map_err(|e| corrupt(day, &key, e))?,
                    None => LatencySketch::new(),
                };
                let s = PerformanceSummary::from_parts(sketch, v.status_code_distribution);
                merge_into(merged, key, Acc::Performance(s, users));
            }
            Kind::Usage => {
                let v: UsageValues =
                    serde_json::from_value(values).map_err(|e| corrupt(day, &key, e))?;
                let event_type = key.2.as_deref().filter(|t| *t != ALL);
                let s = UsageSummary::from_parts(&v, event_type, users);
                merge_into(merged, key, Acc::Usage(s));
            }
        }
    }

    Ok(())
}

/// Replaces the daily rollup rows of `kind` for the day starting at `from`
/// with `merged`; the number of rows written.
async fn write_day(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    from: SystemTime,
    merged: BTreeMap<Key, Acc>,
) -> Result<u64, Error> {
    let n = merged.len();
    let (mut endpoints, mut methods, mut types) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut values, mut counts, mut latency, mut users) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((e, m, t), acc) in merged {
        endpoints.push(e);
        methods.push(m);
        types.push(t);
        match acc {
            Acc::Performance(s, u) => {
                counts.push(i64::try_from(s.count()).unwrap_or(i64::MAX));
                values.push(serde_json::to_value(s.values()).unwrap_or_default());
                latency.push(Some(s.latency().to_bytes()));
                users.push(u.to_bytes());
            }
            Acc::Usage(s) => {
                let v = s.values();
                counts.push(i64::try_from(v.total_events).unwrap_or(i64::MAX));
                values.push(serde_json::to_value(v).unwrap_or_default());
                latency.push(None);
                users.push(s.users().to_bytes());
            }
        }
    }
    let table = schema.qualify("aggregated_metrics_daily");
    let _ = tx
        .execute(
            &format!("DELETE FROM {table} WHERE metric_type = $1 AND time_bucket = $2"),
            &[&kind.metric_type(), &from],
        )
        .await
        .map_err(|e| Error::db("deleting a day's daily rollups", e))?;
    Ok(if n == 0 {
        0
    } else {
        tx.execute(
            &format!(
                "INSERT INTO {table} (time_bucket, metric_type, endpoint_path, method, event_type, \
                                      aggregated_values, sample_count, latency_sketch, users_sketch) \
                 SELECT $1, $2, u.e, u.m, u.t, u.v, u.c, u.l, u.s \
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int8[], \
                             $8::bytea[], $9::bytea[]) AS u(e, m, t, v, c, l, s)"
            ),
            &[
                &from,
                &kind.metric_type(),
                &endpoints,
                &methods,
                &types,
                &values,
                &counts,
                &latency,
                &users,
            ],
        )
        .await
        .map_err(|e| Error::db("writing daily rollups", e))?
    })
}

/// Deletes the daily rows and `rollup_days` rows of every day that has an
/// hour at or before `last_expired_hour` (retention: a day's daily rows
/// never outlive one of its hourly rows). Returns the daily rows deleted.
pub(crate) async fn delete_expired_days(
    client: &Client,
    schema: &SchemaName,
    last_expired_hour: SystemTime,
) -> Result<u64, Error> {
    let rows = client
        .execute(
            &format!(
                "DELETE FROM {} WHERE time_bucket <= $1",
                schema.qualify("aggregated_metrics_daily")
            ),
            &[&last_expired_hour],
        )
        .await
        .map_err(|e| Error::db("deleting expired daily rollups", e))?;
    let _ = client
        .execute(
            &format!(
                "DELETE FROM {} WHERE day <= $1",
                schema.qualify("rollup_days")
            ),
            &[&last_expired_hour],
        )
        .await
        .map_err(|e| Error::db("deleting expired daily bookkeeping", e))?;
    Ok(rows)
}
