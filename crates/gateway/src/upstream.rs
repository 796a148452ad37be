//! One HTTP exchange with an upstream provider, and its classification.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::config::secs;
use crate::retry::parse_retry_after;
use crate::state::ProviderRuntime;

/// OpenAI endpoints the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// OpenAI Responses, for providers that speak it natively.
    Responses,
    /// Anthropic Messages, for providers that speak it natively.
    Messages,
}

impl Endpoint {
    /// Path appended to the provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
        }
    }
}

/// A failed exchange before a usable response.
#[derive(Debug, Clone)]
pub(crate) enum SendFailure {
    /// Could not connect or the connection broke before headers.
    Connect(String),
    /// No headers within `first_byte`, or the body exceeded `total`.
    Timeout(String),
}

impl SendFailure {
    pub fn metric_label(&self) -> &'static str {
        match self {
            SendFailure::Connect(_) => "connect",
            SendFailure::Timeout(_) => "timeout",
        }
    }
}

/// Send `body` to the provider. Returns once response headers arrived.
pub(crate) async fn send(
    p: &ProviderRuntime,
    key: Option<usize>,
    endpoint: Endpoint,
    body: Bytes,
    stream: bool,
    forward_headers: &[(&'static str, axum::http::HeaderValue)],
) -> Result<reqwest::Response, SendFailure> {
    let url = crate::routing::upstream_url(&p.cfg.base_url, endpoint.path());
    let mut req = p
        .client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(
            ACCEPT,
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        )
        .body(body);
    if let Some(key) = p.key(key) {
        req = if endpoint == Endpoint::Messages {
            // Anthropic-style providers take the key as `x-api-key`.
            req.header("x-api-key", key.expose())
        } else {
            req.bearer_auth(key.expose())
        };
    }
    if endpoint == Endpoint::Messages {
        let mut has_version = false;
        for (name, value) in forward_headers {
            has_version |= *name == "anthropic-version";
            req = req.header(*name, value.as_bytes());
        }
        if !has_version {
            req = req.header("anthropic-version", "2023-06-01");
        }
    }
    if !stream {
        req = req.timeout(secs(p.cfg.timeouts.total));
    }
    let first_byte = secs(p.cfg.timeouts.first_byte);
    match tokio::time::timeout(first_byte, req.send()).await {
        Err(_) => Err(SendFailure::Timeout(format!(
            "no response headers within {:.1}s",
            first_byte.as_secs_f64()
        ))),
        Ok(Err(e)) if e.is_timeout() => Err(SendFailure::Timeout(describe(&e))),
        Ok(Err(e)) => Err(SendFailure::Connect(describe(&e))),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Read a non-streaming body within the provider's total timeout.
pub(crate) async fn read_body(
    p: &ProviderRuntime,
    resp: reqwest::Response,
) -> Result<Bytes, SendFailure> {
    let total = secs(p.cfg.timeouts.total);
    match tokio::time::timeout(total, resp.bytes()).await {
        Err(_) => Err(SendFailure::Timeout(format!(
            "body not complete within {:.1}s",
            total.as_secs_f64()
        ))),
        Ok(Err(e)) if e.is_timeout() => Err(SendFailure::Timeout(describe(&e))),
        Ok(Err(e)) => Err(SendFailure::Connect(format!(
            "reading body: {}",
            describe(&e)
        ))),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Error text without the URL's query (keys never travel in URLs, but keep
/// messages short) and with the root cause.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// `Retry-After` of a response.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
    )
}

/// Status codes that are retried (with 429) and count against the breaker.
pub(crate) fn is_retryable_5xx(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// First 300 characters of an upstream error body, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}
