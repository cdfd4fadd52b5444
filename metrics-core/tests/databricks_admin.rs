//! `DatabricksAdminCheck` (and `CachedAdminCheck` around it) against a real
//! local HTTP server (wiremock) standing in for the workspace SCIM API.
#![cfg(feature = "databricks")]

use std::time::Duration;

use metrics_core::{
    AccessToken, AdminCheck, AdminCheckError, CachedAdminCheck, DatabricksAdminCheck, Identity,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ME: &str = "/api/2.0/preview/scim/v2/Me";
const TOKEN: &str = "dapi-secret-token-123";

fn caller() -> Identity {
    Identity::new("ada@example.com").with_access_token(AccessToken::new(TOKEN))
}

fn me_with_groups(groups: &[&str]) -> Value {
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| json!({"display": g, "value": "1234", "$ref": "Groups/1234"}))
        .collect();
    json!({"userName": "ada@example.com", "groups": groups})
}

/// A server answering SCIM `Me` with `body`, only for the expected token.
async fn server_answering(body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ME))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    server
}

fn check_for(server: &MockServer) -> DatabricksAdminCheck {
    DatabricksAdminCheck::builder(server.uri()).build().unwrap()
}

async fn is_admin_with_groups(groups: &[&str]) -> bool {
    let server = server_answering(me_with_groups(groups)).await;
    check_for(&server).is_admin(&caller()).await.unwrap()
}

#[tokio::test]
async fn each_default_group_makes_an_admin() {
    for group in ["admins", "workspace_admins", "administrators"] {
        assert!(is_admin_with_groups(&["users", group]).await, "{group}");
    }
}

#[tokio::test]
async fn group_names_ignore_case() {
    for group in ["ADMINS", "Admins", "Workspace_Admins", "ADMINISTRATORS"] {
        assert!(is_admin_with_groups(&[group]).await, "{group}");
    }
}

#[tokio::test]
async fn look_alike_names_are_not_admin_groups() {
    for group in [
        "admin",
        "admins-readonly",
        "not_admins",
        "workspace admins",
        "workspace_admin",
        "administrators2",
        " admins",
        "admins ",
        "users",
    ] {
        assert!(!is_admin_with_groups(&[group]).await, "{group:?}");
    }
}

#[tokio::test]
async fn missing_null_or_empty_groups_mean_no_admin() {
    for body in [
        json!({"userName": "ada@example.com"}),
        json!({"userName": "ada@example.com", "groups": null}),
        json!({"userName": "ada@example.com", "groups": []}),
        json!({"groups": [{"value": "1"}, {"display": null}]}),
    ] {
        let server = server_answering(body.clone()).await;
        assert!(
            !check_for(&server).is_admin(&caller()).await.unwrap(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn custom_admin_groups_replace_the_defaults() {
    let server = server_answering(me_with_groups(&["Platform Team"])).await;
    let check = DatabricksAdminCheck::builder(server.uri())
        .admin_groups([" data-admins ", "", "platform team"])
        .build()
        .unwrap();
    assert!(check.is_admin(&caller()).await.unwrap());

    let server = server_answering(me_with_groups(&["admins"])).await;
    let check = DatabricksAdminCheck::builder(server.uri())
        .admin_groups(["data-admins"])
        .build()
        .unwrap();
    assert!(
        !check.is_admin(&caller()).await.unwrap(),
        "a default group is not an admin group once ADMIN_GROUPS is set"
    );
}

#[tokio::test]
async fn sends_the_callers_token_and_accepts_json() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ME))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me_with_groups(&["admins"])))
        .expect(1)
        .mount(&server)
        .await;
    // Any other token gets a 401 from this server.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let check = check_for(&server);
    assert!(check.is_admin(&caller()).await.unwrap());

    let other = Identity::new("ada@example.com").with_access_token(AccessToken::new("other"));
    assert!(matches!(
        check.is_admin(&other).await,
        Err(AdminCheckError::Status { status: 401 })
    ));
}

#[tokio::test]
async fn no_token_no_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me_with_groups(&["admins"])))
        .expect(0)
        .mount(&server)
        .await;
    let err = check_for(&server)
        .is_admin(&Identity::new("ada@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminCheckError::MissingToken), "{err:?}");
}

#[tokio::test]
async fn non_success_statuses_are_errors() {
    for status in [401, 403, 404, 429, 500, 503] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(me_with_groups(&["admins"])))
            .mount(&server)
            .await;
        let err = check_for(&server).is_admin(&caller()).await.unwrap_err();
        assert!(
            matches!(err, AdminCheckError::Status { status: s } if s == status),
            "{status}: {err:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}{ME}", elsewhere.uri())),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me_with_groups(&["admins"])))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let err = check_for(&server).is_admin(&caller()).await.unwrap_err();
    assert!(
        matches!(err, AdminCheckError::Status { status: 302 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_answers_are_errors() {
    for body in [
        ResponseTemplate::new(200).set_body_string("<html>login</html>"),
        ResponseTemplate::new(200).set_body_string(""),
        ResponseTemplate::new(200).set_body_json(json!({"groups": "admins"})),
        ResponseTemplate::new(200).set_body_json(json!({"groups": [{"display": 7}]})),
        ResponseTemplate::new(200).set_body_json(json!(["admins"])),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(body)
            .mount(&server)
            .await;
        let err = check_for(&server).is_admin(&caller()).await.unwrap_err();
        assert!(
            matches!(err, AdminCheckError::InvalidResponse(_)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn oversized_answers_are_errors() {
    let server = MockServer::start().await;
    let huge = "x".repeat(DatabricksAdminCheck::MAX_RESPONSE_BYTES + 1);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"groups": [], "pad": huge})))
        .mount(&server)
        .await;
    let err = check_for(&server).is_admin(&caller()).await.unwrap_err();
    assert!(
        matches!(err, AdminCheckError::InvalidResponse(_)),
        "{err:?}"
    );
}

// Real time: the server runs on its own thread and the client's timeout is a
// real one. The wait is the 200 ms timeout, not a sleep in the test.
#[tokio::test]
async fn a_slow_workspace_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(me_with_groups(&["admins"]))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let check = DatabricksAdminCheck::builder(server.uri())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = check.is_admin(&caller()).await.unwrap_err();
    assert!(
        matches!(err, AdminCheckError::Timeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_workspace_is_an_error() {
    // Bind, note the port, close: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let check = DatabricksAdminCheck::builder(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = check.is_admin(&caller()).await.unwrap_err();
    assert!(matches!(err, AdminCheckError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn errors_never_show_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
        .mount(&server)
        .await;
    let check = check_for(&server);
    let err = check.is_admin(&caller()).await.unwrap_err();
    for shown in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{check:?}"),
        format!("{:?}", caller()),
    ] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

// ===== through the cache =====
//
// The TTL runs on Tokio's clock. The HTTP exchange needs real time (the
// client's timeout would fire at once under paused time, which auto-advances
// whenever the runtime waits for I/O), so time is paused only between
// requests: pause, advance past the TTL, resume.

async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn cached_answers_expire_after_the_ttl() {
    let server = server_answering(me_with_groups(&["admins"])).await;
    let cached = CachedAdminCheck::new(check_for(&server));
    assert!(cached.is_admin(&caller()).await.unwrap());
    assert!(cached.is_admin(&caller()).await.unwrap());
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "cache first"
    );

    jump(Duration::from_secs(299)).await;
    assert!(cached.is_admin(&caller()).await.unwrap());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    jump(Duration::from_secs(1)).await;
    assert!(cached.is_admin(&caller()).await.unwrap());
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "asked again at 300 s"
    );
}

#[tokio::test]
async fn non_admin_answers_are_cached_too() {
    let server = server_answering(me_with_groups(&["users"])).await;
    let cached = CachedAdminCheck::new(check_for(&server));
    assert!(!cached.is_admin(&caller()).await.unwrap());
    assert!(!cached.is_admin(&caller()).await.unwrap());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn api_failures_are_not_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me_with_groups(&["admins"])))
        .with_priority(2)
        .mount(&server)
        .await;
    let cached = CachedAdminCheck::new(check_for(&server));
    assert!(matches!(
        cached.is_admin(&caller()).await,
        Err(AdminCheckError::Status { status: 500 })
    ));
    assert!(
        cached.is_admin(&caller()).await.unwrap(),
        "asked again, not the cached error"
    );
}

#[tokio::test]
async fn expired_admin_plus_failing_api_is_an_error_not_the_stale_yes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me_with_groups(&["admins"])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&server)
        .await;
    let cached = CachedAdminCheck::new(check_for(&server));
    assert!(cached.is_admin(&caller()).await.unwrap());

    jump(CachedAdminCheck::<DatabricksAdminCheck>::DEFAULT_TTL).await;
    assert!(matches!(
        cached.is_admin(&caller()).await,
        Err(AdminCheckError::Status { status: 503 })
    ));
    assert!(
        cached.is_admin(&caller()).await.is_err(),
        "still failing, still no stale yes"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(me_with_groups(&["admins"]))
                // Long enough for every caller to join the one lookup.
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&server)
        .await;
    let cached = std::sync::Arc::new(CachedAdminCheck::new(check_for(&server)));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let cached = std::sync::Arc::clone(&cached);
            tokio::spawn(async move { cached.is_admin(&caller()).await })
        })
        .collect();
    for c in callers {
        assert!(c.await.unwrap().unwrap());
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
