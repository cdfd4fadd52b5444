//! The OpenAPI document against the server: every (path, method, status)
//! it lists is driven out of the router by a table of requests, and each
//! body is validated against the documented schema (JSON Schema 2020-12,
//! component `$ref`s resolved); the table has no case the document lacks;
//! paths and methods the document does not list answer 404 / 405.

#![cfg(feature = "axum")]

mod api_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use api_support::*;
use axum::body::Body;
use http::{Method, Request};
use metrics_core::{RequestRecord, Route, SharedAdminCheck, UsageEvent, UserId};
use metrics_tower::axum::api::OPENAPI_JSON;
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

/// Requests that must produce `status` on `path` / `method`. Every request
/// of a case is sent and validated.
fn cases() -> Vec<((&'static str, &'static str, u16), Vec<(App, Request<Body>)>)> {
    let bad_range = || {
        format!(
            "?start_date={}&end_date={}",
            ts(now() - secs(60)),
            ts(now() - secs(120))
        )
    };
    let mut table = Vec::new();
    // Each path with its required parameters, ready for more after `&`.
    for (path, base) in [
        ("/performance", "/performance?"),
        ("/usage", "/usage?"),
        ("/time-series", "/time-series?metric_type=performance&"),
    ] {
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
        table.push(((path, "get", 200), ok));
        table.push((
            (path, "get", 400),
            vec![(
                App::Empty,
                admin_get(&format!("{base}{}", &bad_range()[1..])),
            )],
        ));
        table.push(((path, "get", 401), vec![(App::Empty, get(base, None))]));
        table.push((
            (path, "get", 403),
            vec![(App::Empty, get(base, Some(USER)))],
        ));
        let mut unreadable = vec![(App::Empty, admin_get(&format!("{base}time_range=2w")))];
        if path == "/time-series" {
            // `metric_type` is required.
            unreadable.push((App::Empty, admin_get(path)));
        }
        table.push(((path, "get", 422), unreadable));
        table.push((
            (path, "get", 500),
            vec![(App::InternalStore, admin_get(base))],
        ));
        table.push((
            (path, "get", 503),
            vec![
                (App::TimeoutStore, admin_get(base)),
                (App::BrokenAdmins, admin_get(base)),
            ],
        ));
    }

    let count = "/usage/count";
    table.push((
        (count, "get", 200),
        vec![
            (App::Seeded, get(count, Some(USER))),
            (App::Empty, get(count, Some(ADMIN))),
        ],
    ));
    table.push((
        (count, "get", 400),
        vec![(
            App::Empty,
            get(&format!("{count}{}", bad_range()), Some(USER)),
        )],
    ));
    table.push(((count, "get", 401), vec![(App::Empty, get(count, None))]));
    table.push((
        (count, "get", 422),
        vec![(App::Empty, get(&format!("{count}?end_date=x"), Some(USER)))],
    ));
    table.push((
        (count, "get", 500),
        vec![(App::InternalStore, get(count, Some(USER)))],
    ));
    table.push((
        (count, "get", 503),
        vec![(App::TimeoutStore, get(count, Some(USER)))],
    ));

    let events = "/usage-events";
    let one = || batch(&[event("page_view", secs(1))]);
    let json_ct = Some("application/json");
    table.push((
        (events, "post", 202),
        vec![
            (App::Empty, post(Some(USER), json_ct, one())),
            (App::Empty, post(Some(USER), Some("text/plain"), one())),
        ],
    ));
    table.push((
        (events, "post", 400),
        vec![(App::Empty, post(Some(USER), json_ct, "{"))],
    ));
    table.push((
        (events, "post", 401),
        vec![(App::Empty, post(None, json_ct, one()))],
    ));
    let too_many: Vec<Value> = (0..1001).map(|_| event("form_submit", secs(1))).collect();
    table.push((
        (events, "post", 413),
        vec![
            (App::Empty, post(Some(USER), json_ct, batch(&too_many))),
            (
                App::Empty,
                post(Some(USER), json_ct, vec![b' '; 1024 * 1024 + 1]),
            ),
        ],
    ));
    table.push((
        (events, "post", 415),
        vec![(App::Empty, post(Some(USER), Some("application/xml"), one()))],
    ));
    table.push((
        (events, "post", 422),
        vec![
            (
                App::Empty,
                post(Some(USER), json_ct, batch(&[json!({"event_type": "nope"})])),
            ),
            (App::Empty, post(Some(USER), json_ct, batch(&[]))),
        ],
    ));
    table.push((
        (events, "post", 503),
        vec![(
            App::FullQueue,
            post(
                Some(USER),
                json_ct,
                batch(&[event("form_submit", secs(1)), event("form_submit", secs(2))]),
            ),
        )],
    ));

    table.push((
        ("/openapi.json", "get", 200),
        vec![(App::Empty, get("/openapi.json", None))],
    ));
    table
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
