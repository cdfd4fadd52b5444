//! The `DATABASE_URL` path: a server the harness did not start, reached by URL, still gives each
//! test a database (or, without CREATEDB, a schema) of its own, and drops it afterwards.

use app_metrics_test_support::{Isolation, TestServer};

/// A server that counts as external: a dedicated cluster reached only through its URL.
async fn external(url_of: impl Fn(&TestServer) -> String) -> (TestServer, TestServer) {
    let owner = TestServer::dedicated().await;
    let external = TestServer::from_url(url_of(&owner)).unwrap();
    assert!(external.is_external());
    (owner, external)
}

#[tokio::test]
async fn creates_and_drops_a_database_per_test() {
    let (owner, server) = external(TestServer::url).await;
    let a = server.create_db().await;
    let b = server.create_db().await;
    assert_eq!(a.isolation(), Isolation::Database);
    assert_ne!(a.name(), b.name());
    let current: String = a
        .client()
        .query_one("select current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, a.name());

    let name = a.name().to_owned();
    drop(a);
    let admin = owner.create_db().await;
    let left: i64 = admin
        .client()
        .query_one(
            "select count(*) from pg_database where datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the dropped TestDb's database must be gone");
    drop(b);
}

#[tokio::test]
async fn falls_back_to_a_schema_without_createdb() {
    let owner = TestServer::dedicated().await;
    let setup = owner.create_db().await;
    for statement in [
        "create role limited login",
        "create database limited_db owner limited",
    ] {
        setup.client().batch_execute(statement).await.unwrap();
    }
    let url = owner
        .cluster()
        .unwrap()
        .url_for("limited_db")
        .replace("postgres@", "limited@");
    let server = TestServer::from_url(url).unwrap();

    let db = server.create_db().await;
    assert_eq!(db.isolation(), Isolation::Schema);
    let schema: String = db
        .client()
        .query_one("select current_schema()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, db.name());
    db.client()
        .batch_execute("create table t (x int)")
        .await
        .unwrap();
    let other = server.create_db().await;
    let visible: Option<String> = other
        .client()
        .query_one("select to_regclass('t')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        visible, None,
        "another TestDb must not see this one's table"
    );

    let name = db.name().to_owned();
    drop(db);
    let left: i64 = other
        .client()
        .query_one(
            "select count(*) from pg_namespace where nspname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the schema must be dropped with its TestDb");
}

#[tokio::test]
async fn an_unreachable_server_fails_loudly() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let server = TestServer::from_url("postgres://postgres@127.0.0.1:1/postgres").unwrap();
    let outcome = tokio::spawn(async move { server.create_db().await }).await;
    let panic = outcome.expect_err("must panic, not skip").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("cannot connect to postgres://postgres@127.0.0.1:1/postgres"),
        "{message}"
    );
}

#[test]
fn a_bad_url_is_an_error_with_the_password_hidden() {
    let err = TestServer::from_url("postgres://u:secret@h:notaport/db").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("u:***@h"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}
