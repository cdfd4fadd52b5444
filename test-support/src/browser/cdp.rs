//! The Chrome DevTools Protocol connection: one WebSocket to the browser, in flat session mode
//! (every page's commands and events carry its `sessionId` on the same socket), served by a thread
//! of its own.
//!
//! Why a thread with its own runtime rather than a task on the caller's: a `#[tokio::test]` has a
//! runtime per test, and a browser shared by the tests of a process ([`Browser::shared`]) must
//! outlive each of them. It also means events (requests, console lines, interceptions) are taken
//! in while the test is busy elsewhere, and that an intercepted request is answered at once
//! whatever the test is awaiting.
//!
//! [`Browser::shared`]: super::Browser::shared

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use super::SeenRequest;

/// How long one CDP command may take before the harness gives up on it.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the harness sends to the IO thread.
enum Outgoing {
    Frame(String),
    Close,
}

type Reply = Result<Value, String>;

/// The handle pages and the browser send commands through.
pub(super) struct Connection {
    // Unbounded: the IO thread drains it as fast as the socket takes frames, and a test sends a
    // handful of commands at a time; a bound would only add a failure mode to test code.
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

/// State the IO thread and the handles share.
struct Shared {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    sessions: Mutex<HashMap<String, Arc<PageState>>>,
    /// Why the connection ended, once it has.
    dead: Mutex<Option<String>>,
}

/// What the connection records for one page (one CDP session).
pub(super) struct PageState {
    pub(super) requests: Mutex<Vec<SeenRequest>>,
    pub(super) console: Mutex<Vec<String>>,
    /// Loader ids whose `load` lifecycle event has fired.
    pub(super) loaded: Mutex<HashSet<String>>,
    pub(super) rules: Mutex<Rules>,
    /// Bumped after every event of this page, so waiters re-check their condition.
    pub(super) changed: watch::Sender<u64>,
    pub(super) detached: AtomicBool,
}

/// Interception rules of a page (the Fetch domain is enabled while any exists).
#[derive(Default)]
pub(super) struct Rules {
    pub(super) fail: Vec<FailRule>,
    pub(super) hold: Vec<String>,
    /// Request ids paused by a hold rule, in arrival order.
    pub(super) held: Vec<String>,
    pub(super) fetch_enabled: bool,
}

/// Requests whose URL contains `url_substring` are answered with `status` and `body` (status 0: a
/// network error instead).
pub(super) struct FailRule {
    pub(super) url_substring: String,
    pub(super) status: u16,
    pub(super) body: String,
}

/// Locks, ignoring poison: a panicking test must not turn every later access into a second panic
/// that hides the first.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ===== impl Connection =====

impl Connection {
    /// Connects to the browser's DevTools WebSocket and starts the IO thread; blocks until the
    /// handshake is done.
    pub(super) fn connect(ws_url: &str) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let url = ws_url.to_owned();
        let io_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("chromium-cdp".to_owned())
            .spawn(move || io_thread(&url, &io_shared, rx, &ready_tx))
            .map_err(|e| format!("spawning the CDP thread: {e}"))?;
        match ready_rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Ok(())) => Ok(Self { tx, shared }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no WebSocket handshake with {ws_url} within {COMMAND_TIMEOUT:?}"
            )),
        }
    }

    /// Sends a command and waits for its answer: the `result` object, or the protocol error.
    pub(super) async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Reply {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        let _ = lock(&self.shared.pending).insert(id, reply_tx);
        // Checked after registering, so a connection that dies in between still answers the
        // waiter (the IO thread fails every pending command when it ends).
        if let Some(reason) = lock(&self.shared.dead).clone() {
            let _ = lock(&self.shared.pending).remove(&id);
            return Err(format!("the browser connection is closed ({reason})"));
        }
        let _ = self
            .tx
            .send(Outgoing::Frame(frame(id, session, method, &params)));
        match tokio::time::timeout(COMMAND_TIMEOUT, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("the browser connection closed before answering".to_owned()),
            Err(_) => {
                let _ = lock(&self.shared.pending).remove(&id);
                Err(format!("no answer within {COMMAND_TIMEOUT:?}"))
            }
        }
    }

    /// Sends a command without waiting (for `Drop`, which cannot await); its answer is ignored.
    pub(super) fn send(&self, session: Option<&str>, method: &str, params: &Value) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .tx
            .send(Outgoing::Frame(frame(id, session, method, params)));
    }

    /// Registers a page's session, so its events are recorded from now on.
    pub(super) fn register(&self, session: &str) -> Arc<PageState> {
        let state = Arc::new(PageState {
            requests: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
            loaded: Mutex::new(HashSet::new()),
            rules: Mutex::new(Rules::default()),
            changed: watch::channel(0).0,
            detached: AtomicBool::new(false),
        });
        let _ = lock(&self.shared.sessions).insert(session.to_owned(), Arc::clone(&state));
        state
    }

    /// Forgets a page's session.
    pub(super) fn unregister(&self, session: &str) {
        let _ = lock(&self.shared.sessions).remove(session);
    }

    /// Why the connection ended, if it has.
    pub(super) fn dead_reason(&self) -> Option<String> {
        lock(&self.shared.dead).clone()
    }

    /// Asks the IO thread to close the socket and end.
    pub(super) fn close(&self) {
        let _ = self.tx.send(Outgoing::Close);
    }
}

fn frame(id: u64, session: Option<&str>, method: &str, params: &Value) -> String {
    let mut msg = json!({ "id": id, "method": method, "params": params });
    if let Some(session) = session {
        msg["sessionId"] = Value::from(session);
    }
    msg.to_string()
}

// ===== the IO thread =====

fn io_thread(
    url: &str,
    shared: &Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building the CDP thread's runtime: {e}")));
            return;
        }
    };
    let reason = runtime.block_on(async {
        let mut ws = match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let msg = format!("connecting to {url}: {e}");
                let _ = ready.send(Err(msg.clone()));
                return msg;
            }
        };
        let _ = ready.send(Ok(()));
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Frame(text)) => {
                        if let Err(e) = ws.send(Message::text(text)).await {
                            return format!("sending to the browser: {e}");
                        }
                    }
                    Some(Outgoing::Close) | None => {
                        let _ = ws.close(None).await;
                        return "closed by the harness".to_owned();
                    }
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        for reply in shared.dispatch(&text) {
                            if let Err(e) = ws.send(Message::text(reply)).await {
                                return format!("sending to the browser: {e}");
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        return "the browser closed the connection (did it crash or get killed?)"
                            .to_owned();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("reading from the browser: {e}"),
                },
            }
        }
    });
    *lock(&shared.dead) = Some(reason);
    // Every waiter gets an answer: dropping its sender makes its `call` return an error.
    lock(&shared.pending).clear();
    for state in lock(&shared.sessions).values() {
        state.detached.store(true, Ordering::Relaxed);
        state.changed.send_modify(|n| *n += 1);
    }
}

// ===== impl Shared =====

impl Shared {
    /// Handles one message from the browser; returns frames to send back (answers to
    /// intercepted requests).
    fn dispatch(&self, text: &str) -> Vec<String> {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            if let Some(waiter) = lock(&self.pending).remove(&id) {
                let reply = match msg.get("error") {
                    Some(err) => Err(protocol_error(err)),
                    None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = waiter.send(reply);
            }
            return Vec::new();
        }
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = msg.get("params").unwrap_or(&Value::Null);
        let Some(session) = msg.get("sessionId").and_then(Value::as_str) else {
            // A browser-level event: only a page's detachment matters here.
            if method == "Target.detachedFromTarget" {
                if let Some(session) = params.get("sessionId").and_then(Value::as_str) {
                    if let Some(state) = lock(&self.sessions).get(session) {
                        state.detached.store(true, Ordering::Relaxed);
                        state.changed.send_modify(|n| *n += 1);
                    }
                }
            }
            return Vec::new();
        };
        let Some(state) = lock(&self.sessions).get(session).cloned() else {
            return Vec::new();
        };
        let replies = state.on_event(method, params);
        state.changed.send_modify(|n| *n += 1);
        replies
            .into_iter()
            .map(|(method, params)| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                frame(id, Some(session), method, &params)
            })
            .collect()
    }
}

fn protocol_error(err: &Value) -> String {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    match err.get("data").and_then(Value::as_str) {
        Some(data) => format!("{message} ({data})"),
        None => message.to_owned(),
    }
}

// ===== impl PageState =====

impl PageState {
    /// Records one event of the page; returns commands to send in answer.
    fn on_event(&self, method: &str, params: &Value) -> Vec<(&'static str, Value)> {
        match method {
            "Network.requestWillBeSent" => {
                lock(&self.requests).push(seen_request(params));
                Vec::new()
            }
            "Runtime.consoleAPICalled" => {
                let kind = params.get("type").and_then(Value::as_str).unwrap_or("log");
                let text = params
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|args| {
                        args.iter()
                            .map(remote_object_text)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                lock(&self.console).push(format!("{kind}: {text}"));
                Vec::new()
            }
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                let text = exception_text(details);
                lock(&self.console).push(format!("exception: {text}"));
                Vec::new()
            }
            "Page.lifecycleEvent" => {
                if params.get("name").and_then(Value::as_str) == Some("load") {
                    if let Some(loader) = params.get("loaderId").and_then(Value::as_str) {
                        let _ = lock(&self.loaded).insert(loader.to_owned());
                    }
                }
                Vec::new()
            }
            "Fetch.requestPaused" => self.on_paused(params),
            _ => Vec::new(),
        }
    }

    /// Decides what happens to an intercepted request: the newest matching fail rule answers
    /// it, else a hold rule parks it, else it goes on to the network.
    fn on_paused(&self, params: &Value) -> Vec<(&'static str, Value)> {
        let Some(id) = params.get("requestId").and_then(Value::as_str) else {
            return Vec::new();
        };
        let url = params["request"]["url"].as_str().unwrap_or_default();
        let mut rules = lock(&self.rules);
        if let Some(rule) = rules
            .fail
            .iter()
            .rev()
            .find(|r| url.contains(&r.url_substring))
        {
            if rule.status == 0 {
                return vec![(
                    "Fetch.failRequest",
                    json!({ "requestId": id, "errorReason": "ConnectionRefused" }),
                )];
            }
            let body = base64::engine::general_purpose::STANDARD.encode(&rule.body);
            return vec![(
                "Fetch.fulfillRequest",
                json!({
                    "requestId": id,
                    "responseCode": rule.status,
                    "responseHeaders": [{ "name": "Content-Type", "value": "application/json" }],
                    "body": body,
                }),
            )];
        }
        if rules.hold.iter().any(|h| url.contains(h.as_str())) {
            rules.held.push(id.to_owned());
            return Vec::new();
        }
        vec![("Fetch.continueRequest", json!({ "requestId": id }))]
    }
}

fn seen_request(params: &Value) -> SeenRequest {
    let request = &params["request"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let headers: BTreeMap<String, String> = request
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Chromium puts small bodies in `postData` and, newer, every body in `postDataEntries`
    // (base64 pieces); take whichever is there.
    let post_data = request
        .get("postData")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            let entries = request.get("postDataEntries")?.as_array()?;
            let mut bytes = Vec::new();
            for entry in entries {
                let piece = entry
                    .get("bytes")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                bytes.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(piece)
                        .ok()?,
                );
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        });
    SeenRequest {
        url: text(&request["url"]),
        method: text(&request["method"]),
        headers,
        post_data,
        resource_type: params
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("Other")
            .to_owned(),
    }
}

fn remote_object_text(obj: &Value) -> String {
    match obj.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => obj
            .get("unserializableValue")
            .or_else(|| obj.get("description"))
            .and_then(Value::as_str)
            .map_or_else(
                || {
                    obj.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("undefined")
                        .to_owned()
                },
                str::to_owned,
            ),
    }
}

/// The message of a `Runtime.ExceptionDetails`: the exception's description (message and stack)
/// when there is one, else the summary text.
pub(super) fn exception_text(details: &Value) -> String {
    details["exception"]
        .get("description")
        .and_then(Value::as_str)
        .or_else(|| details["exception"].get("value").and_then(Value::as_str))
        .or_else(|| details.get("text").and_then(Value::as_str))
        .unwrap_or("unknown exception")
        .to_owned()
}
