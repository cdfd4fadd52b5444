//! The facade's PostgreSQL store: pool, sink and query store behind a
//! readiness gate, and the background preparation that migrates, creates
//! partitions and then starts metrics-pg's scheduler (rollups, partition
//! maintenance, retention).
//!
//! `start()` checks every setting at once (connection string, schema name,
//! sink settings: errors a restart cannot fix), then gives the database a
//! short first try. A reachable database is prepared before `start()`
//! returns, as it always was; an unreachable one is not waited for: the app
//! starts and serves, records wait in the collector's bounded queue, the
//! dashboard API answers 503, and the preparation keeps trying in the
//! background (see [`prepare`]).

mod prepare;
mod ready;

use std::time::Duration;

use metrics_pg::deadpool_postgres::Pool;
use metrics_pg::{PgMetricsQuery, PgSink, SchedulerHandle};

use self::prepare::{Preparation, Progress};
use self::ready::{NOT_READY, Readiness, ReadyQuery, ReadySink};
use crate::Error;

/// Collector batch size used with PostgreSQL unless the builder sets one:
/// binary COPY of 10,000 rows is several times faster per row than of 1,000.
pub(crate) const DEFAULT_PG_MAX_BATCH: usize = 10_000;

/// Connections in a pool built from a URL: the sink's COPY streams, partition
/// maintenance, the rollup jobs and dashboard queries.
const URL_POOL_SIZE: usize = 8;

/// How long `start()` waits for a first connection. A refused connection
/// fails at once; this bounds a database that does not answer at all.
const FIRST_TRY_CONNECT: Duration = Duration::from_secs(2);

/// How long `start()` waits for the first attempt once connected (the
/// migrations of a reachable database). Past it the app starts anyway and
/// the gate opens when they finish.
const FIRST_TRY_TOTAL: Duration = Duration::from_secs(60);

pub(crate) struct PgStore {
    source: Source,
    pub(crate) schema: String,
}

/// Where the pool comes from.
enum Source {
    Pool(Pool),
    Url(String),
}

pub(crate) struct Started {
    pub(crate) sink: ReadySink,
    pub(crate) query: ReadyQuery,
    pub(crate) maintenance: Maintenance,
}

impl PgStore {
    pub(crate) fn from_pool(pool: Pool) -> Self {
        Self {
            source: Source::Pool(pool),
            schema: metrics_pg::DEFAULT_SCHEMA.to_owned(),
        }
    }

    pub(crate) fn from_url(url: String) -> Self {
        Self {
            source: Source::Url(url),
            schema: metrics_pg::DEFAULT_SCHEMA.to_owned(),
        }
    }

    /// Checks the settings (an error here is `start()`'s), builds the gated
    /// sink and query store, and starts the preparation, waiting for its
    /// first try (see the module docs).
    pub(crate) async fn start(self) -> Result<Started, Error> {
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => metrics_pg::create_pool(&url, URL_POOL_SIZE)?,
        };
        // Both check the schema name and their settings; neither connects.
        let sink = PgSink::builder(pool.clone())
            .schema(self.schema.clone())
            .build()?;
        // Dashboard queries share the pool (statement timeout 10 s each).
        let query = PgMetricsQuery::new(pool.clone(), &self.schema)?;
        let ready = Readiness::default();
        let preparation = Preparation::spawn(pool, self.schema.clone(), ready.clone());
        match preparation
            .first_try(FIRST_TRY_CONNECT, FIRST_TRY_TOTAL)
            .await
        {
            Progress::Ready => {}
            progress => tracing::warn!(
                schema = self.schema,
                ?progress,
                "starting with the metrics store not ready ({NOT_READY}): retrying in the background"
            ),
        }
        Ok(Started {
            sink: ReadySink::new(sink, ready.clone()),
            query: ReadyQuery::new(query, ready),
            maintenance: Maintenance { preparation },
        })
    }
}

/// The background work of the PostgreSQL store: the preparation, then the
/// scheduler it starts (rollups every minute, partition maintenance hourly,
/// retention daily), both stopped by `stop()`.
pub(crate) struct Maintenance {
    preparation: Preparation,
}

impl Maintenance {
    pub(crate) async fn stop(self) {
        let scheduler: Option<SchedulerHandle> = self.preparation.stop().await;
        if let Some(scheduler) = scheduler {
            scheduler.stop().await;
        }
    }
}
