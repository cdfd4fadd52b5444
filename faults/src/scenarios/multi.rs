//! Several app processes on one PostgreSQL, each with its scheduler.
//!
//! 1. **Rollup lock holder killed.** Raw rows are seeded in six closed
//!    hours; `rollup_hours` is locked by the harness so that the first
//!    rollup run (every app runs one at start) blocks while holding the
//!    rollup advisory lock. The holder (found in `pg_locks`, told apart by
//!    its `application_name`) is `SIGKILL`ed, the table unlocked, and a
//!    replacement app started, whose first run rolls the hours. Each seeded
//!    hour must then be in `rollup_hours` once, with its raw count, and its
//!    all-keys rollup row must count exactly the raw rows.
//! 2. **Three retention runs at once.** With `aggregated_metrics` locked,
//!    three `RetentionJob::run_once` start together on three pools: one
//!    takes the retention lock (and waits for the table), the other two
//!    must report `skipped`.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::app::App;
use crate::counters::Counters;
use crate::error::Error;
use crate::pg::{Pg, SCHEMA};
use crate::report::Outcome;
use crate::scenarios::Ctx;
use crate::scenarios::rig::{Rig, secs};

/// First key of the rollup job's advisory lock ("amRU", metrics-pg
/// `jobs/lock.rs`).
const ROLLUP_LOCK_CLASS: i64 = 0x616D_5255;

/// Hours ago of the seeded hours (each closed, past the rollup's grace).
const SEEDED_HOURS: std::ops::RangeInclusive<i32> = 3..=8;

/// Raw rows per seeded hour and table.
const ROWS_PER_HOUR: i32 = 400;

/// The scenario.
pub(crate) async fn multi_process(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("multi_process");
    let rig = Rig::start(ctx).await?;
    let mut client = rig.pg.connect().await?;
    metrics_pg::Migrator::new(SCHEMA)
        .map_err(|source| Error::Job {
            context: "naming the schema",
            source,
        })?
        .run(&mut client)
        .await
        .map_err(|source| Error::Job {
            context: "migrating before the apps start",
            source,
        })?;
    seed(&client).await?;

    // Part 1: the rollup lock holder dies mid-run.
    let mut locker = rig.pg.connect().await?;
    let tx = locker
        .transaction()
        .await
        .map_err(Error::db("opening the lock transaction"))?;
    tx.batch_execute(&format!(
        "LOCK TABLE {SCHEMA}.rollup_hours IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .map_err(Error::db("locking rollup_hours"))?;
    let mut apps: Vec<App> = Vec::new();
    // The job run lines (metrics-pg logs one per scheduled run at info).
    let env = [("RUST_LOG", "warn,metrics_pg=info".to_owned())];
    for i in 1..=3 {
        // Each app on its own port: they are separate deployments sharing
        // one database.
        let mut spec = rig.spec(&format!("app-{i}"), &env);
        spec.bind = crate::app::free_addr()?;
        apps.push(App::start(&spec).await?);
    }
    let holder = wait_for_rollup_holder(&client, Duration::from_secs(30)).await?;
    o.figure("holder", holder.as_deref().unwrap_or("none"));
    let Some(holder) = holder else {
        o.check("rollup_lock_taken", false);
        return Ok(o);
    };
    let killed = apps.iter().position(|a| a.name() == holder);
    o.check("holder_is_an_app", killed.is_some());
    if let Some(k) = killed {
        apps[k].signal("KILL")?;
        let _ = apps[k].wait(Duration::from_secs(10)).await;
    }
    tx.rollback()
        .await
        .map_err(Error::db("unlocking rollup_hours"))?;
    drop(locker);

    let t0 = Instant::now();
    let mut spec = rig.spec("app-4", &env);
    spec.bind = crate::app::free_addr()?;
    apps.push(App::start(&spec).await?);
    let rolled = wait_rolled(&client, Duration::from_secs(120)).await?;
    o.figure("rolled_after_s", secs(rolled.then(|| t0.elapsed())));
    o.check("hours_rolled", rolled);
    let (hours_ok, bad) = hours_match_raw(&client).await?;
    o.figure("hours_checked", hours_ok + bad);
    o.figure("hours_mismatched", bad);
    o.check("each_hour_once_counts_equal_raw", bad == 0 && hours_ok > 0);

    // Rolled once: the runs that did roll (their log lines) read every
    // seeded row exactly once between them.
    let seeded = u64::from((SEEDED_HOURS.end() - SEEDED_HOURS.start() + 1).unsigned_abs())
        * u64::from(ROWS_PER_HOUR.unsigned_abs())
        * 2;
    let (runs, rows) = rollup_runs_logged(&apps);
    o.figure("rollup_runs_logged", runs);
    o.figure("raw_rows_rolled_logged", rows);
    o.figure("raw_rows_seeded", seeded);
    o.check("rolled_once", runs > 0 && rows == seeded);

    // Part 2: three retention runs at once.
    let (ran, skipped) = three_retention_runs(&rig.pg).await?;
    o.figure("retention_ran", ran);
    o.figure("retention_skipped", skipped);
    o.check("one_retention_runs", ran == 1 && skipped == 2);

    // Every survivor exits cleanly with a consistent exit line.
    for (i, app) in apps.iter_mut().enumerate() {
        if Some(i) == killed {
            continue;
        }
        let (status, _) = app.terminate(Duration::from_secs(45)).await;
        o.check(
            &format!("{}_exit", app.name()),
            status.is_some_and(|s| s.success()),
        );
        let consistent = app.exit_counters().and_then(|c| c.invariant_holds(true));
        o.check_known(&format!("{}_invariant", app.name()), consistent);
    }
    Ok(o)
}

/// Rollup runs that rolled rows, from every app's job run lines, and the
/// raw rows they read in all.
fn rollup_runs_logged(apps: &[App]) -> (u64, u64) {
    let mut runs = 0;
    let mut rows = 0;
    for app in apps {
        for line in app.output() {
            let is_rollup = line.contains("job=\"rollup\"") || line.contains("job=rollup");
            let ok = line.contains("outcome=\"ok\"") || line.contains("outcome=ok");
            if line.contains("metrics job run") && is_rollup && ok {
                let n = Counters::parse_line(&line)
                    .get("raw_rows_rolled")
                    .unwrap_or(0);
                if n > 0 {
                    runs += 1;
                    rows += n;
                }
            }
        }
    }
    (runs, rows)
}

async fn seed(client: &Client) -> Result<(), Error> {
    let (lo, hi) = (*SEEDED_HOURS.start(), *SEEDED_HOURS.end());
    client
        .batch_execute(&format!(
            "INSERT INTO {SCHEMA}.performance_metrics \
               (id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id, correlation_id) \
             SELECT gen_random_uuid(), date_trunc('hour', now()) - make_interval(hours => h) \
                      + make_interval(secs => (i * 7) % 3600), \
                    '/seed/' || (i % 5), 'GET', 200 + (i % 3) * 100, (i % 97)::float8, \
                    'seed' || (i % 11) || '@example.com', 'seed-' || h || '-' || i \
             FROM generate_series({lo}, {hi}) h, generate_series(1, {ROWS_PER_HOUR}) i; \
             INSERT INTO {SCHEMA}.usage_events \
               (id, \"timestamp\", received_at, event_type, user_id, page_name, element_id, success, metadata) \
             SELECT gen_random_uuid(), date_trunc('hour', now()) - make_interval(hours => h) \
                      + make_interval(secs => (i * 7) % 3600), now(), \
                    (ARRAY['page_view','button_click','form_submit'])[1 + i % 3], \
                    'seed' || (i % 11) || '@example.com', '/seed', 'seed-' || h || '-' || i, true, '{{}}' \
             FROM generate_series({lo}, {hi}) h, generate_series(1, {ROWS_PER_HOUR}) i;"
        ))
        .await
        .map_err(Error::db("seeding raw rows in closed hours"))
}

/// The `application_name` of the session holding the rollup advisory lock.
async fn wait_for_rollup_holder(
    client: &Client,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let row = client
            .query_opt(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 LIMIT 1",
                &[&ROLLUP_LOCK_CLASS],
            )
            .await
            .map_err(Error::db("looking for the rollup lock holder"))?;
        if let Some(row) = row {
            return Ok(Some(row.get(0)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// Waits until every seeded hour of both tables is in `rollup_hours`.
async fn wait_rolled(client: &Client, timeout: Duration) -> Result<bool, Error> {
    let want = i64::from(SEEDED_HOURS.end() - SEEDED_HOURS.start() + 1) * 2;
    let (lo, hi) = (*SEEDED_HOURS.start(), *SEEDED_HOURS.end());
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {SCHEMA}.rollup_hours WHERE raw_count > 0 AND hour BETWEEN \
                     date_trunc('hour', now()) - make_interval(hours => {hi}) AND \
                     date_trunc('hour', now()) - make_interval(hours => {lo})"
                ),
                &[],
            )
            .await
            .map_err(Error::db("counting rolled hours"))?
            .get(0);
        if n >= want {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(false)
}

/// Per (metric type, hour) with raw rows: `rollup_hours` once with the raw
/// count, and exactly one all-keys rollup row counting the raw rows.
/// Returns (matching, mismatched).
async fn hours_match_raw(client: &Client) -> Result<(u64, u64), Error> {
    let rows = client
        .query(
            &format!(
                "WITH raw AS ( \
                   SELECT 'performance' AS metric_type, date_trunc('hour', \"timestamp\") AS hour, count(*) AS n \
                   FROM {SCHEMA}.performance_metrics WHERE correlation_id LIKE 'seed-%' GROUP BY 2 \
                   UNION ALL \
                   SELECT 'usage', date_trunc('hour', \"timestamp\"), count(*) \
                   FROM {SCHEMA}.usage_events WHERE element_id LIKE 'seed-%' GROUP BY 2) \
                 SELECT raw.n, \
                   (SELECT count(*) FROM {SCHEMA}.rollup_hours r \
                      WHERE r.metric_type = raw.metric_type AND r.hour = raw.hour AND r.raw_count = raw.n), \
                   (SELECT count(*) FROM {SCHEMA}.aggregated_metrics a \
                      WHERE a.metric_type = raw.metric_type AND a.time_bucket = raw.hour \
                        AND coalesce(a.endpoint_path, a.event_type) = '*' AND a.sample_count = raw.n) \
                 FROM raw"
            ),
            &[],
        )
        .await
        .map_err(Error::db("comparing rollups with raw rows"))?;
    let ok = rows
        .iter()
        .filter(|r| r.get::<_, i64>(1) == 1 && r.get::<_, i64>(2) == 1)
        .count() as u64;
    Ok((ok, rows.len() as u64 - ok))
}

/// Three retention runs at once while `aggregated_metrics` is locked:
/// returns (ran, skipped).
async fn three_retention_runs(pg: &Pg) -> Result<(u64, u64), Error> {
    let mut locker = pg.connect().await?;
    let tx = locker
        .transaction()
        .await
        .map_err(Error::db("opening the lock transaction"))?;
    tx.batch_execute(&format!(
        "LOCK TABLE {SCHEMA}.aggregated_metrics, {SCHEMA}.rollup_hours IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .map_err(Error::db("locking the rollup tables"))?;
    let url = Pg::url_at(pg.addr(), "retention");
    let mut runs = Vec::new();
    for _ in 0..3 {
        let pool = metrics_pg::create_pool(&url, 2).map_err(|source| Error::Job {
            context: "a pool for a retention run",
            source,
        })?;
        let job = metrics_pg::RetentionJob::new(pool, SCHEMA).map_err(|source| Error::Job {
            context: "building a retention job",
            source,
        })?;
        runs.push(tokio::spawn(async move { job.run_once().await }));
    }
    // The two that find the lock taken return at once; then let the one
    // that holds it proceed.
    let t0 = Instant::now();
    while runs.iter().filter(|r| r.is_finished()).count() < 2
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.rollback()
        .await
        .map_err(Error::db("unlocking the rollup tables"))?;
    let (mut ran, mut skipped) = (0, 0);
    for r in runs {
        match r.await {
            Ok(Ok(report)) if report.skipped => skipped += 1,
            Ok(Ok(_)) => ran += 1,
            Ok(Err(source)) => {
                return Err(Error::Job {
                    context: "a retention run",
                    source,
                });
            }
            Err(e) => return Err(Error::Setup(format!("retention task: {e}"))),
        }
    }
    Ok((ran, skipped))
}
