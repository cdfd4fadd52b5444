//! The `metrics-aggregate` binary: exit codes 0 (success), 1 (database
//! unreachable), 2 (a job failed; injected by dropping the rollup table after
//! migrating, so the rollup's upsert fails), summary lines on stdout,
//! `migrate` and `retention` on their own, a progress line before each step,
//! and errors with a correlation id and a `check:` hint on stderr on every
//! error exit.

mod job_support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use job_support::{DAY0, cli, insert_requests, migrated_db, req, t, text};
use test_support::TestDb;

/// Two hours ago: closed for the real clock the binary reads.
fn two_hours_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(2 * 3600)
}

#[tokio::test]
async fn run_migrates_rolls_up_and_applies_retention() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &[req(two_hours_ago(), "/cli", 200, 5.0)]).await;
    let out = cli(&["run", "--database-url", db.url(), "--schema", &schema]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "migrate: schema at version",
        "rollup: 1 hours rolled",
        "retention: ",
    ] {
        assert!(stdout.contains(step), "{step:?} missing in:\n{stdout}");
    }
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".aggregated_metrics"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn database_url_comes_from_the_environment_too() {
    let (db, schema) = migrated_db().await;
    let out = Command::new(env!("CARGO_BIN_EXE_metrics-aggregate"))
        .args(["rollup", "--schema", &schema])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rollup: 0 hours rolled"));
}

#[test]
fn unreachable_database_exits_1_with_a_correlation_id() {
    // Port 1 on localhost: nothing listens there, the connect is refused.
    let out = cli(&[
        "rollup",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error [run "), "{stderr}");
    let id = stderr
        .split("[run ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?}");
    assert!(
        stderr.contains("check: that PostgreSQL is running"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_failing_job_exits_2() {
    let (db, schema) = migrated_db().await;
    let client = db.connect().await;
    insert_requests(&client, &schema, &[req(two_hours_ago(), "/cli", 200, 5.0)]).await;
    // The injected failure: the rollup table is gone, so the upsert fails.
    client
        .batch_execute(&format!("DROP TABLE \"{schema}\".aggregated_metrics"))
        .await
        .unwrap();
    let out = cli(&["rollup", "--database-url", db.url(), "--schema", &schema]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rollup failed"), "{stderr}");
    assert!(stderr.contains("aggregated_metrics"), "{stderr}");
    assert!(
        stderr.contains("check: that `metrics-aggregate migrate` ran"),
        "{stderr}"
    );
    // Nothing half-written: the hour with the row is not recorded as rolled
    // (an empty later hour, rolled concurrently, may be).
    let rolled: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".rollup_hours WHERE raw_count > 0"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rolled, 0);
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    for args in [&[][..], &["frobnicate"][..], &["rollup", "--schema"][..]] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("usage: metrics-aggregate"), "{args:?}");
        assert!(
            err.contains("error [run ") && err.contains("check: the command line"),
            "{args:?}: {err}"
        );
    }
    let no_url = cli(&["rollup"]);
    assert_eq!(no_url.status.code(), Some(1), "no database to reach");
    assert!(text(&no_url.stderr).contains("DATABASE_URL"));
    let bad_url = cli(&["rollup", "--database-url", "not a url"]);
    assert_eq!(bad_url.status.code(), Some(1));
    assert!(
        text(&bad_url.stderr).contains("check: the connection string"),
        "{}",
        text(&bad_url.stderr)
    );
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for args in [&["--help"][..], &["-h"][..], &["rollup", "--help"][..]] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            text(&out.stdout).starts_with("usage: metrics-aggregate"),
            "{args:?}"
        );
        assert!(out.stderr.is_empty(), "{args:?}");
    }
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
    insert_requests(&client, &schema, &[req(two_hours_ago(), "/p", 200, 1.0)]).await;
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
