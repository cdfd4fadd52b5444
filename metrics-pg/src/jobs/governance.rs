//! Record-count governance: after each job run, how many raw rows are stored,
//! with a warning and an `ALERT:` error past configurable thresholds.

use tokio_postgres::GenericClient;

use crate::error::Error;
use crate::jobs::report::thousands;
use crate::schema::SchemaName;
use crate::tables::PARTITIONED_TABLES;

/// Raw-row thresholds checked after every rollup and retention run.
///
/// The count is an estimate from the catalog (`pg_class.reltuples` of each
/// partition, or `pg_stat_user_tables.n_live_tup` for a partition not yet
/// analysed), so checking costs nothing even on large tables; it lags inserts
/// until autovacuum (or `ANALYZE`) refreshes the statistics.
///
/// ```
/// use metrics_pg::Governance;
///
/// let g = Governance::default();
/// assert_eq!((g.warn_at, g.alert_at), (800_000, 1_000_000));
/// let off = Governance::disabled();
/// assert_eq!(off.alert_at, u64::MAX);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Governance {
    /// `tracing::warn!` at or above this many raw rows.
    pub warn_at: u64,
    /// `tracing::error!` starting with `ALERT:` at or above this many.
    pub alert_at: u64,
}

impl Default for Governance {
    fn default() -> Self {
        Self {
            warn_at: 800_000,
            alert_at: 1_000_000,
        }
    }
}

impl Governance {
    /// Thresholds `warn_at` and `alert_at`.
    pub fn new(warn_at: u64, alert_at: u64) -> Self {
        Self { warn_at, alert_at }
    }

    /// Never warns nor alerts (the estimate is still reported).
    pub fn disabled() -> Self {
        Self::new(u64::MAX, u64::MAX)
    }

    /// Estimates the raw rows of `schema` and logs at the thresholds.
    pub(crate) async fn check(
        &self,
        client: &impl GenericClient,
        schema: &SchemaName,
    ) -> Result<u64, Error> {
        let n = estimate_raw_rows(client, schema).await?;
        self.log(schema, n);
        Ok(n)
    }

    fn log(&self, schema: &SchemaName, n: u64) {
        if n >= self.alert_at {
            tracing::error!(
                schema = %schema,
                raw_rows = n,
                "ALERT: {} raw metric rows stored (alert threshold {}); check that the retention job runs (metrics-aggregate retention) and that traffic is expected",
                thousands(n),
                thousands(self.alert_at)
            );
        } else if n >= self.warn_at {
            tracing::warn!(
                schema = %schema,
                raw_rows = n,
                "{} raw metric rows stored (warning threshold {}); the alert fires at {}",
                thousands(n),
                thousands(self.warn_at),
                thousands(self.alert_at)
            );
        }
    }
}

/// Sum of the row estimates of every partition of both raw tables.
pub(crate) async fn estimate_raw_rows(
    client: &impl GenericClient,
    schema: &SchemaName,
) -> Result<u64, Error> {
    let tables: Vec<&str> = PARTITIONED_TABLES.to_vec();
    let row = client
        .query_one(
            "SELECT COALESCE(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint \
                                     ELSE COALESCE(s.n_live_tup, 0) END), 0)::bigint \
             FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE n.nspname = $1 AND p.relname = ANY($2)",
            &[&schema.as_str(), &tables],
        )
        .await
        .map_err(|e| Error::db("estimating the raw row count", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
