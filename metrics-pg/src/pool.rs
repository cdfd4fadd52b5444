//! A connection pool with the settings the sink relies on.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::Error;

/// Creates a deadpool-postgres pool of at most `max_size` connections for
/// `url` (a `postgres://` URL or a `key=value` connection string), without
/// TLS.
///
/// Connections are *verified* when they leave the pool (a cheap empty query),
/// so a connection broken by a server restart is replaced instead of failing
/// the next write, and a connect attempt gives up after 10 s unless the URL
/// sets `connect_timeout`. For TLS, build your own pool with the connector
/// of your choice and hand it to [`PgSink::builder`](crate::PgSink::builder).
///
/// ```
/// let pool = metrics_pg::create_pool("postgres://app@localhost/app", 4).unwrap();
/// assert_eq!(pool.status().max_size, 4);
/// assert!(metrics_pg::create_pool("postgres://x@h/db?port=notanumber", 4).is_err());
/// ```
pub fn create_pool(url: &str, max_size: usize) -> Result<Pool, Error> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(Error::InvalidUrl)?;
    if config.get_connect_timeout().is_none() {
        let _ = config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        let _ = config.application_name("app-metrics");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(Error::CreatePool)
}
