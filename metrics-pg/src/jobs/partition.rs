//! Daily partitions of the raw tables.
//!
//! `performance_metrics` and `usage_events` are range-partitioned by UTC day
//! on `timestamp`, each with a `*_default` partition that catches rows for
//! days without a partition of their own, so a write never fails for want of
//! a partition. [`maintain_partitions`] (run it daily or hourly: the facade
//! runs it on a timer, cron can call `metrics-aggregate`) creates the
//! partitions for yesterday through three days ahead, and for every day that
//! has rows waiting in a default partition (back-dated or far-future data),
//! moving those rows into the new partition in the same transaction.
//!
//! New partitions are built as plain tables and then *attached*: `ATTACH
//! PARTITION` takes only a SHARE UPDATE EXCLUSIVE lock on the parent, so
//! concurrent `COPY`s into other days keep running, whereas `CREATE TABLE ..
//! PARTITION OF` would lock the whole parent.

use time::{Date, Month};
use tokio_postgres::Client;

use crate::error::Error;
use crate::schema::SchemaName;
use crate::tables::{
    PARTITIONED_TABLES, default_partition_name, parse_partition_day, partition_name,
};

/// Days before `today` covered by [`maintain_partitions`].
pub const DAYS_BEHIND: u8 = 1;
/// Days after `today` covered by [`maintain_partitions`].
pub const DAYS_AHEAD: u8 = 3;

/// At most this many distinct stray days are moved out of a default
/// partition per table and run, to keep one run's locks short; the next run
/// continues.
const MAX_STRAY_DAYS_PER_RUN: i64 = 100;

/// How long a maintenance transaction waits for a lock (the advisory lock
/// of another run, the default partition behind a long transaction) before
/// failing with `lock_not_available` (55P03, a timeout): while it waits,
/// writers of stray days queue behind its ACCESS EXCLUSIVE request, so it
/// gives up soon and the next run tries again.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// `statement_timeout` of a maintenance transaction (moving a day's rows
/// out of a default partition may take a while, never for ever).
const STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '600s'";

/// First key of the advisory lock serialising maintenance runs ("amPT").
const PARTITION_LOCK_CLASS: i32 = 0x616D_5054;

/// What a partition maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionReport {
    /// Partitions created, as `table_pYYYYMMDD`.
    pub created: Vec<String>,
    /// Rows moved out of default partitions into their day's new partition.
    pub rows_moved: u64,
}

/// Creates the daily partitions of both raw tables for `today − 1 ..= today +
/// 3` (UTC days) and for every day that has rows in a default partition,
/// moving those rows out. Idempotent; concurrent runs serialise on an
/// advisory lock.
///
/// # Example
///
/// ```no_run
/// # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), metrics_pg::Error> {
/// let today = time::OffsetDateTime::now_utc().date();
/// let report = metrics_pg::maintain_partitions(client, "app_metrics", today).await?;
/// println!("created {:?}, moved {} rows", report.created, report.rows_moved);
/// # Ok(()) }
/// ```
pub async fn maintain_partitions(
    client: &mut Client,
    schema: &str,
    today: Date,
) -> Result<PartitionReport, Error> {
    let schema = SchemaName::new(schema)?;
    let mut days = Vec::new();
    let mut d = today;
    for _ in 0..DAYS_BEHIND {
        d = d.previous_day().unwrap_or(d);
    }
    for _ in 0..=(DAYS_BEHIND + DAYS_AHEAD) {
        days.push(d);
        d = d.next_day().unwrap_or(d);
    }
    let mut report = PartitionReport::default();
    for table in PARTITIONED_TABLES {
        let mut wanted = days.clone();
        wanted.extend(stray_days(client, &schema, table).await?);
        wanted.sort_unstable();
        wanted.dedup();
        for day in wanted {
            create_day(client, &schema, table, day, &mut report).await?;
        }
    }
    Ok(report)
}

/// Creates the partitions of both raw tables for the given UTC days (moving
/// any rows of those days out of the default partitions). Use it before
/// importing back-dated data so the rows go straight to their partition.
pub async fn create_partitions(
    client: &mut Client,
    schema: &str,
    days: impl IntoIterator<Item = Date>,
) -> Result<PartitionReport, Error> {
    let schema = SchemaName::new(schema)?;
    let days: Vec<Date> = days.into_iter().collect();
    let mut report = PartitionReport::default();
    for table in PARTITIONED_TABLES {
        for &day in &days {
            create_day(client, &schema, table, day, &mut report).await?;
        }
    }
    Ok(report)
}

/// `YYYY-MM-DD 00:00:00+00`, a timestamptz literal for the start of `day`.
fn day_start_literal(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02} 00:00:00+00",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn parse_day(text: &str) -> Option<Date> {
    let mut parts = text.splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

/// The UTC days that have rows in `table`'s default partition (read in a
/// transaction of its own, for its lock and statement timeouts).
async fn stray_days(
    client: &mut Client,
    schema: &SchemaName,
    table: &str,
) -> Result<Vec<Date>, Error> {
    let default = schema.qualify(&default_partition_name(table));
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting partition maintenance", e))?;
    tx.batch_execute(&format!("{LOCK_TIMEOUT}; {STATEMENT_TIMEOUT}"))
        .await
        .map_err(|e| Error::db("setting partition maintenance timeouts", e))?;
    let rows = tx
        .query(
            &format!(
                "SELECT DISTINCT to_char((\"timestamp\" AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day \
                 FROM {default} ORDER BY day LIMIT $1"
            ),
            &[&MAX_STRAY_DAYS_PER_RUN],
        )
        .await
        .map_err(|e| Error::db("listing days in a default partition", e))?;
    tx.commit()
        .await
        .map_err(|e| Error::db("ending a read of a default partition", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| parse_day(r.get::<_, &str>(0)))
        .collect())
}

/// Creates `table`'s partition for `day` unless it exists, in one
/// transaction: build a plain table, move the day's rows out of the default
/// partition into it, attach it.
async fn create_day(
    client: &mut Client,
    schema: &SchemaName,
    table: &str,
    day: Date,
    report: &mut PartitionReport,
) -> Result<(), Error> {
    let name = partition_name(table, day);
    let Some(next) = day.next_day() else {
        return Ok(());
    };
    let (lower, upper) = (day_start_literal(day), day_start_literal(next));
    let parent = schema.qualify(table);
    let default = schema.qualify(&default_partition_name(table));
    let part = schema.qualify(&name);

    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting partition maintenance", e))?;
    tx.batch_execute(&format!("{LOCK_TIMEOUT}; {STATEMENT_TIMEOUT}"))
        .await
        .map_err(|e| Error::db("setting partition maintenance timeouts", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&PARTITION_LOCK_CLASS, &schema.as_str()],
    )
    .await
    .map_err(|e| Error::db("taking the partition advisory lock", e))?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema.as_str(), &name],
        )
        .await
        .map_err(|e| Error::db("looking up a partition", e))?
        .is_some();
    if exists {
        return Ok(()); // dropping `tx` rolls back: nothing was changed
    }
    // Lock the default partition first so no row for this day can slip into
    // it between the move and the attach (which re-checks the default
    // partition and would fail). Writers of other days are not routed to
    // the default partition and keep going.
    tx.batch_execute(&format!(
        "LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE;
         CREATE TABLE {part} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
    ))
    .await
    .map_err(|e| Error::db("creating a partition table", e))?;
    let moved = tx
        .execute(
            &format!(
                "WITH moved AS (DELETE FROM {default} \
                   WHERE \"timestamp\" >= '{lower}' AND \"timestamp\" < '{upper}' RETURNING *) \
                 INSERT INTO {part} SELECT * FROM moved"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("moving rows out of a default partition", e))?;
    tx.batch_execute(&format!(
        "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ('{lower}') TO ('{upper}')"
    ))
    .await
    .map_err(|e| Error::db("attaching a partition", e))?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing partition maintenance", e))?;
    if moved > 0 {
        tracing::info!(partition = %name, moved, "created partition and moved rows out of the default partition");
    } else {
        tracing::debug!(partition = %name, "created partition");
    }
    report.created.push(name);
    report.rows_moved += moved;
    Ok(())
}

/// The day partitions of `table` (`table_pYYYYMMDD`) with the start of their
/// day (seconds since the epoch), oldest first. The default partition and
/// anything not named by `maintain_partitions` are left alone.
pub(crate) async fn day_partitions(
    client: &Client,
    schema: &SchemaName,
    table: &str,
) -> Result<Vec<(String, i64)>, Error> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = $2",
            &[&schema.as_str(), &table],
        )
        .await
        .map_err(|e| Error::db("listing raw partitions", e))?;
    let mut out: Vec<(String, i64)> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let day = parse_partition_day(table, &name)?;
            Some((name, day.midnight().assume_utc().unix_timestamp()))
        })
        .collect();
    out.sort_by_key(|(_, day)| *day);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn names_and_literals() {
        let d = date!(2025 - 03 - 09);
        assert_eq!(partition_name("usage_events", d), "usage_events_p20250309");
        assert_eq!(day_start_literal(d), "2025-03-09 00:00:00+00");
        assert_eq!(parse_day("2025-03-09"), Some(d));
        assert_eq!(parse_day("2025-13-09"), None);
        assert_eq!(parse_day("junk"), None);
    }
}
