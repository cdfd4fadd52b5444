//! Which hours to roll: the closed hours with raw rows that are not rolled
//! yet or whose raw rows changed since.

use tokio_postgres::Client;

use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::{Kind, default_partition_name};
use crate::units::{HOUR, floor_day, floor_hour, from_unix_secs};

/// Above this many hours since the last rolled one, new hours are found by
/// counting rows per hour rather than visited one by one (a long gap is
/// usually empty).
pub(super) const MAX_ENUMERATED_HOURS: i64 = 48;

/// The closed hours of `kind` to roll this run, ascending:
///
/// * hours after the last one rolled: all of them (an empty hour is
///   recorded with count 0, so it is visited once), or, after a long gap or
///   on the first run, those that have rows (the gap's empty hours are
///   returned as `(from, to, hours with rows)`, to be recorded once the rest
///   is rolled). A first run starts at the UTC midnight before the first raw
///   row, so that day can become complete (see the module docs);
/// * hours already rolled within `recheck` seconds before `closed_end`:
///   only those whose raw row count changed since.
pub(super) async fn closed_hours_to_roll(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
    closed_end: i64,
    recheck: i64,
) -> Result<(Vec<i64>, Vec<(i64, i64, Vec<i64>)>), Error> {
    let last: Option<i64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM max(hour))::bigint FROM {} WHERE metric_type = $1",
                schema.qualify("rollup_hours")
            ),
            &[&kind.metric_type()],
        )
        .await
        .map_err(|e| Error::db("reading the last rolled hour", e))?
        .get(0);
    let new_from = match last {
        Some(last) => last + HOUR,
        None => match first_raw_hour(client, schema, kind).await? {
            Some(first) => floor_day(first),
            None => return Ok((Vec::new(), Vec::new())),
        },
    };
    let mut fills = Vec::new();
    let mut hours = Vec::new();
    let recheck_from = closed_end.saturating_sub(recheck);
    let rolled_end = new_from.min(closed_end);
    if recheck_from < rolled_end {
        hours = hours_to_roll(client, schema, kind, recheck_from, rolled_end).await?;
    }
    if closed_end - new_from > MAX_ENUMERATED_HOURS * HOUR {
        let with_rows = hours_to_roll(client, schema, kind, new_from, closed_end).await?;
        hours.extend(with_rows.iter().copied());
        fills.push((new_from, closed_end, with_rows));
    } else {
        hours.extend((new_from..closed_end).step_by(HOUR as usize));
    }
    hours.sort_unstable();
    hours.dedup();
    Ok((hours, fills))
}

/// The first hour that may hold raw rows, for a table never rolled: the
/// oldest stray row in the default partition or the start of the oldest
/// non-empty day partition. Cheap: no scan of a day partition.
pub(super) async fn first_raw_hour(
    client: &Client,
    schema: &SchemaName,
    kind: Kind,
) -> Result<Option<i64>, Error> {
    let stray: Option<f64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM min(\"timestamp\"))::float8 FROM {}",
                schema.qualify(&default_partition_name(kind.table()))
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("finding the oldest stray raw row", e))?
        .get(0);
    let mut first = stray.map(|s| floor_hour(s.floor() as i64));
    for (name, day) in crate::jobs::partition::day_partitions(client, schema, kind.table()).await? {
        if first.is_some_and(|f| f <= day) {
            break;
        }
        let any = client
            .query_opt(
                &format!("SELECT 1 FROM {} LIMIT 1", schema.qualify(&name)),
                &[],
            )
            .await
            .map_err(|e| Error::db("looking for raw rows", e))?
            .is_some();
        if any {
            first = Some(first.map_or(day, |f| f.min(day)));
            break;
        }
    }
    Ok(first)
}

/// Hours in `[lo, hi)` whose raw rows were never rolled or changed in
/// number since, ascending (seconds since the epoch).
pub(crate) async fn hours_to_roll(
    client: &impl tokio_postgres::GenericClient,
    schema: &SchemaName,
    kind: Kind,
    lo: i64,
    hi: i64,
) -> Result<Vec<i64>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT extract(epoch FROM h.hour)::bigint FROM ( \
                   SELECT date_bin('1 hour', \"timestamp\", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, \
                          count(*) AS n \
                   FROM {raw} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 GROUP BY 1) h \
                 LEFT JOIN {done} r ON r.metric_type = $3 AND r.hour = h.hour \
                 WHERE r.hour IS NULL OR (r.raw_count <> h.n AND NOT r.raw_dropped) \
                 ORDER BY 1",
                raw = schema.qualify(kind.table()),
                done = schema.qualify("rollup_hours"),
            ),
            &[&from_unix_secs(lo), &from_unix_secs(hi), &kind.metric_type()],
        )
        .await
        .map_err(|e| Error::db("counting raw rows per hour", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
