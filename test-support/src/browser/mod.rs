//! A real browser for tests: headless Debian `chromium` driven over the Chrome DevTools
//! Protocol (CDP).
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use app_metrics_test_support::browser::Browser;
//!
//! let browser = Browser::launch().await;
//! let page = browser.new_page().await;
//! page.set_extra_headers(&[("X-Forwarded-Email", "ada@example.com")]).await;
//! page.goto("http://127.0.0.1:3000/metrics/").await;
//! page.click("[data-testid=refresh-button]").await;
//! page.wait_for("document.querySelectorAll('tr').length > 1", Duration::from_secs(5)).await;
//! let title: String = page.eval("document.title").await;
//! assert_eq!(title, "Application Metrics");
//! # }
//! ```
//!
//! - **Which browser.** `$APP_METRICS_CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on
//!   `PATH`. A missing browser panics with a message saying how to get one; nothing is skipped.
//!   `scripts/test` installs Debian's `chromium` when it is missing.
//! - **One process per [`Browser`]**, headless, with a fresh profile directory. Dropping the
//!   `Browser` kills the process (and its helpers) and removes the directory; a watchdog process
//!   does the same if the test process dies first. [`Browser::shared`] is one browser for all the
//!   tests of a process, cheaper than a launch per test.
//! - **One browser context per [`Page`]**: pages share no cookies, storage or cache, so tests on
//!   a shared browser do not see each other.
//! - **Everything fails loudly**: a JS exception in [`Page::eval`], a condition that never holds
//!   in [`Page::wait_for`], a selector that matches nothing in [`Page::click`], a browser that
//!   went away: each panics with the text of the failure.
//! - **Time.** [`Page::use_manual_clock`] replaces the page's timers with a clock the test
//!   advances ([`Page::advance_clock`]), so a 10 s timer is tested in milliseconds. `Date` stays
//!   real.
//!
//! The CDP client is our own (`cdp.rs`, a WebSocket from `tokio-tungstenite`): chromiumoxide,
//! the maintained crate, works with this Chromium but its generated protocol crate alone takes
//! close to two minutes of one core to compile (docs/decisions.md, "Browser tests").

mod cdp;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use cdp::{Connection, FailRule, PageState, lock};

/// The flags every launch uses. Headless in the new mode (the real browser, not the old
/// headless shell); `--no-sandbox` because tests run as root in CI, where Chromium refuses to
/// start sandboxed; no GPU, QUIC, first-run UI, background downloads or sync, so the browser
/// makes no request the test did not ask for; `/tmp` instead of a small `/dev/shm` in
/// containers. Debian's wrapper `/usr/bin/chromium` adds the flags of `/etc/chromium.d`.
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-breakpad",
    "--window-size=1280,900",
];

const MISSING: &str =
    "chromium not found: install Debian's chromium (scripts/test does) or set APP_METRICS_CHROMIUM";

/// How long the browser may take to start and print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Page::goto`] waits for the load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The manual clock's init script (see [`Page::use_manual_clock`]).
const CLOCK_JS: &str = include_str!("clock.js");

/// One headless Chromium process.
///
/// Launch one per test with [`Browser::launch`], or share one per test process with
/// [`Browser::shared`]; open pages with [`Browser::new_page`]. Dropping it kills the browser.
/// Its methods may be called from any Tokio runtime: the connection is served by a thread of its
/// own.
pub struct Browser {
    conn: Arc<Connection>,
    process: Process,
}

/// The browser process and what goes with it; dropping it kills the process group and removes
/// the profile (also when a launch fails half-way).
struct Process {
    executable: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
    profile: PathBuf,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

/// A tab of a [`Browser`], in a browser context of its own.
///
/// It records, from its creation on, every request it sends ([`Page::requests`]) and every
/// console line and uncaught exception ([`Page::console_messages`]). Dropping it closes the tab
/// without waiting; [`Page::close`] closes it and waits.
pub struct Page {
    conn: Arc<Connection>,
    session: String,
    target_id: String,
    context_id: String,
    state: Arc<PageState>,
}

/// A request a page sent, as Chromium reported it (`Network.requestWillBeSent`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeenRequest {
    /// The full URL.
    pub url: String,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The headers Chromium reported at sending time (names as sent; see
    /// [`SeenRequest::header`] for a case-insensitive look-up). Headers the network stack adds
    /// later (`Cookie`, `Host`) are not among them.
    pub headers: BTreeMap<String, String>,
    /// The body, as text (lossy UTF-8), when it had one.
    pub post_data: Option<String>,
    /// Chromium's resource type: `Document`, `Script`, `Fetch`, `XHR`, `Ping` (a
    /// `navigator.sendBeacon`), `Other`, ...
    pub resource_type: String,
}

/// A timer waiting on the manual clock ([`Page::pending_timers`]).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[non_exhaustive]
pub struct PendingTimer {
    /// The delay the page asked for, in milliseconds.
    pub delay_ms: f64,
    /// How far in the future (of the manual clock) it is due.
    pub due_in_ms: f64,
    /// Whether it is a `setInterval`.
    pub repeat: bool,
}

static SHARED: OnceLock<Browser> = OnceLock::new();

// ===== impl Browser =====

impl Browser {
    /// Starts a headless Chromium with a fresh profile.
    ///
    /// # Panics
    ///
    /// If no Chromium is found ("chromium not found: install Debian's chromium (scripts/test
    /// does) or set APP_METRICS_CHROMIUM"), or it does not start within 30 s (with its last
    /// lines of stderr).
    pub async fn launch() -> Self {
        tokio::task::spawn_blocking(Self::launch_blocking)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// One browser for every test of this process, launched on first use (pages of different
    /// tests still share nothing: each has its own browser context). A watchdog kills it once
    /// the process exits, since statics are never dropped.
    ///
    /// # Panics
    ///
    /// As [`Browser::launch`].
    pub async fn shared() -> &'static Self {
        if let Some(browser) = SHARED.get() {
            return browser;
        }
        tokio::task::spawn_blocking(|| SHARED.get_or_init(Self::launch_blocking))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`Browser::launch`] without a runtime: blocks until the browser is up.
    ///
    /// # Panics
    ///
    /// As [`Browser::launch`].
    pub fn launch_blocking() -> Self {
        let executable = find_chromium();
        let profile = std::env::temp_dir().join(format!(
            "app-metrics-chromium-{}-{}",
            std::process::id(),
            next_profile_number()
        ));
        std::fs::create_dir_all(&profile).unwrap_or_else(|e| {
            panic!("creating the profile directory {}: {e}", profile.display())
        });
        let mut child = Command::new(&executable)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so the renderer and GPU helpers die with it (Drop and the
            // watchdog kill the whole group).
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING} (starting {}: {e})", executable.display()));
        let watchdog = spawn_watchdog(child.id(), &profile);

        // Chromium prints `DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>`
        // on stderr once it is ready; a thread reads it, and keeps draining stderr so the
        // browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let tail = Arc::clone(&stderr_tail);
        let _reader = std::thread::Builder::new()
            .name("chromium-stderr".to_owned())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = url_tx.send(url.trim().to_owned());
                    }
                    let mut tail = lock(&tail);
                    if tail.len() == 40 {
                        let _ = tail.remove(0);
                    }
                    tail.push(line);
                }
            })
            .expect("spawning the chromium stderr reader");

        let process = Process {
            executable,
            child: Some(child),
            watchdog,
            profile,
            stderr_tail,
        };
        let Ok(url) = url_rx.recv_timeout(LAUNCH_TIMEOUT) else {
            panic!(
                "{} did not print its DevTools address within {LAUNCH_TIMEOUT:?}; stderr:\n{}",
                process.executable.display(),
                process.stderr()
            );
        };
        match Connection::connect(&url) {
            Ok(conn) => Self {
                conn: Arc::new(conn),
                process,
            },
            Err(e) => panic!(
                "connecting to chromium at {url}: {e}; stderr:\n{}",
                process.stderr()
            ),
        }
    }

    /// Opens a new tab on `about:blank`, in a browser context of its own, with request and
    /// console recording on.
    ///
    /// # Panics
    ///
    /// If the browser does not answer.
    pub async fn new_page(&self) -> Page {
        let context = self.call("Target.createBrowserContext", json!({})).await;
        let context_id = str_field(&context, "browserContextId");
        let target = self
            .call(
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context_id }),
            )
            .await;
        let target_id = str_field(&target, "targetId");
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let session = str_field(&attached, "sessionId");
        let state = self.conn.register(&session);
        let page = Page {
            conn: Arc::clone(&self.conn),
            session,
            target_id,
            context_id,
            state,
        };
        for (method, params) in [
            ("Page.enable", json!({})),
            ("Page.setLifecycleEventsEnabled", json!({ "enabled": true })),
            ("Runtime.enable", json!({})),
            ("Network.enable", json!({})),
        ] {
            let _ = page.call(method, params).await;
        }
        page
    }

    /// The executable this browser runs.
    pub fn executable(&self) -> &Path {
        &self.process.executable
    }

    /// Chromium's version string (`Chrome/156.0...`), from `Browser.getVersion`.
    pub async fn version(&self) -> String {
        let v = self.call("Browser.getVersion", json!({})).await;
        str_field(&v, "product")
    }

    /// Sends any browser-level CDP command and returns its result: the escape hatch for what
    /// this API does not cover.
    ///
    /// # Panics
    ///
    /// With the protocol's error.
    pub async fn cdp(&self, method: &str, params: Value) -> Value {
        self.call(method, params).await
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.conn
            .call(None, method, params)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CDP {method} failed: {e}; chromium stderr:\n{}",
                    self.process.stderr()
                )
            })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The socket first, so the IO thread ends cleanly; then `process` is dropped.
        self.conn.close();
    }
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("executable", &self.process.executable)
            .field("profile", &self.process.profile)
            .field("pid", &self.process.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

// ===== impl Process =====

impl Process {
    fn stderr(&self) -> String {
        lock(&self.stderr_tail).join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        // Helpers may still be writing for a moment after the kill.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

// ===== impl Page =====

impl Page {
    /// Navigates to `url` and waits for its `load` event (30 s at most).
    ///
    /// # Panics
    ///
    /// If the navigation fails (`net::ERR_CONNECTION_REFUSED`, ...) or no load event comes.
    pub async fn goto(&self, url: &str) {
        let mut changed = self.state.changed.subscribe();
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(err) = nav
            .get("errorText")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            panic!("goto {url}: {err}");
        }
        // A same-document navigation (only the fragment changes) has no loader and no load.
        let Some(loader) = nav.get("loaderId").and_then(Value::as_str) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        while !lock(&self.state.loaded).contains(loader) {
            self.check_alive(&format!("goto {url}"));
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!("goto {url}: no load event within {LOAD_TIMEOUT:?}");
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value, awaiting it if it is
    /// a promise. The value comes back as JSON (`undefined` reads as `null`, so `()` and
    /// `Option` work).
    ///
    /// # Panics
    ///
    /// With the JS exception's text (message and stack) if it throws or the promise rejects;
    /// or if the value does not deserialize into `T`.
    pub async fn eval<T: DeserializeOwned>(&self, js: &str) -> T {
        let value = self
            .try_eval(js)
            .await
            .unwrap_or_else(|e| panic!("eval failed: {e}\n  in: {js}"));
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!(
                "eval: cannot read {value} as {}: {e}\n  in: {js}",
                std::any::type_name::<T>()
            )
        })
    }

    /// Evaluates JavaScript for its effect, awaiting it if it is a promise, and ignores its
    /// value ([`eval`](Self::eval) would insist on reading it).
    ///
    /// # Panics
    ///
    /// With the JS exception's text if it throws or the promise rejects.
    pub async fn exec(&self, js: &str) {
        if let Err(e) = self.try_eval(js).await {
            panic!("exec failed: {e}\n  in: {js}");
        }
    }

    /// Polls a JavaScript expression (awaited if a promise) every 20 ms until it is truthy.
    /// An exception counts as not yet (the page may still be loading), and is reported if the
    /// time runs out.
    ///
    /// # Panics
    ///
    /// After `timeout`, naming the condition (and its last exception, if any).
    pub async fn wait_for(&self, js_condition: &str, timeout: Duration) {
        // The newline keeps a trailing `// comment` in the condition from eating the paren.
        let expr = format!("(async () => Boolean(await ({js_condition}\n)))()");
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.try_eval(&expr).await {
                Ok(Value::Bool(true)) => return,
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let error = last_error
                    .map(|e| format!("; it last threw: {e}"))
                    .unwrap_or_default();
                panic!(
                    "wait_for timed out after {timeout:?}: `{js_condition}` never became truthy{error}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds these headers to every request the page sends from now on
    /// (`Network.setExtraHTTPHeaders`; replaces the previous set). They are not added to
    /// `navigator.sendBeacon` requests sent while the page is closing.
    pub async fn set_extra_headers(&self, headers: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let _ = self
            .call("Network.setExtraHTTPHeaders", json!({ "headers": map }))
            .await;
    }

    /// Every request the page sent since its creation (or the last
    /// [`clear_requests`](Self::clear_requests)), in order, including Chromium's own
    /// `/favicon.ico` after a page load. Redirects appear once per hop.
    ///
    /// Chromium reports a request a moment after the page issues it: wait for it with
    /// [`wait_for_request`](Self::wait_for_request) rather than reading this right after the
    /// call that sends it.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Waits until a request whose URL contains `url_substring` has been recorded, and returns
    /// the first such.
    ///
    /// # Panics
    ///
    /// After `timeout`, listing the URLs seen.
    pub async fn wait_for_request(&self, url_substring: &str, timeout: Duration) -> SeenRequest {
        let mut changed = self.state.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = lock(&self.state.requests)
                .iter()
                .find(|r| r.url.contains(url_substring))
            {
                return r.clone();
            }
            self.check_alive("wait_for_request");
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                let seen: Vec<String> = self.requests().into_iter().map(|r| r.url).collect();
                panic!(
                    "no request to a URL containing {url_substring:?} within {timeout:?}; seen: {seen:#?}"
                );
            }
        }
    }

    /// Answers every request whose URL contains `url_substring` with `status` (a JSON error body
    /// in the API's shape, `{"error", "message", "status_code"}`), without it reaching the
    /// server, until [`clear_failures`](Self::clear_failures). Status 0 fails it with a network
    /// error instead (`fetch` rejects with a `TypeError`). The newest matching rule wins.
    pub async fn fail_requests(&self, url_substring: &str, status: u16) {
        let body = json!({
            "error": "Injected",
            "message": format!("injected by the test harness (status {status})"),
            "status_code": status,
        })
        .to_string();
        self.fail_requests_with_body(url_substring, status, &body)
            .await;
    }

    /// [`fail_requests`](Self::fail_requests) with a body of the test's choosing (sent as
    /// `application/json`).
    pub async fn fail_requests_with_body(&self, url_substring: &str, status: u16, body: &str) {
        lock(&self.state.rules).fail.push(FailRule {
            url_substring: url_substring.to_owned(),
            status,
            body: body.to_owned(),
        });
        self.sync_interception().await;
    }

    /// Removes every [`fail_requests`](Self::fail_requests) rule.
    pub async fn clear_failures(&self) {
        lock(&self.state.rules).fail.clear();
        self.sync_interception().await;
    }

    /// Holds every request whose URL contains `url_substring` before it leaves the browser,
    /// until [`release_requests`](Self::release_requests): for tests of what a page shows while
    /// its requests are in flight. A held request still appears in [`requests`](Self::requests).
    pub async fn hold_requests(&self, url_substring: &str) {
        lock(&self.state.rules).hold.push(url_substring.to_owned());
        self.sync_interception().await;
    }

    /// Lets every held request go on to the network, in the order they were held, and removes
    /// the hold rules.
    pub async fn release_requests(&self) {
        let held = {
            let mut rules = lock(&self.state.rules);
            rules.hold.clear();
            std::mem::take(&mut rules.held)
        };
        for id in held {
            // A request the page abandoned meanwhile is no longer paused: not an error.
            let _ = self
                .conn
                .call(
                    Some(&self.session),
                    "Fetch.continueRequest",
                    json!({ "requestId": id }),
                )
                .await;
        }
        self.sync_interception().await;
    }

    /// How many requests are being held right now.
    pub fn held_requests(&self) -> usize {
        lock(&self.state.rules).held.len()
    }

    /// Clicks the centre of the first element matching `css_selector` with real mouse events
    /// (`Input.dispatchMouseEvent`: move, press, release), after scrolling it into view. Like a
    /// user's click, it lands on whatever is on top at that point.
    ///
    /// # Panics
    ///
    /// If nothing matches or the element has no size.
    pub async fn click(&self, css_selector: &str) {
        let sel = serde_json::to_string(css_selector).expect("a string serializes");
        let js = format!(
            "(() => {{ const el = document.querySelector({sel}); if (!el) return null; \
             el.scrollIntoView({{ block: 'center', inline: 'center' }}); \
             const r = el.getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; }})()"
        );
        let Some([x, y, w, h]) = self.eval::<Option<[f64; 4]>>(&js).await else {
            panic!("click: no element matches {css_selector:?}");
        };
        assert!(
            w > 0.0 && h > 0.0,
            "click: {css_selector:?} has no size ({w}x{h}): is it hidden?"
        );
        let _ = self
            .call(
                "Input.dispatchMouseEvent",
                json!({ "type": "mouseMoved", "x": x, "y": y }),
            )
            .await;
        for kind in ["mousePressed", "mouseReleased"] {
            let buttons = i32::from(kind == "mousePressed");
            let _ = self
                .call(
                    "Input.dispatchMouseEvent",
                    json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1 }),
                )
                .await;
        }
    }

    /// Presses and releases one key on the focused element: a key name (`Enter`, `Tab`,
    /// `Escape`, `Space` or `" "`, `Backspace`, `Delete`, `ArrowLeft`/`Right`/`Up`/`Down`, `Home`,
    /// `End`, `PageUp`, `PageDown`) or one character, optionally after modifiers
    /// (`Shift+Tab`, `Control+a`).
    pub async fn press_key(&self, key: &str) {
        let (modifiers, key) = split_modifiers(key);
        let spec = key_spec(key);
        let down = if spec.text.is_empty() {
            "rawKeyDown"
        } else {
            "keyDown"
        };
        let mut event = json!({
            "type": down,
            "key": spec.key,
            "code": spec.code,
            "windowsVirtualKeyCode": spec.key_code,
            "nativeVirtualKeyCode": spec.key_code,
            "modifiers": modifiers,
        });
        if !spec.text.is_empty() && modifiers & !8 == 0 {
            event["text"] = Value::from(spec.text.clone());
            event["unmodifiedText"] = Value::from(spec.text);
        }
        let _ = self.call("Input.dispatchKeyEvent", event.clone()).await;
        event["type"] = Value::from("keyUp");
        let _ = event
            .as_object_mut()
            .map(|o| (o.remove("text"), o.remove("unmodifiedText")));
        let _ = self.call("Input.dispatchKeyEvent", event).await;
    }

    /// Types `text` into the focused element, one key press per character (so `keydown`,
    /// `input` and `keyup` fire for each); characters beyond ASCII are inserted as an input
    /// method would.
    pub async fn type_text(&self, text: &str) {
        for c in text.chars() {
            match c {
                '\n' => self.press_key("Enter").await,
                ' '..='~' => self.press_key(c.encode_utf8(&mut [0; 4])).await,
                _ => {
                    let s = c.to_string();
                    let _ = self.call("Input.insertText", json!({ "text": s })).await;
                }
            }
        }
    }

    /// Saves a PNG of the viewport to `path` (creating its directory).
    pub async fn screenshot_png(&self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(str_field(&shot, "data"))
            .expect("Chromium sends base64");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Sets the viewport's size in CSS pixels (the default window is 1280x900).
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let _ = self
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
    }

    /// Every `console.*` call (as `"<type>: <args joined by spaces>"`, e.g.
    /// `"error: Failed to submit ..."`, `"warning: ..."`) and uncaught exception
    /// (`"exception: <message and stack>"`) since the page's creation, in order.
    pub fn console_messages(&self) -> Vec<String> {
        lock(&self.state.console).clone()
    }

    /// Replaces `setTimeout`, `setInterval` and their `clear*` in every document loaded after
    /// this call (call it before [`goto`](Self::goto)) with a manual clock: no timer fires until
    /// [`advance_clock`](Self::advance_clock) lets time pass, so a test can check a 10 s timer
    /// or a retry schedule in milliseconds, and exactly. `Date`, `performance.now` and
    /// `requestAnimationFrame` stay real, as does the network. The clock is
    /// `window.__testClock` (not enumerable), installed before any script of the page.
    pub async fn use_manual_clock(&self) {
        let _ = self
            .call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": CLOCK_JS }),
            )
            .await;
    }

    /// Lets `by` pass on the manual clock: runs every timer that falls due, in due order, one
    /// task each (promise continuations and network answers already there run in between).
    /// Returns when they have run; what they started (a `fetch`) may still be under way.
    ///
    /// # Panics
    ///
    /// If the page has no manual clock.
    pub async fn advance_clock(&self, by: Duration) {
        self.require_clock("advance_clock").await;
        let ms = by.as_secs_f64() * 1000.0;
        let _: f64 = self.eval(&format!("window.__testClock.tick({ms})")).await;
    }

    /// The timers waiting on the manual clock, soonest first.
    ///
    /// # Panics
    ///
    /// If the page has no manual clock.
    pub async fn pending_timers(&self) -> Vec<PendingTimer> {
        self.require_clock("pending_timers").await;
        self.eval("window.__testClock.pending()").await
    }

    /// Minimises the tab's window, as a user switching away would: the document becomes
    /// hidden and `visibilitychange` fires (for real, not a synthetic event). Returns once
    /// `document.visibilityState` is `"hidden"`.
    ///
    /// # Panics
    ///
    /// If the page is still visible after 5 s.
    pub async fn hide(&self) {
        self.set_window_state("minimized", "hidden").await;
    }

    /// Restores the window [`hide`](Self::hide) minimised; returns once the document is
    /// visible again.
    ///
    /// # Panics
    ///
    /// If the page is still hidden after 5 s.
    pub async fn show(&self) {
        self.set_window_state("normal", "visible").await;
    }

    /// Closes the tab as a user closing it would, so `pagehide` (and `visibilitychange` to
    /// hidden) fire and what the page sends then (a `navigator.sendBeacon`) still goes out; then
    /// disposes of its browser context. Requests sent while closing may be missing from
    /// [`requests`](Self::requests): the page's session ends with it.
    pub async fn close(&self) {
        if self.state.detached.load(Ordering::Relaxed) {
            return;
        }
        let mut changed = self.state.changed.subscribe();
        // Page.close runs the page's unload steps (beforeunload, pagehide, visibilitychange,
        // unload) like a tab being closed; Target.closeTarget alone may tear the renderer
        // down first.
        let _ = self
            .conn
            .call(Some(&self.session), "Page.close", json!({}))
            .await;
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        while !self.state.detached.load(Ordering::Relaxed) {
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                let _ = self
                    .conn
                    .call(
                        None,
                        "Target.closeTarget",
                        json!({ "targetId": self.target_id }),
                    )
                    .await;
                break;
            }
        }
        let _ = self
            .conn
            .call(
                None,
                "Target.disposeBrowserContext",
                json!({ "browserContextId": self.context_id }),
            )
            .await;
    }

    /// Whether the tab has been closed (by [`close`](Self::close), `window.close()` or a crash).
    pub fn is_closed(&self) -> bool {
        self.state.detached.load(Ordering::Relaxed)
    }

    /// Sends any CDP command to this page's session (`DOM.*`, `Emulation.*`, ...) and returns
    /// its result: the escape hatch for what this API does not cover.
    ///
    /// # Panics
    ///
    /// With the protocol's error.
    pub async fn cdp(&self, method: &str, params: Value) -> Value {
        self.call(method, params).await
    }

    /// The CDP target id of this tab (for browser-level commands through [`Browser::cdp`]).
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    // ----- helpers -----

    async fn call(&self, method: &str, params: Value) -> Value {
        self.conn
            .call(Some(&self.session), method, params)
            .await
            .unwrap_or_else(|e| panic!("CDP {method} failed: {e}"))
    }

    async fn try_eval(&self, js: &str) -> Result<Value, String> {
        let r = self
            .conn
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({ "expression": js, "awaitPromise": true, "returnByValue": true, "userGesture": true }),
            )
            .await
            .map_err(|e| format!("CDP Runtime.evaluate failed: {e}"))?;
        if let Some(details) = r.get("exceptionDetails") {
            return Err(cdp::exception_text(details));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    async fn set_window_state(&self, state: &str, visibility: &str) {
        let window = self
            .conn
            .call(
                None,
                "Browser.getWindowForTarget",
                json!({ "targetId": self.target_id }),
            )
            .await
            .unwrap_or_else(|e| panic!("CDP Browser.getWindowForTarget failed: {e}"));
        let _ = self
            .conn
            .call(
                None,
                "Browser.setWindowBounds",
                json!({ "windowId": window["windowId"], "bounds": { "windowState": state } }),
            )
            .await
            .unwrap_or_else(|e| panic!("CDP Browser.setWindowBounds failed: {e}"));
        self.wait_for(
            &format!("document.visibilityState === '{visibility}'"),
            Duration::from_secs(5),
        )
        .await;
    }

    async fn require_clock(&self, what: &str) {
        let has: bool = self.eval("typeof window.__testClock === 'object'").await;
        assert!(
            has,
            "{what}: the page has no manual clock: call use_manual_clock() before goto()"
        );
    }

    /// Enables the Fetch domain while any rule exists, and disables it when none is left (a
    /// disabled domain lets paused requests go on).
    async fn sync_interception(&self) {
        let (want, have) = {
            let rules = lock(&self.state.rules);
            (
                !rules.fail.is_empty() || !rules.hold.is_empty() || !rules.held.is_empty(),
                rules.fetch_enabled,
            )
        };
        if want && !have {
            let _ = self
                .call(
                    "Fetch.enable",
                    json!({ "patterns": [{ "urlPattern": "*", "requestStage": "Request" }] }),
                )
                .await;
        } else if !want && have {
            let _ = self.call("Fetch.disable", json!({})).await;
        }
        lock(&self.state.rules).fetch_enabled = want;
    }

    fn check_alive(&self, what: &str) {
        if let Some(reason) = self.conn.dead_reason() {
            panic!("{what}: the browser connection is closed ({reason})");
        }
        assert!(
            !self.state.detached.load(Ordering::Relaxed),
            "{what}: the page was closed"
        );
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Cannot await here: ask and go. Disposing of the context closes its tab too.
        if !self.state.detached.load(Ordering::Relaxed) {
            self.conn.send(
                None,
                "Target.closeTarget",
                &json!({ "targetId": self.target_id }),
            );
        }
        self.conn.send(
            None,
            "Target.disposeBrowserContext",
            &json!({ "browserContextId": self.context_id }),
        );
        self.conn.unregister(&self.session);
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("target_id", &self.target_id)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// A string field of a CDP result; the protocol guarantees these, so a missing one is a bug.
fn str_field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("CDP answer without {name:?}: {v}"))
        .to_owned()
}

// ===== impl SeenRequest =====

impl SeenRequest {
    /// The value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

// ===== launching =====

/// `$APP_METRICS_CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on `PATH`.
fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("APP_METRICS_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{MISSING} (APP_METRICS_CHROMIUM={} is not a file)",
            path.display()
        );
        return path;
    }
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return debian.to_owned();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{MISSING}"))
}

fn next_profile_number() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Sends SIGKILL to the process group `pgid` (the browser and its helpers).
fn kill_group(pgid: u32) {
    // `kill` here is procps' (a Command never runs the shell builtin), which takes `--`.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A shell process that kills the browser's process group and removes its profile once this
/// process has exited (Drop does it first in the normal case; this covers panics in statics,
/// `SIGKILL`, Ctrl-C). As in cluster.rs, a zombie owner counts as gone.
fn spawn_watchdog(browser_pid: u32, profile: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"trap '' INT HUP
owner=$1; browser=$2; dir=$3
alive() {
  [ -r "/proc/$1/stat" ] || { kill -0 "$1" 2>/dev/null; return; }
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
while alive "$owner"; do sleep 1; done
kill -KILL "-$browser" 2>/dev/null
sleep 1
rm -rf "$dir""#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("app-metrics-chromium-watchdog")
        .arg(std::process::id().to_string())
        .arg(browser_pid.to_string())
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

// ===== keys =====

struct KeySpec {
    key: String,
    code: String,
    key_code: u32,
    text: String,
}

/// `Shift+Tab` → (modifier bits, `Tab`). Bits as CDP: Alt 1, Control 2, Meta 4, Shift 8.
fn split_modifiers(key: &str) -> (u32, &str) {
    let mut bits = 0;
    let mut rest = key;
    while let Some((head, tail)) = rest.split_once('+').filter(|(_, tail)| !tail.is_empty()) {
        bits |= match head {
            "Alt" => 1,
            "Control" | "Ctrl" => 2,
            "Meta" => 4,
            "Shift" => 8,
            _ => break,
        };
        rest = tail;
    }
    (bits, rest)
}

fn key_spec(key: &str) -> KeySpec {
    let named = |key: &str, code: &str, key_code: u32, text: &str| KeySpec {
        key: key.to_owned(),
        code: code.to_owned(),
        key_code,
        text: text.to_owned(),
    };
    match key {
        "Enter" => named("Enter", "Enter", 13, "\r"),
        "Tab" => named("Tab", "Tab", 9, ""),
        "Escape" | "Esc" => named("Escape", "Escape", 27, ""),
        "Backspace" => named("Backspace", "Backspace", 8, ""),
        "Delete" => named("Delete", "Delete", 46, ""),
        " " | "Space" => named(" ", "Space", 32, " "),
        "ArrowLeft" => named("ArrowLeft", "ArrowLeft", 37, ""),
        "ArrowUp" => named("ArrowUp", "ArrowUp", 38, ""),
        "ArrowRight" => named("ArrowRight", "ArrowRight", 39, ""),
        "ArrowDown" => named("ArrowDown", "ArrowDown", 40, ""),
        "Home" => named("Home", "Home", 36, ""),
        "End" => named("End", "End", 35, ""),
        "PageUp" => named("PageUp", "PageUp", 33, ""),
        "PageDown" => named("PageDown", "PageDown", 34, ""),
        _ => {
            let mut chars = key.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                panic!(
                    "press_key: unknown key {key:?} (a key name such as Enter or Tab, or one character)"
                );
            };
            let upper = c.to_ascii_uppercase();
            let code = match c {
                'a'..='z' | 'A'..='Z' => format!("Key{upper}"),
                '0'..='9' => format!("Digit{c}"),
                _ => String::new(),
            };
            let key_code = if c.is_ascii_alphanumeric() {
                u32::from(upper)
            } else {
                0
            };
            KeySpec {
                key: c.to_string(),
                code,
                key_code,
                text: c.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modifiers_are_split_off() {
        assert_eq!(split_modifiers("Shift+Tab"), (8, "Tab"));
        assert_eq!(split_modifiers("Control+Shift+a"), (10, "a"));
        assert_eq!(split_modifiers("+"), (0, "+"));
        assert_eq!(split_modifiers("Tab"), (0, "Tab"));
    }

    #[test]
    fn characters_have_codes() {
        let a = key_spec("a");
        assert_eq!(
            (a.code.as_str(), a.key_code, a.text.as_str()),
            ("KeyA", 65, "a")
        );
        assert_eq!(key_spec("Enter").text, "\r");
        assert_eq!(key_spec("Tab").key_code, 9);
    }
}
