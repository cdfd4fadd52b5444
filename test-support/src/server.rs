//! The server tests talk to: the process-wide shared one, a dedicated one, or `DATABASE_URL`.

use std::sync::{Arc, OnceLock};

use crate::{Cluster, ClusterOptions, Error, TestDb, url};

/// A PostgreSQL server for tests: a throwaway [`Cluster`] started by the harness, or an external
/// server named by `DATABASE_URL`.
///
/// - [`TestServer::shared`] is the one server of this test process. It is started once, the
///   first time any test asks (with blocking `std` code, because every `#[tokio::test]` has its
///   own runtime and the server must outlive each of them), and removed when the process exits.
///   When `DATABASE_URL` is set, it is that server instead.
/// - [`TestServer::dedicated`] starts a cluster for one test alone, so the test may
///   [`stop`](Self::stop) and [`start`](Self::start) it (an outage) without disturbing the
///   others. It always starts a local cluster, even when `DATABASE_URL` is set, and is removed
///   when the last clone (and every [`TestDb`] on it) is dropped.
///
/// Either way, tests get their own database from [`TestServer::create_db`] (or
/// [`TestDb::new`], which uses the shared server).
///
/// # Example
///
/// ```no_run
/// # async fn outage() {
/// use app_metrics_test_support::TestServer;
///
/// let server = TestServer::dedicated().await;
/// let db = server.create_db().await;
/// server.stop().await; // connections to `db` now fail
/// server.start().await; // same port, same data
/// let client = db.connect().await;
/// # let _ = client;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TestServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    /// `DATABASE_URL` or [`TestServer::from_url`]: a server the harness did not start.
    External { url: String },
    /// A cluster the harness started.
    Local(Cluster),
}

/// The result of starting the shared server, kept so that every test of the process reports
/// the same failure instead of each retrying a slow `initdb`.
static SHARED: OnceLock<Result<TestServer, String>> = OnceLock::new();

// ===== impl TestServer =====

impl TestServer {
    /// The server shared by all tests of this process: `DATABASE_URL` if set, else a throwaway
    /// cluster started on first use.
    ///
    /// # Panics
    ///
    /// If no server can be started (no PostgreSQL binaries, no user to run them as, ...), with a
    /// message that names what is missing. Tests never skip silently.
    pub async fn shared() -> Self {
        if let Some(shared) = SHARED.get() {
            return unwrap_shared(shared);
        }
        tokio::task::spawn_blocking(Self::shared_blocking)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`TestServer::shared`] for code without a runtime (a benchmark's setup, a sync test).
    /// Blocks the first time while the cluster starts (a second or two).
    ///
    /// # Panics
    ///
    /// As [`TestServer::shared`].
    pub fn shared_blocking() -> Self {
        unwrap_shared(SHARED.get_or_init(start_shared))
    }

    /// A throwaway cluster for the calling test alone (test settings: see
    /// [`ClusterOptions::new`]).
    ///
    /// # Panics
    ///
    /// If the cluster cannot be started; the message names what is missing.
    pub async fn dedicated() -> Self {
        Self::dedicated_with(ClusterOptions::new()).await
    }

    /// [`TestServer::dedicated`] with other settings.
    ///
    /// # Panics
    ///
    /// If the cluster cannot be started; the message names what is missing.
    pub async fn dedicated_with(options: ClusterOptions) -> Self {
        let cluster = tokio::task::spawn_blocking(move || Cluster::init(&options))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match cluster {
            Ok(cluster) => Self {
                inner: Arc::new(Inner::Local(cluster)),
            },
            Err(e) => panic!("app-metrics test harness: cannot start a dedicated PostgreSQL: {e}"),
        }
    }

    /// A server the harness did not start, reached through `url` (libpq URL or `key=value`
    /// form). The role needs `CREATEDB`, or else `CREATE` on the database for the schema
    /// fallback (see [`TestDb`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] when `url` does not parse.
    pub fn from_url(url: impl Into<String>) -> Result<Self, Error> {
        let url = url.into();
        if let Err(source) = url.parse::<tokio_postgres::Config>() {
            return Err(Error::InvalidUrl {
                url: url::redact(&url),
                source,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner::External { url }),
        })
    }

    /// The administrative connection string (superuser, `postgres` database, for a local
    /// cluster; `DATABASE_URL` as given otherwise).
    pub fn url(&self) -> String {
        match &*self.inner {
            Inner::External { url } => url.clone(),
            Inner::Local(cluster) => cluster.url(),
        }
    }

    /// Whether this is a server the harness did not start (`DATABASE_URL`, [`from_url`](Self::from_url)).
    pub fn is_external(&self) -> bool {
        matches!(&*self.inner, Inner::External { .. })
    }

    /// The local cluster behind this server, if the harness started it.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &*self.inner {
            Inner::External { .. } => None,
            Inner::Local(cluster) => Some(cluster),
        }
    }

    /// A fresh database (or schema) of its own for the calling test; see [`TestDb`].
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or the database cannot be created.
    pub async fn create_db(&self) -> TestDb {
        TestDb::create(self.clone()).await
    }

    /// Stops the server (`pg_ctl stop -m fast`, open sessions are cut) and waits until it is
    /// down.
    ///
    /// # Panics
    ///
    /// On an external server (only servers from [`TestServer::dedicated`] should be stopped:
    /// stopping the shared one would break the other tests), or when `pg_ctl` fails.
    pub async fn stop(&self) {
        self.control("stop", Cluster::stop).await;
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port with the same data.
    ///
    /// # Panics
    ///
    /// On an external server, or when the server does not come up.
    pub async fn start(&self) {
        self.control("start", Cluster::start).await;
    }

    /// Crashes the server (`SIGKILL` to the postmaster, see [`Cluster::kill`]);
    /// [`start`](Self::start) then runs crash recovery on the same port.
    ///
    /// # Panics
    ///
    /// On an external server, or when the old server's processes do not go away.
    pub async fn kill(&self) {
        self.control("kill", Cluster::kill).await;
    }

    /// Whether a harness-started server is up (external servers are assumed to be).
    pub fn is_running(&self) -> bool {
        self.cluster().is_none_or(Cluster::is_running)
    }

    async fn control(&self, what: &str, action: fn(&Cluster) -> Result<(), Error>) {
        if self.is_external() {
            panic!(
                "app-metrics test harness: cannot {what} an external server ({}); \
                 use TestServer::dedicated() for tests that stop and start the server",
                url::redact(&self.url())
            );
        }
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            action(this.cluster().expect("checked above: local"))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        if let Err(e) = result {
            panic!("app-metrics test harness: cannot {what} the test server: {e}");
        }
    }

    /// Whether `self` holds the last reference to its server (so it goes away with `self`).
    pub(crate) fn is_last_reference(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }
}

fn start_shared() -> Result<TestServer, String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            TestServer::from_url(url).map_err(|e| format!("DATABASE_URL is set but unusable: {e}"))
        }
        _ => match Cluster::init(&ClusterOptions::new()) {
            Ok(cluster) => Ok(TestServer {
                inner: Arc::new(Inner::Local(cluster)),
            }),
            Err(e) => Err(format!(
                "DATABASE_URL is unset and no throwaway cluster could be started: {e}"
            )),
        },
    }
}

fn unwrap_shared(shared: &Result<TestServer, String>) -> TestServer {
    match shared {
        Ok(server) => server.clone(),
        Err(e) => panic!("app-metrics test harness: no PostgreSQL for the tests: {e}"),
    }
}
