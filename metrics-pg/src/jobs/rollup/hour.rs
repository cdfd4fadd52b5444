//! One hour of one raw table rolled inside one transaction.

use std::time::Instant;

use tokio_postgres::Transaction;

use super::requests::stream_performance;
use super::usage::stream_usage;
use super::write::{write_hour, write_sql};
use crate::error::Error;
use crate::jobs::daily::{Acc, Key};
use crate::schema::SchemaName;
use crate::tables::Kind;
use crate::units::{HOUR, floor_day, ts_literal};

/// Rolls one hour of one raw table inside `tx`: streams its rows, upserts the
/// rollup rows, records the count. Returns (raw rows read, rollup rows
/// written). `set_timeout` is the job's `SET LOCAL statement_timeout`.
pub(crate) async fn roll_hour(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    exact_limit: u32,
    set_timeout: &str,
) -> Result<(u64, u64, Vec<(Key, Acc)>), Error> {
    let write = write_sql(schema);
    roll_hour_with(
        tx,
        schema,
        kind,
        hour,
        exact_limit,
        write.as_str(),
        set_timeout,
    )
    .await
}

/// [`roll_hour`] with the write statement given (prepared, or its text).
pub(super) async fn roll_hour_with(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    kind: Kind,
    hour: i64,
    exact_limit: u32,
    write: &(impl tokio_postgres::ToStatement + Sync + Send + ?Sized),
    set_timeout: &str,
) -> Result<(u64, u64, Vec<(Key, Acc)>), Error> {
    // One round trip: the timeout, and withdrawing what the hour replaces:
    // its 5-minute rows, and its day's `rollup_days` row (the daily rows no
    // longer equal the merge of the day's hours until the day is rebuilt).
    // Literals, not parameters: a simple query runs several statements.
    let metric_type = kind.metric_type(); // 'performance' | 'usage'
    tx.batch_execute(&format!(
        "{set_timeout}; \
         DELETE FROM {five} WHERE metric_type = '{metric_type}' \
           AND time_bucket >= {from} AND time_bucket < {to}; \
         DELETE FROM {days} WHERE metric_type = '{metric_type}' AND day = {day}",
        five = schema.qualify("aggregated_metrics_5min"),
        days = schema.qualify("rollup_days"),
        from = ts_literal(hour),
        to = ts_literal(hour + HOUR),
        day = ts_literal(floor_day(hour)),
    ))
    .await
    .map_err(|e| Error::db("preparing to roll an hour", e))?;
    let t0 = Instant::now();
    let mut rolled = match kind {
        Kind::Performance => stream_performance(tx, schema, hour, exact_limit).await?,
        Kind::Usage => stream_usage(tx, schema, hour).await?,
    };
    let t1 = Instant::now();
    let written = write_hour(tx, write, kind, hour, &rolled).await?;
    // Where an hour's time goes (the rollup benchmark's profile).
    tracing::trace!(stream = ?(t1 - t0), write = ?t1.elapsed(), raw = rolled.raw, "rolled hour phases");
    let states = std::mem::take(&mut rolled.states);
    let raw = rolled.raw;
    Ok((raw, written, states))
}
