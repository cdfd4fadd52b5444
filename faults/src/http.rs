//! A minimal HTTP/1.1 client over a tokio `TcpStream`: one request per
//! connection (`Connection: close`), the response read to EOF.
//!
//! Our own, not hyper's, because the hostile scenarios must send bytes no
//! well-behaved client would (duplicate headers, broken framing, heads a
//! byte at a time), and because "what the client was told" must include the
//! raw failures (refused, reset, timed out) that a pooled client hides.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The parts of a response the harness looks at.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// Header names (lower case) and values, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, as sent (a chunked body is not decoded).
    pub(crate) body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection was refused (nothing listening).
    Refused,
    /// The connection broke before a complete response head arrived.
    Broken,
    /// No complete response within the timeout.
    Timeout,
    /// Bytes arrived that are not an HTTP/1.x response.
    Garbled,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused",
            Self::Broken => "broken",
            Self::Timeout => "timeout",
            Self::Garbled => "garbled",
        })
    }
}

impl Response {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A request under construction: the request line and headers; `Host` and
/// `Connection: close` are added by [`Request::bytes`].
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: &'static str,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A `GET` of `target` (path and query).
    pub(crate) fn get(target: impl Into<String>) -> Self {
        Self {
            method: "GET",
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `POST` of `body` to `target`, with its `Content-Length`.
    pub(crate) fn post(target: impl Into<String>, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            method: "POST",
            target: target.into(),
            headers: vec![("Content-Type".to_owned(), content_type.as_bytes().to_vec())],
            body,
        }
    }

    /// A `POST` of `body` with no `Content-Type` (hostile cases add their own).
    pub(crate) fn post_untyped(target: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            method: "POST",
            target: target.into(),
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header, raw bytes allowed (and repeated names kept).
    #[must_use]
    pub(crate) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// The request as it goes on the wire.
    pub(crate) fn bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\n",
            self.method, self.target
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.method == "POST" {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends `req` to `addr` on a fresh connection and reads the response to
/// EOF, all within `timeout`.
pub(crate) async fn send(
    addr: SocketAddr,
    req: &Request,
    timeout: Duration,
) -> Result<Response, Failure> {
    send_raw(addr, &req.bytes(addr), timeout).await
}

/// Sends raw bytes as a request (see [`send`]).
pub(crate) async fn send_raw(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Response, Failure> {
    match tokio::time::timeout(timeout, exchange(addr, bytes)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Response, Failure> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Failure::Refused
        } else {
            Failure::Broken
        }
    })?;
    let _ = stream.set_nodelay(true);
    // A server may answer (413, 431) and close before it has read all we
    // send: a failed write is not yet a failure, the response decides.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::with_capacity(1024);
    let read = stream.read_to_end(&mut buf).await;
    match parse(&buf) {
        Some(r) => Ok(r),
        None if read.is_err() || buf.is_empty() => Err(Failure::Broken),
        None => Err(Failure::Garbled),
    }
}

/// Parses a complete response head (and whatever body follows it).
fn parse(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Some(Response {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        let r =
            parse(b"HTTP/1.1 202 Accepted\r\nX-Correlation-ID: abc\r\ncontent-length: 2\r\n\r\n{}")
                .expect("a response");
        assert_eq!(r.status, 202);
        assert_eq!(r.header("x-correlation-id"), Some("abc"));
        assert_eq!(r.json(), Some(serde_json::json!({})));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\n").is_none(),
            "an incomplete head"
        );
        assert!(parse(b"SSH-2.0\r\n\r\n").is_none());
    }

    #[test]
    fn writes_repeated_and_raw_headers() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let req = Request::post("/x", "application/json", b"{}".to_vec())
            .header("A", b"1")
            .header("A", [0xff]);
        let bytes = req.bytes(addr);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("POST /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert_eq!(text.matches("A: ").count(), 2);
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(bytes.ends_with(b"Connection: close\r\n\r\n{}"));
    }
}
