//! PostgreSQL storage for app-metrics.
//!
//! * [`PgSink`]: the [`MetricsSink`](metrics_core::MetricsSink) that writes
//!   the collector's batches with binary `COPY`, isolates rows the database
//!   refuses, and rides out database restarts.
//! * [`Migrator`] / [`migrate`]: embedded, versioned migrations (with down
//!   scripts) of the schema, under an advisory lock, checksummed.
//! * [`maintain_partitions`]: creates the daily partitions of the raw tables
//!   ahead of time and moves stray rows out of the default partitions.
//! * [`create_pool`]: a deadpool-postgres pool with the settings the sink
//!   relies on.
//!
//! The tables (in a schema of their own, `app_metrics` by default) are
//! described in `docs/operations.md`.
//!
//! # Upkeep / background work
//!
//! Nothing here spawns a task unless asked. The collector (metrics-core)
//! calls [`PgSink`]; whoever owns the application (the `app-metrics` facade,
//! or you) runs [`migrate`] and [`maintain_partitions`] once at start-up,
//! then either starts the [`Scheduler`] (rollups every minute, partition
//! maintenance hourly, retention daily) or runs the `metrics-aggregate`
//! binary from cron.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use metrics_core::Collector;
//!
//! let pool = metrics_pg::create_pool("postgres://app@localhost/app", 4)?;
//! let mut client = pool.get().await?;
//! metrics_pg::migrate(&mut client, "app_metrics").await?;
//! let today = time::OffsetDateTime::now_utc().date();
//! metrics_pg::maintain_partitions(&mut client, "app_metrics", today).await?;
//! drop(client);
//!
//! let collector = Collector::builder(metrics_pg::PgSink::new(pool)).spawn()?;
//! # let _ = collector;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod conn;
mod copy_out;
mod error;
mod jobs;
mod migrate;
mod pool;
mod query;
mod schema;
mod sink;
mod tables;
mod units;

pub use error::Error;
pub use jobs::clock::Clock;
pub use jobs::governance::Governance;
pub use jobs::partition::{
    DAYS_AHEAD, DAYS_BEHIND, PartitionReport, create_partitions, maintain_partitions,
};
pub use jobs::report::JobReport;
pub use jobs::retention::RetentionJob;
pub use jobs::rollup::RollupJob;
pub use jobs::schedule::{Scheduler, SchedulerConfig, SchedulerHandle};
pub use migrate::{MigrationReport, Migrator, migrate};
pub use pool::create_pool;
pub use query::PgMetricsQuery;
pub use schema::{DEFAULT_SCHEMA, SchemaName};
pub use sink::{PgSink, PgSinkBuilder};
pub use tables::ALL;

/// Re-exported so users can build their own pool without naming the crates.
pub use deadpool_postgres;
pub use tokio_postgres;
