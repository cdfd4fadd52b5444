//! Test harness for app-metrics: a real PostgreSQL for every test, with nothing to set up.
//!
//! # How a test gets a database
//!
//! ```
//! use app_metrics_test_support::TestDb;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // In a #[tokio::test]:
//! let db = TestDb::new().await;
//! let one: i32 = db.client().query_one("select 1", &[]).await.unwrap().get(0);
//! assert_eq!(one, 1);
//! # });
//! ```
//!
//! - **Which server.** If `DATABASE_URL` is set, that server. Otherwise the first test of the
//!   process starts a throwaway cluster ([`Cluster`]): `initdb` into a temporary directory,
//!   `pg_ctl start` on a free port on `127.0.0.1`, test settings (`fsync = off`,
//!   `max_connections = 200`, the Unix socket inside the directory). It is shared by all the
//!   tests of the process ([`TestServer::shared`]).
//! - **Isolation.** Every [`TestDb`] is a new database with a unique name derived from the
//!   test's name, dropped when the `TestDb` is (set `APP_METRICS_KEEP_TEST_DB=1` to keep them).
//!   On an external server whose role may not `CREATE DATABASE`, it is a new schema instead
//!   ([`Isolation::Schema`]).
//! - **Outages.** [`TestServer::dedicated`] gives a test a cluster of its own that it may
//!   [`stop`](TestServer::stop) and [`start`](TestServer::start) again on the same port.
//! - **Cleanup.** A cluster is removed when its value is dropped; and, since the shared one
//!   lives in a static and statics are never dropped, a watchdog process removes every cluster
//!   within a second of the test process exiting, however it exits (panic, Ctrl-C, `SIGKILL`).
//! - **Failure is loud.** With no `DATABASE_URL` and no PostgreSQL binaries, or a server that
//!   cannot be reached, the test panics with a message that says what is missing. Nothing is
//!   skipped.
//!
//! # Running as root
//!
//! `initdb` refuses to run as root, so as root (CI runs as root) the cluster runs as an
//! unprivileged user: `APP_METRICS_PG_USER`, else `postgres` if it exists, else a system user
//! `app-metrics-pg` that the harness creates with `useradd`. Commands are run through `runuser`
//! (or `setpriv`), and the temporary directory is handed to that user.
//!
//! # Environment
//!
//! | variable | effect |
//! |---|---|
//! | `DATABASE_URL` | use this server instead of a throwaway cluster |
//! | `APP_METRICS_PG_BIN` | directory with `initdb` and `pg_ctl` (else `PATH`, then `/usr/lib/postgresql/*/bin`) |
//! | `APP_METRICS_PG_USER` | the user to run the cluster as when running as root |
//! | `APP_METRICS_PG_TMPDIR` | where the cluster directory goes (else the system temp dir) |
//! | `APP_METRICS_KEEP_TEST_DB` | keep each test's database and print its URL |
//!
//! # For scripts
//!
//! The `pg-throwaway` binary of this crate starts the same cluster for shell scripts (the demo,
//! benchmarks), prints `DATABASE_URL=...`, and stays up until it is killed or a given process
//! exits:
//!
//! ```text
//! $ cargo run -q -p app-metrics-test-support --bin pg-throwaway -- --fsync on --parent-pid $$ &
//! DATABASE_URL=postgres://postgres@127.0.0.1:38211/postgres
//! PGDATA=/tmp/app-metrics-pg-41230-0/data
//! ```
//!
//! # A real browser
//!
//! [`browser`] drives a headless Debian `chromium` over the DevTools protocol: one
//! [`Browser`](browser::Browser) process per test (or [`Browser::shared`](browser::Browser::shared)
//! per test process), pages with `goto`, `eval`, `wait_for`, real mouse clicks and key presses,
//! the requests they sent, injected failures, console lines, screenshots and a manual clock for
//! timers. A missing browser panics with a message naming what to install (`scripts/test`
//! installs it); nothing is skipped.
//!
//! | variable | effect |
//! |---|---|
//! | `APP_METRICS_CHROMIUM` | the browser executable (else `/usr/bin/chromium`, then `chromium` on `PATH`) |
//!
//! # Module graph
//!
//! [`module_graph`] reads a crate's `src/` and finds module cycles, so a test can hold a crate
//! to modules that depend downward only.
//!
//! See `docs/testing.md` in the repository for the whole picture.

pub mod browser;
mod cluster;
mod db;
mod error;
pub mod module_graph;
mod server;
mod url;

pub use cluster::{Cluster, ClusterOptions};
pub use db::{Isolation, TestDb};
pub use error::Error;
pub use server::TestServer;
/// The driver the harness connects with, re-exported so tests can name its types
/// (`tokio_postgres::Client`, `Row`, ...) without a dependency of their own.
pub use tokio_postgres;
