//! Faults of the metrics database while the app serves load: a backend
//! killed mid-`COPY`, the postmaster killed, the server stopped, and a slow
//! or flaky network (through the proxy) or a locked table.
//!
//! In all of them the normal routes must not notice (no errors, p99 within
//! budget) and every acknowledged record must end up stored exactly once,
//! or counted as dropped where the scenario expects drops.

use std::time::Duration;

use crate::error::Error;
use crate::load::{Load, LoadSpec};
use crate::pg::SCHEMA;
use crate::proxy::Mode;
use crate::report::Outcome;
use crate::scenarios::Ctx;
use crate::scenarios::rig::{Expect, Rig, RssSampler, secs};

/// SIGTERM to exit, at most (drain + collector deadline + slack).
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// How long the backlog of an outage may take to drain once the database
/// is back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A backend `SIGKILL`ed while it runs the sink's `COPY`: the server ends
/// every session and recovers; the batch in flight has an unknown outcome,
/// which must not become duplicates or silent losses.
pub(crate) async fn backend_kill(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("pg_backend_kill");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut killed = rig.pg.kill_copy_backend(Duration::from_secs(10)).await?;
    if killed.is_none() {
        // COPYs of a small batch take well under a millisecond; added
        // latency on the wire keeps one in flight long enough to be seen.
        rig.proxy.set_mode(Mode::Delay(Duration::from_millis(20)));
        killed = rig.pg.kill_copy_backend(Duration::from_secs(15)).await?;
        rig.proxy.set_mode(Mode::Pass);
    }
    o.figure(
        "killed_pid",
        killed.map_or_else(|| "none".to_owned(), |p| p.to_string()),
    );
    o.check("caught_copy", killed.is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovery = rig.settle(&app, RECOVERY_TIMEOUT).await;
    o.figure("recovery_s", secs(recovery));
    o.check("recovered", recovery.is_some());
    let _ = load.stop().await;
    let (status, _) = app.terminate(EXIT_TIMEOUT).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    rig.finish(ctx, &mut o, &[app.exit_counters()], Expect::default())
        .await?;
    Ok(o)
}

/// The postmaster `SIGKILL`ed, then started again (crash recovery) 3 s
/// later.
pub(crate) async fn postmaster_kill(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("pg_postmaster_kill");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.pg.kill_postmaster().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.pg.start_again().await?;
    let recovery = rig.settle(&app, RECOVERY_TIMEOUT).await;
    o.figure("recovery_s", secs(recovery));
    o.check("recovered", recovery.is_some());
    let _ = load.stop().await;
    let (status, _) = app.terminate(EXIT_TIMEOUT).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    rig.finish(ctx, &mut o, &[app.exit_counters()], Expect::default())
        .await?;
    Ok(o)
}

/// The server stopped (`pg_ctl stop -m fast`) for `secs` under load, then
/// started. With the default queue nothing may be lost; with
/// `small_queue` (a small queue and memory budget, heavy events) drops are
/// expected, must equal what is missing exactly, and memory must stay flat.
pub(crate) async fn stop(
    ctx: &mut Ctx,
    name: &str,
    secs_down: u64,
    small_queue: bool,
) -> Result<Outcome, Error> {
    let mut o = Outcome::new(name);
    let rig = Rig::start(ctx).await?;
    let budget: u64 = 16 << 20;
    let (env, spec) = if small_queue {
        let env = vec![
            ("METRICS_QUEUE_CAPACITY", "2000".to_owned()),
            ("METRICS_MEMORY_BUDGET", budget.to_string()),
        ];
        let spec = LoadSpec {
            ingest_every: 2,
            events_per_post: 10,
            metadata_bytes: 8 * 1024,
            ..LoadSpec::default()
        };
        (env, spec)
    } else {
        (Vec::new(), LoadSpec::default())
    };
    let mut app = rig.app("app", &env).await?;
    let rss = RssSampler::start(&app);
    let load = Load::start(app.addr(), spec, rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.pg.stop().await?;
    tokio::time::sleep(Duration::from_secs(secs_down)).await;
    rig.pg.start_again().await?;
    let recovery = rig.settle(&app, RECOVERY_TIMEOUT).await;
    o.figure("down_s", secs_down);
    o.figure("recovery_s", secs(recovery));
    o.check("recovered", recovery.is_some());
    let _ = load.stop().await;
    let (status, _) = app.terminate(EXIT_TIMEOUT).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    let (base, peak) = rss.report(&mut o);
    if small_queue {
        // "Flat": the growth stays within the budget plus a fixed allowance
        // for the server's own buffers (connections, allocator slack).
        let allowance = (budget as f64 / 1048576.0) * 2.0 + 48.0;
        o.figure("rss_allowance_mib", format!("{allowance:.0}"));
        o.check("rss_flat", peak - base <= allowance);
    }
    let expect = Expect {
        drops: small_queue,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// A slow or flaky path to the database.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slow {
    /// +200 ms per chunk for 20 s.
    Delay200ms,
    /// Nothing forwarded for 15 s (sockets kept).
    Stall15s,
    /// Both raw tables locked (`ACCESS EXCLUSIVE`) for 20 s.
    TableLock20s,
    /// Every connection closed every 2 s for 20 s.
    Resets2s,
}

/// Load through a slow database (see [`Slow`]); nothing may be lost.
pub(crate) async fn slow(ctx: &mut Ctx, name: &str, kind: Slow) -> Result<Outcome, Error> {
    let mut o = Outcome::new(name);
    let mut rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    match kind {
        Slow::Delay200ms => {
            rig.proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
            tokio::time::sleep(Duration::from_secs(20)).await;
            rig.proxy.set_mode(Mode::Pass);
        }
        Slow::Stall15s => {
            rig.proxy.set_mode(Mode::Stall);
            tokio::time::sleep(Duration::from_secs(15)).await;
            rig.proxy.set_mode(Mode::Pass);
        }
        Slow::TableLock20s => {
            let mut client = rig.pg.connect().await?;
            let tx = client
                .transaction()
                .await
                .map_err(Error::db("opening the lock transaction"))?;
            tx.batch_execute(&format!(
                "LOCK TABLE {SCHEMA}.performance_metrics, {SCHEMA}.usage_events IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .map_err(Error::db("locking the raw tables"))?;
            tokio::time::sleep(Duration::from_secs(20)).await;
            tx.rollback()
                .await
                .map_err(Error::db("releasing the table lock"))?;
        }
        Slow::Resets2s => {
            rig.proxy.reset_every(Some(Duration::from_secs(2)));
            tokio::time::sleep(Duration::from_secs(20)).await;
            rig.proxy.reset_every(None);
        }
    }
    let recovery = rig.settle(&app, RECOVERY_TIMEOUT).await;
    o.figure("recovery_s", secs(recovery));
    o.check("recovered", recovery.is_some());
    let _ = load.stop().await;
    let (status, _) = app.terminate(EXIT_TIMEOUT).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    rig.finish(ctx, &mut o, &[app.exit_counters()], Expect::default())
        .await?;
    Ok(o)
}
