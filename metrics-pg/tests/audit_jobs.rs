//! Audit of issue 4 on a real PostgreSQL, beside the existing job tests:
//!
//! - N instances run each job once: a run while another session holds the
//!   job's advisory lock is `skipped` and writes nothing (library API and CLI);
//! - a run cancelled at any point leaves whole hours only, releases its lock,
//!   and the next run finishes with the same rows as an uninterrupted run;
//! - the jobs' *default* governance fires at the issue's numbers (800,000 /
//!   1,000,000), with thousands separators;
//! - the CLI's `migrate` and `retention` subcommands on their own, its
//!   progress lines, and a correlation id plus a hint on every error path.

mod job_support;

use std::future::Future;
use std::pin::pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use job_support::{DAY0, HOUR, Req, insert_requests, migrated_db, pool, req, rollup_dump, t};
use metrics_pg::{Clock, RetentionJob, RollupJob};
use test_support::TestDb;
use test_support::tokio_postgres::Client;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The first keys of the jobs' advisory locks ("amRU" and "amRT", documented
/// in metrics-pg/src/job.rs; the second key is `hashtext(schema)`). Hard-coded
/// here because they are crate-private: if they change, these tests fail
/// loudly rather than pass vacuously (the "skipped" assertions would fail).
const ROLLUP_LOCK: i32 = 0x616D_5255;
const RETENTION_LOCK: i32 = 0x616D_5254;

const H10: u64 = DAY0 + 10 * HOUR;

fn rollup(db: &TestDb, schema: &str, now: u64) -> RollupJob {
    RollupJob::new(pool(db), schema)
        .unwrap()
        .clock(Clock::fixed(t(now)))
}

async fn lock(client: &Client, class: i32, schema: &str) {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&class, &schema],
        )
        .await
        .unwrap();
}

async fn unlock(client: &Client, class: i32, schema: &str) {
    let released: bool = client
        .query_one(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&class, &schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(released, "the test held the lock");
}

fn hourly_rows(hours: u64) -> Vec<Req> {
    (0..hours * 40)
        .map(|i| {
            req(
                t(H10 + (i % hours) * HOUR + i),
                // Every hour gets both endpoints.
                if (i / hours) % 3 == 0 {
                    "/a"
                } else {
                    "/b/{id}"
                },
                if i % 7 == 0 { 500 } else { 200 },
                (i % 113) as f64 + 0.5,
            )
        })
        .collect()
}

// ===== N instances: the advisory lock =====

#[tokio::test]
async fn a_rollup_while_another_instance_holds_the_lock_is_skipped_and_writes_nothing() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &hourly_rows(2)).await;
    let other_instance = db.connect().await;
    lock(&other_instance, ROLLUP_LOCK, &schema).await;

    let report = rollup(&db, &schema, H10 + 3 * HOUR)
        .run_once()
        .await
        .unwrap();
    assert!(report.skipped, "{report:?}");
    assert_eq!((report.hours_rolled, report.rollup_rows_written), (0, 0));
    assert!(
        report.to_string().starts_with("rollup: skipped"),
        "{report}"
    );
    assert!(rollup_dump(&client, &schema).await.is_empty());

    // The CLI, as a cron job beside the app, skips too and still exits 0.
    let out = cli(&["rollup", "--database-url", db.url(), "--schema", &schema]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rollup: skipped"),
        "{}",
        text(&out.stdout)
    );
    assert!(rollup_dump(&client, &schema).await.is_empty());

    unlock(&other_instance, ROLLUP_LOCK, &schema).await;
    let report = rollup(&db, &schema, H10 + 3 * HOUR)
        .run_once()
        .await
        .unwrap();
    assert!(!report.skipped);
    assert_eq!(report.hours_rolled, 2, "{report:?}");
}

#[tokio::test]
async fn retention_while_another_instance_holds_its_lock_is_skipped_and_drops_nothing() {
    let (db, schema) = migrated_db().await;
    let mut client = db.connect().await;
    let day = |n: u64| {
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(DAY0 + n * 86_400).unwrap())
            .unwrap()
            .date()
    };
    metrics_pg::create_partitions(&mut client, &schema, (0..=1).map(day))
        .await
        .unwrap();
    insert_requests(&client, &schema, &[req(t(DAY0 + 5), "/old", 200, 1.0)]).await;
    assert_eq!(day_partitions(&client, &schema).await, 2);

    let other_instance = db.connect().await;
    lock(&other_instance, RETENTION_LOCK, &schema).await;
    let job = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(DAY0 + 30 * 86_400)));
    let report = job.run_once().await.unwrap();
    assert!(report.skipped, "{report:?}");
    assert!(report.partitions_dropped.is_empty());
    assert_eq!(day_partitions(&client, &schema).await, 2);
    assert!(rollup_dump(&client, &schema).await.is_empty());

    unlock(&other_instance, RETENTION_LOCK, &schema).await;
    let report = job.run_once().await.unwrap();
    assert!(!report.skipped);
    assert_eq!(report.partitions_dropped.len(), 4, "{report:?}");
    assert_eq!(day_partitions(&client, &schema).await, 0);
    assert!(
        !rollup_dump(&client, &schema).await.is_empty(),
        "rolled first"
    );
}

/// How many of the two day partitions of days 0 and 1 (2026-01-01 and -02)
/// of `performance_metrics` exist.
async fn day_partitions(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 \
               AND c.relname IN ('performance_metrics_p20260101', 'performance_metrics_p20260102')",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

// ===== a run interrupted half way =====

/// Polls `fut` until it has returned `Pending` `polls` times, then drops it
/// (as a scheduler stop or a killed task would); `Some` if it finished first.
async fn cancel_after<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut pending = 0;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => {
            pending += 1;
            if pending >= polls {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    })
    .await
}

/// Rows per hour in the dump (its lines start with the hour's epoch).
fn rows_per_hour(dump: &[String], hours: u64) -> Vec<usize> {
    (0..hours)
        .map(|h| {
            let prefix = format!("{} |", H10 + h * HOUR);
            dump.iter().filter(|l| l.starts_with(&prefix)).count()
        })
        .collect()
}

#[tokio::test]
async fn a_cancelled_rollup_leaves_whole_hours_releases_its_lock_and_the_next_run_finishes() {
    const HOURS: u64 = 6;
    let rows = hourly_rows(HOURS);
    let now = H10 + (HOURS + 1) * HOUR;

    // The reference: one uninterrupted run.
    let (ref_db, ref_schema) = migrated_db().await;
    let ref_client = ref_db.connect().await;
    insert_requests(&ref_client, &ref_schema, &rows).await;
    let full = rollup(&ref_db, &ref_schema, now).run_once().await.unwrap();
    assert_eq!(full.hours_rolled, HOURS);
    let reference = rollup_dump(&ref_client, &ref_schema).await;
    // Three rows per hour: /a, /b/{id} and the all-endpoints row.
    assert_eq!(rows_per_hour(&reference, HOURS), vec![3; HOURS as usize]);

    let mut cancelled_somewhere = false;
    for polls in [1, 2, 3, 5, 8, 13, 21, 34] {
        let (db, schema) = migrated_db().await;
        let client = db.connect().await;
        insert_requests(&client, &schema, &rows).await;
        let job = rollup(&db, &schema, now);
        let finished = cancel_after(job.run_once(), polls).await;
        cancelled_somewhere |= finished.is_none();

        // Whatever is visible is whole hours: 0 or 3 rows each.
        let dump = rollup_dump(&client, &schema).await;
        for (h, n) in rows_per_hour(&dump, HOURS).into_iter().enumerate() {
            assert!(n == 0 || n == 3, "polls {polls}: hour {h} has {n} rows");
        }

        // The lock went with the cancelled run's connection: taking it here
        // waits (server side, bounded by a statement timeout) until the
        // server has released it, and fails the test if it never is.
        let probe = db.connect().await;
        probe
            .batch_execute("SET statement_timeout = '30s'")
            .await
            .unwrap();
        lock(&probe, ROLLUP_LOCK, &schema).await;
        unlock(&probe, ROLLUP_LOCK, &schema).await;

        let next = job.run_once().await.unwrap();
        assert!(!next.skipped, "polls {polls}: {next:?}");
        assert_eq!(
            rollup_dump(&client, &schema).await,
            reference,
            "polls {polls}: the next run finishes the job"
        );
    }
    assert!(
        cancelled_somewhere,
        "no run was cancelled before it finished"
    );
}

// ===== governance at the default thresholds =====

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.0));
    }
}

impl Captured {
    /// The governance lines (WARN or ERROR about raw metric rows) since the
    /// last call.
    fn take_governance(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .filter(|(l, m)| {
                (*l == Level::WARN || *l == Level::ERROR) && m.contains("raw metric rows")
            })
            .collect()
    }
}

/// Sets the catalog's row estimate of the default request partition, as
/// `ANALYZE` would after that many rows (needs a superuser, which the test
/// harness's throwaway cluster gives; inserting a million rows per case
/// would cost seconds of a shared machine for the same check).
async fn set_estimate(client: &Client, schema: &str, rows: u32) {
    let updated = client
        .execute(
            "UPDATE pg_class SET reltuples = $1 \
             WHERE oid = (quote_ident($2) || '.performance_metrics_default')::regclass",
            &[&(rows as f32), &schema],
        )
        .await
        .expect("updating pg_class needs a superuser role (the harness's cluster has one)");
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn default_governance_warns_at_800000_and_alerts_at_1000000() {
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    // No `.governance(..)`: the defaults a user gets.
    let rollup = rollup(&db, &schema, DAY0);
    let retention = RetentionJob::new(pool(&db), &schema)
        .unwrap()
        .clock(Clock::fixed(t(DAY0)));

    set_estimate(&client, &schema, 799_999).await;
    let r = rollup.run_once().await.unwrap();
    assert_eq!(r.raw_rows_estimate, Some(799_999));
    assert_eq!(captured.take_governance(), vec![]);

    for (n, text) in [(800_000, "800,000"), (999_999, "999,999")] {
        set_estimate(&client, &schema, n).await;
        let r = rollup.run_once().await.unwrap();
        assert_eq!(r.raw_rows_estimate, Some(u64::from(n)));
        let lines = captured.take_governance();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, Level::WARN, "{lines:?}");
        assert!(
            lines[0].1.starts_with(&format!(
                "{text} raw metric rows stored (warning threshold 800,000)"
            )),
            "{lines:?}"
        );
    }

    for (n, text) in [(1_000_000, "1,000,000"), (1_234_567, "1,234,567")] {
        set_estimate(&client, &schema, n).await;
        for job in ["rollup", "retention"] {
            let report = if job == "rollup" {
                rollup.run_once().await.unwrap()
            } else {
                retention.run_once().await.unwrap()
            };
            assert_eq!(report.raw_rows_estimate, Some(u64::from(n)), "{report:?}");
            let lines = captured.take_governance();
            assert_eq!(lines.len(), 1, "{}: {lines:?}", report.job);
            assert_eq!(lines[0].0, Level::ERROR, "{lines:?}");
            assert!(
                lines[0].1.starts_with(&format!(
                    "ALERT: {text} raw metric rows stored (alert threshold 1,000,000)"
                )),
                "{lines:?}"
            );
        }
    }
}

// ===== the CLI =====

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metrics-aggregate"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run metrics-aggregate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The correlation id of an error line `... error [run <uuid>]: ...`, and
/// that a `check:` hint follows.
fn assert_error_with_id_and_hint(stderr: &str) {
    let id = stderr
        .split("error [run ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("no correlation id in:\n{stderr}"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?} in:\n{stderr}");
    assert!(stderr.contains("\n  check: "), "no hint in:\n{stderr}");
}

#[tokio::test]
async fn migrate_alone_creates_the_schema_and_a_second_run_applies_nothing() {
    let db = TestDb::new().await;
    let schema = db.name().to_owned();
    let out = cli(&["migrate", "--database-url", db.url(), "--schema", &schema]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("migrate: starting (schema {schema})\n")),
        "{stdout}"
    );
    assert!(stdout.contains("migrate: schema at version "), "{stdout}");
    assert!(!stdout.contains("rollup:"), "migrate only: {stdout}");
    let client = db.connect().await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 \
             AND tablename IN ('performance_metrics', 'usage_events', 'aggregated_metrics')",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 3);

    let again = cli(&["migrate", "--database-url", db.url(), "--schema", &schema]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("applied []"),
        "{}",
        text(&again.stdout)
    );
}

#[tokio::test]
async fn retention_alone_prints_its_summary_line() {
    let (db, schema) = migrated_db().await;
    let out = cli(&["retention", "--database-url", db.url(), "--schema", &schema]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], format!("retention: starting (schema {schema})"));
    assert!(
        lines[1].starts_with("retention: 0 hours rolled")
            && lines[1].contains("partitions dropped")
            && lines[1].contains("rollup rows deleted"),
        "{stdout}"
    );
}

#[tokio::test]
async fn run_prints_a_progress_line_before_each_step_in_order() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    insert_requests(&client, &schema, &[req(two_hours_ago, "/p", 200, 1.0)]).await;
    let out = cli(&["run", "--database-url", db.url(), "--schema", &schema]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let prefixes: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        prefixes,
        [
            "migrate",
            "migrate",
            "partitions",
            "partitions",
            "rollup",
            "rollup",
            "retention",
            "retention"
        ],
        "{stdout}"
    );
    // The row two hours back has no day partition in a fresh schema (the
    // harness creates none): the partitions step moves it into one.
    assert!(
        stdout.contains("rows moved out of the default partitions")
            && !stdout.contains(" 0 created"),
        "{stdout}"
    );
    let in_default: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".performance_metrics_default"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 0, "{stdout}");
    for step in ["migrate", "partitions", "rollup", "retention"] {
        assert!(
            stdout.contains(&format!("{step}: starting (schema {schema})")),
            "{stdout}"
        );
    }
}

#[tokio::test]
async fn every_error_exit_names_a_correlation_id_and_what_to_check() {
    // Exit 1: no database given, a malformed URL, an unreachable server.
    for args in [
        &["rollup"][..],
        &["rollup", "--database-url", "not a url"][..],
        &[
            "migrate",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5",
        ][..],
    ] {
        let out = cli(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_error_with_id_and_hint(&stderr);
        assert!(out.stdout.is_empty() || !text(&out.stdout).contains("error"));
    }

    // Exit 2: a job fails (retention, with its rollup table gone).
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &[req(t(DAY0 + 5), "/r", 200, 1.0)]).await;
    client
        .batch_execute(&format!("DROP TABLE \"{schema}\".aggregated_metrics"))
        .await
        .unwrap();
    let out = cli(&["retention", "--database-url", db.url(), "--schema", &schema]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("retention failed"), "{stderr}");
    assert_error_with_id_and_hint(&stderr);
    // Each invocation has its own id.
    let again = cli(&["retention", "--database-url", db.url(), "--schema", &schema]);
    let (code, again_out, again) = (
        again.status.code(),
        text(&again.stdout),
        text(&again.stderr),
    );
    assert_eq!(code, Some(2), "stdout:\n{again_out}\nstderr:\n{again}");
    assert_error_with_id_and_hint(&again);
    let id = |s: &str| s.split("[run ").nth(1).unwrap()[..36].to_owned();
    assert_ne!(id(&stderr), id(&again));
}
