//! Who may talk to the daemon, and with what (issue 13, defects 3, 5, 10).
//!
//! One middleware in front of every route (API, dashboard, gateway), in this
//! order:
//!
//! 1. **Host.** The `Host` header must name this server: the bind address,
//!    `localhost`, `127.0.0.1` or `[::1]`, or an entry of
//!    `server.allowed_hosts`; a port, when given, must be the bound one. Any
//!    other name is a DNS-rebinding page and gets 403. (A request without
//!    `Host` cannot come from a browser and passes.)
//! 2. **Cross-origin writes.** A write (not GET/HEAD/OPTIONS) carrying an
//!    `Origin` other than the server's own (`http://<Host>`) gets 403; so does
//!    `Origin: null`. The dashboard is served from the same origin; the CLI,
//!    SDKs and scripts send no `Origin`.
//! 3. **JSON writes.** A write with a body must say `Content-Type:
//!    application/json` (or `…+json`): 415 otherwise. Browsers cannot send
//!    JSON cross-origin without a CORS preflight, which this server never
//!    grants.
//! 4. **Gateway credentials.** With `server.api_token` set, `/v1/*` needs a
//!    run's key or the token. Changing `/api/gateway/config` needs the API
//!    token or the gateway's `admin_token` whenever either is set.
//! 5. **Gateway calls in flight per client.** A client (the key or token it
//!    presents; clients without one share one count) may have at most
//!    `server.max_requests_per_client` `/v1` calls in flight; past it 429
//!    with `Retry-After` (issue 23, finding 3). API writes are short and
//!    are not counted.
//! 6. **Body memory.** A body over the route's limit is 413; the bodies in
//!    flight together stay under `server.max_body_memory`, past which a
//!    request is 503 with `Retry-After`. A body without a length reserves the
//!    route's whole limit. The API's routes have a share of their own
//!    ([`api_reserve`]), so gateway uploads cannot take the memory every API
//!    write needs.
//! 7. **Body time.** The guard reads the body itself (`body::read_body`):
//!    a minimum rate and a whole-body deadline, 408 past either.
//! 8. **Body items.** A JSON body of more than `server.max_body_items` array
//!    elements and object members is 413 before anything parses it
//!    (`body::json_items`; issue 23, finding 1).
//!
//! Every refusal is the API's JSON error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::body::{json_items, read_body, BodyRefusal, BodyRules};
use super::ApiError;
use crate::daemon::Daemon;
use crate::gateway::GatewayError;
use crate::locks::Recover;

/// Bytes per permit of the body-memory semaphore (permits are counted in
/// `u32`, bodies in bytes).
const UNIT: u64 = 1024;

/// The guard's settings, computed once from the configuration.
#[derive(Clone)]
pub struct Guard {
    daemon: Daemon,
    /// Lower-case host names (no port) always accepted.
    names: Vec<String>,
    /// Lower-case `host:port` or `host` entries of `server.allowed_hosts`.
    allowed: Vec<String>,
    port: u16,
    /// The bind address is 0.0.0.0 or [::]: every IP literal names us.
    any_ip: bool,
    /// Body memory of the gateway's routes.
    body_memory: Arc<Semaphore>,
    body_memory_units: u64,
    /// Body memory of every other route ([`api_reserve`]).
    api_body_memory: Arc<Semaphore>,
    api_body_memory_units: u64,
    gateway_body_limit: usize,
    body_rules: BodyRules,
    per_client: u32,
    max_items: u64,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// The part of `server.max_body_memory` kept for the API's routes: room for
/// eight bodies at the API's limit, at most half the budget.
pub fn api_reserve(budget: u64) -> u64 {
    (8 * crate::api::MAX_BODY_BYTES as u64).min(budget / 2)
}

/// One write of a client in flight; dropping it ends it.
struct InFlight {
    map: Arc<Mutex<HashMap<String, u32>>>,
    client: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.map.locked();
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl Guard {
    pub fn new(d: &Daemon) -> Guard {
        let server = &d.config().server;
        let bind = server.bind_addr();
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        let bind_name = match bind.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        if !names.contains(&bind_name) {
            names.push(bind_name);
        }
        let budget = server.max_body_memory_bytes();
        let api_units = (api_reserve(budget) / UNIT).clamp(1, u32::MAX as u64);
        let units = ((budget - api_reserve(budget)) / UNIT).clamp(1, u32::MAX as u64);
        Guard {
            daemon: d.clone(),
            names,
            allowed: server
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            port: bind.port(),
            any_ip: bind.ip().is_unspecified(),
            body_memory: Arc::new(Semaphore::new(units as usize)),
            body_memory_units: units,
            api_body_memory: Arc::new(Semaphore::new(api_units as usize)),
            api_body_memory_units: api_units,
            body_rules: BodyRules {
                timeout: std::time::Duration::from_secs(server.body_timeout),
                min_rate: server.body_min_rate_bytes(),
            },
            per_client: server.max_requests_per_client,
            max_items: server.max_body_items,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            gateway_body_limit: d
                .gateway()
                .map(|g| g.config().max_body_bytes)
                .unwrap_or(crate::gateway::GatewayConfig::default().max_body_bytes),
        }
    }

    /// Whether `host` (the `Host` header's value) names this server.
    fn host_ok(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.allowed.contains(&host) {
            return true;
        }
        let (name, port) = split_port(&host);
        if port.is_some_and(|p| p != self.port) {
            return false;
        }
        if self.allowed.iter().any(|a| a == name) || self.names.iter().any(|n| n == name) {
            return true;
        }
        self.any_ip && is_ip_literal(name)
    }

    /// Counts one more write of `client`, or refuses it past the limit.
    fn begin(&self, client: &str) -> Option<InFlight> {
        let mut map = self.in_flight.locked();
        let n = map.entry(client.to_string()).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(InFlight {
            map: self.in_flight.clone(),
            client: client.to_string(),
        })
    }

    /// The body limit of a route: the gateway's for `/v1/*`, the API's
    /// otherwise.
    fn body_limit(&self, path: &str) -> usize {
        if is_gateway(path) {
            self.gateway_body_limit
        } else {
            crate::api::MAX_BODY_BYTES
        }
    }
}

/// `host[:port]` → (host, port); `[v6]:port` keeps its brackets.
fn split_port(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') {
        host.find("]:").map(|i| i + 1)
    } else if host.matches(':').count() == 1 {
        host.find(':')
    } else {
        None
    };
    match colon {
        Some(i) => match host[i + 1..].parse() {
            Ok(p) => (&host[..i], Some(p)),
            Err(_) => (host, Some(0)),
        },
        None => (host, None),
    }
}

fn is_ip_literal(name: &str) -> bool {
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The body length a request announces: `Some(0)` for none, `None` when it
/// comes without a length (chunked).
fn body_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    match header_str(headers, header::CONTENT_LENGTH) {
        None => Some(0),
        Some(v) => v.trim().parse().ok(),
    }
}

fn matches_token(given: &str, token: Option<&str>) -> bool {
    token.is_some_and(|t| {
        !t.is_empty() && crate::gateway::constant_time_eq(given.as_bytes(), t.as_bytes())
    })
}

/// The middleware (see the module docs).
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_str(headers, header::HOST).map(str::to_string));
    if let Some(host) = &host {
        if !g.host_ok(host) {
            return ApiError::forbidden(format!(
                "Host {host:?} is not this server's name: use the bind address, localhost, \
                 127.0.0.1 or [::1] with port {}, or add it to server.allowed_hosts",
                g.port
            ))
            .into_response();
        }
    }
    let write = !is_read(req.method());
    let path = req.uri().path().to_string();
    if write {
        if let Some(origin) = header_str(headers, header::ORIGIN) {
            let own = host.as_deref().map(|h| h.to_ascii_lowercase());
            let origin_host = origin.trim().to_ascii_lowercase();
            let origin_host = origin_host
                .strip_prefix("http://")
                .or_else(|| origin_host.strip_prefix("https://"));
            if own.is_none() || origin_host != own.as_deref() {
                return ApiError::forbidden(format!(
                    "cross-origin write refused: Origin {origin:?} is not this server's own \
                     (http://{})",
                    own.unwrap_or_else(|| "<no Host>".into())
                ))
                .into_response();
            }
        }
        let length = body_length(headers);
        match header_str(headers, header::CONTENT_TYPE) {
            Some(ct) if !is_json(ct) => {
                return ApiError::from_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "writes take a JSON body: send Content-Type: application/json, not {ct:?}"
                    ),
                )
                .into_response();
            }
            None if length != Some(0) => {
                return ApiError::from_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "writes take a JSON body: send Content-Type: application/json",
                )
                .into_response();
            }
            _ => {}
        }
    }
    if let Err(refused) = authorize_gateway(&g, &mut req, &path, write) {
        return *refused;
    }
    // Gateway calls in flight per client: a call holds its body, then an
    // upstream slot, for as long as the client and the provider take.
    let _in_flight = if write && is_gateway(&path) {
        let client = crate::gateway::presented_keys(req.headers())
            .next()
            .unwrap_or("")
            .to_string();
        match g.begin(&client) {
            Some(f) => Some(f),
            None => {
                metrics::counter!("moziplus_http_client_limit_refusals_total").increment(1);
                let message = format!(
                    "too many gateway calls in flight for this client (server.max_requests_per_client \
                     = {}): retry shortly",
                    g.per_client
                );
                return refusal(&path, StatusCode::TOO_MANY_REQUESTS, message, true);
            }
        }
    } else {
        None
    };
    // Body memory: reserve what the body may take before anything reads it.
    let length = body_length(req.headers());
    if length == Some(0) {
        return next.run(req).await;
    }
    let limit = g.body_limit(&path) as u64;
    if length.is_some_and(|n| n > limit) {
        return refusal(
            &path,
            StatusCode::PAYLOAD_TOO_LARGE,
            BodyRefusal::TooLarge { limit }.to_string(),
            false,
        );
    }
    let (pool, pool_units) = if is_gateway(&path) {
        (&g.body_memory, g.body_memory_units)
    } else {
        (&g.api_body_memory, g.api_body_memory_units)
    };
    let units = length.unwrap_or(limit).div_ceil(UNIT).clamp(1, pool_units);
    let Ok(_reserved) = pool.clone().try_acquire_many_owned(units as u32) else {
        metrics::counter!("moziplus_http_body_memory_refusals_total").increment(1);
        let message = format!(
            "too many request bodies in flight (server.max_body_memory = {}): retry shortly",
            g.daemon.config().server.max_body_memory
        );
        return refusal(&path, StatusCode::SERVICE_UNAVAILABLE, message, true);
    };
    // Body time: the whole body, at a minimum rate, within the deadline.
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, g.body_rules, limit, length).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                BodyRefusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyRefusal::Broken(_) => StatusCode::BAD_REQUEST,
                BodyRefusal::TooSlow { .. } | BodyRefusal::Deadline { .. } => {
                    metrics::counter!("moziplus_http_body_timeouts_total").increment(1);
                    StatusCode::REQUEST_TIMEOUT
                }
            };
            let mut resp = refusal(&path, status, e.to_string(), false);
            // The rest of the body is not read: the connection cannot be reused.
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    // Body items: what parsing would build is bounded before it is built.
    let items = json_items(&bytes);
    if items > g.max_items {
        metrics::counter!("moziplus_http_body_item_refusals_total").increment(1);
        let message = format!(
            "request body has {items} JSON items (array elements and object members), more \
             than server.max_body_items ({})",
            g.max_items
        );
        drop(bytes);
        give_back_free_memory();
        return refusal(&path, StatusCode::PAYLOAD_TOO_LARGE, message, false);
    }
    let large = bytes.len() >= TRIM_AFTER_BYTES;
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if large {
        give_back_free_memory();
    }
    resp
}

/// A request whose body was at least this large gives back the free memory
/// of every malloc arena when it is answered.
const TRIM_AFTER_BYTES: usize = 1 << 20;

/// `malloc_trim(0)` on a blocking thread: the small blocks a large request
/// parsed into are freed, but glibc keeps their pages in its arenas until
/// asked (issue 23, finding 1: RSS comes back to its level before the call).
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free pages of malloc's own
        // arenas to the kernel; it is thread-safe.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    });
}

fn is_gateway(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1"
}

/// A refusal in the route's own shape: the gateway's error body (OpenAI or
/// Anthropic) on `/v1`, the API's JSON error elsewhere; `retry` adds
/// `Retry-After: 1`.
fn refusal(path: &str, status: StatusCode, message: String, retry: bool) -> Response {
    let mut resp = if is_gateway(path) {
        let retry_after = std::time::Duration::from_secs(1);
        let origin = crate::gateway::LimitSource::Gateway;
        let e = match status {
            StatusCode::TOO_MANY_REQUESTS => GatewayError::RateLimited {
                origin,
                retry_after,
                message,
            },
            StatusCode::SERVICE_UNAVAILABLE => GatewayError::Unavailable {
                origin,
                retry_after,
                code: "body_memory",
                message,
            },
            StatusCode::PAYLOAD_TOO_LARGE => GatewayError::BodyRefused {
                status,
                message,
                code: "payload_too_large",
            },
            StatusCode::REQUEST_TIMEOUT => GatewayError::BodyRefused {
                status,
                message,
                code: "body_timeout",
            },
            _ => GatewayError::BadRequest(message),
        };
        let mut r = crate::gateway::error_for_path(path, e);
        *r.status_mut() = status;
        r
    } else {
        ApiError::from_status(status, message).into_response()
    };
    if retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// Credentials of the gateway's routes (see the module docs, 4).
fn authorize_gateway(
    g: &Guard,
    req: &mut Request,
    path: &str,
    write: bool,
) -> Result<(), Box<Response>> {
    let api_token = g
        .daemon
        .config()
        .server
        .api_token
        .as_deref()
        .filter(|t| !t.is_empty());
    if path.starts_with("/v1/") || path == "/v1" {
        let Some(_) = api_token else { return Ok(()) };
        let mut keys = crate::gateway::presented_keys(req.headers()).peekable();
        if keys.peek().is_none() {
            return Err(Box::new(crate::gateway::error_for_path(
                path,
                GatewayError::Unauthorized(
                    "the gateway needs a run key or server.api_token (as `Authorization: Bearer`, \
                     `x-api-key` or `api-key`) when server.api_token is set"
                        .into(),
                ),
            )));
        }
        return if keys.any(|t| matches_token(t, api_token) || g.daemon.run_key(t).is_some()) {
            Ok(())
        } else {
            Err(Box::new(crate::gateway::error_for_path(
                path,
                GatewayError::Unauthorized(
                    "unknown key: send a run's key (OPENAI_API_KEY / ANTHROPIC_AUTH_TOKEN of an \
                     agent run) or server.api_token"
                        .into(),
                ),
            )))
        };
    }
    let given = crate::gateway::bearer(req.headers()).map(str::to_string);
    if path == "/api/gateway/config" && write {
        let admin = g
            .daemon
            .gateway()
            .and_then(|gw| gw.config().admin_token.as_ref())
            .map(|s| s.expose().to_string());
        if api_token.is_none() && admin.is_none() {
            return Ok(());
        }
        return match given.as_deref() {
            Some(t) if matches_token(t, api_token) || matches_token(t, admin.as_deref()) => {
                req.extensions_mut().insert(crate::gateway::AdminAuthorized);
                Ok(())
            }
            Some(_) => Err(Box::new(
                ApiError::unauthorized("wrong bearer token").into_response(),
            )),
            None => Err(Box::new(
                ApiError::unauthorized(
                    "changing the gateway settings needs `Authorization: Bearer <server.api_token or gateway admin token>`",
                )
                .into_response(),
            )),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_split_off_hosts() {
        assert_eq!(split_port("localhost:8083"), ("localhost", Some(8083)));
        assert_eq!(split_port("localhost"), ("localhost", None));
        assert_eq!(split_port("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("evil:x"), ("evil:x", Some(0)));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
    }
}
