//! The rollup bookkeeping of a range, read in the query's snapshot, and the
//! plan built from it (which parts come from rollups, which from raw rows).

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::plan::{Plan, Rolled};
use super::sql::{Sql, prepare};
use crate::error::Error;
use crate::tables::Kind;
use crate::units::{HOUR, floor_time, from_unix_secs};

/// The rollup bookkeeping of `kind` for the hours overlapping `[start, end)`.
pub(super) async fn rolled(
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
        hour_versions: hours
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(2)))
            .collect(),
        day_versions: days
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .collect(),
    })
}

/// The plan of `kind` over `[start, end)` read from rollups at `unit`.
pub(super) async fn plan(
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
pub(super) async fn series_plan(
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
