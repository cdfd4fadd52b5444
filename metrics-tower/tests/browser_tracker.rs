//! `tracker.js` (CONTRACT.md §2 and §3 "Tracker") in a real headless Chromium, against an axum
//! server started in the test: a fake `POST /api/v1/metrics/usage-events` whose answers each
//! test scripts (202, 500, 429, 400, held until released) and which records every body and
//! Content-Type it gets, beacons included; and, at the end, the real API with a memory store.
//!
//! Time: every page runs on the harness's manual clock (`Page::use_manual_clock`, installed
//! before the page's scripts): the tracker's own 10 s / 1 s / 2 s / 500 ms timers are real
//! `setTimeout`s, but they fire only when the test advances the clock, so "nothing before 10 s,
//! a flush at 10 s" is checked exactly and in milliseconds, without test-only knobs in the
//! tracker. `Date` and the network stay real. A spy around `window.fetch`, installed before the
//! tracker, notes each call with the clock's time, so "no second POST" is read synchronously
//! instead of by sleeping.

#![cfg(feature = "axum")]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use metrics_core::{Collector, Identity, MemorySink, SharedAdminCheck, StaticAdmins, UserId};
use metrics_tower::axum::api::MetricsApi;
use metrics_tower::{MetricsLayer, identity::MakeIdentity, identity::TrustedProxyHeaders};
use serde_json::{Value, json};
use test_support::browser::{Browser, Page};
use tokio::sync::Semaphore;

const TRACKER: &str = include_str!("../src/axum/dashboard/tracker.js");
const ENDPOINT: &str = "/api/v1/metrics/usage-events";
const WAIT: Duration = Duration::from_secs(10);
const FAILED: &str = "Failed to submit usage events after 3 attempts";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ===== the fake server =====

/// A POST the fake endpoint received.
#[derive(Debug, Clone)]
struct Posted {
    path: String,
    content_type: String,
    body: Value,
    cookie: Option<String>,
}

impl Posted {
    fn events(&self) -> &[Value] {
        self.body["events"].as_array().map_or(&[], Vec::as_slice)
    }

    fn event_types(&self) -> Vec<&str> {
        self.events()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect()
    }
}

/// How the fake endpoint answers the next POST (202 once the script is used up).
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Waits for [`Fake::release`] (the POST stays in flight), then answers.
    Held(u16),
}

struct FakeState {
    posted: Mutex<Vec<Posted>>,
    script: Mutex<VecDeque<Reply>>,
    pages: Mutex<HashMap<String, String>>,
    gate: Semaphore,
}

struct Fake {
    base: String,
    state: Arc<FakeState>,
}

impl Fake {
    async fn start() -> Self {
        let state = Arc::new(FakeState {
            posted: Mutex::default(),
            script: Mutex::default(),
            pages: Mutex::default(),
            gate: Semaphore::new(0),
        });
        let app = Router::new()
            .route("/tracker.js", get(tracker_js))
            .route("/p/{*name}", get(page).post(record))
            .fallback(record)
            .with_state(Arc::clone(&state));
        Self {
            base: serve(app).await,
            state,
        }
    }

    /// Serves `html` at `/p/<name>`.
    fn page(&self, name: &str, html: String) -> String {
        let _ = self
            .state
            .pages
            .lock()
            .unwrap()
            .insert(name.to_owned(), html);
        format!("{}/p/{name}", self.base)
    }

    fn script(&self, replies: &[Reply]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(replies.iter().copied());
    }

    fn release(&self) {
        self.state.gate.add_permits(1);
    }

    fn posted(&self) -> Vec<Posted> {
        self.state.posted.lock().unwrap().clone()
    }

    async fn wait_posted(&self, n: usize) -> Vec<Posted> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.posted();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the endpoint got {} of {n} POSTs: {got:#?}",
                got.len()
            );
            tokio::time::sleep(ms(5)).await;
        }
    }
}

async fn tracker_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript")], TRACKER)
}

async fn page(State(state): State<Arc<FakeState>>, Path(name): Path<String>) -> Response {
    match state.pages.lock().unwrap().get(&name) {
        Some(html) => Html(html.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn record(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return StatusCode::NOT_FOUND.into_response();
    }
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let posted = Posted {
        path: uri.path().to_owned(),
        content_type: text(header::CONTENT_TYPE).unwrap_or_default(),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|e| json!({ "unparsable": e.to_string() })),
        cookie: text(header::COOKIE),
    };
    state.posted.lock().unwrap().push(posted);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Status(202));
    let status = match reply {
        Reply::Status(s) => s,
        Reply::Held(s) => {
            state.gate.acquire().await.unwrap().forget();
            s
        }
    };
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        axum::Json(json!({ "status_code": status.as_u16() })),
    )
        .into_response()
}

/// Serves `app` on 127.0.0.1:0; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap()
    }));
    base
}

// ===== pages =====

/// Notes every `fetch` call (with the manual clock's time) before the tracker loads; the
/// tracker's behaviour is unchanged.
const FETCH_SPY: &str = r"<script>
  window.__fetches = [];
  (function () {
    var real = window.fetch;
    window.fetch = function (input, init) {
      init = init || {};
      var body = typeof init.body === 'string' ? JSON.parse(init.body) : null;
      window.__fetches.push({
        url: String(input), at: window.__testClock.now(), method: init.method,
        credentials: init.credentials, keepalive: !!init.keepalive,
        content_type: init.headers && init.headers['Content-Type'],
        events: body && body.events ? body.events.length : null,
      });
      return real.apply(this, arguments);
    };
  })();
</script>";

/// A page that loads the tracker with `attrs` on its tag, with `body` in its body.
fn html(attrs: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>t</title>{FETCH_SPY}\
         <script src=\"/tracker.js\" {attrs}></script></head><body>{body}</body></html>"
    )
}

/// A new page on the shared browser, on the manual clock, at `url`.
async fn open(url: &str) -> Page {
    let page = Browser::shared().await.new_page().await;
    page.use_manual_clock().await;
    page.goto(url).await;
    page
}

/// A fake server and a page with the tracker (auto page view off unless `attrs` says).
async fn setup(name: &str, attrs: &str, body: &str) -> (Fake, Page) {
    let fake = Fake::start().await;
    let url = fake.page(name, html(attrs, body));
    let page = open(&url).await;
    (fake, page)
}

async fn stats(page: &Page) -> Value {
    page.eval("AppMetrics.stats()").await
}

/// `{queued, sent, dropped, in_flight}` as a tuple.
async fn counts(page: &Page) -> (u64, u64, u64, u64) {
    let s = stats(page).await;
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("stats().{k} is not a count: {s}"))
    };
    (n("queued"), n("sent"), n("dropped"), n("in_flight"))
}

async fn fetches(page: &Page) -> Vec<Value> {
    page.eval("window.__fetches").await
}

/// Tracks `n` events of type `button_click`, element `e<i>`.
async fn track_n(page: &Page, n: usize) {
    page.exec(&format!(
        "for (let i = 0; i < {n}; i++) AppMetrics.track({{ event_type: 'button_click', element_id: 'e' + i }})"
    ))
    .await;
}

/// Calls `AppMetrics.flush()` without awaiting its promise (which waits for the answer, and
/// for retries on the manual clock).
async fn flush_nowait(page: &Page) {
    page.exec("void AppMetrics.flush()").await;
}

/// The manual clock's time of a spied `fetch` call.
fn at(call: &Value) -> f64 {
    call["at"]
        .as_f64()
        .unwrap_or_else(|| panic!("no time in {call}"))
}

async fn wait_settled(page: &Page) {
    page.wait_for("AppMetrics.stats().in_flight === 0", WAIT)
        .await;
}

/// The delays (ms) of the timers pending on the page's manual clock.
async fn timer_delays(page: &Page) -> Vec<f64> {
    page.pending_timers()
        .await
        .iter()
        .map(|t| t.delay_ms)
        .collect()
}

const NO_AUTO: &str = r#"data-auto-page-view="false" data-auto-click="false""#;

// ===== automatic events =====

#[tokio::test]
async fn a_page_view_for_the_path_is_queued_on_load_and_sent_at_10_s() {
    let (fake, page) = setup("shop/cart", "", "").await;
    page.exec("document.cookie = 'sid=42; path=/'").await;
    assert_eq!(counts(&page).await, (1, 0, 0, 0));
    page.advance_clock(ms(9_999)).await;
    assert!(fetches(&page).await.is_empty(), "nothing before 10 s");
    page.advance_clock(ms(1)).await;

    let posted = fake.wait_posted(1).await;
    assert_eq!(posted[0].path, ENDPOINT, "the default endpoint");
    assert_eq!(posted[0].content_type, "application/json");
    assert_eq!(
        posted[0].cookie.as_deref(),
        Some("sid=42"),
        "same-origin credentials"
    );
    let event = &posted[0].events()[0];
    assert_eq!(event["event_type"], "page_view");
    assert_eq!(event["page_name"], "/p/shop/cart");
    let ts = event["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    let call = &fetches(&page).await[0];
    assert_eq!(call["method"], "POST");
    assert_eq!(call["credentials"], "same-origin");
    assert_eq!(call["content_type"], "application/json");
    assert_eq!(at(call), 10_000.0);
    wait_settled(&page).await;
    assert_eq!(counts(&page).await, (0, 1, 0, 0));
}

#[tokio::test]
async fn auto_page_view_can_be_turned_off_and_page_view_takes_a_name() {
    let (fake, page) = setup("quiet", r#"data-auto-page-view="false""#, "").await;
    assert_eq!(counts(&page).await, (0, 0, 0, 0));
    page.exec("AppMetrics.pageView(); AppMetrics.pageView('/custom')")
        .await;
    page.eval::<Value>("AppMetrics.flush()").await;
    let posted = fake.wait_posted(1).await;
    let names: Vec<&Value> = posted[0].events().iter().map(|e| &e["page_name"]).collect();
    assert_eq!(names, [&json!("/p/quiet"), &json!("/custom")]);
}

const CLICKABLE: &str = r##"
  <button id="save">Save</button>
  <button><span id="inner-span">Inner</span> text</button>
  <a href="#x">  Link text  </a>
  <input type="submit" value="Send">
  <input type="button" id="in-btn" value="B">
  <div role="button">Role</div>
  <div data-track-id="card-7"><p id="para">Card body</p></div>
  <div id="plain">Plain</div>
  <input type="text" id="field">
"##;

#[tokio::test]
async fn clicks_on_clickable_elements_become_button_click_events() {
    let (fake, page) = setup("clicks", r#"data-auto-page-view="false""#, CLICKABLE).await;
    for sel in [
        "#save",
        "#inner-span",
        "a",
        "input[type=submit]",
        "#in-btn",
        "[role=button]",
        "#para",
        "#plain",
        "#field",
    ] {
        page.click(sel).await;
    }
    page.eval::<Value>("AppMetrics.flush()").await;
    let posted = fake.wait_posted(1).await;
    let events = posted[0].events();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["element_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "save",
            "button.Inner text", // closest() from the span: the button
            "a.Link text",
            "input.",
            "in-btn",
            "div.Role",
            "card-7", // a [data-track-id] ancestor
        ],
        "plain divs and text inputs are not tracked"
    );
    for e in events {
        assert_eq!(e["event_type"], "button_click");
        assert_eq!(e["page_name"], "/p/clicks");
    }
}

#[tokio::test]
async fn data_auto_click_false_tracks_no_clicks() {
    let (fake, page) = setup("noclick", r#"data-auto-click="false""#, CLICKABLE).await;
    page.click("#save").await;
    page.click("#para").await;
    page.eval::<Value>("AppMetrics.flush()").await;
    assert_eq!(fake.wait_posted(1).await[0].event_types(), ["page_view"]);
}

// ===== element ids =====

#[tokio::test]
async fn element_ids_follow_data_track_id_then_id_then_tag_and_text_cut_to_100() {
    let long_text = "x".repeat(150);
    let long_id = "i".repeat(120);
    let body = format!(
        r#"<button data-track-id="tracked" id="ignored">Text</button>
        <button id="by-id">Text</button>
        <BUTTON>
            Submit Query
        </BUTTON>
        <button data-track-id="" id="empty-track">x</button>
        <a>{long_text}</a>
        <span id="{long_id}"></span>
        <form><input name="id"></form>
        <button>{emoji}</button>"#,
        emoji = "😀".repeat(120)
    );
    let (_fake, page) = setup("ids", NO_AUTO, &body).await;
    let ids: Vec<String> = page
        .eval("Array.from(document.body.children).map((el) => AppMetrics.elementId(el))")
        .await;
    assert_eq!(ids[0], "tracked");
    assert_eq!(ids[1], "by-id");
    assert_eq!(
        ids[2], "button.Submit Query",
        "lower-case tag, trimmed text"
    );
    assert_eq!(
        ids[3], "empty-track",
        "an empty data-track-id does not apply"
    );
    assert_eq!(
        ids[4],
        format!("a.{}", "x".repeat(98)),
        "the whole id cut to 100"
    );
    assert_eq!(ids[5], "i".repeat(100));
    assert_eq!(
        ids[6], "form.",
        "a child named id does not clobber the form's id"
    );
    assert_eq!(
        ids[7].chars().count(),
        100,
        "cut by characters, never inside an emoji"
    );
    assert_eq!(ids[7], format!("button.{}", "😀".repeat(93)));
}

#[tokio::test]
async fn tracked_events_keep_only_contract_fields_with_element_id_cut_to_100() {
    let (fake, page) = setup("fields", NO_AUTO, "").await;
    let accepted: Vec<bool> = page
        .eval(
            "[AppMetrics.track({ event_type: 'form_submit', element_id: 'e'.repeat(150), page_name: '/x', \
               success: false, metadata: { q: 1 }, user_id: 'mallory', extra: 1 }), \
              AppMetrics.track({ element_id: 'no type' }), AppMetrics.track(null)]",
        )
        .await;
    assert_eq!(accepted, [true, false, false]);
    assert_eq!(
        counts(&page).await,
        (1, 0, 0, 0),
        "events without event_type are refused"
    );
    page.eval::<Value>("AppMetrics.flush()").await;
    let event = fake.wait_posted(1).await[0].events()[0].clone();
    let mut keys: Vec<&String> = event.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "element_id",
            "event_type",
            "metadata",
            "page_name",
            "success",
            "timestamp"
        ]
    );
    assert_eq!(event["element_id"], "e".repeat(100));
    assert_eq!(event["success"], false);
    assert_eq!(event["metadata"], json!({ "q": 1 }));
}

// ===== batching and the timer =====

#[tokio::test]
async fn twenty_queued_events_go_at_once_in_one_post_and_the_timer_restarts() {
    let (fake, page) = setup("batch", "", "").await; // the page view is event 1
    page.advance_clock(ms(5_000)).await;
    track_n(&page, 18).await;
    assert!(fetches(&page).await.is_empty(), "19 wait");
    track_n(&page, 1).await;
    let calls = fetches(&page).await;
    assert_eq!(calls.len(), 1, "the 20th sends at once");
    assert_eq!(calls[0]["events"], 20);
    assert_eq!(at(&calls[0]), 5_000.0, "without waiting for the timer");
    assert_eq!(fake.wait_posted(1).await[0].events().len(), 20);
    wait_settled(&page).await;

    // The pending 10 s timer was cleared and a new one armed after the send: it fires 10 s
    // after the batch, not 5 s later as the cleared one would have.
    let timers = page.pending_timers().await;
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(
        (timers[0].delay_ms, timers[0].due_in_ms),
        (10_000.0, 10_000.0)
    );
    track_n(&page, 1).await;
    page.advance_clock(ms(5_000)).await;
    assert_eq!(fetches(&page).await.len(), 1);
    page.advance_clock(ms(5_000)).await;
    let calls = fetches(&page).await;
    assert_eq!(
        (calls.len(), &calls[1]["events"], at(&calls[1])),
        (2, &json!(1), 15_000.0)
    );
    assert_eq!(fake.wait_posted(2).await[1].events().len(), 1);
}

#[tokio::test]
async fn the_timer_survives_a_long_idle_and_still_sends_new_events() {
    let (fake, page) = setup("idle", "", "").await;
    page.advance_clock(ms(10_000)).await;
    fake.wait_posted(1).await;
    wait_settled(&page).await;

    // An hour with nothing queued: ticks every 10 s, no POST, the timer re-armed each time.
    page.advance_clock(Duration::from_secs(3_600)).await;
    assert_eq!(fetches(&page).await.len(), 1, "empty ticks send nothing");
    assert_eq!(
        timer_delays(&page).await,
        [10_000.0],
        "the timer is still armed"
    );

    track_n(&page, 1).await;
    page.advance_clock(ms(10_000)).await;
    let posted = fake.wait_posted(2).await;
    assert_eq!(posted[1].event_types(), ["button_click"]);
    assert_eq!(fetches(&page).await.len(), 2);
}

#[tokio::test]
async fn flush_sends_the_queue_now_and_returns_a_promise() {
    let (fake, page) = setup("flush", NO_AUTO, "").await;
    let empty: Value = page.eval("AppMetrics.flush()").await;
    assert_eq!(
        empty,
        json!({ "queued": 0, "sent": 0, "dropped": 0, "in_flight": 0 })
    );
    assert!(
        fetches(&page).await.is_empty(),
        "an empty queue sends nothing"
    );
    track_n(&page, 3).await;
    let after: Value = page.eval("AppMetrics.flush()").await;
    assert_eq!(
        after,
        json!({ "queued": 0, "sent": 3, "dropped": 0, "in_flight": 0 }),
        "resolves once answered"
    );
    assert_eq!(fake.posted().len(), 1);
}

// ===== one POST at a time =====

#[tokio::test]
async fn one_post_in_flight_and_a_full_queue_goes_right_after_it() {
    let (fake, page) = setup("single", NO_AUTO, "").await;
    fake.script(&[Reply::Held(202)]);
    track_n(&page, 20).await;
    fake.wait_posted(1).await;
    track_n(&page, 25).await;
    page.exec("void (window.flushed = AppMetrics.flush().then(() => true))")
        .await;
    page.advance_clock(ms(30_000)).await;
    assert_eq!(
        fetches(&page).await.len(),
        1,
        "no second POST while one is in flight"
    );
    assert_eq!(counts(&page).await, (25, 0, 0, 20));

    fake.release();
    page.wait_for("AppMetrics.stats().sent === 45", WAIT).await;
    let calls = fetches(&page).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1]["events"], 25,
        "the waiting queue went right after the answer"
    );
    assert_eq!(at(&calls[1]), 30_000.0, "without waiting for a timer");
    assert!(page.eval::<bool>("window.flushed").await);
    assert_eq!(fake.wait_posted(2).await[1].events().len(), 25);
}

#[tokio::test]
async fn the_queue_holds_1000_events_and_counts_the_overflow_as_dropped() {
    let (fake, page) = setup("cap", NO_AUTO, "").await;
    fake.script(&[Reply::Held(202)]);
    track_n(&page, 20).await; // in flight, held
    fake.wait_posted(1).await;
    track_n(&page, 1_005).await;
    assert_eq!(counts(&page).await, (1_000, 0, 5, 20));
    let refused: bool = page
        .eval("AppMetrics.track({ event_type: 'page_view' })")
        .await;
    assert!(!refused);
    assert_eq!(counts(&page).await, (1_000, 0, 6, 20));

    fake.release();
    page.wait_for("AppMetrics.stats().sent === 1020", WAIT)
        .await;
    let posted = fake.wait_posted(2).await;
    assert_eq!(
        posted[1].events().len(),
        1_000,
        "one POST carries at most 1000"
    );
    assert_eq!(
        posted[1].events()[999]["element_id"],
        "e999",
        "the overflow is the newest"
    );
    assert_eq!(counts(&page).await, (0, 1_020, 6, 0));
}

// ===== retries =====

/// Tracks one event, flushes, and answers the POSTs with `replies`; returns the manual clock's
/// times of the attempts.
async fn attempts_with(replies: &[Reply]) -> (Fake, Page, Vec<f64>) {
    let (fake, page) = setup("retry", NO_AUTO, "").await;
    fake.script(replies);
    track_n(&page, 2).await;
    flush_nowait(&page).await;
    let mut times = Vec::new();
    loop {
        let n = times.len() + 1;
        fake.wait_posted(n).await;
        times.push(at(&fetches(&page).await[n - 1]));
        // Either the batch settles, or a retry timer is armed (the flush timer is off while a
        // batch is in flight).
        page.wait_for(
            "AppMetrics.stats().in_flight === 0 || window.__testClock.pending().some((t) => t.delay_ms !== 10000)",
            WAIT,
        )
        .await;
        let timers = page.pending_timers().await;
        let Some(retry) = timers.iter().find(|t| t.delay_ms != 10_000.0) else {
            break;
        };
        // Not a millisecond early.
        page.advance_clock(ms(retry.due_in_ms as u64 - 1)).await;
        assert_eq!(fetches(&page).await.len(), n, "retried early");
        page.advance_clock(ms(1)).await;
    }
    (fake, page, times)
}

#[tokio::test]
async fn a_500_is_tried_3_times_at_0_1_and_3_s_then_dropped_and_logged() {
    let (fake, page, times) = attempts_with(&[
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(202),
    ])
    .await;
    assert_eq!(times, [0.0, 1_000.0, 3_000.0]);
    assert_eq!(counts(&page).await, (0, 0, 2, 0));
    let errors: Vec<String> = page
        .console_messages()
        .into_iter()
        .filter(|m| m.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("error: {FAILED}\u{2026}")),
        "{errors:?}"
    );
    // Dropped for good: nothing more is sent for it.
    page.advance_clock(ms(60_000)).await;
    assert_eq!(fake.posted().len(), 3);
}

#[tokio::test]
async fn answers_429_and_503_are_retried_and_a_success_stops_the_retries() {
    let (_fake, page, times) =
        attempts_with(&[Reply::Status(429), Reply::Status(503), Reply::Status(202)]).await;
    assert_eq!(times, [0.0, 1_000.0, 3_000.0]);
    assert_eq!(counts(&page).await, (0, 2, 0, 0));

    let (_fake, page, times) = attempts_with(&[Reply::Status(503), Reply::Status(202)]).await;
    assert_eq!(times, [0.0, 1_000.0], "a success stops the retries");
    assert_eq!(counts(&page).await, (0, 2, 0, 0));
    assert!(page.console_messages().iter().all(|m| !m.contains(FAILED)));
}

/// 408 and network errors are injected in the browser (`fail_requests`) rather than answered
/// by the server: Chromium itself resends a request answered 408 on a reused connection, so a
/// server's 408 may never reach the page.
#[tokio::test]
async fn a_408_or_a_network_error_is_retried() {
    for status in [408, 0] {
        let (fake, page) = setup("neterr", NO_AUTO, "").await;
        page.fail_requests(ENDPOINT, status).await;
        track_n(&page, 1).await;
        flush_nowait(&page).await;
        page.wait_for(
            "window.__testClock.pending().some((t) => t.delay_ms === 1000)",
            WAIT,
        )
        .await;
        assert!(
            fake.posted().is_empty(),
            "{status}: answered in the browser"
        );
        page.clear_failures().await;
        page.advance_clock(ms(1_000)).await;
        fake.wait_posted(1).await;
        wait_settled(&page).await;
        assert_eq!(counts(&page).await, (0, 1, 0, 0), "{status}");
        let times: Vec<f64> = fetches(&page).await.iter().map(at).collect();
        assert_eq!(times, [0.0, 1_000.0], "{status}");
    }
}

#[tokio::test]
async fn three_network_errors_drop_the_batch_with_the_error_logged() {
    let (fake, page) = setup("offline", NO_AUTO, "").await;
    page.fail_requests(ENDPOINT, 0).await;
    track_n(&page, 4).await;
    flush_nowait(&page).await;
    for retry in [1_000, 2_000] {
        page.wait_for(
            &format!("window.__testClock.pending().some((t) => t.delay_ms === {retry})"),
            WAIT,
        )
        .await;
        page.advance_clock(ms(retry)).await;
    }
    wait_settled(&page).await;
    assert_eq!(counts(&page).await, (0, 0, 4, 0));
    assert_eq!(fetches(&page).await.len(), 3);
    assert!(fake.posted().is_empty());
    let log = page.console_messages();
    assert!(
        log.iter()
            .any(|m| m.starts_with(&format!("error: {FAILED}"))),
        "{log:?}"
    );
}

#[tokio::test]
async fn other_4xx_answers_drop_the_batch_at_once() {
    for status in [400, 401, 403, 413, 422] {
        let (fake, page) = setup("refused", NO_AUTO, "").await;
        fake.script(&[Reply::Status(status)]);
        track_n(&page, 3).await;
        flush_nowait(&page).await;
        fake.wait_posted(1).await;
        wait_settled(&page).await;
        assert_eq!(counts(&page).await, (0, 0, 3, 0), "{status}");
        assert_eq!(
            timer_delays(&page).await,
            [10_000.0],
            "{status}: no retry timer"
        );
        page.advance_clock(ms(60_000)).await;
        assert_eq!(fetches(&page).await.len(), 1, "{status}: never retried");
        assert!(
            page.console_messages().iter().all(|m| !m.contains(FAILED)),
            "{status}"
        );
    }
}

// ===== leaving the page =====

#[tokio::test]
async fn pagehide_sends_everything_by_beacon_as_text_plain() {
    let (fake, page) = setup("leave", "", "").await;
    track_n(&page, 2).await;
    page.exec(
        "AppMetrics.track({ event_type: 'query_executed', element_id: 'search', metadata: { q: 'a' } }, { debounce: true })",
    )
    .await;
    assert_eq!(counts(&page).await, (4, 0, 0, 0));
    page.close().await;

    let posted = fake.wait_posted(1).await;
    assert_eq!(posted.len(), 1, "one beacon");
    assert_eq!(
        posted[0].content_type, "text/plain;charset=UTF-8",
        "a string beacon"
    );
    assert_eq!(posted[0].path, ENDPOINT);
    assert_eq!(
        posted[0].event_types(),
        [
            "page_view",
            "button_click",
            "button_click",
            "query_executed"
        ],
        "the pending debounced event joins the queue"
    );
}

#[tokio::test]
async fn hidden_sends_by_beacon_counts_it_sent_and_tracking_goes_on() {
    let (fake, page) = setup("hide", "", "").await;
    track_n(&page, 2).await;
    page.hide().await;
    assert_eq!(
        counts(&page).await,
        (0, 3, 0, 0),
        "handed to the beacon counts as sent"
    );
    let posted = fake.wait_posted(1).await;
    assert_eq!(posted[0].content_type, "text/plain;charset=UTF-8");
    assert_eq!(posted[0].events().len(), 3);
    let beacon = page.wait_for_request(ENDPOINT, WAIT).await;
    assert_eq!(beacon.resource_type, "Ping");
    assert!(fetches(&page).await.is_empty(), "no fetch: a beacon");

    // Hidden with nothing queued sends nothing; visible again, the timer still runs.
    page.show().await;
    page.hide().await;
    page.show().await;
    assert_eq!(fake.posted().len(), 1);
    track_n(&page, 1).await;
    page.advance_clock(ms(10_000)).await;
    assert_eq!(
        fake.wait_posted(2).await[1].content_type,
        "application/json"
    );
}

#[tokio::test]
async fn a_refused_beacon_falls_back_to_a_keepalive_fetch() {
    let fake = Fake::start().await;
    let refuse = "<script>navigator.sendBeacon = function () { return false; };</script>";
    let url = fake.page(
        "refuse",
        html(NO_AUTO, "").replace("<title>t</title>", &format!("<title>t</title>{refuse}")),
    );
    let page = open(&url).await;
    fake.script(&[Reply::Held(202)]);
    track_n(&page, 2).await;
    page.hide().await;
    assert_eq!(
        counts(&page).await,
        (0, 0, 0, 2),
        "in flight until answered"
    );
    let call = &fetches(&page).await[0];
    assert_eq!(
        (&call["keepalive"], &call["credentials"]),
        (&json!(true), &json!("same-origin"))
    );
    fake.release();
    wait_settled(&page).await;
    assert_eq!(counts(&page).await, (0, 2, 0, 0));
    assert_eq!(
        fake.wait_posted(1).await[0].content_type,
        "application/json"
    );
}

#[tokio::test]
async fn a_batch_waiting_for_its_retry_leaves_by_beacon_without_a_second_copy() {
    let (fake, page) = setup("retry-leave", NO_AUTO, "").await;
    fake.script(&[Reply::Status(503)]);
    track_n(&page, 2).await;
    flush_nowait(&page).await;
    page.wait_for(
        "window.__testClock.pending().some((t) => t.delay_ms === 1000)",
        WAIT,
    )
    .await;
    track_n(&page, 1).await;
    page.hide().await;
    assert_eq!(counts(&page).await, (0, 3, 0, 0));
    let posted = fake.wait_posted(2).await;
    assert_eq!(posted[1].content_type, "text/plain;charset=UTF-8");
    assert_eq!(
        posted[1].events().len(),
        3,
        "the waiting batch and the queue"
    );
    page.advance_clock(ms(5_000)).await;
    assert_eq!(fetches(&page).await.len(), 1, "its retry was cancelled");
}

// ===== debounce =====

#[tokio::test]
async fn debounce_is_500_ms_trailing_per_type_and_element_and_only_when_asked() {
    let (fake, page) = setup("debounce", NO_AUTO, "").await;
    let typed = |el: &str, q: &str| {
        format!(
            "AppMetrics.track({{ event_type: 'query_executed', element_id: '{el}', metadata: {{ q: '{q}' }} }}, {{ debounce: true }})"
        )
    };
    page.exec(&typed("search", "a")).await;
    page.advance_clock(ms(300)).await;
    page.exec(&typed("search", "ab")).await; // restarts the 500 ms
    page.exec(&typed("filter", "x")).await; // its own timer
    page.exec("AppMetrics.track({ event_type: 'preference_changed', element_id: 'search' }, { debounce: true })")
        .await; // another type on the same element: its own timer
    page.exec("AppMetrics.track({ event_type: 'query_executed', element_id: 'search', metadata: { q: 'now' } })")
        .await; // not asked: at once
    assert_eq!(counts(&page).await.0, 4, "debounced events count as queued");

    page.advance_clock(ms(499)).await; // t = 799: "a" would have fired at 500
    page.eval::<Value>("AppMetrics.flush()").await;
    let first = fake.wait_posted(1).await[0].clone();
    assert_eq!(first.events().len(), 1);
    assert_eq!(first.events()[0]["metadata"]["q"], "now");

    page.advance_clock(ms(1)).await; // t = 800: 500 ms after the last of each burst
    page.eval::<Value>("AppMetrics.flush()").await;
    let second = fake.wait_posted(2).await[1].clone();
    let got: Vec<(String, String)> = second
        .events()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["element_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("query_executed".to_owned(), "search".to_owned()),
            ("query_executed".to_owned(), "filter".to_owned()),
            ("preference_changed".to_owned(), "search".to_owned()),
        ]
    );
    assert_eq!(
        second.events()[0]["metadata"]["q"],
        "ab",
        "the last of the burst"
    );
    assert_eq!(
        counts(&page).await,
        (0, 4, 0, 0),
        "one event per burst: 'a' was replaced"
    );
}

#[tokio::test]
async fn clicks_are_never_debounced() {
    let (fake, page) = setup("fastclicks", r#"data-auto-page-view="false""#, CLICKABLE).await;
    for _ in 0..3 {
        page.click("#save").await;
    }
    page.eval::<Value>("AppMetrics.flush()").await;
    assert_eq!(fake.wait_posted(1).await[0].events().len(), 3);
}

// ===== stats, configuration, the global =====

#[tokio::test]
async fn stats_account_for_every_event() {
    let (fake, page) = setup("stats", "", "").await;
    fake.script(&[Reply::Status(400), Reply::Held(202)]);
    let invariant = "(() => { const s = AppMetrics.stats(); return s.queued + s.sent + s.dropped + s.in_flight; })()";
    assert_eq!(counts(&page).await, (1, 0, 0, 0));
    track_n(&page, 4).await;
    page.eval::<Value>("AppMetrics.flush()").await; // refused with 400: 5 dropped
    assert_eq!(counts(&page).await, (0, 0, 5, 0));
    track_n(&page, 20).await; // the 20th goes at once, held in flight
    fake.wait_posted(2).await;
    track_n(&page, 3).await;
    assert_eq!(counts(&page).await, (3, 0, 5, 20));
    assert_eq!(page.eval::<u64>(invariant).await, 28);
    fake.release();
    wait_settled(&page).await;
    assert_eq!(counts(&page).await, (3, 20, 5, 0));
    page.hide().await;
    assert_eq!(counts(&page).await, (0, 23, 5, 0));
    assert_eq!(page.eval::<u64>(invariant).await, 28);
}

#[tokio::test]
async fn a_relative_endpoint_resolves_against_the_page() {
    let fake = Fake::start().await;
    let url = fake.page("app/orders/list", html(r#"data-endpoint="collect""#, ""));
    let page = open(&url).await;
    page.eval::<Value>("AppMetrics.flush()").await;
    assert_eq!(fake.wait_posted(1).await[0].path, "/p/app/orders/collect");

    let url = fake.page("abs", html(r#"data-endpoint="/custom/events""#, ""));
    let page = open(&url).await;
    page.eval::<Value>("AppMetrics.flush()").await;
    assert_eq!(fake.wait_posted(2).await[1].path, "/custom/events");
}

#[tokio::test]
async fn a_second_load_keeps_the_first_app_metrics_and_adds_no_other_global() {
    let fake = Fake::start().await;
    let page_html = format!(
        "<!doctype html><html><head><title>t</title>{FETCH_SPY}\
         <script>window.__before = Object.getOwnPropertyNames(window);</script>\
         <script src=\"/tracker.js\"></script>\
         <script>window.__first = window.AppMetrics;</script>\
         <script src=\"/tracker.js?again\"></script></head>\
         <body><button id=\"b\">B</button></body></html>"
    );
    let page = open(&fake.page("twice", page_html)).await;
    assert!(
        page.eval::<bool>("window.__first === window.AppMetrics")
            .await
    );
    let added: Vec<String> = page
        .eval("Object.getOwnPropertyNames(window).filter((k) => !window.__before.includes(k) && !k.startsWith('__'))")
        .await;
    assert_eq!(added, ["AppMetrics"]);
    let api: Vec<String> = page.eval("Object.keys(AppMetrics).sort()").await;
    assert_eq!(api, ["elementId", "flush", "pageView", "stats", "track"]);
    page.exec("window.AppMetrics = null").await;
    assert!(
        page.eval::<bool>("window.__first === window.AppMetrics")
            .await,
        "not replaceable"
    );

    assert_eq!(counts(&page).await, (1, 0, 0, 0), "one page view");
    page.click("#b").await;
    assert_eq!(counts(&page).await, (2, 0, 0, 0), "one click listener");
    assert_eq!(timer_delays(&page).await, [10_000.0], "one timer");
    page.advance_clock(ms(10_000)).await;
    assert_eq!(fake.wait_posted(1).await[0].events().len(), 2);
    assert_eq!(fetches(&page).await.len(), 1);
    let log = page.console_messages();
    assert!(
        log.iter().all(|m| !m.starts_with("exception")),
        "the second copy stops quietly: {log:?}"
    );
}

#[tokio::test]
async fn tracker_js_stays_under_20_kib_and_is_one_strict_iife() {
    assert!(
        TRACKER.len() <= 20 * 1024,
        "tracker.js is {} bytes",
        TRACKER.len()
    );
    let code = TRACKER.trim_end();
    let start = code.find("(function () {").expect("an IIFE");
    assert!(
        code[..start].trim_start().starts_with("/*"),
        "only a comment before it"
    );
    assert!(code.ends_with("})();"), "nothing after it");
    assert!(code[start..].contains("'use strict';"));
}

// ===== against the real API =====

/// Gives every request the identity `user`, as an app's own authentication would (CDP's extra
/// headers do not reach a beacon sent while the page hides).
#[derive(Debug, Clone, Copy)]
struct EveryoneIs(&'static str);

impl<B> MakeIdentity<B> for EveryoneIs {
    fn identity(&self, req: &mut Request<B>) -> Option<UserId> {
        let user = UserId::new(self.0);
        let _ = req.extensions_mut().insert(Identity::new(user.clone()));
        Some(user)
    }
}

/// The real API over a memory store, the page and the tracker on the same origin.
fn real_app(api: &MetricsApi, body: &'static str) -> Router {
    let page_html = format!(
        "<!doctype html><html><head><title>t</title><script src=\"/tracker.js\"></script></head>\
         <body>{body}</body></html>"
    );
    Router::new()
        .route("/tracker.js", get(tracker_js))
        .route("/app/orders", get(move || async move { Html(page_html) }))
        .nest("/api/v1/metrics", api.router())
}

#[tokio::test]
async fn the_real_api_takes_the_trackers_post_with_the_caller_as_user() {
    let store = MemorySink::new();
    let collector = Collector::builder(store.clone()).spawn().unwrap();
    let api = MetricsApi::new(
        Arc::new(store.clone()),
        collector.clone(),
        SharedAdminCheck::new(StaticAdmins::new(["ada@example.com"])),
    );
    let app = real_app(&api, "<button id=\"checkout\">Pay</button>")
        .layer(MetricsLayer::new(collector.clone()).identity_with(TrustedProxyHeaders));
    let base = serve(app).await;
    let page = Browser::shared().await.new_page().await;
    page.set_extra_headers(&[("X-Forwarded-Email", "bob@example.com")])
        .await;
    page.goto(&format!("{base}/app/orders")).await;
    page.click("#checkout").await;
    let after: Value = page.eval("AppMetrics.flush()").await;
    assert_eq!(after["sent"], 2, "202 from the API: {after}");
    assert_eq!(after["dropped"], 0);

    collector.flush().await.unwrap();
    let events = store.snapshot().into_usage_events();
    let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.user_id.as_str(),
                e.page_name.as_deref(),
                e.element_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("page_view", "bob@example.com", Some("/app/orders"), None),
            (
                "button_click",
                "bob@example.com",
                Some("/app/orders"),
                Some("checkout")
            ),
        ]
    );
}

#[tokio::test]
async fn the_real_api_takes_the_trackers_beacon_from_an_authenticated_page() {
    let store = MemorySink::new();
    let collector = Collector::builder(store.clone()).spawn().unwrap();
    let api = MetricsApi::new(
        Arc::new(store.clone()),
        collector.clone(),
        SharedAdminCheck::new(StaticAdmins::new(["ada@example.com"])),
    );
    let app = real_app(&api, "")
        .layer(MetricsLayer::new(collector.clone()).identity_with(EveryoneIs("carol@example.com")));
    let base = serve(app).await;
    let page = Browser::shared().await.new_page().await;
    page.goto(&format!("{base}/app/orders")).await;
    page.exec(
        "AppMetrics.track({ event_type: 'export_triggered', element_id: 'csv', success: true })",
    )
    .await;
    page.hide().await;
    assert_eq!(
        page.wait_for_request("/usage-events", WAIT)
            .await
            .resource_type,
        "Ping"
    );

    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        collector.flush().await.unwrap();
        let events = store.snapshot().into_usage_events();
        if events.len() >= 2 || tokio::time::Instant::now() >= deadline {
            break events;
        }
        tokio::time::sleep(ms(20)).await;
    };
    let got: Vec<(&str, &str, Option<bool>)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.user_id.as_str(), e.success))
        .collect();
    assert_eq!(
        got,
        [
            ("page_view", "carol@example.com", None),
            ("export_triggered", "carol@example.com", Some(true))
        ]
    );
}
