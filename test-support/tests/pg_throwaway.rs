//! The `pg-throwaway` binary: prints a working DATABASE_URL, and its cluster disappears however
//! the binary ends (signal, parent exit, SIGKILL).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use app_metrics_test_support::tokio_postgres::{Config, NoTls};

struct Started {
    child: KillOnDrop,
    url: String,
    pgdata: PathBuf,
}

/// Kills the child if the test fails before it could end it, so no process outlives the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(args: &[&str]) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-throwaway"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("pg-throwaway runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = KillOnDrop(child);
    let mut value = |key: &str| {
        let line = lines.next().expect("a line").expect("utf-8");
        line.strip_prefix(&format!("{key}="))
            .unwrap_or_else(|| panic!("expected {key}=..., got {line:?}"))
            .to_owned()
    };
    let url = value("DATABASE_URL");
    let pgdata = PathBuf::from(value("PGDATA"));
    Started { child, url, pgdata }
}

async fn select_one(url: &str) -> Result<i32, String> {
    let (client, connection) = url
        .parse::<Config>()
        .unwrap()
        .connect(NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client
        .query_one("select 1", &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| e.to_string())
}

/// Waits (bounded) for another process to finish its cleanup: there is no event to await.
fn wait_until_gone(dir: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still exists after {within:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn sigterm_stops_and_removes_the_cluster() {
    let mut pg = start(&[]);
    assert_eq!(select_one(&pg.url).await, Ok(1));
    assert!(pg.pgdata.exists());
    signal(&pg.child.0, "-TERM");
    assert!(pg.child.0.wait().unwrap().success());
    // A graceful exit cleans up before exiting.
    assert!(!pg.pgdata.exists());
    assert!(select_one(&pg.url).await.is_err());
}

#[tokio::test]
async fn sigkill_is_cleaned_up_by_the_watchdog() {
    let mut pg = start(&["--fsync", "on"]);
    assert_eq!(select_one(&pg.url).await, Ok(1));
    let base = pg.pgdata.parent().unwrap().to_owned();
    pg.child.0.kill().unwrap();
    pg.child.0.wait().unwrap();
    wait_until_gone(&base, Duration::from_secs(15));
    assert!(
        select_one(&pg.url).await.is_err(),
        "the server must be stopped too"
    );
}

#[tokio::test]
async fn exits_with_its_parent_and_writes_the_env_file() {
    let mut parent = KillOnDrop(Command::new("sleep").arg("600").spawn().unwrap());
    let env_dir = std::env::temp_dir().join(format!("pg-throwaway-test-{}", std::process::id()));
    std::fs::create_dir_all(&env_dir).unwrap();
    let env_file = env_dir.join("pg.env");
    let mut pg = start(&[
        "--parent-pid",
        &parent.0.id().to_string(),
        "--env-file",
        env_file.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        written.contains(&format!("DATABASE_URL={}\n", pg.url)),
        "{written}"
    );
    assert_eq!(select_one(&pg.url).await, Ok(1));

    parent.0.kill().unwrap();
    parent.0.wait().unwrap();
    let status = pg.child.0.wait().unwrap(); // returns once it noticed, stopped and cleaned up
    assert!(status.success());
    assert!(!pg.pgdata.exists());
    assert!(
        !env_file.exists(),
        "the env file must not outlive the server"
    );
    std::fs::remove_dir_all(&env_dir).unwrap();
}

#[test]
fn missing_binaries_fail_loudly() {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-throwaway"))
        .env("APP_METRICS_PG_BIN", "/nonexistent/pg/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("initdb"), "{stderr}");
    assert!(
        stderr.contains("APP_METRICS_PG_BIN=/nonexistent/pg/bin"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no DATABASE_URL on failure");
}

#[test]
fn bad_arguments_print_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-throwaway"))
        .args(["--fsync", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: pg-throwaway"));
}
