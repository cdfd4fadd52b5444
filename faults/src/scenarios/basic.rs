//! The app alone: the baseline every p99 budget comes from, and the app's
//! own stops (SIGTERM under load, SIGTERM with the database down, SIGKILL
//! and a restart while the database is down).

use std::time::Duration;

use crate::error::Error;
use crate::load::{Load, LoadSpec};
use crate::report::Outcome;
use crate::scenarios::Ctx;
use crate::scenarios::rig::{Expect, Rig, RssSampler, secs};

/// How long an app may take to exit after SIGTERM before the harness kills
/// it: the example's drain plus its collector deadline, and slack.
const EXIT_TIMEOUT: Duration = Duration::from_secs(45);

/// Requests sent this close before SIGTERM may meet a closing listener;
/// the error check ends here (see docs/operations.md).
const STOP_MARGIN: Duration = Duration::from_millis(250);

/// Steady load, no fault: the reference p99 and a clean reconciliation.
pub(crate) async fn baseline(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("baseline");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let rss = RssSampler::start(&app);
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let summary = load.stop().await;
    let (status, took) = app.terminate(EXIT_TIMEOUT).await;
    o.figure("exit_s", secs(Some(took)));
    o.check("exit", status.is_some_and(|s| s.success()));
    o.figure("shed", summary.shed);
    rss.report(&mut o);
    let expect = Expect {
        p99: false,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    let mut lat =
        crate::ledger::normal_latencies(&rig.ledger.entries(), Duration::ZERO, Duration::MAX);
    ctx.baseline_p99 = crate::ledger::p99(&mut lat);
    Ok(o)
}

/// SIGTERM while load runs: the app stops accepting, finishes what is in
/// flight and flushes; every acknowledged record is stored.
pub(crate) async fn app_sigterm(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("app_sigterm");
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let term_at = rig.ledger.elapsed();
    let (status, took) = app.terminate(EXIT_TIMEOUT).await;
    let summary = load.stop().await;
    o.figure("exit_s", secs(Some(took)));
    o.check("exit", status.is_some_and(|s| s.success()));
    o.figure("shed", summary.shed);
    let expect = Expect {
        until: term_at.saturating_sub(STOP_MARGIN),
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// SIGTERM while PostgreSQL is down: the app must exit within its
/// shutdown deadline, counting what it could not write as dropped.
pub(crate) async fn sigterm_pg_down(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("sigterm_pg_down");
    let rig = Rig::start(ctx).await?;
    let deadline = Duration::from_secs(5);
    let env = [(
        "METRICS_SHUTDOWN_DEADLINE_MS",
        deadline.as_millis().to_string(),
    )];
    let mut app = rig.app("app", &env).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.pg.stop().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let term_at = rig.ledger.elapsed();
    let (status, took) = app.terminate(EXIT_TIMEOUT).await;
    let _ = load.stop().await;
    o.figure("exit_s", secs(Some(took)));
    o.figure("deadline_s", secs(Some(deadline)));
    // Drain (at most 5 s by default) + the collector's deadline + slack.
    o.check(
        "exit_within_deadline",
        took <= deadline + Duration::from_secs(7),
    );
    o.check("exit", status.is_some());
    rig.pg.start_again().await?;
    let expect = Expect {
        drops: true,
        until: term_at.saturating_sub(STOP_MARGIN),
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// SIGKILL under load (what was queued is lost: at most the queue plus one
/// batch), then a restart while PostgreSQL is down: the new process must
/// start and serve (F7) and store its records once the database is back.
pub(crate) async fn sigkill_restart_pg_down(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("app_sigkill_restart_pg_down");
    let rig = Rig::start(ctx).await?;
    let queue = 2_000u64;
    let batch = 500u64;
    let env = [
        ("METRICS_QUEUE_CAPACITY", queue.to_string()),
        ("METRICS_MAX_BATCH", batch.to_string()),
    ];
    let app = rig.app("app", &env).await?;
    let load = Load::start(app.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = app.recorded(&rig.ledger).await;
    app.signal("KILL")?;
    let _ = load.stop().await;
    let mut app = app;
    let _ = app.wait(Duration::from_secs(10)).await;

    // What the killed process had received, against what it stored.
    let client = rig.pg.connect().await?;
    let stored_first = crate::reconcile::Stored::load(&client).await?;
    let stored_n = stored_first.request_rows() + stored_first.event_rows();
    let acked_before: u64 = rig
        .ledger
        .entries()
        .iter()
        .filter(|e| e.told.is_ok())
        .map(|e| {
            1 + if e.told == Ok(202) {
                e.events.len() as u64
            } else {
                0
            }
        })
        .sum();
    let loss = acked_before.saturating_sub(stored_n);
    o.figure("sigkill_loss", loss);
    o.figure("sigkill_bound", queue + batch);
    o.check("sigkill_loss_bounded", loss <= queue + batch);
    if let Some(c) = before {
        o.figure("received_before_kill", c.received().unwrap_or(0));
    }
    drop(client);

    rig.pg.stop().await?;
    let restarted = rig.app("app-2", &env).await;
    let mut app2 = match restarted {
        Ok(a) => a,
        Err(e) => {
            o.check("starts_with_pg_down", false);
            o.note(&format!("F7: {e}"));
            return Ok(o);
        }
    };
    // The kill's own refused requests are not errors of the second process.
    let second_from = rig.ledger.elapsed();
    let load = Load::start(app2.addr(), LoadSpec::default(), rig.ledger.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.pg.start_again().await?;
    let recovery = rig.settle(&app2, Duration::from_secs(120)).await;
    o.figure("recovery_s", secs(recovery));
    o.check("recovered", recovery.is_some());
    let _ = load.stop().await;
    let term_at = rig.ledger.elapsed();
    let (status, _) = app2.terminate(EXIT_TIMEOUT).await;
    o.check("exit", status.is_some_and(|s| s.success()));
    // The killed process's counters died with it: it stands in the sums
    // with what the database implies (its acknowledged records, stored or
    // lost to the kill), so the checks judge the second process exactly
    // and the kill's loss only against its bound (above).
    let first = crate::counters::Counters::parse_line(&format!(
        "received={} written={stored_n} dropped={loss} pending=0",
        stored_n + loss
    ));
    let expect = Expect {
        from: second_from,
        until: term_at.saturating_sub(STOP_MARGIN),
        drops: true,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[Some(first), app2.exit_counters()], expect)
        .await?;
    Ok(o)
}
