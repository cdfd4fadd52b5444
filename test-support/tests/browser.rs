//! The browser harness against a real Chromium and a tiny HTTP server of the test's own
//! (127.0.0.1:0, one request per connection): eval, real clicks and keys, the requests a page
//! sends (beacons included), injected failures and holds, console lines, the manual clock,
//! screenshots, closing a tab, and a launched browser cleaning up after itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use app_metrics_test_support::browser::{Browser, Page};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

const SECOND: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness</title></head>
<body style="margin:0">
<button id="b" style="position:absolute;left:100px;top:100px;width:80px;height:30px">Go</button>
<input id="i" style="position:absolute;left:100px;top:200px">
<input id="j" style="position:absolute;left:100px;top:250px">
<script>
  window.clicks = [];
  document.getElementById('b').addEventListener('click', (e) => {
    clicks.push({ x: e.clientX, y: e.clientY, trusted: e.isTrusted });
  });
  window.keys = [];
  document.addEventListener('keydown', (e) => keys.push(e.key));
  window.addEventListener('pagehide', () => navigator.sendBeacon('/bye', 'pagehide beacon'));
</script>
</body></html>"#;

/// A request the server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves [`PAGE`] at `/` and `{"ok":true}` everywhere else; records every request.
struct Server {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        drop(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                drop(tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if stream.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.trim_end().split_once(':') {
                            headers.push((k.trim().to_owned(), v.trim().to_owned()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = stream.read_exact(&mut body).await;
                    let (ctype, text) = if path == "/" {
                        ("text/html; charset=utf-8", PAGE)
                    } else {
                        ("application/json", r#"{"ok":true}"#)
                    };
                    log.lock().unwrap().push(Received {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.get_mut().write_all(reply.as_bytes()).await;
                    let _ = stream.get_mut().shutdown().await;
                }));
            }
        }));
        Self { base, received }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.to(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server got {} of {n} requests to {path}: {:#?}",
                got.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn open(server: &Server) -> Page {
    let page = Browser::shared().await.new_page().await;
    page.goto(&server.url("/")).await;
    page
}

#[tokio::test]
async fn eval_returns_json_values_and_awaits_promises() {
    let server = Server::start().await;
    let page = open(&server).await;
    assert_eq!(page.eval::<String>("document.title").await, "harness");
    assert_eq!(
        page.eval::<i64>("new Promise(r => setTimeout(() => r(41 + 1), 10))")
            .await,
        42
    );
    let v: Value = page.eval("({ a: [1, 'x'], b: null })").await;
    assert_eq!(v, serde_json::json!({ "a": [1, "x"], "b": null }));
    page.eval::<()>("undefined").await;
    assert_eq!(page.eval::<Option<i64>>("undefined").await, None);
}

#[tokio::test]
#[should_panic(expected = "eval failed: Error: boom")]
async fn eval_panics_with_the_exception_text() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.eval::<()>("Promise.reject(new Error('boom'))").await;
}

#[tokio::test]
#[should_panic(expected = "`window.never === 1` never became truthy")]
async fn wait_for_panics_with_the_condition() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.wait_for("window.never === 1", Duration::from_millis(200))
        .await;
}

#[tokio::test]
#[should_panic(expected = "click: no element matches \"#nope\"")]
async fn click_on_nothing_panics() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.click("#nope").await;
}

#[tokio::test]
async fn click_is_a_trusted_mouse_click_at_the_centre() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.click("#b").await;
    let clicks: Value = page.eval("clicks").await;
    assert_eq!(
        clicks,
        serde_json::json!([{ "x": 140, "y": 115, "trusted": true }])
    );
}

#[tokio::test]
async fn keys_and_typing_reach_the_focused_element() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.click("#i").await;
    page.type_text("hé y").await;
    assert_eq!(
        page.eval::<String>("document.getElementById('i').value")
            .await,
        "hé y"
    );
    page.press_key("Tab").await;
    assert_eq!(page.eval::<String>("document.activeElement.id").await, "j");
    page.press_key("Shift+Tab").await;
    assert_eq!(page.eval::<String>("document.activeElement.id").await, "i");
    let keys: Vec<String> = page.eval("keys").await;
    // "é" is inserted as an input method would, without a keydown.
    assert_eq!(keys, ["h", " ", "y", "Tab", "Tab"]);
}

#[tokio::test]
async fn requests_are_recorded_with_extra_headers_and_bodies() {
    let server = Server::start().await;
    let page = Browser::shared().await.new_page().await;
    page.set_extra_headers(&[("X-Forwarded-Email", "ada@example.com")])
        .await;
    page.goto(&server.url("/")).await;
    let status: u16 = page
        .eval(
            "fetch('/api/echo', { method: 'POST', headers: { 'Content-Type': 'application/json' }, \
             body: JSON.stringify({ n: 1 }) }).then(r => r.status)",
        )
        .await;
    assert_eq!(status, 200);

    let got = server.wait_for("/api/echo", 1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].body, r#"{"n":1}"#);
    assert_eq!(got[0].header("x-forwarded-email"), Some("ada@example.com"));
    assert_eq!(
        server.to("/")[0].header("x-forwarded-email"),
        Some("ada@example.com")
    );

    let seen = page.wait_for_request("/api/echo", WAIT).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.post_data.as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(seen.resource_type, "Fetch");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let urls: Vec<String> = page
        .requests()
        .into_iter()
        .map(|r| r.url)
        .filter(|u| !u.ends_with("/favicon.ico"))
        .collect();
    assert_eq!(
        urls,
        [server.url("/"), server.url("/api/echo")],
        "in order, since creation"
    );

    page.clear_requests();
    assert!(page.requests().is_empty());
}

#[tokio::test]
async fn fail_requests_answers_with_a_status_or_a_network_error_until_cleared() {
    let server = Server::start().await;
    let page = open(&server).await;
    let fetch = "fetch('/api/x', { method: 'POST', body: '{}' }).then(r => r.status, e => 'rejected: ' + e.name)";

    page.fail_requests("/api/x", 503).await;
    assert_eq!(page.eval::<Value>(fetch).await, 503);
    let body: Value = page.eval("fetch('/api/x').then(r => r.json())").await;
    assert_eq!(body["status_code"], 503);
    page.fail_requests("/api/x", 0).await;
    assert_eq!(
        page.eval::<Value>(fetch).await,
        "rejected: TypeError",
        "the newest rule wins"
    );
    assert!(
        server.to("/api/x").is_empty(),
        "failed requests never reach the server"
    );
    assert_eq!(
        page.requests()
            .iter()
            .filter(|r| r.url.ends_with("/api/x"))
            .count(),
        3
    );

    page.fail_requests_with_body("/api/y", 429, r#"{"detail":"slow down"}"#)
        .await;
    assert_eq!(
        page.eval::<String>("fetch('/api/y').then(r => r.text())")
            .await,
        r#"{"detail":"slow down"}"#
    );

    page.clear_failures().await;
    assert_eq!(page.eval::<Value>(fetch).await, 200);
    assert_eq!(server.wait_for("/api/x", 1).await.len(), 1);
}

#[tokio::test]
async fn held_requests_wait_until_released() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.hold_requests("/api/slow").await;
    page.exec("window.done = false; void fetch('/api/slow').then(() => { window.done = true; })")
        .await;
    page.wait_for_request("/api/slow", WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!page.eval::<bool>("done").await);
    assert!(server.to("/api/slow").is_empty());
    assert_eq!(page.held_requests(), 1);
    page.release_requests().await;
    page.wait_for("window.done", WAIT).await;
    assert_eq!(server.to("/api/slow").len(), 1);
}

#[tokio::test]
async fn beacons_are_seen_as_ping_requests_with_a_text_body() {
    let server = Server::start().await;
    let page = open(&server).await;
    assert!(
        page.eval::<bool>("navigator.sendBeacon('/beacon', JSON.stringify({ events: [] }))")
            .await
    );
    let got = server.wait_for("/beacon", 1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].body, r#"{"events":[]}"#);
    assert_eq!(
        got[0].header("content-type"),
        Some("text/plain;charset=UTF-8")
    );
    let seen = page.wait_for_request("/beacon", WAIT).await;
    assert_eq!(seen.resource_type, "Ping");
    assert_eq!(seen.post_data.as_deref(), Some(r#"{"events":[]}"#));

    // A beacon can fail like any request.
    page.fail_requests("/beacon", 0).await;
    assert!(
        page.eval::<bool>("navigator.sendBeacon('/beacon', 'x')")
            .await,
        "queued all the same"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.to("/beacon").len(), 1);
}

#[tokio::test]
async fn close_fires_pagehide_and_its_beacon_goes_out() {
    let server = Server::start().await;
    let page = open(&server).await;
    assert!(!page.is_closed());
    page.close().await;
    assert!(page.is_closed());
    let got = server.wait_for("/bye", 1).await;
    assert_eq!(got[0].body, "pagehide beacon");
}

#[tokio::test]
async fn hide_and_show_change_the_visibility_for_real() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.exec(
        "window.seen = []; document.addEventListener('visibilitychange', \
         (e) => seen.push(document.visibilityState + (e.isTrusted ? '' : ' (synthetic)')))",
    )
    .await;
    page.hide().await;
    page.show().await;
    assert_eq!(
        page.eval::<Vec<String>>("seen").await,
        ["hidden", "visible"]
    );
}

#[tokio::test]
async fn console_lines_and_exceptions_are_recorded() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.exec("console.log('hello', 42, { a: 1 }); console.error('bad thing'); setTimeout(() => { throw new Error('late') })").await;
    page.wait_for("true", WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while page.console_messages().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = page.console_messages();
    assert_eq!(lines[0], "log: hello 42 Object");
    assert_eq!(lines[1], "error: bad thing");
    assert!(lines[2].starts_with("exception: Error: late"), "{lines:?}");
}

#[tokio::test]
async fn the_manual_clock_fires_timers_only_when_advanced() {
    let server = Server::start().await;
    let page = Browser::shared().await.new_page().await;
    page.use_manual_clock().await;
    page.goto(&server.url("/")).await;
    page.exec(
        "window.fired = []; setTimeout(() => fired.push('10s'), 10000); \
         let n = 0; const i = setInterval(() => { fired.push('1s'); if (++n === 3) clearInterval(i); }, 1000); \
         setTimeout(() => { fired.push('0'); setTimeout(() => fired.push('0+500'), 500); }, 0)",
    )
    .await;
    let pending = page.pending_timers().await;
    let delays: Vec<f64> = pending.iter().map(|t| t.delay_ms).collect();
    assert_eq!(delays, [0.0, 1000.0, 10000.0]);
    assert!(pending[1].repeat);

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        page.eval::<Vec<String>>("fired").await,
        Vec::<String>::new(),
        "nothing runs by itself"
    );
    page.advance_clock(Duration::from_millis(999)).await;
    assert_eq!(page.eval::<Vec<String>>("fired").await, ["0", "0+500"]);
    page.advance_clock(Duration::from_millis(1)).await;
    page.advance_clock(2 * SECOND).await;
    assert_eq!(
        page.eval::<Vec<String>>("fired").await,
        ["0", "0+500", "1s", "1s", "1s"]
    );
    page.advance_clock(Duration::from_millis(6999)).await;
    assert_eq!(page.eval::<Vec<String>>("fired").await.len(), 5);
    page.advance_clock(Duration::from_millis(1)).await;
    assert_eq!(
        page.eval::<Vec<String>>("fired")
            .await
            .last()
            .map(String::as_str),
        Some("10s")
    );
    assert!(page.pending_timers().await.is_empty());
    // Date stays real.
    assert!(page.eval::<f64>("Date.now()").await > 1.7e12);
}

#[tokio::test]
#[should_panic(expected = "call use_manual_clock() before goto()")]
async fn advancing_without_a_manual_clock_panics() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.advance_clock(SECOND).await;
}

#[tokio::test]
async fn screenshots_are_png_files() {
    let server = Server::start().await;
    let page = open(&server).await;
    page.set_viewport(400, 300).await;
    let dir = std::env::temp_dir().join(format!("app-metrics-shot-{}", std::process::id()));
    let path = dir.join("sub/page.png");
    page.screenshot_png(&path).await;
    let png = std::fs::read(&path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Width and height from the IHDR chunk.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (400, 300));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn pages_of_one_browser_share_nothing() {
    let server = Server::start().await;
    let a = open(&server).await;
    let b = open(&server).await;
    a.exec("localStorage.setItem('k', 'a'); document.cookie = 'c=1'")
        .await;
    assert_eq!(
        b.eval::<Option<String>>("localStorage.getItem('k')").await,
        None
    );
    assert_eq!(b.eval::<String>("document.cookie").await, "");
}

#[tokio::test]
async fn a_launched_browser_is_killed_and_its_profile_removed_on_drop() {
    let browser = Browser::launch().await;
    assert!(
        browser.version().await.contains("Chrome/"),
        "{}",
        browser.version().await
    );
    let page = browser.new_page().await;
    let server = Server::start().await;
    page.goto(&server.url("/")).await;
    let debug = format!("{browser:?}");
    let pid: u32 = debug
        .split("pid: Some(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {debug}"));
    let profile = debug
        .split("profile: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(std::path::Path::new(&profile).is_dir());
    drop(page);
    drop(browser);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "chromium {pid} still runs"
    );
    assert!(
        !std::path::Path::new(&profile).exists(),
        "{profile} is left behind"
    );
    // No helper of its process group is left either (SIGKILL takes a moment to land).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = live_members_of_group(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left in group {pid}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes (not zombies) whose process group is `pgid`.
fn live_members_of_group(pgid: u32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" && fields[0] != "X"
        {
            left.push(stat);
        }
    }
    left
}

/// Set for the child process of [`a_missing_browser_panics_with_what_to_do`].
const CHILD_MARKER: &str = "APP_METRICS_TEST_MISSING_BROWSER_CHILD";

#[test]
fn a_missing_browser_panics_with_what_to_do() {
    // Edition 2024 makes `set_var` unsafe (other test threads read the environment), so the
    // launch with a missing browser runs in a child process of this test binary.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "missing_browser_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1")
        .env("APP_METRICS_CHROMIUM", "/nonexistent/chromium")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the launch should fail:\n{text}");
    assert!(
        text.contains(
            "chromium not found: install Debian's chromium (scripts/test does) or set APP_METRICS_CHROMIUM"
        ),
        "{text}"
    );
    assert!(
        text.contains("/nonexistent/chromium"),
        "names the bad setting: {text}"
    );
}

/// The child half of the test above; does nothing unless started by it.
#[tokio::test]
async fn missing_browser_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let _ = Browser::launch().await;
}
