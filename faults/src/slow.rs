//! Slow clients (slowloris): connections that send a request head, or a
//! body, a byte at a time and never finish. A server without read timeouts
//! keeps each one (and its memory) for ever, and its graceful shutdown waits
//! for them (F1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::http::Failure;
use crate::ledger::{Entry, Kind, Ledger};
use crate::load::new_id;

/// A set of slow connections; dropping it closes them.
#[derive(Debug)]
pub(crate) struct SlowClients {
    tasks: JoinSet<()>,
    opened: Arc<AtomicU64>,
    closed_by_server: Arc<AtomicU64>,
}

impl SlowClients {
    /// Opens `heads` connections trickling a request head and `bodies`
    /// trickling a declared 1 MB body, one byte every `every`. Each carries
    /// a correlation id entered in `ledger` (a slow body reaches the app,
    /// which records it when the connection goes).
    pub(crate) fn start(
        addr: SocketAddr,
        heads: usize,
        bodies: usize,
        every: Duration,
        ledger: &Arc<Ledger>,
    ) -> Self {
        let opened = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for i in 0..heads + bodies {
            let (opened, closed) = (Arc::clone(&opened), Arc::clone(&closed));
            let body = i >= heads;
            let id = new_id();
            ledger.push(Entry {
                id: Some(id.clone()),
                kind: Kind::Hostile,
                told: Err(Failure::Timeout),
                latency: Duration::ZERO,
                sent_at: ledger.elapsed(),
                events: Vec::new(),
            });
            tasks.spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let (prefix, trickle): (Vec<u8>, &[u8]) = if body {
                    let head = format!(
                        "POST /api/v1/metrics/usage-events HTTP/1.1\r\nHost: {addr}\r\n\
                         X-Forwarded-Email: slow@example.com\r\nX-Correlation-ID: {id}\r\n\
                         Content-Type: application/json\r\n\
                         Content-Length: 1000000\r\n\r\n{{\"events\":["
                    );
                    (head.into_bytes(), b" ")
                } else {
                    let head =
                        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: {id}\r\n");
                    (head.into_bytes(), b"X")
                };
                if s.write_all(&prefix).await.is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let mut buf = [0u8; 512];
                loop {
                    tokio::select! {
                        _ = s.read(&mut buf) => {
                            // The server answered (408), closed or reset: either way
                            // it let go of the connection.
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        () = tokio::time::sleep(every) => {
                            if s.write_all(trickle).await.is_err() {
                                closed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            });
        }
        Self {
            tasks,
            opened,
            closed_by_server: closed,
        }
    }

    /// Connections opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections the server closed (or answered).
    pub(crate) fn closed_by_server(&self) -> u64 {
        self.closed_by_server.load(Ordering::Relaxed)
    }

    /// Closes every connection still open.
    pub(crate) fn stop(mut self) {
        self.tasks.abort_all();
    }
}
