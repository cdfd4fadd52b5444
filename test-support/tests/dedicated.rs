//! A dedicated server can be stopped and started again, keeping its port and its data, without
//! touching the shared server.

use app_metrics_test_support::{TestDb, TestServer, tokio_postgres::NoTls};

#[tokio::test]
async fn stop_cuts_connections_and_start_brings_the_same_data_back() {
    let shared = TestDb::new().await;
    let server = TestServer::dedicated().await;
    let db = server.create_db().await;
    db.client()
        .batch_execute("create table kept (x int); insert into kept values (41), (1)")
        .await
        .unwrap();
    let port = server.cluster().unwrap().port();

    server.stop().await;
    assert!(!server.is_running());
    assert!(
        db.client().query_one("select 1", &[]).await.is_err(),
        "the old session must be cut"
    );
    let refused = db.pg_config().connect(NoTls).await;
    assert!(refused.is_err(), "new connections must fail while stopped");
    // The shared server is a different one and is unaffected.
    let one: i32 = shared
        .client()
        .query_one("select 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);

    server.start().await;
    assert!(server.is_running());
    assert_eq!(server.cluster().unwrap().port(), port);
    let client = db.connect().await;
    let sum: i64 = client
        .query_one("select sum(x) from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn stop_and_start_are_idempotent() {
    let server = TestServer::dedicated().await;
    server.start().await; // already running: nothing to do
    server.stop().await;
    server.stop().await; // already stopped: nothing to do
    server.start().await;
    let db = server.create_db().await;
    let one: i32 = db.client().query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn dropping_the_last_handle_removes_the_cluster() {
    let server = TestServer::dedicated().await;
    let db = server.create_db().await;
    let dir = server.cluster().unwrap().base_dir().to_owned();
    let url = db.url().to_owned();
    drop(server);
    // The TestDb keeps its server alive.
    assert!(dir.exists());
    db.client().query_one("select 1", &[]).await.unwrap();
    drop(db);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let gone = url
        .parse::<app_metrics_test_support::tokio_postgres::Config>()
        .unwrap()
        .connect(NoTls)
        .await;
    assert!(gone.is_err(), "the server must be down");
}

#[tokio::test]
async fn settings_reach_the_server() {
    let shared = TestDb::new().await;
    let show = |name: &'static str| {
        let client = shared.client();
        async move {
            client
                .query_one(&format!("show {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("fsync").await, "off");
    assert_eq!(show("max_connections").await, "200");
    assert_eq!(show("listen_addresses").await, "127.0.0.1");

    let bench = TestServer::dedicated_with(
        app_metrics_test_support::ClusterOptions::new()
            .fsync(true)
            .max_connections(30)
            .setting("application_name", "'from-harness'"),
    )
    .await;
    let db = bench.create_db().await;
    for (name, expected) in [
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("max_connections", "30"),
    ] {
        let got: String = db
            .client()
            .query_one(&format!("show {name}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, expected, "{name}");
    }
}

#[tokio::test]
async fn kill_crashes_the_server_and_start_recovers_committed_data() {
    let server = TestServer::dedicated().await;
    let db = server.create_db().await;
    db.client()
        // The test clusters run with synchronous_commit off (commits may sit in the WAL buffers
        // for a moment, which a crash loses); this session waits for its WAL to be written.
        .batch_execute(
            "set synchronous_commit = on; create table kept (x int); insert into kept values (42)",
        )
        .await
        .unwrap();
    let pid = server
        .cluster()
        .unwrap()
        .postmaster_pid()
        .expect("a running postmaster");

    server.kill().await;
    assert!(!server.is_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the postmaster is gone"
    );
    assert!(
        db.client().query_one("select 1", &[]).await.is_err(),
        "the old session died with the server"
    );

    server.start().await; // crash recovery on the same port
    let client = db.connect().await;
    let x: i32 = client
        .query_one("select x from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42, "a committed row survives the crash");
}
