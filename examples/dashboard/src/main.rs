//! `example-dashboard`: serves the example app.
//!
//! Environment: `BIND` (default `127.0.0.1:8080`), `DATABASE_URL` (PostgreSQL;
//! without it records go to the in-memory store), `ADMIN_USERS` (comma-separated
//! user ids allowed to read the dashboard API), `DATABRICKS_HOST` (when set,
//! admins are the workspace's admin groups instead, checked with the caller's
//! `X-Forwarded-Access-Token`; `ADMIN_GROUPS` overrides the group names),
//! `RUST_LOG`, `DEMO_AUTO_LOGIN` (development only: requests without identity
//! headers act as this user, so a plain browser can open the dashboard;
//! `scripts/demo` sets it to the demo admin).
//! Flags: `--demo-traffic` makes the app send itself a steady mix of requests
//! and usage events.

use std::net::SocketAddr;
use std::time::Duration;

use app_metrics::AppMetrics;
use app_metrics::admin::{CachedAdminCheck, DatabricksAdminCheck, StaticAdmins};
use app_metrics::identity::TrustedProxyHeaders;
use app_metrics::store::{Memory, Postgres, Store};
use example_dashboard::demo::AutoLogin;
use example_dashboard::{app_with, demo_traffic};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let demo = std::env::args().any(|a| a == "--demo-traffic");
    let bind: SocketAddr = std::env::var("BIND")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()
        .map_err(|e| format!("BIND must be host:port, e.g. 127.0.0.1:8080 ({e})"))?;

    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let (store, store_name): (Store, _) = match &database_url {
        Some(url) => (Postgres::from_url(url).into(), "postgres"),
        None => (Memory::new().into(), "memory"),
    };
    let builder = AppMetrics::builder(store).identity(TrustedProxyHeaders);
    let builder = match std::env::var("DATABRICKS_HOST") {
        Ok(host) if !host.trim().is_empty() => {
            let check = DatabricksAdminCheck::from_env().map_err(|e| {
                format!("DATABRICKS_HOST is set but the admin check cannot be built: {e}")
            })?;
            tracing::info!(host = %host.trim(), "admins: Databricks workspace admin groups");
            // Cached: one SCIM call per user per 5 minutes, errors never cached.
            builder.admins(CachedAdminCheck::new(check))
        }
        _ => {
            let admins = StaticAdmins::from_env();
            if admins.is_empty() {
                tracing::warn!("ADMIN_USERS is empty: nobody can read the dashboard API");
            } else {
                tracing::info!(count = admins.len(), "admins: ADMIN_USERS");
            }
            builder.admins(admins)
        }
    };
    let metrics = builder.start().await?;

    let auto_login = match std::env::var("DEMO_AUTO_LOGIN") {
        Ok(user) if !user.trim().is_empty() => {
            let login = AutoLogin::new(&user)
                .ok_or("DEMO_AUTO_LOGIN must be a user id that fits in an HTTP header")?;
            tracing::warn!(
                user = %user.trim(),
                "DEMO_AUTO_LOGIN is set: every request without identity headers acts as this user; \
                 development only, never expose this app"
            );
            Some(login)
        }
        _ => None,
    };

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

    axum::serve(listener, app_with(&metrics, auto_login))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            if let Some(t) = stop_traffic {
                t.abort();
            }
        })
        .await?;

    if let Some(t) = traffic {
        t.abort();
    }
    // Flush every queued record before the process exits.
    match metrics.shutdown(Duration::from_secs(30)).await {
        Ok(stats) => println!(
            "collector flushed: received={} written={} dropped={}",
            stats.received,
            stats.written,
            stats.dropped()
        ),
        Err(e) => eprintln!("collector shutdown: {e}"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
