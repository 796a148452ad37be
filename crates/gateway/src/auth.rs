//! Reading the keys a client presents, and comparing secrets. Shared by the
//! `/v1` handlers (run keys), the admin API (admin token) and the daemon's
//! own bearer check; it depends on nothing else in the gateway.

use axum::http::HeaderMap;

/// The bearer token of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Every key a client presents, in order: `Authorization: Bearer` (OpenAI
/// SDKs), `x-api-key` (Anthropic SDKs), `api-key` (Azure-style clients).
pub fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    [
        bearer(headers),
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        headers.get("api-key").and_then(|v| v.to_str().ok()),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .filter(|k| !k.is_empty())
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
