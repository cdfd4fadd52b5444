//! A small TCP proxy between the app and PostgreSQL whose behaviour can be
//! switched while connections are open: the faults `tc netem` would give us,
//! which these machines do not have.
//!
//! Every accepted connection gets an upstream connection and two pumps (one
//! per direction). Each pump reads a chunk, then obeys the current [`Mode`]
//! before writing it on, so a mode change takes effect at the next chunk of
//! every open connection, not only for new ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward everything at once.
    Pass,
    /// Forward every chunk after this extra latency.
    Delay(Duration),
    /// Stop forwarding in both directions, keep every socket open.
    Stall,
    /// New connections are accepted and never answered (nothing is sent
    /// upstream); open ones stall.
    Blackhole,
}

/// A running proxy; dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    resetter: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by a reset: every connection opened before watches it and
    /// closes when it changes.
    generation: watch::Sender<u64>,
    connections: AtomicU64,
}

// ===== impl Proxy =====

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, in
    /// [`Mode::Pass`].
    pub(crate) async fn start(upstream: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the proxy's address", e))?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::Pass),
            generation: watch::Sender::new(0),
            connections: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            accept,
            resetter: None,
        })
    }

    /// The address the app should connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches every connection, open or new, to `mode`.
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Closes every open connection now.
    pub(crate) fn reset_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Closes every open connection every `period` from now on (`None`
    /// stops it).
    pub(crate) fn reset_every(&mut self, period: Option<Duration>) {
        if let Some(old) = self.resetter.take() {
            old.abort();
        }
        if let Some(period) = period {
            let shared = Arc::clone(&self.shared);
            self.resetter = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await; // the first tick is immediate
                loop {
                    tick.tick().await;
                    shared.generation.send_modify(|g| *g += 1);
                }
            }));
        }
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(r) = self.resetter.take() {
            r.abort();
        }
        // Closes the connections still open.
        self.reset_all();
    }
}

// ===== connections =====

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: keep accepting, as a real
            // network would keep routing.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, Arc::clone(&shared)));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    let mut mode = shared.mode.subscribe();
    if *mode.borrow_and_update() == Mode::Blackhole {
        // Hold the socket, answer nothing, until the network "comes back"
        // (the mode changes) or a reset: then the client sees its
        // connection closed, as after a real black hole.
        tokio::select! {
            _ = mode.changed() => {}
            _ = generation.changed() => {}
        }
        return;
    }
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return; // the server is down: the client sees the connection closed
    };
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(client_r, server_w, shared.mode.subscribe());
    let down = pump(server_r, client_w, shared.mode.subscribe());
    // Either direction ending (EOF or error) or a reset closes both: the
    // halves are dropped together when this function returns.
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = generation.changed() => {}
    }
}

/// Copies `from` to `to` chunk by chunk, obeying the mode before each write.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Stall | Mode::Blackhole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn passes_stalls_and_resumes() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"ping");

        proxy.set_mode(Mode::Stall);
        s.write_all(b"held").await.unwrap();
        let mut one = [0u8; 1];
        // Not a timing assertion: whatever the machine's speed, nothing may
        // arrive while the proxy stalls; the timeout only bounds the test.
        let stalled =
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut one)).await;
        assert!(stalled.is_err(), "a stalled proxy forwarded bytes");

        proxy.set_mode(Mode::Pass);
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"held", "the held bytes arrive once the stall ends");
    }

    #[tokio::test]
    async fn reset_closes_open_connections() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a").await.unwrap(), b"a");
        proxy.reset_all();
        let mut buf = [0u8; 1];
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed by the reset");
        // New connections work again.
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s2, b"b").await.unwrap(), b"b");
        assert_eq!(proxy.connections(), 2);
    }

    #[tokio::test]
    async fn blackhole_accepts_and_never_answers() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        proxy.set_mode(Mode::Blackhole);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(200), s.read(&mut one)).await;
        assert!(r.is_err(), "a black hole answered");
        proxy.set_mode(Mode::Pass);
        let n = s.read(&mut one).await.unwrap_or(0);
        assert_eq!(n, 0, "leaving the black hole closes the held connection");
    }

    #[tokio::test]
    async fn delay_still_delivers_in_order() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        proxy.set_mode(Mode::Delay(Duration::from_millis(5)));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        for i in 0..5u8 {
            assert_eq!(round_trip(&mut s, &[i; 3]).await.unwrap(), [i; 3]);
        }
    }
}
