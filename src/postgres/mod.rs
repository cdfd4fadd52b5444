//! The facade's PostgreSQL store: pool, migrations, partitions, sink, and
//! metrics-pg's scheduler (rollups, partition maintenance, retention).

use metrics_pg::deadpool_postgres::Pool;
use metrics_pg::{PgMetricsQuery, PgSink, Scheduler, SchedulerConfig, SchedulerHandle};

use crate::Error;

/// Collector batch size used with PostgreSQL unless the builder sets one:
/// binary COPY of 10,000 rows is several times faster per row than of 1,000.
pub(crate) const DEFAULT_PG_MAX_BATCH: usize = 10_000;

/// Connections in a pool built from a URL: the sink's COPY streams, partition
/// maintenance, the rollup jobs and dashboard queries.
const URL_POOL_SIZE: usize = 8;

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
    pub(crate) sink: PgSink,
    pub(crate) query: PgMetricsQuery,
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

    /// Migrates, creates today's partitions, and starts the maintenance task.
    pub(crate) async fn start(self) -> Result<Started, Error> {
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => metrics_pg::create_pool(&url, URL_POOL_SIZE)?,
        };
        {
            let mut client = pool.get().await.map_err(metrics_pg::Error::Pool)?;
            metrics_pg::migrate(&mut client, &self.schema).await?;
            let today = time::OffsetDateTime::now_utc().date();
            metrics_pg::maintain_partitions(&mut client, &self.schema, today).await?;
        }
        let sink = PgSink::builder(pool.clone())
            .schema(self.schema.clone())
            .build()?;
        // Dashboard queries share the pool (statement timeout 10 s each).
        let query = PgMetricsQuery::new(pool.clone(), &self.schema)?;
        // Rollups every minute, partitions hourly, retention daily at 02:00
        // UTC; an advisory lock makes sure that with N app instances each job
        // runs once.
        let scheduler = Scheduler::spawn(pool, &self.schema, SchedulerConfig::default())?;
        let maintenance = Maintenance::spawn(scheduler);
        Ok(Started {
            sink,
            query,
            maintenance,
        })
    }
}

/// The background work of the PostgreSQL store: metrics-pg's scheduler
/// (rollups every minute, partition maintenance hourly, retention daily),
/// stopped by `stop()` between runs.
pub(crate) struct Maintenance {
    scheduler: SchedulerHandle,
}

impl Maintenance {
    fn spawn(scheduler: SchedulerHandle) -> Self {
        Self { scheduler }
    }

    pub(crate) async fn stop(self) {
        self.scheduler.stop().await;
    }
}
