//! Edge loads beside normal traffic: many distinct paths (labels must stay
//! bounded), slow clients (read timeouts, F1), SIGTERM with slow clients
//! connected, and an admin check whose backend fails or hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::http::{self, Request};
use crate::ledger::{Entry, Kind};
use crate::load::{LOAD_USER, Load, LoadSpec, new_id};
use crate::pg::SCHEMA;
use crate::report::Outcome;
use crate::scenarios::Ctx;
use crate::scenarios::rig::{Expect, Rig, RssSampler, ms, secs};
use crate::slow::SlowClients;

/// Distinct paths sent.
const PATHS: u64 = 20_000;

/// Most distinct `endpoint` labels the distinct-path flood may leave: the
/// demo's routes plus the fixed label of unmatched paths.
const MAX_LABELS: i64 = 20;

/// 20,000 distinct paths (half under a matched route with distinct ids,
/// half unmatched): every one recorded, under a bounded set of labels.
pub(crate) async fn distinct_paths(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("distinct_paths");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let rss = RssSampler::start(&app);
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = JoinSet::new();
    for i in 0..PATHS {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Setup("semaphore closed".to_owned()))?;
        let (addr, ledger) = (app.addr(), Arc::clone(&rig.ledger));
        tasks.spawn(async move {
            let path = if i % 2 == 0 {
                format!("/api/demo/items/{i}")
            } else {
                format!("/no/such/path/{i}/{}", i * 7919)
            };
            let id = new_id();
            let req = Request::get(path)
                .header("X-Correlation-ID", &id)
                .header("X-Forwarded-Email", LOAD_USER);
            let sent_at = ledger.elapsed();
            let t0 = Instant::now();
            let told = http::send(addr, &req, Duration::from_secs(10)).await;
            ledger.push(Entry {
                id: Some(id),
                kind: Kind::Normal,
                told: told.map(|r| r.status),
                latency: t0.elapsed(),
                sent_at,
                events: Vec::new(),
            });
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let (status, _) = app.terminate(Duration::from_secs(45)).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    rss.report(&mut o);
    let client = rig.pg.connect().await?;
    let labels: i64 = client
        .query_one(
            &format!("SELECT count(DISTINCT endpoint) FROM {SCHEMA}.performance_metrics"),
            &[],
        )
        .await
        .map_err(Error::db("counting endpoint labels"))?
        .get(0);
    o.figure("paths", PATHS);
    o.figure("labels", labels);
    o.check("labels_bounded", labels <= MAX_LABELS);
    drop(client);
    // A burst, not the steady load the baseline measured: no p99 budget.
    let expect = Expect {
        p99: false,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// Header and body read timeouts of the example (`SERVER_*_TIMEOUT_MS`).
const SLOW_ENV: [(&str, &str); 3] = [
    ("SERVER_HEADER_TIMEOUT_MS", "2000"),
    ("SERVER_BODY_TIMEOUT_MS", "3000"),
    ("SERVER_DRAIN_MS", "2000"),
];

fn slow_env() -> Vec<(&'static str, String)> {
    SLOW_ENV
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect()
}

/// 200 slow heads and 50 slow bodies beside normal load for 15 s: normal
/// p99 holds, and the server lets go of the slow connections after its
/// read timeouts.
pub(crate) async fn slowloris(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("slowloris");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &slow_env()).await?;
    let rss = RssSampler::start(&app);
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    let slow = SlowClients::start(app.addr(), 200, 50, Duration::from_millis(500), &rig.ledger);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let _ = load.stop().await;
    o.figure("slow_opened", slow.opened());
    o.figure("slow_closed_by_server", slow.closed_by_server());
    // 15 s is five times the longest read timeout.
    o.check(
        "slow_released",
        slow.closed_by_server() == slow.opened() && slow.opened() > 0,
    );
    slow.stop();
    let (status, _) = app.terminate(Duration::from_secs(45)).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    rss.report(&mut o);
    rig.finish(ctx, &mut o, &[app.exit_counters()], Expect::default())
        .await?;
    Ok(o)
}

/// SIGTERM with 100 slow clients connected: the app still drains (within
/// `SERVER_DRAIN_MS`), flushes and exits with a consistent exit line.
pub(crate) async fn sigterm_slow_clients(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("sigterm_slow_clients");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &slow_env()).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow = SlowClients::start(app.addr(), 80, 20, Duration::from_millis(300), &rig.ledger);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let term_at = rig.ledger.elapsed();
    let (status, took) = app.terminate(Duration::from_secs(45)).await;
    let _ = load.stop().await;
    slow.stop();
    o.figure("exit_s", secs(Some(took)));
    // Drain 2 s + a default 30 s collector deadline at most; in practice
    // the flush takes well under a second.
    o.check("exit_in_time", took < Duration::from_secs(15));
    o.check("exit", status.is_some_and(|s| s.success()));
    let expect = Expect {
        until: term_at.saturating_sub(Duration::from_millis(250)),
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// What the fake SCIM backend does.
const SCIM_ADMIN: u8 = 0;
const SCIM_FAIL: u8 = 1;
const SCIM_HANG: u8 = 2;

/// The dashboard API with a Databricks admin check whose backend answers,
/// then fails, then hangs: a grant is cached at most `ADMIN_TTL_MS`; after
/// that a failing or hanging backend gives 503, never a stale 200.
pub(crate) async fn admin_check(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("admin_check");
    let rig = Rig::start(ctx).await?;
    let mode = Arc::new(AtomicU8::new(SCIM_ADMIN));
    let scim = fake_scim(Arc::clone(&mode)).await?;
    let ttl = Duration::from_millis(1_500);
    let env = [
        ("DATABRICKS_HOST", format!("http://{scim}")),
        ("ADMIN_TTL_MS", ttl.as_millis().to_string()),
    ];
    let mut app = rig.app("app", &env).await?;
    let ask = |timeout: Duration| {
        let (addr, ledger) = (app.addr(), Arc::clone(&rig.ledger));
        async move {
            let id = new_id();
            let req = Request::get("/api/v1/metrics/performance?time_range=24h")
                .header("X-Correlation-ID", &id)
                .header("X-Forwarded-Email", "admin@example.com")
                .header("X-Forwarded-Access-Token", "token");
            let sent_at = ledger.elapsed();
            let t0 = Instant::now();
            let told = http::send(addr, &req, timeout).await;
            let latency = t0.elapsed();
            let status = told.as_ref().map(|r| r.status).map_err(|f| *f);
            ledger.push(Entry {
                id: Some(id),
                kind: Kind::Control,
                told: status,
                latency,
                sent_at,
                events: Vec::new(),
            });
            (status, latency)
        }
    };
    let (granted, _) = ask(Duration::from_secs(30)).await;
    o.figure("granted", format!("{granted:?}"));
    o.check("grant_while_backend_answers", granted == Ok(200));

    mode.store(SCIM_FAIL, Ordering::Relaxed);
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let (failing, _) = ask(Duration::from_secs(30)).await;
    o.figure("failing", format!("{failing:?}"));
    o.check("failing_backend_503", failing == Ok(503));

    mode.store(SCIM_HANG, Ordering::Relaxed);
    let (hanging, took) = ask(Duration::from_secs(60)).await;
    o.figure("hanging", format!("{hanging:?}"));
    o.figure("hanging_ms", ms(Some(took)));
    o.check("hanging_backend_503", hanging == Ok(503));

    mode.store(SCIM_ADMIN, Ordering::Relaxed);
    let (back, _) = ask(Duration::from_secs(30)).await;
    o.check("grant_when_back", back == Ok(200));

    let (status, _) = app.terminate(Duration::from_secs(45)).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    let expect = Expect {
        p99: false,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// A loopback SCIM `Me` endpoint obeying `mode`; returns its address.
async fn fake_scim(mode: Arc<AtomicU8>) -> Result<std::net::SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding the fake SCIM server", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the fake SCIM address", e))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mode = Arc::clone(&mode);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let body = r#"{"groups":[{"display":"admins"}]}"#;
                let reply = match mode.load(Ordering::Relaxed) {
                    SCIM_ADMIN => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    SCIM_FAIL => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                    _ => {
                        // Hang: hold the connection, answer nothing.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    }
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}
