//! The `metrics-aggregate` binary: exit codes 0 (success), 1 (database
//! unreachable), 2 (a job failed; injected by dropping the rollup table after
//! migrating, so the rollup's upsert fails), summary lines on stdout, errors
//! with a correlation id on stderr.

mod job_support;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use job_support::{insert_requests, migrated_db, req};

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
