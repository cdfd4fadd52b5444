//! The `example-dashboard` binary as a process, as the fault harness runs
//! it: its settings, its SIGTERM with a stalled client connected (issue 13
//! F1), and the counters it reports (in `/api/demo/recorded` and in its exit
//! line).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{bounded, read_until_closed, stalled};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The counters the exit line and `/api/demo/recorded` must both carry.
const COUNTERS: [&str; 13] = [
    "received",
    "written",
    "pending",
    "dropped",
    "dropped_queue_full",
    "dropped_memory_budget",
    "dropped_retries_exhausted",
    "dropped_shutdown",
    "dropped_rejected",
    "dropped_closed",
    "retries",
    "batches",
    "pending_bytes",
];

/// The binary with a clean environment for what it reads: the in-memory
/// store, a free port, quiet logs; `vars` on top.
fn app(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_example-dashboard"));
    for var in [
        "DATABASE_URL",
        "DATABRICKS_HOST",
        "DEMO_AUTO_LOGIN",
        "METRICS_IDENTITY",
        "ADMIN_TTL_MS",
        "METRICS_QUEUE_CAPACITY",
        "METRICS_MAX_BATCH",
        "METRICS_LINGER_MS",
        "METRICS_MEMORY_BUDGET",
        "METRICS_SHUTDOWN_DEADLINE_MS",
        "SERVER_HEADER_TIMEOUT_MS",
        "SERVER_BODY_TIMEOUT_MS",
        "SERVER_DRAIN_MS",
        "SERVER_MAX_CONNECTIONS",
    ] {
        let _ = cmd.env_remove(var);
    }
    let _ = cmd
        .env("BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env("ADMIN_USERS", "admin@example.com")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        let _ = cmd.env(k, v);
    }
    cmd
}

/// Starts the app; returns it, its address (from the banner) and the rest
/// of its stdout.
async fn start(
    vars: &[(&str, &str)],
) -> (Child, SocketAddr, tokio::io::Lines<BufReader<ChildStdout>>) {
    let mut child = app(vars).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = bounded("the listening banner", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("example-dashboard listening on http://") {
                return url.parse::<SocketAddr>().unwrap();
            }
        }
        panic!("the app exited before listening");
    })
    .await;
    (child, addr, lines)
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The `key=value` pairs of the exit line.
fn parse_exit_line(line: &str) -> HashMap<String, String> {
    let rest = line
        .strip_prefix("collector flushed: ")
        .unwrap_or_else(|| panic!("not the exit line: {line:?}"));
    rest.split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in {line:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn sigterm_with_a_stalled_client_exits_within_drain_plus_deadline_and_reports_every_record() {
    const DRAIN_MS: u64 = 500;
    const DEADLINE_MS: u64 = 5_000;
    let (mut child, addr, mut lines) = start(&[
        ("SERVER_DRAIN_MS", &DRAIN_MS.to_string()),
        ("METRICS_SHUTDOWN_DEADLINE_MS", &DEADLINE_MS.to_string()),
        // Far away: only the drain can free the stalled client.
        ("SERVER_HEADER_TIMEOUT_MS", "3600000"),
        ("METRICS_LINGER_MS", "5"),
        ("METRICS_QUEUE_CAPACITY", "1000"),
    ])
    .await;

    for id in 0..5 {
        let (status, _) = support::get(addr, &format!("/api/demo/items/{id}")).await;
        assert_eq!(status, 200);
    }
    let (status, body) = support::get(addr, "/api/demo/recorded").await;
    assert_eq!(status, 200, "{body}");
    let recorded: serde_json::Value = serde_json::from_str(&body).unwrap();
    for k in COUNTERS {
        assert!(recorded["collector"][k].is_u64(), "{k} in {recorded}");
    }

    let mut slow = stalled(
        addr,
        b"POST /api/demo/items/1 HTTP/1.1\r\nHost: x\r\nContent-Le",
    )
    .await;
    let signalled = Instant::now();
    sigterm(&child);
    assert!(
        read_until_closed("the stalled client at shutdown", &mut slow)
            .await
            .is_empty(),
        "closed without an answer"
    );
    let exit = bounded("the app's exit", child.wait()).await.unwrap();
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    // Generous slack for a loaded machine; what matters is that the hour
    // long header timeout was not waited for.
    let bound = Duration::from_millis(DRAIN_MS + DEADLINE_MS) + Duration::from_secs(10);
    assert!(took < bound, "exit took {took:?}, bound {bound:?}");

    let mut last = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("collector flushed:") {
            assert!(last.is_none(), "one exit line");
            last = Some(line);
        }
    }
    let line = last.expect("an exit line");
    let kv = parse_exit_line(&line);
    let n = |k: &str| -> u64 {
        kv.get(k)
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .parse()
            .unwrap()
    };
    for k in COUNTERS {
        let _ = n(k);
    }
    assert_eq!(kv["outcome"], "flushed", "{line}");
    assert_eq!(n("pending"), 0, "{line}");
    assert_eq!(n("written"), n("received") - n("dropped"), "{line}");
    assert_eq!(n("dropped"), 0, "{line}");
    // The five items and /api/demo/recorded; the stalled client never
    // reached the app.
    assert_eq!(n("received"), 6, "{line}");
}

#[tokio::test]
async fn a_bad_setting_stops_the_app_at_start_with_an_error_naming_the_variable() {
    for (var, value) in [
        ("METRICS_QUEUE_CAPACITY", "lots"),
        ("SERVER_HEADER_TIMEOUT_MS", "0"),
        ("METRICS_IDENTITY", "anyone"),
    ] {
        let out = bounded("the app refusing to start", app(&[(var, value)]).output())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("Error: {var} must be")) && stderr.contains(value),
            "{var}={value}: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("listening"), "{stdout}");
    }
}

#[tokio::test]
async fn extension_identity_ignores_identity_headers() {
    let (mut child, addr, _lines) = start(&[("METRICS_IDENTITY", "extension")]).await;
    let path = "/api/v1/metrics/performance";
    let head = format!("GET {path} HTTP/1.1\r\nX-Forwarded-Email: admin@example.com");
    let (status, body) = support::request(addr, &head, "").await;
    assert_eq!(status, 401, "no identity without an auth layer: {body}");
    sigterm(&child);
    assert!(
        bounded("the app's exit", child.wait())
            .await
            .unwrap()
            .success()
    );

    let (mut child, addr, _lines) = start(&[]).await;
    let (status, body) = support::request(addr, &head, "").await;
    assert_eq!(status, 200, "trusted-proxy is the default: {body}");
    sigterm(&child);
    assert!(
        bounded("the app's exit", child.wait())
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn sigterm_with_the_database_down_exits_by_its_deadline_counting_every_record_dropped() {
    // Nothing listens on port 1: every connection is refused at once.
    let (mut child, addr, mut lines) = start(&[
        ("DATABASE_URL", "postgres://app@127.0.0.1:1/metrics"),
        ("SERVER_DRAIN_MS", "200"),
        ("METRICS_SHUTDOWN_DEADLINE_MS", "1000"),
        ("METRICS_LINGER_MS", "5"),
    ])
    .await;
    for id in 0..3 {
        assert_eq!(
            support::get(addr, &format!("/api/demo/items/{id}")).await.0,
            200
        );
    }
    let head = "GET /api/v1/metrics/performance HTTP/1.1\r\nX-Forwarded-Email: admin@example.com";
    let (status, body) = support::request(addr, head, "").await;
    assert_eq!(status, 503, "no store to read yet: {body}");

    sigterm(&child);
    let exit = bounded("the app's exit", child.wait()).await.unwrap();
    assert!(exit.success(), "drops are counted, not failures: {exit:?}");
    let mut exit_line = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("collector flushed:") {
            exit_line = Some(line);
        }
    }
    let line = exit_line.expect("an exit line after a failed shutdown too");
    let kv = parse_exit_line(&line);
    let n = |k: &str| -> u64 { kv[k].parse().unwrap() };
    assert_eq!(kv["outcome"], "deadline_exceeded", "{line}");
    assert_eq!(
        (n("received"), n("written"), n("pending")),
        (4, 0, 0),
        "{line}"
    );
    assert_eq!(n("dropped"), n("received"), "{line}");
    assert_eq!(n("dropped_shutdown"), n("dropped"), "{line}");
}
