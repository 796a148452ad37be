//! The embedded dashboard: the single-page app built from
//! `frontend/` by `build.rs`, served by the daemon itself.
//!
//! [`serve`] is the router's fallback. Paths of the machine interfaces
//! (`/api/*`, `/v1/*`, `/health*`, `/metrics`) never fall through to the page:
//! they keep the JSON 404 of [`crate::api::ApiError`]. Every other `GET`
//! answers with the embedded file of that path, or with `index.html` so the
//! app's own routes (`/projects/demo`, `/gateway`, …) survive a reload.
//!
//! Vite names bundle files by content hash (`assets/index-3f9a….js`), so those
//! are cached for a year; `index.html` is `no-cache` so a new binary's bundle is
//! picked up at once. `build.rs` writes a gzip twin (`*.gz`) next to every
//! compressible file; it is sent when the client accepts gzip.
//!
//! When the frontend was not built (no Node at build time, or
//! `MOZI_SKIP_FRONTEND=1`) the folder is empty and `/` explains how to build it.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::api::ApiError;

#[derive(RustEmbed)]
#[folder = "$OUT_DIR/dashboard"]
struct Assets;

/// Path prefixes that belong to the APIs; unknown paths under them are JSON 404s.
const API_PREFIXES: &[&str] = &["/api/", "/v1/", "/health", "/metrics"];

/// Cache policy of content-hashed bundle files.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Whether the dashboard bundle was embedded in this binary.
pub fn is_built() -> bool {
    Assets::get("index.html").is_some()
}

/// The router fallback: an API 404, an embedded file, or the app's page.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let api = path == "/api" || path == "/v1" || API_PREFIXES.iter().any(|p| path.starts_with(p));
    if api || (method != Method::GET && method != Method::HEAD) {
        return ApiError::not_found(format!("no route for {path}")).into_response();
    }
    let gzip_ok = accepts_gzip(&headers);
    let file = path.trim_start_matches('/');
    if !file.is_empty() && file != "index.html" {
        if let Some(resp) = asset(file, gzip_ok) {
            return resp;
        }
        // A missing bundle file is a real 404, not the page: a browser
        // holding an old index.html must not parse HTML as JavaScript.
        if file.starts_with("assets/") || file.ends_with(".gz") {
            return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
        }
    }
    page(gzip_ok)
}

/// `index.html` (no-cache), or the build instructions when it is not embedded.
fn page(gzip_ok: bool) -> Response {
    match file_response("index.html", gzip_ok, "no-cache") {
        Some(resp) => resp,
        None => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            NOT_BUILT_PAGE,
        )
            .into_response(),
    }
}

fn asset(file: &str, gzip_ok: bool) -> Option<Response> {
    let cache = if file.starts_with("assets/") {
        IMMUTABLE
    } else {
        "no-cache"
    };
    file_response(file, gzip_ok, cache)
}

fn file_response(file: &str, gzip_ok: bool, cache: &'static str) -> Option<Response> {
    let plain = Assets::get(file)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    let gz = Assets::get(&format!("{file}.gz"));
    if gz.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let body = match gz {
        Some(gz) if gzip_ok => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz.data
        }
        _ => plain.data,
    };
    Some((StatusCode::OK, headers, body.into_owned()).into_response())
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Content type by extension; the bundle only holds these kinds.
fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

const NOT_BUILT_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>moziplus — dashboard not built</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}code,pre{background:#8882;border-radius:4px;padding:.1rem .3rem}pre{padding:.75rem}</style>
</head><body>
<h1>moziplus</h1>
<p>The daemon is running, but this binary was built without the dashboard
(Node.js/npm was not found, the frontend build failed, or <code>MOZI_SKIP_FRONTEND=1</code> was set).</p>
<p>To build it, install Node.js 20+ and npm, then rebuild from a clean state
(<code>build.rs</code> runs <code>npm install --no-save</code> and <code>npm run build</code> itself):</p>
<pre>cargo clean -p moziplus
cargo build --release</pre>
<p>Where Node cannot run at build time, build the frontend elsewhere and copy
<code>frontend/dist/</code> into the checkout; it is embedded as it is:</p>
<pre>cd frontend &amp;&amp; npm install --no-save &amp;&amp; npm run build</pre>
<p>The JSON API works without it: <a href="/api/daemon/status">/api/daemon/status</a>,
<a href="/api/gateway/status">/api/gateway/status</a>, <a href="/metrics">/metrics</a>.</p>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance_honours_q_zero() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br".parse().unwrap(),
        );
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "br, gzip;q=0".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "identity".parse().unwrap());
        assert!(!accepts_gzip(&h));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type("assets/a-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
