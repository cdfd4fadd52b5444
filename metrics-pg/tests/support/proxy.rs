//! A TCP proxy between the sink and PostgreSQL that loses `COMMIT`s on
//! purpose: it parses only the frontend message framing (the startup
//! packet, then 1 type byte + an i32 length) and, when armed, acts on the
//! next simple query `COMMIT`.

use std::sync::{Arc, Mutex};

use test_support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What to do with the next `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward it, let the server answer, drop the answer and close the
    /// client's connection: the server committed, the client cannot know.
    AfterCommit,
    /// Close both connections without forwarding it: the server rolls back.
    BeforeCommit,
    /// Forward it, drop the answer, keep the client's connection open and
    /// silent: the client waits until its caller gives up.
    Stall,
}

/// The running proxy; dropping it stops accepting (open relays end when
/// either side closes).
pub struct Proxy {
    port: u16,
    upstream_port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    armed: Mutex<Option<Cut>>,
    cuts: Mutex<Vec<Cut>>,
    cut_done: Notify,
    /// Sockets of stalled clients, kept open until the proxy is dropped.
    stalled: Mutex<Vec<OwnedWriteHalf>>,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 in front of `db`'s server.
    pub async fn start(db: &TestDb) -> Self {
        let config = db.pg_config();
        let upstream_port = *config.get_ports().first().unwrap_or(&5432);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            armed: Mutex::new(None),
            cuts: Mutex::new(Vec::new()),
            cut_done: Notify::new(),
            stalled: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        Self {
            port,
            upstream_port,
            state,
            accept,
        }
    }

    /// `db`'s connection string, through the proxy.
    pub fn url(&self, db: &TestDb) -> String {
        let from = format!(":{}/", self.upstream_port);
        assert!(db.url().contains(&from), "{} has no {from}", db.url());
        db.url().replacen(&from, &format!(":{}/", self.port), 1)
    }

    /// Acts on the next `COMMIT` (of any connection) as `cut` says.
    pub fn arm(&self, cut: Cut) {
        *self.state.armed.lock().unwrap() = Some(cut);
    }

    /// The cuts done so far.
    pub fn cuts(&self) -> Vec<Cut> {
        self.state.cuts.lock().unwrap().clone()
    }

    /// Waits until the armed cut has been done.
    pub async fn cut_done(&self) {
        loop {
            let notified = self.state.cut_done.notified();
            if self.state.armed.lock().unwrap().is_none() && !self.cuts().is_empty() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_rx, client_tx) = client.into_split();
    let (server_rx, mut server_tx) = server.into_split();
    // Set by the forward direction just before it acts on a COMMIT; from
    // then on the backward direction passes nothing on.
    let cutting: Arc<Mutex<Option<Cut>>> = Arc::new(Mutex::new(None));
    let backward = tokio::spawn(backward(
        server_rx,
        client_tx,
        Arc::clone(&cutting),
        Arc::clone(&state),
    ));
    if forward_startup(&mut client_rx, &mut server_tx)
        .await
        .is_err()
    {
        return;
    }
    loop {
        let Ok((kind, body)) = read_frame(&mut client_rx).await else {
            return; // the client closed: dropping the halves closes the server side
        };
        let is_commit = kind == b'Q' && body.strip_suffix(&[0]) == Some(b"COMMIT");
        let cut = if is_commit {
            state.armed.lock().unwrap().take()
        } else {
            None
        };
        let Some(cut) = cut else {
            if write_frame(&mut server_tx, kind, &body).await.is_err() {
                return;
            }
            continue;
        };
        *cutting.lock().unwrap() = Some(cut);
        if cut == Cut::BeforeCommit {
            // Both sides closed, the COMMIT never sent: the server rolls back.
            backward.abort();
            record(&state, cut);
            return;
        }
        // The backward direction reads the answer, drops it and closes (or
        // stalls) the client once the server is done.
        let _ = write_frame(&mut server_tx, kind, &body).await;
        return;
    }
}

/// Server to client, frame by frame, until a cut.
async fn backward(
    mut server_rx: OwnedReadHalf,
    mut client_tx: OwnedWriteHalf,
    cutting: Arc<Mutex<Option<Cut>>>,
    state: Arc<State>,
) {
    // The startup answer may start with one unframed byte ('N' / 'S' to an
    // SSL request); tokio-postgres with NoTls sends none, so frames only.
    let mut committed = false;
    loop {
        let Ok((kind, body)) = read_backend_frame(&mut server_rx).await else {
            return;
        };
        let cut = *cutting.lock().unwrap();
        let Some(cut) = cut else {
            if write_frame(&mut client_tx, kind, &body).await.is_err() {
                return;
            }
            continue;
        };
        // The answer to the COMMIT (CommandComplete "COMMIT", then
        // ReadyForQuery) is swallowed; once it is complete, the server has
        // committed, and the client is cut off.
        committed |= kind == b'C' && body.starts_with(b"COMMIT");
        if kind == b'Z' && committed {
            if cut == Cut::Stall {
                state.stalled.lock().unwrap().push(client_tx);
            } else {
                drop(client_tx);
            }
            record(&state, cut);
            return;
        }
    }
}

fn record(state: &State, cut: Cut) {
    state.cuts.lock().unwrap().push(cut);
    state.cut_done.notify_waiters();
}

/// The startup packet (after any SSL / GSS encryption requests, which the
/// server answers with one byte the backward relay passes on).
async fn forward_startup(rx: &mut OwnedReadHalf, tx: &mut OwnedWriteHalf) -> std::io::Result<()> {
    loop {
        let len = rx.read_i32().await?;
        let mut body = vec![0u8; usize::try_from(len).unwrap_or(0).saturating_sub(4)];
        rx.read_exact(&mut body).await?;
        tx.write_i32(len).await?;
        tx.write_all(&body).await?;
        let code = body
            .get(..4)
            .map(|c| i32::from_be_bytes(c.try_into().unwrap()));
        // 80877103 SSLRequest, 80877104 GSSENCRequest: a real startup follows.
        if !matches!(code, Some(80_877_103 | 80_877_104)) {
            return Ok(());
        }
    }
}

async fn read_frame(rx: &mut OwnedReadHalf) -> std::io::Result<(u8, Vec<u8>)> {
    let kind = rx.read_u8().await?;
    let len = rx.read_i32().await?;
    let mut body = vec![0u8; usize::try_from(len).unwrap_or(0).saturating_sub(4)];
    rx.read_exact(&mut body).await?;
    Ok((kind, body))
}

async fn write_frame(tx: &mut OwnedWriteHalf, kind: u8, body: &[u8]) -> std::io::Result<()> {
    tx.write_u8(kind).await?;
    tx.write_i32(i32::try_from(body.len() + 4).unwrap()).await?;
    tx.write_all(body).await
}

async fn read_backend_frame(rx: &mut OwnedReadHalf) -> std::io::Result<(u8, Vec<u8>)> {
    let kind = rx.read_u8().await?;
    let len = rx.read_i32().await?;
    let mut body = vec![0u8; usize::try_from(len).unwrap_or(0).saturating_sub(4)];
    rx.read_exact(&mut body).await?;
    Ok((kind, body))
}
