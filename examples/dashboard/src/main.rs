//! `example-dashboard`: serves the example app.
//!
//! Flags: `--demo-traffic` makes the app send itself a steady mix of
//! requests and usage events.
//!
//! # Environment
//!
//! Every variable is optional; a malformed value stops the app at start
//! with an error naming the variable (see `settings.rs`). Durations are
//! whole milliseconds, at most one day.
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `BIND` | `127.0.0.1:8080` | address to listen on (`:0` picks a free port; the banner names it) |
//! | `DATABASE_URL` | unset: in-memory store | PostgreSQL for the records |
//! | `ADMIN_USERS` | empty | comma-separated user ids allowed to read the dashboard API |
//! | `DATABRICKS_HOST` | unset | admins are the workspace's admin groups instead, checked with the caller's `X-Forwarded-Access-Token` (`ADMIN_GROUPS` overrides the group names) |
//! | `ADMIN_TTL_MS` | 300000 | how long the Databricks admin check's answers are cached (0: not cached; errors never are) |
//! | `METRICS_IDENTITY` | `trusted-proxy` | `trusted-proxy`: the proxy's `X-Forwarded-*` headers; `extension`: an auth layer's `Identity` extension (the example has none, so every caller is anonymous) |
//! | `METRICS_QUEUE_CAPACITY` | 100000 | most records the collector holds (records) |
//! | `METRICS_MAX_BATCH` | 10000 (PostgreSQL), 1000 (memory) | records per write |
//! | `METRICS_LINGER_MS` | 1000 | longest wait before a partial batch is written |
//! | `METRICS_MEMORY_BUDGET` | 67108864 (64 MiB) | most bytes of records the collector holds (queued and being written) |
//! | `METRICS_SHUTDOWN_DEADLINE_MS` | 30000 | how long the final flush may take |
//! | `SERVER_HEADER_TIMEOUT_MS` | 10000 | most time to receive a request head (also the keep-alive idle limit) |
//! | `SERVER_BODY_TIMEOUT_MS` | 30000 | most time to receive a whole request body |
//! | `SERVER_DRAIN_MS` | 5000 | after SIGTERM/Ctrl-C, how long requests in flight may finish before their connections are closed |
//! | `SERVER_MAX_CONNECTIONS` | 4096 | connections served at once |
//! | `DEMO_AUTO_LOGIN` | unset | development only: requests without identity headers act as this user, so a plain browser can open the dashboard (`scripts/demo` sets it to the demo admin); with `METRICS_IDENTITY=trusted-proxy` only |
//! | `RUST_LOG` | `info` | log filter |
//!
//! # Output
//!
//! On start, `example-dashboard listening on http://ADDR`. On SIGTERM or
//! Ctrl-C the server stops accepting, drains (`SERVER_DRAIN_MS`), and the
//! collector writes what it holds (`METRICS_SHUTDOWN_DEADLINE_MS`); then one
//! line with every collector counter, which the fault harness parses:
//!
//! ```text
//! collector flushed: received=120 written=118 pending=0 dropped=2 dropped_queue_full=0 dropped_memory_budget=0 dropped_retries_exhausted=0 dropped_shutdown=2 dropped_rejected=0 dropped_closed=0 retries=3 batches=9 pending_bytes=0 outcome=deadline_exceeded
//! ```
//!
//! `outcome` is `flushed`, `deadline_exceeded` (what was left is counted in
//! `dropped_shutdown`), `timed_out` (shutdown itself did not return within
//! the deadline plus 12 s; `pending` is what was left) or another word for
//! a collector that was already gone. The exit code is 0 after a signal, whatever the outcome
//! (drops are counted, not failures), and 1 when the app cannot start.

use std::process::ExitCode;
use std::time::Duration;

use app_metrics::admin::{CachedAdminCheck, DatabricksAdminCheck, StaticAdmins};
use app_metrics::identity::{ExtensionIdentity, TrustedProxyHeaders};
use app_metrics::store::{Memory, Postgres, Store};
use app_metrics::{AppMetrics, AppMetricsBuilder};
use example_dashboard::counters::{exit_line, shutdown_and_count};
use example_dashboard::demo::AutoLogin;
use example_dashboard::settings::{IdentityMode, Settings};
use example_dashboard::{IdentitySource, app_with, demo_traffic, server};

type BoxError = Box<dyn std::error::Error>;

/// Beyond the collector's own deadline, how long shutdown may take before
/// the app gives up on it and exits anyway: shutdown first stops the
/// PostgreSQL store's maintenance, which metrics-pg bounds by
/// `SchedulerHandle::DEFAULT_STOP_WAIT` (10 s) and the collector's deadline
/// does not cover, plus 2 s. Normally it stops at once; this only keeps a
/// hang from outliving the process's own deadline for ever.
const SHUTDOWN_GRACE: Duration =
    Duration::from_secs(app_metrics::pg::SchedulerHandle::DEFAULT_STOP_WAIT.as_secs() + 2);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let signal = shutdown_signal()?;
    let settings = Settings::from_env()?;
    let demo = std::env::args().any(|a| a == "--demo-traffic");

    let (store, store_name): (Store, _) = match &settings.database_url {
        Some(url) => (Postgres::from_url(url).into(), "postgres"),
        None => (Memory::new().into(), "memory"),
    };
    let collector = settings.collector;
    let builder = with_admins(AppMetrics::builder(store), &settings)?
        .configure_collector(move |c| collector.apply(c));
    match settings.identity {
        IdentityMode::TrustedProxy => {
            let builder = builder.identity(TrustedProxyHeaders);
            start_and_serve(builder, &settings, demo, store_name, signal).await
        }
        IdentityMode::Extension => {
            tracing::info!(
                "METRICS_IDENTITY=extension: identity headers are ignored; callers are anonymous"
            );
            let builder = builder.identity(ExtensionIdentity);
            start_and_serve(builder, &settings, demo, store_name, signal).await
        }
    }
}

/// The admin check: the Databricks workspace's admin groups when
/// `DATABRICKS_HOST` is set, else `ADMIN_USERS`.
fn with_admins(
    builder: AppMetricsBuilder,
    settings: &Settings,
) -> Result<AppMetricsBuilder, BoxError> {
    match std::env::var("DATABRICKS_HOST") {
        Ok(host) if !host.trim().is_empty() => {
            let check = DatabricksAdminCheck::from_env().map_err(|e| {
                format!("DATABRICKS_HOST is set but the admin check cannot be built: {e}")
            })?;
            // Cached: one SCIM call per user per TTL, errors never cached.
            let mut cached = CachedAdminCheck::new(check);
            if let Some(ttl) = settings.admin_ttl {
                cached = cached.with_ttl(ttl);
            }
            tracing::info!(host = %host.trim(), "admins: Databricks workspace admin groups");
            Ok(builder.admins(cached))
        }
        _ => {
            let admins = StaticAdmins::from_env();
            if admins.is_empty() {
                tracing::warn!("ADMIN_USERS is empty: nobody can read the dashboard API");
            } else {
                tracing::info!(count = admins.len(), "admins: ADMIN_USERS");
            }
            Ok(builder.admins(admins))
        }
    }
}

async fn start_and_serve<I: IdentitySource>(
    builder: AppMetricsBuilder<I>,
    settings: &Settings,
    demo: bool,
    store_name: &str,
    signal: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let metrics = builder.start().await?;

    let auto_login = match &settings.auto_login {
        Some(user) => {
            let login = AutoLogin::new(user)
                .ok_or("DEMO_AUTO_LOGIN must be a user id that fits in an HTTP header")?;
            tracing::warn!(
                user = %user,
                "DEMO_AUTO_LOGIN is set: every request without identity headers acts as this user; \
                 development only, never expose this app"
            );
            Some(login)
        }
        None => None,
    };

    let bind = settings.bind;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {bind}: {e} (set BIND to a free address, e.g. BIND=127.0.0.1:8081)"),
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = store_name, "example-dashboard listening");
    println!("example-dashboard listening on http://{addr}");
    println!("  dashboard page:     http://{addr}/metrics/  (as an admin)");
    println!("  demo pages:         http://{addr}/demo/  (usage events through tracker.js)");
    println!("  what was recorded:  curl http://{addr}/api/demo/recorded");
    println!(
        "  dashboard API:      curl -H 'X-Forwarded-Email: <an ADMIN_USERS entry>' 'http://{addr}/api/v1/metrics/performance?time_range=24h'"
    );
    println!(
        "  try a route:        curl -H 'X-Forwarded-Email: ada@example.com' http://{addr}/api/demo/items/42"
    );

    let traffic = demo.then(|| demo_traffic(addr));
    // Stop the demo traffic as soon as shutdown starts, so it does not knock on a closed listener.
    let stop_traffic = traffic.as_ref().map(|t| t.abort_handle());
    let report = server::serve(
        listener,
        app_with(&metrics, auto_login),
        settings.server,
        async move {
            signal.await;
            if let Some(t) = stop_traffic {
                t.abort();
            }
        },
    )
    .await;
    tracing::info!(
        accepted = report.accepted,
        closed_at_drain = report.closed_at_drain,
        "server stopped"
    );
    if let Some(t) = traffic {
        t.abort();
    }

    // Write every queued record before the process exits, then say what
    // became of them all.
    let (stats, outcome) = shutdown_and_count(
        &metrics,
        settings.collector.shutdown_deadline,
        SHUTDOWN_GRACE,
    )
    .await;
    println!("{}", exit_line(&stats, outcome));
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). The handlers are
/// installed here, at once, rather than when the future is first polled: a
/// signal that arrives while the app is still starting is kept, and starts
/// the shutdown as soon as the server runs, instead of killing the process
/// without its exit line.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown signal received; draining");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received; draining");
        })
    }
}
