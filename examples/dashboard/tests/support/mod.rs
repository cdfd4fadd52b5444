//! Raw TCP clients for the server tests: well-behaved ones and the hostile
//! ones F1 is about (a head or body that stalls, a connection that says
//! nothing).
//!
//! Every wait is bounded by [`LIVENESS`], a limit far above any timeout the
//! tests configure: it is not a timing assertion but what turns "the server
//! never closes this connection" (the bug) into a failure instead of a hang.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a part")]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any test waits for the server before failing.
pub const LIVENESS: Duration = Duration::from_secs(30);

/// Waits for `fut`, failing the test with `what` after [`LIVENESS`].
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIVENESS, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {LIVENESS:?}"),
    }
}

/// A connection that has sent `bytes` and then nothing more.
pub async fn stalled(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the server closes the connection (a reset counts as
/// closed); returns what it sent before.
pub async fn read_until_closed(what: &str, stream: &mut TcpStream) -> Vec<u8> {
    bounded(what, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// The status code of a response that starts `bytes`, if any.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(bytes.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads a response head (through the blank line) and returns its status.
pub async fn read_status(what: &str, stream: &mut TcpStream) -> u16 {
    bounded(what, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!(
                    "{what}: connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        status_of(&buf).unwrap_or_else(|| panic!("{what}: not a response: {buf:?}"))
    })
    .await
}

/// One request over a fresh connection (`Connection: close`); the status
/// and body.
pub async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let bytes = read_until_closed(head, &mut stream).await;
    let status = status_of(&bytes)
        .unwrap_or_else(|| panic!("{head}: no response: {:?}", String::from_utf8_lossy(&bytes)));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` over a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1"), "").await
}
