//! HTTP over loopback from a test: the one JSON POST helper (reqwest, for the
//! async tests) and a minimal blocking HTTP/1.1 client for the synchronous
//! tests' bodiless GETs and control POSTs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A free loopback port (released before use; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `Bearer <token>`, for an `authorization` header.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// POSTs `body` as JSON (`content-type: application/json`) to `url` with the
/// extra `headers`, and returns the response as it came (status, headers and
/// a body the caller may stream). Panics if no response arrives at all.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Minimal blocking HTTP/1.1 request without a body → (status, body), `None`
/// when the server cannot be reached or answers garbage.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (code, _, body) = parse_response(&text);
    (code != 0 && text.contains("\r\n\r\n")).then_some((code, body))
}

/// A raw HTTP/1.1 response → (status, 0 when unreadable; head; body,
/// de-chunked when the head says so; empty without a blank line).
pub fn parse_response(text: &str) -> (u16, String, String) {
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, head.to_string(), body)
}

/// The payload of a `Transfer-Encoding: chunked` body.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}
