//! The example's settings, read once from the environment at start.
//!
//! Every variable is optional; an unset or empty one takes its default. A
//! value that is set but malformed is an error naming the variable (the app
//! refuses to start rather than run with a setting it silently ignored).
//! The fault harness (`benches/faults.sh`) drives the app through these, so
//! they are the contract between the two: see the table in `main.rs`.
//!
//! Parsing takes a lookup function ([`Settings::from_lookup`]) so tests need
//! not touch the process environment (`set_var` is `unsafe` in edition 2024
//! and racy across parallel tests).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use app_metrics::SharedCollectorBuilder;

/// The address served when `BIND` is unset.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// How long the collector may take to write what is queued at exit
/// (`METRICS_SHUTDOWN_DEADLINE_MS`).
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a client may take to send a request head (`SERVER_HEADER_TIMEOUT_MS`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a whole request body (`SERVER_BODY_TIMEOUT_MS`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after a shutdown signal (`SERVER_DRAIN_MS`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Most connections served at once (`SERVER_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// The longest duration any `*_MS` variable accepts: one day. Bounded so
/// that no deadline computed from it can overflow a clock (hyper adds the
/// header timeout to `Instant::now()`, which panics on overflow).
pub const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1_000;

/// Everything the example reads from the environment, besides what the
/// library reads itself (`DATABASE_URL` is read here; `ADMIN_USERS`,
/// `DATABRICKS_HOST` and `ADMIN_GROUPS` by their admin checks).
///
/// `Debug` leaves out the database URL, which may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `BIND`: the address to listen on.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: PostgreSQL; `None` stores records in memory.
    pub database_url: Option<String>,
    /// `DEMO_AUTO_LOGIN`: development only, the user requests without
    /// identity headers act as.
    pub auto_login: Option<String>,
    /// `METRICS_IDENTITY`: where the caller's identity comes from.
    pub identity: IdentityMode,
    /// `ADMIN_TTL_MS`: how long the cached admin check (Databricks) keeps an
    /// answer; `None` keeps the library's default.
    pub admin_ttl: Option<Duration>,
    /// The collector's settings.
    pub collector: CollectorSettings,
    /// The HTTP server's settings.
    pub server: ServerSettings,
}

/// Where the caller's identity comes from (`METRICS_IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// `trusted-proxy` (the default): the authenticating proxy's
    /// `X-Forwarded-*` headers.
    #[default]
    TrustedProxy,
    /// `extension`: the `Identity` extension an auth layer of the app
    /// inserts. The example has no such layer, so every caller is
    /// anonymous and identity headers are ignored (what an app that does its
    /// own authentication sees from a spoofing client).
    Extension,
}

/// The collector's settings; `None` keeps the library's default (for
/// PostgreSQL, the facade's batch size of 10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorSettings {
    /// `METRICS_QUEUE_CAPACITY`: most records held (at least 1).
    pub queue_capacity: Option<usize>,
    /// `METRICS_MAX_BATCH`: records per write (at least 1).
    pub max_batch: Option<usize>,
    /// `METRICS_LINGER_MS`: longest wait before a partial batch is written.
    pub linger: Option<Duration>,
    /// `METRICS_MEMORY_BUDGET`: most bytes of records held (at least 1).
    pub memory_budget: Option<usize>,
    /// `METRICS_SHUTDOWN_DEADLINE_MS`: how long the final flush may take.
    pub shutdown_deadline: Duration,
}

/// The HTTP server's settings (see [`crate::server`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// `SERVER_HEADER_TIMEOUT_MS`: most time to receive a request head, from
    /// the connection's start or the previous response (so it is also the
    /// keep-alive idle limit).
    pub header_timeout: Duration,
    /// `SERVER_BODY_TIMEOUT_MS`: most time to receive a whole request body,
    /// from its head.
    pub body_timeout: Duration,
    /// `SERVER_DRAIN_MS`: how long in-flight requests may finish after a
    /// shutdown signal before their connections are closed.
    pub drain: Duration,
    /// `SERVER_MAX_CONNECTIONS`: connections served at once; further ones
    /// wait in the listen backlog.
    pub max_connections: usize,
}

/// A variable is set to a value the example cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The value does not parse or is out of range.
    #[error("{var} must be {expected}, not {value:?}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// Its value, as given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl SettingsError {
    /// The environment variable at fault.
    pub fn var(&self) -> &'static str {
        match self {
            Self::Invalid { var, .. } => var,
        }
    }
}

// ===== impl Settings =====

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("auto_login", &self.auto_login)
            .field("identity", &self.identity)
            .field("admin_ttl", &self.admin_ttl)
            .field("collector", &self.collector)
            .field("server", &self.server)
            .finish()
    }
}

impl Settings {
    /// The settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from `var`, which returns a variable's value if set.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env(&var);
        Ok(Self {
            bind: env
                .parse("BIND", "host:port, e.g. 127.0.0.1:8080", |v| v.parse().ok())?
                .unwrap_or(DEFAULT_BIND),
            database_url: env.get("DATABASE_URL"),
            auto_login: env.get("DEMO_AUTO_LOGIN"),
            identity: env
                .parse(
                    "METRICS_IDENTITY",
                    "`trusted-proxy` or `extension`",
                    |v| match v {
                        "trusted-proxy" => Some(IdentityMode::TrustedProxy),
                        "extension" => Some(IdentityMode::Extension),
                        _ => None,
                    },
                )?
                .unwrap_or_default(),
            admin_ttl: env.millis("ADMIN_TTL_MS", 0)?,
            collector: CollectorSettings {
                queue_capacity: env.count("METRICS_QUEUE_CAPACITY")?,
                max_batch: env.count("METRICS_MAX_BATCH")?,
                linger: env.millis("METRICS_LINGER_MS", 0)?,
                memory_budget: env.count("METRICS_MEMORY_BUDGET")?,
                shutdown_deadline: env
                    .millis("METRICS_SHUTDOWN_DEADLINE_MS", 1)?
                    .unwrap_or(DEFAULT_SHUTDOWN_DEADLINE),
            },
            server: ServerSettings {
                header_timeout: env
                    .millis("SERVER_HEADER_TIMEOUT_MS", 1)?
                    .unwrap_or(DEFAULT_HEADER_TIMEOUT),
                body_timeout: env
                    .millis("SERVER_BODY_TIMEOUT_MS", 1)?
                    .unwrap_or(DEFAULT_BODY_TIMEOUT),
                drain: env.millis("SERVER_DRAIN_MS", 0)?.unwrap_or(DEFAULT_DRAIN),
                max_connections: env
                    .count("SERVER_MAX_CONNECTIONS")?
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            },
        })
    }
}

// ===== impl CollectorSettings =====

impl CollectorSettings {
    /// Applies the settings that are set to `builder` (for
    /// `AppMetricsBuilder::configure_collector`); the collector's own
    /// validation then runs in `start()`.
    pub fn apply(self, mut builder: SharedCollectorBuilder) -> SharedCollectorBuilder {
        if let Some(n) = self.queue_capacity {
            builder = builder.queue_capacity(n);
        }
        if let Some(n) = self.max_batch {
            builder = builder.max_batch(n);
        }
        if let Some(d) = self.linger {
            builder = builder.linger(d);
        }
        if let Some(bytes) = self.memory_budget {
            builder = builder.memory_budget(bytes);
        }
        builder
    }
}

// ===== the lookup =====

/// The lookup, with the parsing shared by every variable.
struct Env<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// The trimmed value, `None` when unset or empty.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        var: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, SettingsError> {
        let Some(value) = self.get(var) else {
            return Ok(None);
        };
        match parse(&value) {
            Some(v) => Ok(Some(v)),
            None => Err(SettingsError::Invalid {
                var,
                value,
                expected,
            }),
        }
    }

    /// A positive whole number (digits, `_` allowed as a separator).
    fn count(&self, var: &'static str) -> Result<Option<usize>, SettingsError> {
        self.parse(var, "a whole number of at least 1", |v| {
            digits(v).and_then(|v| v.parse::<usize>().ok().filter(|&n| n >= 1))
        })
    }

    /// Milliseconds, at least `min` and at most [`MAX_DURATION_MS`].
    fn millis(&self, var: &'static str, min: u64) -> Result<Option<Duration>, SettingsError> {
        let expected = if min == 0 {
            "a whole number of milliseconds, at most 86400000 (one day)"
        } else {
            "a whole number of milliseconds, at least 1 and at most 86400000 (one day)"
        };
        self.parse(var, expected, |v| {
            digits(v)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|ms| (min..=MAX_DURATION_MS).contains(ms))
                .map(Duration::from_millis)
        })
    }
}

/// `v` without `_` separators, if it is digits only (`parse` would accept a
/// leading `+`, which no one means here).
fn digits(v: &str) -> Option<String> {
    let digits: String = v.chars().filter(|&c| c != '_').collect();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((s.database_url, s.auto_login), (None, None));
        assert_eq!(s.identity, IdentityMode::TrustedProxy);
        assert_eq!(s.admin_ttl, None);
        let c = s.collector;
        assert_eq!(
            (c.queue_capacity, c.max_batch, c.linger, c.memory_budget),
            (None, None, None, None)
        );
        assert_eq!(c.shutdown_deadline, Duration::from_secs(30));
        let srv = s.server;
        assert_eq!(srv.header_timeout, Duration::from_secs(10));
        assert_eq!(srv.body_timeout, Duration::from_secs(30));
        assert_eq!(srv.drain, Duration::from_secs(5));
        assert_eq!(srv.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn every_variable_is_read() {
        let s = parse(&[
            ("BIND", "0.0.0.0:9000"),
            ("DATABASE_URL", " postgres://u@h/db "),
            ("DEMO_AUTO_LOGIN", "admin@example.com"),
            ("METRICS_IDENTITY", "extension"),
            ("ADMIN_TTL_MS", "0"),
            ("METRICS_QUEUE_CAPACITY", "50_000"),
            ("METRICS_MAX_BATCH", "500"),
            ("METRICS_LINGER_MS", "0"),
            ("METRICS_MEMORY_BUDGET", "1048576"),
            ("METRICS_SHUTDOWN_DEADLINE_MS", "2500"),
            ("SERVER_HEADER_TIMEOUT_MS", "200"),
            ("SERVER_BODY_TIMEOUT_MS", "300"),
            ("SERVER_DRAIN_MS", "0"),
            ("SERVER_MAX_CONNECTIONS", "16"),
        ])
        .unwrap();
        assert_eq!(s.bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.database_url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(s.auto_login.as_deref(), Some("admin@example.com"));
        assert_eq!(s.identity, IdentityMode::Extension);
        assert_eq!(s.admin_ttl, Some(Duration::ZERO));
        assert_eq!(
            s.collector,
            CollectorSettings {
                queue_capacity: Some(50_000),
                max_batch: Some(500),
                linger: Some(Duration::ZERO),
                memory_budget: Some(1 << 20),
                shutdown_deadline: Duration::from_millis(2500),
            }
        );
        assert_eq!(
            s.server,
            ServerSettings {
                header_timeout: Duration::from_millis(200),
                body_timeout: Duration::from_millis(300),
                drain: Duration::ZERO,
                max_connections: 16,
            }
        );
    }

    #[test]
    fn debug_leaves_out_the_database_url() {
        let s = parse(&[("DATABASE_URL", "postgres://u:s3cret@h/db")]).unwrap();
        let text = format!("{s:?}");
        assert!(!text.contains("s3cret") && text.contains("<set>"), "{text}");
    }

    #[test]
    fn empty_values_mean_unset() {
        let s = parse(&[("METRICS_QUEUE_CAPACITY", " "), ("DATABASE_URL", "")]).unwrap();
        assert_eq!(s.collector.queue_capacity, None);
        assert_eq!(s.database_url, None);
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let cases = [
            ("BIND", "localhost"),
            ("METRICS_IDENTITY", "none"),
            ("METRICS_IDENTITY", "Trusted-Proxy"),
            ("ADMIN_TTL_MS", "-1"),
            ("METRICS_QUEUE_CAPACITY", "0"),
            ("METRICS_QUEUE_CAPACITY", "10k"),
            ("METRICS_QUEUE_CAPACITY", "+5"),
            ("METRICS_MAX_BATCH", "1.5"),
            ("METRICS_LINGER_MS", "1s"),
            ("METRICS_MEMORY_BUDGET", "64MiB"),
            ("METRICS_SHUTDOWN_DEADLINE_MS", "0"),
            ("SERVER_HEADER_TIMEOUT_MS", "0"),
            ("SERVER_HEADER_TIMEOUT_MS", "86400001"),
            ("SERVER_BODY_TIMEOUT_MS", "18446744073709551616"),
            ("SERVER_DRAIN_MS", "_"),
            ("SERVER_MAX_CONNECTIONS", "0"),
        ];
        for (var, value) in cases {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.var(), var, "{var}={value}");
            let text = err.to_string();
            assert!(
                text.starts_with(var) && text.contains(&format!("{value:?}")),
                "{var}={value}: {text}"
            );
        }
    }

    #[test]
    fn the_first_bad_variable_is_reported_even_with_good_ones_around() {
        let err = parse(&[
            ("METRICS_QUEUE_CAPACITY", "100"),
            ("SERVER_DRAIN_MS", "soon"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SERVER_DRAIN_MS must be a whole number of milliseconds, at most 86400000 (one day), not \"soon\""
        );
    }

    #[test]
    fn durations_at_the_limit_are_accepted() {
        let s = parse(&[("SERVER_BODY_TIMEOUT_MS", "86400000")]).unwrap();
        assert_eq!(s.server.body_timeout, Duration::from_secs(86_400));
    }
}
