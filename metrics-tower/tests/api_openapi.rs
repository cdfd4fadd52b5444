//! The OpenAPI document against the server: every (path, method, status)
//! it lists is driven out of the router by a table of requests, and each
//! body is validated against the documented schema (JSON Schema 2020-12,
//! component `$ref`s resolved); the table has no case the document lacks;
//! paths and methods the document does not list answer 404 / 405. The
//! served document carries the API's configured vocabulary and limits, and
//! every refusal of a request its schemas allow is one its prose states,
//! with the exact message.

#![cfg(feature = "axum")]

mod api_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use api_support::*;
use axum::body::Body;
use http::{Method, Request};
use metrics_core::{RequestRecord, Route, SharedAdminCheck, UsageEvent, UserId};
use metrics_tower::axum::api::MetricsApi;
use metrics_tower::axum::api::{DEFAULT_EVENT_TYPES, OPENAPI_JSON};
use serde_json::{Value, json};

/// Which app a request goes to.
#[derive(Clone, Copy, Debug)]
enum App {
    /// Memory store with some data in range.
    Seeded,
    /// Empty memory store.
    Empty,
    /// The admin check fails.
    BrokenAdmins,
    /// Every query times out.
    TimeoutStore,
    /// Every query fails internally.
    InternalStore,
    /// The ingest queue holds one record and is never drained.
    FullQueue,
}

async fn send(app: App, req: Request<Body>) -> Answer {
    let h = match app {
        App::Seeded | App::Empty => Harness::new(),
        App::BrokenAdmins => Harness::custom(
            None,
            Some(SharedAdminCheck::new(BrokenAdmins)),
            None,
            |api| api,
        ),
        App::TimeoutStore => {
            Harness::custom(Some(Arc::new(FailingQuery(timeout))), None, None, |api| api)
        }
        App::InternalStore => {
            Harness::custom(Some(Arc::new(FailingQuery(internal))), None, None, |api| {
                api
            })
        }
        App::FullQueue => {
            let (stalled, worker) = stalled_collector(1);
            let h = Harness::custom(None, None, Some(stalled), |api| api);
            let a = h.send(req).await;
            drop(worker);
            return a;
        }
    };
    if matches!(app, App::Seeded) {
        seed(&h);
    }
    h.send(req).await
}

fn seed(h: &Harness) {
    for (ago, status, ms) in [(60, 200, 12), (600, 500, 80), (4_000, 201, 30)] {
        h.store.insert(
            RequestRecord::new(
                now() - secs(ago),
                Route::from_static("/items/{id}"),
                metrics_core::Method::GET,
                status,
                std::time::Duration::from_millis(ms),
            )
            .with_user(Some(UserId::new(USER))),
        );
    }
    h.store.insert(
        UsageEvent::new("page_view", UserId::new(USER), now() - secs(30))
            .with_page_name(Some("/home".into())),
    );
}

fn admin_get(q: &str) -> Request<Body> {
    get(q, Some(ADMIN))
}

/// Requests that must produce `status` on `path` / `method`.
type Case = ((&'static str, &'static str, u16), Vec<(App, Request<Body>)>);

/// Every case of the document. Every request of a case is sent and
/// validated.
fn cases() -> Vec<Case> {
    let mut table = Vec::new();
    // Each path with its required parameters, ready for more after `&`.
    for (path, base) in [
        ("/performance", "/performance?"),
        ("/usage", "/usage?"),
        ("/time-series", "/time-series?metric_type=performance&"),
        ("/requests", "/requests?endpoint=/items/%7Bid%7D&"),
    ] {
        table.extend(report_cases(path, base));
    }
    table.extend(usage_count_cases());
    table.extend(usage_events_cases());
    table.push((
        ("/openapi.json", "get", 200),
        vec![(App::Empty, get("/openapi.json", None))],
    ));
    table
}

/// A query string whose end is before its start.
fn bad_range() -> String {
    format!(
        "?start_date={}&end_date={}",
        ts(now() - secs(60)),
        ts(now() - secs(120))
    )
}

/// The cases of one admin report: `path` with its required parameters in
/// `base`.
fn report_cases(path: &'static str, base: &'static str) -> Vec<Case> {
    vec![
        ((path, "get", 200), report_answers(path, base)),
        (
            (path, "get", 400),
            vec![(
                App::Empty,
                admin_get(&format!("{base}{}", &bad_range()[1..])),
            )],
        ),
        ((path, "get", 401), vec![(App::Empty, get(base, None))]),
        (
            (path, "get", 403),
            vec![(App::Empty, get(base, Some(USER)))],
        ),
        ((path, "get", 422), report_unreadable(path, base)),
        (
            (path, "get", 500),
            vec![(App::InternalStore, admin_get(base))],
        ),
        (
            (path, "get", 503),
            vec![
                (App::TimeoutStore, admin_get(base)),
                (App::BrokenAdmins, admin_get(base)),
            ],
        ),
    ]
}

/// Requests a report answers with 200.
fn report_answers(path: &str, base: &str) -> Vec<(App, Request<Body>)> {
    let mut ok = vec![
        (App::Seeded, admin_get(base)),
        (App::Empty, admin_get(base)),
        (App::Seeded, admin_get(&format!("{base}time_range=90d"))),
    ];
    if path == "/time-series" {
        for q in ["?metric_type=usage", "?metric_type=both&interval=hourly"] {
            ok.push((App::Seeded, admin_get(&format!("{path}{q}"))));
        }
    }
    if path == "/time-series" {
        // The drill-down filters.
        for q in [
            "?metric_type=both&endpoint=/items/%7Bid%7D",
            "?metric_type=performance&endpoint=/items/%7Bid%7D&method=GET&time_range=7d",
        ] {
            ok.push((App::Seeded, admin_get(&format!("{path}{q}"))));
        }
    }
    if path == "/requests" {
        for q in ["&method=GET&limit=1", "&time_range=30d", "&method=POST"] {
            ok.push((App::Seeded, admin_get(&format!("{base}{}", &q[1..]))));
        }
    }
    ok
}

/// Requests whose parameters a report cannot read (422).
fn report_unreadable(path: &str, base: &str) -> Vec<(App, Request<Body>)> {
    let mut unreadable = vec![(App::Empty, admin_get(&format!("{base}time_range=2w")))];
    if path == "/performance" {
        // At most 500 characters.
        let long = format!("{base}endpoint=/{}", "a".repeat(500));
        unreadable.push((App::Empty, admin_get(&long)));
    }
    if path == "/time-series" {
        // `metric_type` is required.
        unreadable.push((App::Empty, admin_get(path)));
    }
    if path == "/requests" {
        // `endpoint` is required; `limit` is 1..=100.
        unreadable.push((App::Empty, admin_get(path)));
        unreadable.push((App::Empty, admin_get(&format!("{base}limit=101"))));
    }
    unreadable
}

/// The cases of `GET /usage/count` (any signed-in user).
fn usage_count_cases() -> Vec<Case> {
    let count = "/usage/count";
    vec![
        (
            (count, "get", 200),
            vec![
                (App::Seeded, get(count, Some(USER))),
                (App::Empty, get(count, Some(ADMIN))),
            ],
        ),
        (
            (count, "get", 400),
            vec![(
                App::Empty,
                get(&format!("{count}{}", bad_range()), Some(USER)),
            )],
        ),
        ((count, "get", 401), vec![(App::Empty, get(count, None))]),
        (
            (count, "get", 422),
            vec![(App::Empty, get(&format!("{count}?end_date=x"), Some(USER)))],
        ),
        (
            (count, "get", 500),
            vec![(App::InternalStore, get(count, Some(USER)))],
        ),
        (
            (count, "get", 503),
            vec![(App::TimeoutStore, get(count, Some(USER)))],
        ),
    ]
}

/// The cases of `POST /usage-events`.
fn usage_events_cases() -> Vec<Case> {
    let events = "/usage-events";
    let one = || batch(&[event("page_view", secs(1))]);
    let json_ct = Some("application/json");
    let too_many: Vec<Value> = (0..1001).map(|_| event("form_submit", secs(1))).collect();
    vec![
        (
            (events, "post", 202),
            vec![
                (App::Empty, post(Some(USER), json_ct, one())),
                (App::Empty, post(Some(USER), Some("text/plain"), one())),
            ],
        ),
        (
            (events, "post", 400),
            vec![(App::Empty, post(Some(USER), json_ct, "{"))],
        ),
        (
            (events, "post", 401),
            vec![(App::Empty, post(None, json_ct, one()))],
        ),
        (
            (events, "post", 413),
            vec![
                (App::Empty, post(Some(USER), json_ct, batch(&too_many))),
                (
                    App::Empty,
                    post(Some(USER), json_ct, vec![b' '; 1024 * 1024 + 1]),
                ),
            ],
        ),
        (
            (events, "post", 415),
            vec![(App::Empty, post(Some(USER), Some("application/xml"), one()))],
        ),
        (
            (events, "post", 422),
            vec![
                (
                    App::Empty,
                    post(Some(USER), json_ct, batch(&[json!({"event_type": "nope"})])),
                ),
                (App::Empty, post(Some(USER), json_ct, batch(&[]))),
            ],
        ),
        (
            (events, "post", 503),
            vec![(
                App::FullQueue,
                post(
                    Some(USER),
                    json_ct,
                    batch(&[event("form_submit", secs(1)), event("form_submit", secs(2))]),
                ),
            )],
        ),
    ]
}

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Follows a local `$ref` (`#/components/...`) in the document.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("only local $refs");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => node,
    }
}

/// A validator for `schema` with the document's components beside it, so
/// `#/components/schemas/...` references resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.as_object().expect("schema object").clone();
    root.insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("schema does not compile: {e}: {schema}"))
}

fn documented(doc: &Value) -> BTreeSet<(String, String, u16)> {
    let mut set = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().unwrap().keys() {
                set.insert((path.clone(), method.clone(), status.parse().unwrap()));
            }
        }
    }
    set
}

#[tokio::test]
async fn every_documented_status_is_served_with_its_schema() {
    let doc = document();
    let documented = documented(&doc);
    let table = cases();
    let tabled: BTreeSet<(String, String, u16)> = table
        .iter()
        .map(|((p, m, s), _)| ((*p).to_owned(), (*m).to_owned(), *s))
        .collect();
    assert_eq!(tabled.len(), table.len(), "a case is listed twice");
    let undocumented: Vec<_> = tabled.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let untested: Vec<_> = documented.difference(&tabled).collect();
    assert!(
        untested.is_empty(),
        "documented but not driven: {untested:?}"
    );

    for ((path, method, status), requests) in table {
        let response = resolve(
            &doc,
            &doc["paths"][path][method]["responses"][status.to_string()],
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{path} {method} {status}: no JSON schema"
        );
        let validator = validator(&doc, schema);
        for (app, req) in requests {
            let what = format!("{method} {} ({app:?})", req.uri());
            let answer = send(app, req).await;
            assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.text);
            assert_eq!(answer.headers["content-type"], "application/json", "{what}");
            let body = answer.json();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{what}: {errors:?} in {body}");
        }
    }
}

#[tokio::test]
async fn schemas_reject_what_the_server_must_not_send() {
    // The validation above can fail: the schemas are strict.
    let doc = document();
    let perf = validator(
        &doc,
        &json!({"$ref": "#/components/schemas/PerformanceResponse"}),
    );
    let body = send(App::Seeded, admin_get("/performance")).await.json();
    assert!(perf.is_valid(&body));
    let mut extra = body.clone();
    extra["surprise"] = json!(1);
    assert!(!perf.is_valid(&extra), "additionalProperties: false");
    let mut missing = body.clone();
    missing["metrics"]
        .as_object_mut()
        .unwrap()
        .remove("p99_response_time_ms");
    assert!(!perf.is_valid(&missing), "required fields");
    let mut date = body;
    date["start_date"] = json!("yesterday");
    assert!(!perf.is_valid(&date), "date-time format");
    let accepted = validator(
        &doc,
        &json!({"$ref": "#/components/schemas/UsageEventsAccepted"}),
    );
    assert!(!accepted.is_valid(&json!({"message":"ok","events_received":1,"status":"queued"})));
}

#[test]
fn every_component_schema_is_valid_json_schema_and_requests_match_theirs() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        jsonschema::meta::validate(schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        validator(&doc, schema);
        if schema["type"] == "object" && schema.get("properties").is_some() {
            let required = schema["required"].as_array();
            assert!(required.is_some(), "{name} has no required list");
        }
    }
    // The request body schema accepts what the browser tracker sends and
    // refuses an empty or over-sized batch.
    let request = validator(
        &doc,
        &json!({"$ref": "#/components/schemas/UsageEventBatch"}),
    );
    let sample: Value = serde_json::from_str(&batch(&[event("page_view", secs(1))])).unwrap();
    assert!(request.is_valid(&sample));
    assert!(!request.is_valid(&json!({"events": []})));
}

#[tokio::test]
async fn nothing_is_served_that_the_document_lacks() {
    let doc = document();
    let paths = doc["paths"].as_object().unwrap();
    let h = Harness::new();
    // The mount point itself belongs to the app (axum routes `/api/v1/metrics`
    // and `/api/v1/metrics/` to the outer router's fallback): 404, whatever body.
    for path in ["", "/"] {
        assert_eq!(h.get(path, Some(ADMIN)).await.status, 404, "{path:?}");
    }
    for path in [
        "/metrics",
        "/performance/",
        "/performance/x",
        "/usage/",
        "/usage/count/x",
        "/usage-event",
        "/events",
        "/openapi.yaml",
        "/time_series",
    ] {
        assert!(!paths.contains_key(path));
        for user in [None, Some(ADMIN)] {
            let a = h.get(path, user).await;
            assert_eq!(a.status, 404, "{path}: {}", a.text);
            a.assert_error(404);
        }
    }
    // HEAD is implied by GET, so it is not a method of its own here.
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    for (path, item) in paths {
        let allowed: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in &methods {
            if allowed.contains(&method.to_string()) {
                continue;
            }
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("{BASE}{path}"))
                .header("x-forwarded-email", ADMIN)
                .body(Body::empty())
                .unwrap();
            let a = h.send(req).await;
            assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
            a.assert_error(405);
            assert_eq!(
                a.headers["allow"]
                    .to_str()
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap(),
                allowed[0]
            );
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_file() {
    let a = Harness::new().get("/openapi.json", None).await;
    assert_eq!(a.text, OPENAPI_JSON);
}

const EVENT_TYPE_ENUM: &str = "/components/schemas/UsageEvent/properties/event_type/enum";
const MAX_BODY: &str = "/paths/~1usage-events/post/requestBody/x-max-body-bytes";
const WINDOW: &str = "/components/schemas/UsageEvent/properties/timestamp/x-accepted-window";

/// The document the API of `h` serves.
async fn served(h: &Harness) -> Value {
    let a = h.get("/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    a.json()
}

fn schema_of(doc: &Value, name: &str) -> jsonschema::Validator {
    validator(
        doc,
        &json!({ "$ref": format!("#/components/schemas/{name}") }),
    )
}

#[tokio::test]
async fn the_served_document_lists_the_configured_event_types() {
    let h = Harness::with(|api| api.allow_event_types(["checkout"]));
    let doc = served(&h).await;
    let mut expected: Vec<&str> = DEFAULT_EVENT_TYPES.to_vec();
    expected.push("checkout");
    expected.sort_unstable();
    assert_eq!(doc.pointer(EVENT_TYPE_ENUM).unwrap(), &json!(expected));

    // A real batch of the new type: valid for the served document, accepted
    // by the server (JSON and beacon), and the answer matches the document.
    let body = batch(&[event("checkout", secs(1))]);
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert!(schema_of(&doc, "UsageEventBatch").is_valid(&sent));
    let op = &doc["paths"]["/usage-events"]["post"];
    for ct in ["application/json", "text/plain"] {
        let request = validator(&doc, &op["requestBody"]["content"][ct]["schema"]);
        assert!(request.is_valid(&sent), "{ct}");
        let a = h.send(post(Some(USER), Some(ct), body.clone())).await;
        assert_eq!(a.status, 202, "{ct}: {}", a.text);
        let accepted = validator(
            &doc,
            &op["responses"]["202"]["content"]["application/json"]["schema"],
        );
        assert!(accepted.is_valid(&a.json()), "{ct}: {}", a.text);
    }
    assert_eq!(h.stored_events().await.len(), 2);

    // The committed document (the defaults) refuses that batch, as a server
    // with the default vocabulary does; the served one refuses what this
    // server refuses.
    assert!(!schema_of(&document(), "UsageEventBatch").is_valid(&sent));
    let a = Harness::new().post_events(Some(USER), body).await;
    assert!(
        a.assert_error(422)
            .starts_with("Invalid event_type: 'checkout'")
    );
    let nope: Value = serde_json::from_str(&batch(&[event("nope", secs(1))])).unwrap();
    assert!(!schema_of(&doc, "UsageEventBatch").is_valid(&nope));
    h.post_events(Some(USER), nope.to_string())
        .await
        .assert_error(422);
}

#[tokio::test]
async fn the_served_document_carries_the_configured_limits() {
    let too_long = "t".repeat(101);
    let configure = |api: MetricsApi| {
        api.event_types(["only", too_long.as_str()])
            .max_body_bytes(4096)
            .clock_skew(secs(60), secs(3_600))
    };
    let h = Harness::with(configure);
    let mut doc = served(&h).await;
    // A type over 100 characters can never be accepted, so it is not offered.
    assert_eq!(doc.pointer(EVENT_TYPE_ENUM).unwrap(), &json!(["only"]));
    assert_eq!(doc.pointer(MAX_BODY).unwrap(), &json!(4096));
    assert_eq!(
        doc.pointer(WINDOW).unwrap(),
        &json!({"before_seconds": 3600, "after_seconds": 60})
    );
    // The server keeps them.
    let body = format!(r#"{{"events":[],"pad":"{}"}}"#, "x".repeat(4096));
    let message = h.post_events(Some(USER), body).await.assert_error(413);
    assert_eq!(message, "The request body exceeds the limit of 4096 bytes");
    let late = batch(&[event("only", secs(3_601))]);
    let message = h.post_events(Some(USER), late).await.assert_error(422);
    assert!(
        message.starts_with("timestamp must not be more than 1 h before"),
        "{message}"
    );
    // Everything else is the committed document; `openapi_json` is what is served.
    let api = configure(MetricsApi::new(
        Arc::new(metrics_core::MemorySink::new()),
        h.collector.clone(),
        SharedAdminCheck::new(metrics_core::StaticAdmins::new([ADMIN])),
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&api.openapi_json()).unwrap(),
        doc
    );
    let committed = document();
    for pointer in [EVENT_TYPE_ENUM, MAX_BODY, WINDOW] {
        *doc.pointer_mut(pointer).unwrap() = committed.pointer(pointer).unwrap().clone();
    }
    assert_eq!(doc, committed);
}

/// Every description in the document, for the prose checks.
fn prose(doc: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == "description" => {
                            out.push_str(s);
                            out.push('\n');
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(doc, &mut out);
    out
}

/// Whether the query of `uri` keeps the documented parameters of `path`'s
/// GET operation: each value valid for its parameter's schema (an empty
/// value where `allowEmptyValue` says so), the required ones present.
fn query_is_valid(doc: &Value, path: &str, uri: &str) -> bool {
    let op = &doc["paths"][path]["get"];
    let params: Vec<&Value> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| resolve(doc, p))
        .collect();
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.replace("%2B", "+").replace("%3A", ":"))
        })
        .collect();
    let required_present = params
        .iter()
        .filter(|p| p["required"] == true)
        .all(|p| pairs.iter().any(|(k, _)| p["name"] == k.as_str()));
    required_present
        && pairs.iter().all(|(k, v)| {
            let Some(p) = params.iter().find(|p| p["name"] == k.as_str()) else {
                return true; // unknown parameters are ignored
            };
            (v.is_empty() && p["allowEmptyValue"] == true)
                || validator(doc, &p["schema"]).is_valid(&json!(v))
        })
}

#[tokio::test]
async fn every_refusal_of_a_schema_valid_request_is_explained_in_the_document() {
    let doc = served(&Harness::new()).await;
    let text = prose(&doc);
    let explained = |message: &str, what: &str| {
        assert!(
            text.contains(message),
            "{what}: the document does not state {message:?}"
        );
    };
    let range = |start: std::time::SystemTime, end: std::time::SystemTime| {
        format!("start_date={}&end_date={}", ts(start), ts(end))
    };
    // Reads: each rule JSON Schema cannot express, on every read endpoint.
    let reads = [
        (format!("end_date={}", ts(now())), 422),
        (format!("start_date={}", ts(now() - DAY)), 422),
        (range(now() - DAY, now() - DAY), 400),
        (range(now() - DAY, now() + secs(120)), 400),
        (range(now() - 91 * DAY, now() - secs(600)), 400),
        (range(now() - 90 * DAY - secs(120), now() - 89 * DAY), 400),
    ];
    let mut rules = BTreeSet::new();
    for path in [
        "/performance",
        "/usage",
        "/time-series",
        "/requests",
        "/usage/count",
    ] {
        for (query, status) in &reads {
            let mut uri = format!("{path}?{query}");
            if path == "/time-series" {
                uri.push_str("&metric_type=both");
            }
            if path == "/requests" {
                uri.push_str("&endpoint=/items/%7Bid%7D");
            }
            assert!(query_is_valid(&doc, path, &uri), "{uri} breaks the schemas");
            let message = Harness::new()
                .get(&uri, Some(ADMIN))
                .await
                .assert_error(*status);
            explained(&message, &uri);
            rules.insert(message);
        }
    }
    assert_eq!(rules.len(), 6, "each case breaks another rule: {rules:?}");
    // The drill-down's rules: a method without an endpoint, and a filtered
    // 5-minute series from before the raw retention.
    for (uri, status) in [
        ("/time-series?metric_type=performance&method=GET", 422),
        (
            "/time-series?metric_type=performance&endpoint=/items/%7Bid%7D&interval=5min&time_range=30d",
            400,
        ),
    ] {
        assert!(
            query_is_valid(&doc, "/time-series", uri),
            "{uri} breaks the schemas"
        );
        let message = Harness::new()
            .get(uri, Some(ADMIN))
            .await
            .assert_error(status);
        explained(&message, uri);
    }
    // Schema-invalid drill-down parameters are refused with the message the
    // document states.
    for (path, uri) in [
        ("/requests", "/requests?endpoint="),
        ("/requests", "/requests?endpoint=/a&limit=0"),
        ("/requests", "/requests?endpoint=/a&limit=101"),
        (
            "/time-series",
            "/time-series?metric_type=performance&endpoint=/a&method=MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM",
        ),
    ] {
        assert!(!query_is_valid(&doc, path, uri), "{uri} keeps the schemas");
        let message = Harness::new().get(uri, Some(ADMIN)).await.assert_error(422);
        explained(message.split(" (got ").next().unwrap(), uri);
    }
    // Schema-invalid reads are refused too (here the schema says it all).
    let long = format!("/performance?endpoint=/{}", "a".repeat(500));
    assert!(!query_is_valid(&doc, "/performance", &long));
    let message = Harness::new()
        .get(&long, Some(ADMIN))
        .await
        .assert_error(422);
    explained(message.split(" (got ").next().unwrap(), "endpoint");

    // Events: the timestamp window and the metadata limits.
    let nested = (1..11).fold(json!({}), |v, _| json!({ "a": v })); // 11 levels
    let with = |field: &str, value: Value| {
        let mut e = event("page_view", secs(1));
        e[field] = value;
        e
    };
    let events = [
        with("timestamp", json!(ts(now() - DAY - secs(60)))),
        with("timestamp", json!(ts(now() + secs(360)))),
        with("metadata", nested),
        with("metadata", json!({ "k": "x".repeat(16 * 1024) })),
        with("page_name", json!("a\u{0}b")),
        with("element_id", json!("\u{0}")),
        with("metadata", json!({ "a": { "k\u{0}": 1 } })),
        with("metadata", json!({ "a": ["\u{0}"] })),
    ];
    let request = schema_of(&doc, "UsageEventBatch");
    for e in events {
        let body = batch(std::slice::from_ref(&e));
        let sent: Value = serde_json::from_str(&body).unwrap();
        assert!(request.is_valid(&sent), "{e} breaks the schemas");
        let a = Harness::new().post_events(Some(USER), body).await;
        a.assert_error(422);
        let problem = &a.json()["details"]["errors"][0]["message"];
        explained(problem.as_str().unwrap(), &e.to_string());
    }
    // A schema-valid batch over the body limit.
    let big = "p".repeat(255);
    let full: Vec<Value> = (0..1000)
        .map(|_| with("page_name", json!(big)))
        .map(|mut e| {
            e["element_id"] = json!(big);
            e["metadata"] = json!({ "note": "m".repeat(600) });
            e
        })
        .collect();
    let body = batch(&full);
    assert!(body.len() > 1024 * 1024);
    assert!(request.is_valid(&serde_json::from_str::<Value>(&body).unwrap()));
    let message = Harness::new()
        .post_events(Some(USER), body)
        .await
        .assert_error(413);
    assert_eq!(
        message,
        "The request body exceeds the limit of 1048576 bytes"
    );
    explained(
        "The request body exceeds the limit of N bytes",
        "body limit",
    );
}
