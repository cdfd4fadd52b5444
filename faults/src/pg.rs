//! PostgreSQL for a scenario: a throwaway cluster of its own (a crash or a
//! stop must not touch another scenario), its database, and the faults the
//! harness injects into the server itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_support::{Cluster, ClusterOptions};
use tokio_postgres::{Client, NoTls};

use crate::app::signal_pid;
use crate::error::Error;

/// The database every scenario's apps use.
pub(crate) const DB: &str = "faults";

/// The schema the example's store uses.
pub(crate) const SCHEMA: &str = "app_metrics";

/// A scenario's PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Pg {
    cluster: Arc<Cluster>,
}

impl Pg {
    /// Starts a fresh cluster and creates [`DB`].
    ///
    /// `fsync` stays off (the OS keeps what was written across a process
    /// crash, and the scenarios crash processes, not the machine), but
    /// `synchronous_commit` is on: the test default (off) lets a commit the
    /// app was told about sit in the WAL buffers, which a backend or
    /// postmaster crash loses; the harness would blame the app for it.
    pub(crate) async fn start() -> Result<Self, Error> {
        let options = ClusterOptions::new().setting("synchronous_commit", "on");
        let cluster = tokio::task::spawn_blocking(move || Cluster::init(&options))
            .await
            .map_err(|e| Error::Setup(format!("cluster task: {e}")))??;
        let pg = Self {
            cluster: Arc::new(cluster),
        };
        let admin = pg.connect_db("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {DB}"))
            .await
            .map_err(Error::db("creating the scenario's database"))?;
        Ok(pg)
    }

    /// The server's own address (the proxy forwards here).
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.cluster.port()))
    }

    /// A `DATABASE_URL` for [`DB`] at `addr` (the proxy's, usually), with
    /// an `application_name` that tells the scenario's apps apart in
    /// `pg_stat_activity`.
    pub(crate) fn url_at(addr: SocketAddr, app_name: &str) -> String {
        format!("postgres://postgres@{addr}/{DB}?application_name={app_name}")
    }

    /// A direct connection to [`DB`] (never through the proxy).
    pub(crate) async fn connect(&self) -> Result<Client, Error> {
        self.connect_db(DB).await
    }

    async fn connect_db(&self, db: &str) -> Result<Client, Error> {
        let (client, conn) = tokio_postgres::connect(&self.cluster.url_for(db), NoTls)
            .await
            .map_err(Error::db("connecting to the scenario's PostgreSQL"))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Connects, retrying for up to `timeout` (after a restart).
    pub(crate) async fn connect_retrying(&self, timeout: Duration) -> Result<Client, Error> {
        let t0 = Instant::now();
        loop {
            match self.connect().await {
                Ok(c) => return Ok(c),
                Err(e) if t0.elapsed() > timeout => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `pg_ctl stop -m fast`: sessions cut, as in an outage.
    pub(crate) async fn stop(&self) -> Result<(), Error> {
        let c = Arc::clone(&self.cluster);
        blocking(move || c.stop()).await
    }

    /// Starts the server again on the same port.
    pub(crate) async fn start_again(&self) -> Result<(), Error> {
        let c = Arc::clone(&self.cluster);
        blocking(move || c.start()).await
    }

    /// `SIGKILL` to the postmaster (waits until its processes are gone).
    pub(crate) async fn kill_postmaster(&self) -> Result<(), Error> {
        let c = Arc::clone(&self.cluster);
        blocking(move || c.kill()).await
    }

    /// Waits (up to `timeout`) for a backend of [`DB`] running `COPY` and
    /// `SIGKILL`s it; returns its pid. The postmaster then ends every
    /// session and runs crash recovery, as after any backend crash.
    pub(crate) async fn kill_copy_backend(&self, timeout: Duration) -> Result<Option<i32>, Error> {
        let client = self.connect().await?;
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            let row = client
                .query_opt(
                    "SELECT pid FROM pg_stat_activity \
                     WHERE datname = $1 AND state = 'active' AND query ILIKE 'copy%' \
                     AND pid <> pg_backend_pid() LIMIT 1",
                    &[&DB],
                )
                .await
                .map_err(Error::db("looking for a COPY backend"))?;
            if let Some(row) = row {
                let pid: i32 = row.get(0);
                let _ = signal_pid(pid.unsigned_abs(), "KILL");
                return Ok(Some(pid));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(None)
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), test_support::Error> + Send + 'static,
) -> Result<(), Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Setup(format!("cluster task: {e}")))?
        .map_err(Error::from)
}
