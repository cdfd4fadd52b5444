//! Serving the app over TCP, with read timeouts, a connection cap and a
//! bounded drain (issue 13 F1).
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper cannot enforce
//! its header read timeout, and it sets no body timeout. A client that sends
//! its request head a byte at a time (slowloris), or trickles a body, holds
//! its connection and buffers as long as it likes, and graceful shutdown
//! waits for it before the collector can flush. [`serve`] instead:
//!
//! - serves HTTP/1.1 and HTTP/2 (h2c, told apart by the preface) with
//!   hyper-util's `auto::Builder` and `TokioTimer`;
//! - wants each request head within `header_timeout`. hyper's
//!   `header_read_timeout` times HTTP/1 heads, counted from the connection's
//!   start or the end of the previous response, so it is also the
//!   keep-alive idle limit. Our own deadline on the connection's *first*
//!   request covers what hyper does not time: a client that sends nothing,
//!   or stops inside the HTTP/2 preface (hyper-util reads the protocol
//!   version with no timer);
//! - wants each request body whole within `body_timeout` of its head
//!   (tower-http's `RequestBodyDeadline`: a total, so trickling a byte now
//!   and then does not extend it). A handler reading the body gets an error
//!   and answers 4xx; an unread body is never waited for;
//! - serves at most `max_connections` connections at once; more wait in the
//!   listen backlog (a permit is taken before `accept`);
//! - on shutdown, stops accepting (the listener is closed), asks every
//!   connection to finish (HTTP/1: close once the response in flight is
//!   sent; HTTP/2: GOAWAY), waits at most `drain`, then closes the rest.
//!   A request cut short is recorded as cancelled by the metrics layer, so
//!   the collector's counts stay exact; the caller then shuts the collector
//!   down within its own deadline.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower_http::timeout::RequestBodyDeadline;

use crate::settings::ServerSettings;

/// How often an idle HTTP/2 connection is pinged, and how long the answer
/// may take before the connection is closed (a dead peer frees its slot).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Pause after an `accept` error that is not about one connection (such as
/// running out of file descriptors), so the loop does not spin; axum's
/// `serve` does the same.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What [`serve`] did, for the exit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections still open when the drain time ran out, closed then.
    pub closed_at_drain: usize,
}

type AppService = TowerToHyperService<RequestBodyDeadline<Router>>;

/// Serves `app` on `listener` until `shutdown` completes, then drains as the
/// [module docs](self) describe and returns. Never fails: errors of one
/// connection end that connection, and `accept` errors are retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> ServeReport {
    let builder = Arc::new(connection_builder(&settings));
    let service = TowerToHyperService::new(RequestBodyDeadline::new(app, settings.body_timeout));
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let (stop, _) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut report = ServeReport::default();

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // `biased`: once shutdown is signalled, accept nothing more.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        // The semaphore is never closed; if it were, stop serving.
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying in 1 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        report.accepted += 1;
        let _ = connections.spawn(connection(
            Arc::clone(&builder),
            stream,
            service.clone(),
            settings.header_timeout,
            stop.subscribe(),
            slot,
        ));
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }

    // Stop accepting first: connection attempts from now on are refused
    // instead of waiting in a backlog nobody reads.
    drop(listener);
    let open = connections.len();
    tracing::info!(
        open,
        drain_ms = settings.drain.as_millis(),
        "server stopping: no new connections; letting requests in flight finish"
    );
    let _ = stop.send(());
    let drained = tokio::time::timeout(settings.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        report.closed_at_drain = connections.len();
        tracing::warn!(
            closed = report.closed_at_drain,
            "drain time is over; closing the connections still open"
        );
        // Aborting a task drops its connection, which closes the socket.
        connections.shutdown().await;
    }
    report
}

/// hyper-util's builder with the timers and limits described in the
/// [module docs](self).
fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let _ = builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let _ = builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    builder
}

/// Serves one connection until it ends, its first request is late, or it is
/// closed at the end of the drain (the task is aborted). `_slot` is held
/// for as long as the connection is open.
async fn connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    service: AppService,
    header_timeout: Duration,
    mut stop: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    // As axum's `serve` does: responses are written whole, so Nagle's delay
    // would only add latency.
    let _ = stream.set_nodelay(true);
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&first_request);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        service.call(req)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let first_deadline = tokio::time::sleep(header_timeout);
    let mut first_deadline = std::pin::pin!(first_deadline);
    let (mut waiting_first, mut stopping) = (true, false);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut first_deadline, if waiting_first => {
                waiting_first = false;
                if !first_request.load(Ordering::Relaxed) {
                    tracing::debug!("no request within the header timeout; closing the connection");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            // An error means `serve` is gone: stop as well.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors that concern one connection only (it was reset before `accept`
/// took it): the listener is fine, accept the next one at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
