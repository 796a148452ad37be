//! The request pipeline: route → breaker → rate lane → upstream with
//! retries → response (JSON or stream), with the fallback provider and the
//! low-priority degrade chain around it.
//!
//! Retry rules (SPEC 7.4): connect errors, 502/503/504 and 429 are retried
//! with jittered exponential backoff (at least the upstream's `Retry-After`)
//! while the request's waiting allowance lasts; an invalid tool call is
//! retried too. Each retry of a limited provider takes a new token. A stream
//! is never retried once its headers arrived (bytes may be on the wire).
//! Timeouts are not retried: they already cost the caller a full timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::config::secs;
use super::error::{GatewayError, LimitSource};
use super::hooks::RunAttribution;
use super::lane::{Admission, LanePermit};
use super::queue::Priority;
use super::respond::{check_json, decorate, high_risk, passthrough_error, render_json};
use super::retry::backoff;
use super::routing::{self, Route};
use super::stream::{self, StreamContext};
use super::surface::{reshape_upstream_error, ChatHoldback, StreamTranslator, Surface};
use super::upstream::{self, Endpoint, SendFailure};
use super::{messages, responses};
use super::{metrics, GatewayInner, ProviderRuntime};

/// A parsed client request.
pub(crate) struct Call {
    pub endpoint: Endpoint,
    /// The client API the call arrived on (error shape, answer shape).
    pub surface: Surface,
    /// How to turn a chat answer into the surface's shape.
    pub translation: Translation,
    /// The body sent to a chat provider (for Responses/Messages calls: the
    /// translation).
    pub body: Map<String, Value>,
    /// The client's own body, for providers that speak the surface natively.
    pub client_body: Option<Map<String, Value>>,
    /// Client headers forwarded to native providers (`anthropic-version`,
    /// `anthropic-beta`).
    pub forward_headers: Vec<(&'static str, HeaderValue)>,
    pub model: String,
    pub stream: bool,
    pub priority: Priority,
    pub attribution: Option<RunAttribution>,
    pub fallback_model: Option<String>,
    pub started: Instant,
}

/// What a chat answer is turned into.
pub(crate) enum Translation {
    /// Chat (or completions/embeddings): passed on.
    None,
    /// OpenAI Responses.
    Responses(responses::Echo),
    /// Anthropic Messages; the client's model name is echoed.
    Messages { model: String },
}

/// Why an attempt sequence ended without a response.
enum Failure {
    /// Answer the client with this.
    Final(GatewayError),
    /// The provider is failing: try the fallback provider if there is one.
    ProviderDown(GatewayError),
}

/// Run a call to the end and book its metrics.
pub(crate) async fn run(gw: &Arc<GatewayInner>, call: Call) -> Response {
    let default = gw.config.default_provider.as_deref();
    let route = match routing::route(&gw.config.providers, default, &call.model) {
        Ok(r) => r,
        Err(e) => {
            metrics::request("none", call.priority, e.status_label());
            return call.surface.error(e);
        }
    };
    let provider = &gw.providers[route.provider];
    let label = provider.cfg.name.clone();
    provider.count(|c| c.total += 1);
    let priority = call.priority;
    let result = pipeline(gw, &call, route).await;
    let provider = gw.providers.iter().find(|p| p.cfg.name == label);
    match result {
        Ok(resp) => {
            let status = resp.status();
            if let Some(p) = provider {
                p.count(|c| {
                    if status.is_success() {
                        c.ok += 1
                    } else {
                        c.errors += 1
                    }
                });
            }
            metrics::request(&label, priority, status_label(status.as_u16()));
            resp
        }
        Err(e) => {
            if let Some(p) = provider {
                p.count(|c| c.errors += 1);
            }
            metrics::request(&label, priority, e.status_label());
            tracing::info!(provider = %label, model = %call.model, priority = %priority, error = %e, "gateway call failed");
            call.surface.error(e)
        }
    }
}

/// Status label from a fixed set (bounded metric cardinality).
pub(crate) fn status_label(status: u16) -> &'static str {
    const EXACT: [(u16, &str); 11] = [
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (413, "413"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if (200..300).contains(&status) {
        return "2xx";
    }
    EXACT
        .iter()
        .find(|(code, _)| *code == status)
        .map_or(if status < 500 { "4xx" } else { "5xx" }, |(_, label)| label)
}

async fn pipeline(
    gw: &Arc<GatewayInner>,
    call: &Call,
    mut route: Route,
) -> Result<Response, GatewayError> {
    let settings = gw.settings();
    let deadline = call.started + secs(settings.request_timeout);
    let mut via_fallback = false;
    let mut header_fallback_used = false;
    let mut degrade_steps = 0;
    loop {
        let provider = &gw.providers[route.provider];
        let name = provider.cfg.name.as_str();
        let open_for = provider.breaker().would_reject(Instant::now());
        if let Some(retry_after) = open_for {
            if let Some(next) = fallback_route(gw, &route).filter(|_| !via_fallback) {
                via_fallback = true;
                note_fallback(provider, "provider");
                route = next;
                continue;
            }
            return Err(circuit_open(name, retry_after));
        }
        let permit = if route.limited {
            let Some(lane) = provider.lane.as_ref() else {
                return Err(GatewayError::Upstream {
                    provider: name.to_string(),
                    detail: "limited provider without a rate lane".into(),
                });
            };
            let now = Instant::now();
            let mut wait = deadline.saturating_duration_since(now);
            if call.priority == Priority::Low {
                wait = wait.min(secs(settings.low_priority_timeout));
            }
            match lane.acquire(call.priority, wait).await {
                Ok(p) => Some(p),
                Err(Admission::TimedOut { retry_after })
                    if call.priority == Priority::Low && degrade_steps < 8 =>
                {
                    match degrade_route(gw, call, &route, &mut header_fallback_used) {
                        Some(next) => {
                            degrade_steps += 1;
                            provider.count(|c| c.degraded += 1);
                            metrics::fallback(name, "degrade");
                            tracing::info!(provider = %name, model = %call.model, "low-priority request degraded");
                            route = next;
                            continue;
                        }
                        None => {
                            return Err(admission_error(
                                name,
                                call.priority,
                                Admission::TimedOut { retry_after },
                            ))
                        }
                    }
                }
                Err(a) => return Err(admission_error(name, call.priority, a)),
            }
        } else {
            None
        };
        match attempts(gw, call, &route, permit, deadline).await {
            Ok(resp) => return Ok(resp),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::ProviderDown(e)) => {
                match fallback_route(gw, &route).filter(|_| !via_fallback) {
                    Some(next) => {
                        via_fallback = true;
                        note_fallback(provider, "provider");
                        tracing::warn!(provider = %name, error = %e, "provider failing; using its fallback");
                        route = next;
                    }
                    None => return Err(e),
                }
            }
        }
    }
}

fn note_fallback(provider: &ProviderRuntime, kind: &'static str) {
    provider.count(|c| c.fallbacks += 1);
    metrics::fallback(&provider.cfg.name, kind);
}

fn fallback_route(gw: &GatewayInner, route: &Route) -> Option<Route> {
    let fb = gw.providers[route.provider].cfg.fallback.as_ref()?;
    let index = gw
        .providers
        .iter()
        .position(|p| p.cfg.name == fb.provider)?;
    Some(Route {
        provider: index,
        upstream_model: fb
            .model
            .clone()
            .unwrap_or_else(|| route.upstream_model.clone()),
        limited: gw.providers[index].cfg.limited,
    })
}

/// Next model for a low-priority request that got no token: the
/// `X-Fallback-Model` header first, then the provider's degrade chain.
fn degrade_route(
    gw: &GatewayInner,
    call: &Call,
    route: &Route,
    header_used: &mut bool,
) -> Option<Route> {
    let default = gw.config.default_provider.as_deref();
    if !*header_used {
        if let Some(model) = &call.fallback_model {
            *header_used = true;
            return routing::route(&gw.config.providers, default, model).ok();
        }
    }
    let chain = &gw.providers[route.provider].cfg.degrade_chain;
    let position = chain.iter().position(|m| {
        routing::route(&gw.config.providers, default, m)
            .is_ok_and(|r| r.provider == route.provider && r.upstream_model == route.upstream_model)
    })?;
    let next = chain.get(position + 1)?;
    routing::route(&gw.config.providers, default, next).ok()
}

fn circuit_open(provider: &str, retry_after: Duration) -> GatewayError {
    GatewayError::Unavailable {
        origin: LimitSource::Gateway,
        retry_after,
        code: "circuit_open",
        message: format!(
            "provider {provider} is failing; its circuit breaker is open for another {:.0}s",
            retry_after.as_secs_f64().ceil()
        ),
    }
}

fn admission_error(provider: &str, priority: Priority, a: Admission) -> GatewayError {
    match a {
        Admission::TimedOut { retry_after } => GatewayError::RateLimited {
            origin: LimitSource::Gateway,
            retry_after,
            message: format!("gateway rate limit: no {provider} token became free in time for this {priority}-priority request"),
        },
        Admission::NoToken { retry_after } => GatewayError::RateLimited {
            origin: LimitSource::Gateway,
            retry_after,
            message: format!("gateway rate limit: the {provider} queue is full and no token is free (passthrough policy)"),
        },
        Admission::QueueFull { retry_after } => GatewayError::Unavailable {
            origin: LimitSource::Gateway,
            retry_after,
            code: "queue_full",
            message: format!("the gateway queue for {provider} is full"),
        },
        Admission::Dropped { retry_after } => GatewayError::Unavailable {
            origin: LimitSource::Gateway,
            retry_after,
            code: "dropped",
            message: format!("dropped from the full {provider} queue to make room for a more urgent request"),
        },
    }
}

/// Resolves a half-open probe as a failure if its call ends without an
/// outcome (client gone), so the breaker cannot stick in half-open.
struct ProbeGuard<'a> {
    provider: &'a ProviderRuntime,
    armed: bool,
}

impl ProbeGuard<'_> {
    fn success(&mut self) {
        self.armed = false;
        self.provider.breaker().record_success();
        metrics::breaker_state(&self.provider.cfg.name, self.provider.breaker().state());
    }

    fn failure(&mut self) {
        self.armed = false;
        self.provider.breaker().record_failure(Instant::now());
        metrics::breaker_state(&self.provider.cfg.name, self.provider.breaker().state());
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.failure();
        }
    }
}

/// How one provider is spoken to for this call.
struct Wire {
    endpoint: Endpoint,
    /// The surface is translated to chat completions for this provider.
    translated: bool,
}

fn wire(call: &Call, provider: &ProviderRuntime) -> Wire {
    let native = call
        .surface
        .native_api()
        .is_some_and(|api| provider.cfg.native.contains(&api));
    match (call.surface, native) {
        (Surface::Chat, _) => Wire {
            endpoint: call.endpoint,
            translated: false,
        },
        (Surface::Responses, true) => Wire {
            endpoint: Endpoint::Responses,
            translated: false,
        },
        (Surface::Messages, true) => Wire {
            endpoint: Endpoint::Messages,
            translated: false,
        },
        (_, false) => Wire {
            endpoint: Endpoint::Chat,
            translated: true,
        },
    }
}

/// The body sent upstream: the client's body (or its chat translation) with
/// the upstream model name, plus `stream_options.include_usage` on chat
/// streams when the gateway wants stream usage. Returns whether the
/// usage-only chunk must be stripped again.
fn upstream_body(
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    wire: &Wire,
) -> (Bytes, bool) {
    let mut body = match (&call.client_body, wire.endpoint) {
        (Some(client), Endpoint::Responses | Endpoint::Messages) => client.clone(),
        _ => call.body.clone(),
    };
    body.insert("model".into(), Value::String(route.upstream_model.clone()));
    let mut strip = false;
    let chat_like = matches!(wire.endpoint, Endpoint::Chat | Endpoint::Completions);
    if call.stream && provider.cfg.stream_usage && chat_like {
        let asked = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !asked {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
                strip = !wire.translated;
            }
        }
    }
    (
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        strip,
    )
}

/// The stream translator: the surface's for a translated call; for a chat
/// stream whose request offered a high-risk tool, the hold-back filter;
/// else none (bytes pass through untouched).
fn translator(
    gw: &GatewayInner,
    call: &Call,
    provider: &ProviderRuntime,
    wire: &Wire,
    strip_usage_only: bool,
) -> Option<Box<dyn StreamTranslator>> {
    let high_risk = high_risk(gw, provider);
    match &call.translation {
        _ if !wire.translated && call.surface != Surface::Chat => None,
        Translation::Responses(echo) => Some(Box::new(responses::ResponsesStream::new(
            echo.clone(),
            high_risk.to_vec(),
        ))),
        Translation::Messages { model } => Some(Box::new(messages::MessagesStream::new(
            model.clone(),
            high_risk.to_vec(),
        ))),
        Translation::None => {
            let offers_risky = call
                .body
                .get("tools")
                .and_then(Value::as_array)
                .is_some_and(|tools| {
                    tools.iter().any(|t| {
                        t.pointer("/function/name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| high_risk.iter().any(|h| h == n))
                    })
                });
            (offers_risky && wire.endpoint == Endpoint::Chat).then(|| {
                Box::new(ChatHoldback::new(high_risk.to_vec(), strip_usage_only))
                    as Box<dyn StreamTranslator>
            })
        }
    }
}

async fn attempts(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    mut permit: Option<LanePermit>,
    deadline: Instant,
) -> Result<Response, Failure> {
    let provider = &gw.providers[route.provider];
    let name = provider.cfg.name.as_str();
    let wire = wire(call, provider);
    let (body, strip_usage) = upstream_body(call, route, provider, &wire);
    let retry_cfg = &gw.config.retry;
    let mut last = None;
    for n in 0..=retry_cfg.max_retries {
        if n > 0 {
            provider.count(|c| c.retries += 1);
            metrics::retry(name);
            if let Some(lane) = provider.lane.as_ref().filter(|_| route.limited) {
                let wait = deadline.saturating_duration_since(Instant::now());
                match lane.acquire(call.priority, wait).await {
                    Ok(p) => permit = Some(p),
                    Err(_) => break,
                }
            }
        }
        let probe = match provider.breaker().check(Instant::now()) {
            super::breaker::BreakerDecision::Reject { retry_after } => {
                return Err(Failure::ProviderDown(circuit_open(name, retry_after)))
            }
            super::breaker::BreakerDecision::Probe => true,
            super::breaker::BreakerDecision::Allow => false,
        };
        let mut outcome = ProbeGuard {
            provider,
            armed: probe,
        };
        let queue_wait = permit.as_ref().map_or(Duration::ZERO, |p| p.queue_wait);
        if let Some(p) = permit.as_mut() {
            p.mark_sent();
        }
        if n == 0 {
            metrics::overhead(name, call.started.elapsed().saturating_sub(queue_wait));
        }
        let sent_at = Instant::now();
        let resp = match upstream::send(
            provider,
            wire.endpoint,
            body.clone(),
            call.stream,
            &call.forward_headers,
        )
        .await
        {
            Ok(resp) => resp,
            Err(f) => {
                outcome.failure();
                metrics::upstream_error(name, f.metric_label());
                permit = None;
                let retryable = matches!(f, SendFailure::Connect(_));
                let err = send_error(name, f);
                tracing::warn!(provider = %name, model = %route.upstream_model, attempt = n, error = %err, "upstream attempt failed");
                if retryable && sleep_before_retry(gw, n, None, deadline).await {
                    last = Some(Failure::ProviderDown(err));
                    continue;
                }
                return Err(Failure::ProviderDown(err));
            }
        };
        let status = resp.status().as_u16();
        metrics::upstream_latency(name, sent_at.elapsed());
        let retry_after = upstream::retry_after(&resp);
        if let Some(p) = permit.as_mut() {
            p.record_response(status == 429, retry_after.filter(|_| status == 429));
        }
        if status == 429 || status >= 500 {
            let upstream_ra = retry_after;
            let detail = upstream::snippet(
                &upstream::read_body(provider, resp)
                    .await
                    .unwrap_or_default(),
            );
            metrics::upstream_error(name, status_label(status));
            permit = None;
            let err = if status == 429 {
                // The upstream is alive, only busy: not a breaker failure.
                outcome.success();
                GatewayError::RateLimited {
                    origin: LimitSource::Upstream,
                    retry_after: upstream_ra.unwrap_or(Duration::from_secs(1)),
                    message: format!("upstream {name} rate limit (HTTP 429): {detail}"),
                }
            } else {
                outcome.failure();
                if status == 503 {
                    GatewayError::Unavailable {
                        origin: LimitSource::Upstream,
                        retry_after: upstream_ra.unwrap_or(Duration::from_secs(1)),
                        code: "upstream_unavailable",
                        message: format!("upstream {name} unavailable (HTTP 503): {detail}"),
                    }
                } else {
                    GatewayError::Upstream {
                        provider: name.to_string(),
                        detail: format!("HTTP {status}: {detail}"),
                    }
                }
            };
            let retryable = status == 429 || upstream::is_retryable_5xx(status);
            if retryable && sleep_before_retry(gw, n, upstream_ra, deadline).await {
                last = Some(if status == 429 {
                    Failure::Final(err)
                } else {
                    Failure::ProviderDown(err)
                });
                continue;
            }
            return Err(if status == 429 {
                Failure::Final(err)
            } else {
                Failure::ProviderDown(err)
            });
        }
        outcome.success();
        if status >= 400 {
            // A client mistake the upstream reported: pass it on verbatim.
            metrics::upstream_error(name, status_label(status));
            if call.surface != Surface::Chat && wire.translated {
                let body = upstream::read_body(provider, resp)
                    .await
                    .unwrap_or_default();
                return Ok(reshape_upstream_error(call.surface, status, &body));
            }
            return Ok(passthrough_error(provider, resp).await);
        }
        if call.stream {
            let translate = translator(gw, call, provider, &wire, strip_usage);
            let ctx = StreamContext {
                translate,
                gateway: gw.clone(),
                attribution: call.attribution.clone(),
                provider: name.to_string(),
                model: route.upstream_model.clone(),
                permit: permit.take(),
                first_byte: secs(provider.cfg.timeouts.first_byte),
                idle: secs(provider.cfg.timeouts.idle),
                ping: secs(provider.cfg.timeouts.ping),
                strip_usage_only: strip_usage,
            };
            let content_type = resp
                .headers()
                .get("content-type")
                .cloned()
                .filter(|_| !wire.translated);
            let mut out = Response::new(Body::from_stream(stream::passthrough(resp, ctx)));
            let h = out.headers_mut();
            h.insert(
                "content-type",
                content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
            );
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            decorate(h, route, provider, queue_wait);
            return Ok(out);
        }
        let bytes = match upstream::read_body(provider, resp).await {
            Ok(b) => b,
            Err(f) => {
                // Nothing reached the client yet, so a broken body may be retried.
                metrics::upstream_error(name, "reset");
                permit = None;
                let retryable = matches!(f, SendFailure::Connect(_));
                let err = send_error(name, f);
                if retryable && sleep_before_retry(gw, n, None, deadline).await {
                    last = Some(Failure::ProviderDown(err));
                    continue;
                }
                return Err(Failure::ProviderDown(err));
            }
        };
        drop(permit.take());
        match check_json(gw, call, route, provider, wire.endpoint, bytes).await {
            Ok(checked) => {
                let mut resp = render_json(call, wire.translated, checked);
                decorate(resp.headers_mut(), route, provider, queue_wait);
                return Ok(resp);
            }
            Err(problem) => {
                tracing::warn!(provider = %name, model = %route.upstream_model, attempt = n, problem = %problem, "invalid tool call from upstream");
                let err = GatewayError::Upstream {
                    provider: name.to_string(),
                    detail: format!("invalid tool call after {} attempt(s): {problem}", n + 1),
                };
                if sleep_before_retry(gw, n, Some(Duration::ZERO), deadline).await {
                    last = Some(Failure::Final(err));
                    continue;
                }
                return Err(Failure::Final(err));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        Failure::Final(GatewayError::RateLimited {
            origin: LimitSource::Gateway,
            retry_after: Duration::from_secs(1),
            message: format!("gateway rate limit: no {name} token for the retry in time"),
        })
    }))
}

fn send_error(provider: &str, f: SendFailure) -> GatewayError {
    match f {
        SendFailure::Connect(detail) => GatewayError::Upstream {
            provider: provider.to_string(),
            detail,
        },
        SendFailure::Timeout(detail) => GatewayError::Timeout {
            provider: provider.to_string(),
            detail,
        },
    }
}

/// Sleep the backoff for retry `n + 1` if a retry is allowed and fits in the
/// request's allowance. Returns whether to retry.
async fn sleep_before_retry(
    gw: &GatewayInner,
    n: u32,
    retry_after: Option<Duration>,
    deadline: Instant,
) -> bool {
    if n >= gw.config.retry.max_retries {
        return false;
    }
    let delay = backoff(&gw.config.retry, n, gw.jitter_unit(), retry_after);
    if Instant::now() + delay > deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}
