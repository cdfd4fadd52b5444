//! The server function in-process over real TCP sockets (issue 13 F1): read
//! timeouts on heads and bodies, and a drain that ends however clients
//! behave.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use app_metrics::AppMetrics;
use app_metrics::identity::TrustedProxyHeaders;
use axum::Router;
use axum::routing::get;
use example_dashboard::server::{ServeReport, serve};
use example_dashboard::settings::ServerSettings;
use example_dashboard::{Metrics, USAGE_EVENTS_PATH};
use support::{bounded, read_until_closed, stalled, status_of};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// A timeout the test does not expect to be reached (the behaviour under
/// test must come from another limit), in milliseconds.
const NEVER_MS: u64 = 3_600_000;

fn settings(header_ms: u64, body_ms: u64, drain_ms: u64) -> ServerSettings {
    ServerSettings {
        header_timeout: Duration::from_millis(header_ms),
        body_timeout: Duration::from_millis(body_ms),
        drain: Duration::from_millis(drain_ms),
        max_connections: 64,
    }
}

async fn metrics() -> Metrics {
    AppMetrics::memory()
        .identity(TrustedProxyHeaders)
        .configure_collector(|c| c.linger(Duration::from_millis(10)))
        .start()
        .await
        .unwrap()
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeReport>,
}

impl Server {
    async fn start(app: Router, settings: ServerSettings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, settings, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn signal_stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    async fn stopped(self) -> ServeReport {
        bounded("serve() returning", self.task).await.unwrap()
    }
}

#[tokio::test]
async fn half_a_request_head_is_disconnected_after_the_header_timeout_while_others_are_served() {
    let metrics = metrics().await;
    let mut server = Server::start(
        example_dashboard::app(&metrics),
        settings(300, 30_000, 1_000),
    )
    .await;

    let mut slow = stalled(
        server.addr,
        b"GET /api/demo/items/1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-Email: a",
    )
    .await;
    let (status, body) = support::get(server.addr, "/api/demo/items/7").await;
    assert_eq!((status, body.contains("item 7")), (200, true), "{body}");

    let sent = read_until_closed("the stalled head", &mut slow).await;
    // hyper closes the connection, with a 408 or without a word.
    assert!(
        sent.is_empty() || status_of(&sent) == Some(408),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );

    server.signal_stop();
    assert_eq!(server.stopped().await.closed_at_drain, 0);
    metrics.flush().await.unwrap();
    let s = metrics.stats();
    assert_eq!(
        (s.received, s.written),
        (1, 1),
        "only the served request reached the app: {s:?}"
    );
}

#[tokio::test]
async fn silent_connections_and_a_stalled_http2_preface_are_disconnected() {
    let metrics = metrics().await;
    let mut server = Server::start(
        example_dashboard::app(&metrics),
        settings(300, 30_000, 1_000),
    )
    .await;

    // hyper-util reads the protocol version without a timer: these would
    // stay open for ever without the server's own first-request deadline.
    let mut silent = stalled(server.addr, b"").await;
    let mut preface = stalled(server.addr, b"PRI * HTTP/2.0\r\n").await;
    assert!(
        read_until_closed("the silent connection", &mut silent)
            .await
            .is_empty()
    );
    assert!(
        read_until_closed("the stalled preface", &mut preface)
            .await
            .is_empty()
    );

    // The server still serves (the slots are free again).
    assert_eq!(support::get(server.addr, "/health").await.0, 200);
    server.signal_stop();
    assert_eq!(server.stopped().await.accepted, 3);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let metrics = metrics().await;
    let mut server = Server::start(
        example_dashboard::app(&metrics),
        settings(300, 30_000, 1_000),
    )
    .await;

    let mut conn = stalled(server.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let sent = read_until_closed("the idle keep-alive connection", &mut conn).await;
    let text = String::from_utf8_lossy(&sent);
    assert_eq!(status_of(&sent), Some(200), "{text}");
    assert!(
        text.ends_with("\r\n\r\nok"),
        "one response, then closed: {text}"
    );

    server.signal_stop();
    server.stopped().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_deadline_not_extended_by_each_byte() {
    let metrics = metrics().await;
    let mut server = Server::start(
        example_dashboard::app(&metrics),
        settings(30_000, 500, 1_000),
    )
    .await;

    let head = format!(
        "POST {USAGE_EVENTS_PATH} HTTP/1.1\r\nHost: x\r\nX-Forwarded-Email: ada@example.com\r\n\
         Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{\"events\":["
    );
    let stream = stalled(server.addr, head.as_bytes()).await;
    let (mut read, mut write) = stream.into_split();
    // A byte every 100 ms: an idle timeout of 500 ms would never fire.
    let trickle = tokio::spawn(async move {
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let status = bounded("the trickled body's answer", async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            use tokio::io::AsyncReadExt;
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        status_of(&buf)
    })
    .await;
    trickle.abort();
    assert_eq!(
        status,
        Some(400),
        "the ingest handler could not read the body"
    );

    server.signal_stop();
    server.stopped().await;
    metrics.flush().await.unwrap();
    let snap = metrics.memory_sink().unwrap().snapshot();
    assert_eq!(snap.usage_events().len(), 0);
    let statuses: Vec<u16> = snap.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400], "the refused ingest is recorded");
}

/// A router whose `/wait` route says when it is entered and answers after
/// `hold` (never, for `None`), behind the metrics layer.
fn waiting_app(metrics: &Metrics, entered: Arc<Notify>, hold: Option<Duration>) -> Router {
    Router::new()
        .route(
            "/wait",
            get(move || async move {
                entered.notify_one();
                match hold {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                "done"
            }),
        )
        .layer(metrics.layer())
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_then_closes_stalled_connections_at_the_drain_deadline()
 {
    let metrics = metrics().await;
    let entered = Arc::new(Notify::new());
    let app = waiting_app(
        &metrics,
        Arc::clone(&entered),
        Some(Duration::from_millis(300)),
    );
    // Header timeout far away: only the drain can close the stalled head.
    let mut server = Server::start(app, settings(NEVER_MS, 30_000, 1_500)).await;

    let mut slow_head = stalled(server.addr, b"GET /wait HTTP/1.1\r\nHost: x\r\n").await;
    let mut in_flight = stalled(
        server.addr,
        b"GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    bounded("the request reaching its handler", entered.notified()).await;

    server.signal_stop();
    let answer = read_until_closed("the request in flight", &mut in_flight).await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), Some(200), "{text}");
    assert!(text.ends_with("done"), "{text}");
    assert!(
        read_until_closed("the stalled head", &mut slow_head)
            .await
            .is_empty()
    );

    let addr = server.addr;
    let report = server.stopped().await;
    assert_eq!(
        (report.accepted, report.closed_at_drain),
        (2, 1),
        "{report:?}"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed once shutdown starts"
    );
    let stats = metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!((stats.received, stats.written, stats.dropped()), (1, 1, 0));
}

#[tokio::test]
async fn a_request_still_running_at_the_drain_deadline_is_cut_and_recorded_as_cancelled() {
    let metrics = metrics().await;
    let entered = Arc::new(Notify::new());
    let app = waiting_app(&metrics, Arc::clone(&entered), None);
    let mut server = Server::start(app, settings(30_000, 30_000, 200)).await;

    let mut conn = stalled(
        server.addr,
        b"GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    bounded("the request reaching its handler", entered.notified()).await;
    server.signal_stop();
    assert!(
        read_until_closed("the request cut at the drain deadline", &mut conn)
            .await
            .is_empty()
    );
    assert_eq!(server.stopped().await.closed_at_drain, 1);

    let stats = metrics.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(stats.is_consistent(), "{stats:?}");
    assert_eq!((stats.received, stats.written), (1, 1));
    let snap = metrics.memory_sink().unwrap().snapshot();
    assert_eq!(
        snap.requests()[0].status,
        499,
        "a client abort, from the server's side"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let metrics = metrics().await;
    let mut limited = settings(300, 30_000, 1_000);
    limited.max_connections = 1;
    let mut server = Server::start(example_dashboard::app(&metrics), limited).await;

    // The only slot, held by a stalled head until the header timeout.
    let mut holder = stalled(server.addr, b"GET /health HTTP/1.1\r\n").await;
    // Queued in the backlog meanwhile, and served once the slot is free.
    let (status, _) = support::get(server.addr, "/health").await;
    assert_eq!(status, 200);
    assert!(
        read_until_closed("the slot holder", &mut holder)
            .await
            .is_empty()
    );

    server.signal_stop();
    assert_eq!(server.stopped().await.accepted, 2);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let metrics = metrics().await;
    let mut server = Server::start(
        example_dashboard::app(&metrics),
        settings(10_000, 30_000, 1_000),
    )
    .await;
    let mut conn = stalled(server.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    // A SETTINGS frame with no settings: length 0, type 4, flags 0, stream 0.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut first = [0u8; 9];
    bounded("the server's SETTINGS", async {
        use tokio::io::AsyncReadExt;
        conn.read_exact(&mut first).await.unwrap();
    })
    .await;
    assert_eq!(first[3], 4, "an HTTP/2 SETTINGS frame: {first:?}");
    drop(conn);
    server.signal_stop();
    server.stopped().await;
}
