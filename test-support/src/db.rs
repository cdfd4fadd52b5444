//! A database (or schema) of its own for each test.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio_postgres::{Client, Config, NoTls, error::SqlState};

use crate::{TestServer, url};

/// How long a harness connection attempt may take before the test fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set to keep each test's database after the test (its URL is printed), for debugging.
const KEEP_ENV: &str = "APP_METRICS_KEEP_TEST_DB";

/// How a [`TestDb`] is kept apart from the other tests' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// A database of its own (`CREATE DATABASE`): the normal case.
    Database,
    /// A schema of its own in the server's database, first on every session's `search_path`:
    /// the fallback on an external server whose role may not `CREATE DATABASE`. Code under test
    /// that names its own schema (as app-metrics does, `app_metrics` by default) must then be
    /// given [`TestDb::name`] (or a name derived from it) to stay isolated.
    Schema,
}

/// A fresh, empty database for one test, with a connected client.
///
/// [`TestDb::new`] creates it on the [shared server](TestServer::shared) (a throwaway cluster,
/// or `DATABASE_URL`), with a unique name derived from the test's name. Dropping it drops the
/// database (set `APP_METRICS_KEEP_TEST_DB=1` to keep it and print its URL). On an external
/// server whose role lacks `CREATEDB`, it falls back to a schema of its own
/// ([`Isolation::Schema`]).
///
/// For a connection pool, hand [`TestDb::url`] to `deadpool_postgres::Config { url, .. }`, or
/// [`TestDb::pg_config`] to `deadpool_postgres::Manager::new`.
///
/// # Panics
///
/// Creating one panics, with a message naming what is missing, when no server can be started
/// or reached: a test that needs PostgreSQL fails rather than skips.
///
/// # Example
///
/// ```
/// use app_metrics_test_support::TestDb;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let db = TestDb::new().await;
/// db.client().batch_execute("create table t (x int); insert into t values (7)").await.unwrap();
/// let x: i32 = db.client().query_one("select x from t", &[]).await.unwrap().get(0);
/// assert_eq!(x, 7);
/// # });
/// ```
#[derive(Debug)]
pub struct TestDb {
    server: TestServer,
    name: String,
    url: String,
    isolation: Isolation,
    /// `None` only while dropping, so the client is closed before the database is dropped.
    client: Option<Client>,
}

// ===== impl TestDb =====

impl TestDb {
    /// A fresh database on the [shared server](TestServer::shared).
    ///
    /// # Panics
    ///
    /// If no server can be started or reached, or the database cannot be created.
    pub async fn new() -> Self {
        TestServer::shared().await.create_db().await
    }

    pub(crate) async fn create(server: TestServer) -> Self {
        let admin_url = server.url();
        let admin = connect(&admin_url).await;
        let name = unique_name();
        let created = admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await;
        let (url, isolation) = match created {
            Ok(()) => (url::with_dbname(&admin_url, &name), Isolation::Database),
            Err(e)
                if server.is_external() && e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                if let Err(e) = admin
                    .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
                    .await
                {
                    fail(
                        &format!(
                            "the role of {} may neither CREATE DATABASE nor CREATE SCHEMA",
                            url::redact(&admin_url)
                        ),
                        &e,
                    );
                }
                (url::with_search_path(&admin_url, &name), Isolation::Schema)
            }
            Err(e) => fail(
                &format!("CREATE DATABASE on {}", url::redact(&admin_url)),
                &e,
            ),
        };
        let client = connect(&url).await;
        Self {
            server,
            name,
            url,
            isolation,
            client: Some(client),
        }
    }

    /// The connected client (its connection task runs on the runtime that created the `TestDb`).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }

    /// Opens another connection to this database (on the current runtime).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }

    /// The connection string of this database (URL form for a local cluster; the form of
    /// `DATABASE_URL` otherwise), for pools and child processes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The parsed connection settings, e.g. for `deadpool_postgres::Manager::new(cfg, NoTls)`.
    pub fn pg_config(&self) -> Config {
        let mut config: Config = self.url.parse().expect("the harness built a valid URL");
        config.connect_timeout(CONNECT_TIMEOUT);
        config
    }

    /// The unique name of this database (or schema): lowercase letters, digits and `_`, at
    /// most 63 bytes, so usable unquoted as an identifier, e.g. as a schema name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a database of its own or a schema of its own.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The server this database lives on.
    pub fn server(&self) -> &TestServer {
        &self.server
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(self.client.take());
        if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!(
                "{KEEP_ENV}: keeping test database {}",
                url::redact(&self.url)
            );
            return;
        }
        if self.server.cluster().is_some() && self.server.is_last_reference() {
            // A dedicated cluster that is about to be removed as a whole.
            return;
        }
        let statement = match self.isolation {
            Isolation::Database => {
                format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)
            }
            Isolation::Schema => format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name),
        };
        let admin_url = self.server.url();
        // Drop may run inside or outside a runtime, and on a runtime that is shutting down, so
        // the cleanup gets a thread and a runtime of its own. Best effort: a failure leaves a
        // database behind (gone with a throwaway cluster anyway), and is reported, not raised.
        let result = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut config: Config = admin_url
                    .parse()
                    .map_err(|e: tokio_postgres::Error| e.to_string())?;
                config.connect_timeout(CONNECT_TIMEOUT);
                let (client, connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
                let connection = tokio::spawn(connection);
                let result = client
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| describe(&e));
                drop(client);
                let _ = connection.await;
                result
            })
        })
        .join();
        let stopped = self.server.cluster().is_some_and(|c| !c.is_running());
        match result {
            Ok(Ok(())) => {}
            // A stopped dedicated server: the database goes when its cluster does.
            Ok(Err(_)) if stopped => {}
            Ok(Err(e)) => eprintln!(
                "app-metrics test harness: could not drop test database {}: {e}",
                self.name
            ),
            Err(_) => eprintln!(
                "app-metrics test harness: cleanup of {} panicked",
                self.name
            ),
        }
    }
}

// ===== helpers =====

/// Connects to `url`, spawning the connection on the current runtime; panics loudly on failure.
async fn connect(url: &str) -> Client {
    let mut config: Config = match url.parse() {
        Ok(config) => config,
        Err(e) => fail(
            &format!("invalid connection string {}", url::redact(url)),
            &e,
        ),
    };
    config.connect_timeout(CONNECT_TIMEOUT);
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            // The task ends when the client is dropped or the runtime shuts down.
            drop(tokio::spawn(connection));
            client
        }
        Err(e) => fail(&format!("cannot connect to {}", url::redact(url)), &e),
    }
}

fn fail(context: &str, e: &tokio_postgres::Error) -> ! {
    panic!("app-metrics test harness: {context}: {}", describe(e))
}

/// The error with its sources; tokio-postgres puts the server's message in the source.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `t_<test name>_<pid>_<n>_<random>`: unique across tests, processes and machines sharing one
/// `DATABASE_URL`, and readable when kept for debugging.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().build_hasher().finish() & 0xffff;
    // libtest names each test's thread after the test (`module::test_name`).
    let label = sanitize(std::thread::current().name().unwrap_or("test"));
    format!("t_{label}_{}_{n}_{random:04x}", std::process::id())
}

/// The last path segment of a test name as `[a-z0-9_]`, at most 30 bytes (its end, which is
/// the distinctive part).
fn sanitize(test_name: &str) -> String {
    let last = test_name.rsplit("::").next().unwrap_or(test_name);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean[clean.len().saturating_sub(30)..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_identifiers() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.starts_with("t_"), "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn sanitize_keeps_the_distinctive_end() {
        assert_eq!(sanitize("pg_smoke::Select-One"), "select_one");
        let long = "a".repeat(40) + "_end";
        assert_eq!(sanitize(&long).len(), 30);
        assert!(sanitize(&long).ends_with("_end"));
    }
}
