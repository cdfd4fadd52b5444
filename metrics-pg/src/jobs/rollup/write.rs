//! Upserting an hour's rollup rows and recording the hour as rolled.

use std::time::SystemTime;

use super::rows::Rolled;
use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::Kind;
use crate::units::from_unix_secs;

/// The statement of [`write_hour`].
pub(super) fn write_sql(schema: &SchemaName) -> String {
    format!(
        "WITH hourly AS ( \
           INSERT INTO {hourly} AS a (time_bucket, metric_type, endpoint_path, method, \
               event_type, aggregated_values, sample_count, latency_sketch, users_sketch) \
           SELECT $1, $2, u.e, u.m, u.t, u.v, u.c, u.l, u.s \
           FROM unnest($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int8[], \
                       $8::bytea[], $9::bytea[]) AS u(e, m, t, v, c, l, s) \
           ON CONFLICT (time_bucket, metric_type, endpoint_path, method, event_type) \
           DO UPDATE SET aggregated_values = EXCLUDED.aggregated_values, \
               sample_count = EXCLUDED.sample_count, \
               latency_sketch = EXCLUDED.latency_sketch, \
               users_sketch = EXCLUDED.users_sketch, \
               updated_at = now() \
           RETURNING 1), \
         five AS ( \
           INSERT INTO {five} (time_bucket, metric_type, aggregated_values, sample_count, \
               latency_sketch, users_sketch) \
           SELECT u.b, $2, u.v, u.c, u.l, u.s \
           FROM unnest($10::timestamptz[], $11::jsonb[], $12::int8[], $13::bytea[], \
                       $14::bytea[]) AS u(b, v, c, l, s)), \
         done AS ( \
           INSERT INTO {done} (metric_type, hour, raw_count) VALUES ($2, $1, $15) \
           ON CONFLICT (metric_type, hour) DO UPDATE \
           SET raw_count = EXCLUDED.raw_count, rolled_at = now()) \
         SELECT count(*) FROM hourly",
        hourly = schema.qualify("aggregated_metrics"),
        five = schema.qualify("aggregated_metrics_5min"),
        done = schema.qualify("rollup_hours"),
    )
}

/// Writes everything of a rolled hour in one statement (one round trip
/// after its parse): the upsert of the hourly rows, the insert of the
/// 5-minute rows (the hour's old ones were deleted at the start of the
/// transaction) and the `rollup_hours` record of the raw row count. Returns
/// the hourly rows written.
pub(super) async fn write_hour(
    tx: &impl tokio_postgres::GenericClient,
    statement: &(impl tokio_postgres::ToStatement + Sync + Send + ?Sized),
    kind: Kind,
    hour: i64,
    rolled: &Rolled,
) -> Result<u64, Error> {
    let rows = &rolled.rows;
    let endpoints: Vec<Option<&str>> = rows.iter().map(|r| r.endpoint.as_deref()).collect();
    let methods: Vec<Option<&str>> = rows.iter().map(|r| r.method.as_deref()).collect();
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.event_type.as_deref()).collect();
    let values: Vec<&serde_json::Value> = rows.iter().map(|r| &r.values).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    let latency: Vec<Option<&[u8]>> = rows.iter().map(|r| r.latency.as_deref()).collect();
    let users: Vec<&[u8]> = rows.iter().map(|r| r.users.as_slice()).collect();
    let slots = &rolled.slots;
    let slot_starts: Vec<SystemTime> = slots.iter().map(|r| from_unix_secs(r.start)).collect();
    let slot_values: Vec<&serde_json::Value> = slots.iter().map(|r| &r.values).collect();
    let slot_counts: Vec<i64> = slots.iter().map(|r| r.count).collect();
    let slot_latency: Vec<Option<&[u8]>> = slots.iter().map(|r| r.latency.as_deref()).collect();
    let slot_users: Vec<&[u8]> = slots.iter().map(|r| r.users.as_slice()).collect();
    let raw_count = i64::try_from(rolled.raw).unwrap_or(i64::MAX);
    let row = tx
        .query_one(
            statement,
            &[
                &from_unix_secs(hour),
                &kind.metric_type(),
                &endpoints,
                &methods,
                &types,
                &values,
                &counts,
                &latency,
                &users,
                &slot_starts,
                &slot_values,
                &slot_counts,
                &slot_latency,
                &slot_users,
                &raw_count,
            ],
        )
        .await
        .map_err(|e| Error::db("writing an hour's rollups", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
