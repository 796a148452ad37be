//! The request pipeline: route → breaker → rate lane → upstream with
//! retries → response (JSON or stream), with the fallback provider and the
//! low-priority degrade chain around it.
//!
//! Retry rules: connect errors, 502/503/504 and 429 are retried
//! with jittered exponential backoff (at least the upstream's `Retry-After`)
//! while the request's waiting allowance lasts; an invalid tool call is
//! retried too. Each retry of a limited provider takes a new token. A stream
//! is never retried once its headers arrived (bytes may be on the wire).
//! Timeouts are not retried: they already cost the caller a full timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use tokio::time::Instant;

use crate::attempt::{attempts, circuit_open, Failure};
use crate::budget;
use crate::call::Call;
use crate::config::secs;
use crate::error::{GatewayError, LimitSource};
use crate::lane::Admission;
use crate::metrics::{self, status_label};
use crate::queue::Priority;
use crate::routing::{self, Route};
use crate::state::{GatewayInner, ProviderRuntime};

/// Run a call to the end and book its metrics.
pub(crate) async fn run(gw: &Arc<GatewayInner>, mut call: Call) -> Response {
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
    // The budget check comes before the lane: a refused call takes no
    // token and reaches no provider.
    match budget::reserve(gw, &call, &route, &label).await {
        Ok(hold) => call.budget = hold,
        Err(e) => {
            metrics::request(&label, call.priority, e.status_label());
            tracing::info!(provider = %label, model = %call.model, error = %e, "gateway call refused for budget");
            return call.surface.error(e);
        }
    }
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
    let mut call_recorded = false;
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
            match lane
                .acquire_shared(gw.hooks.as_ref(), call.priority, wait)
                .await
            {
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
                            if let Some(attribution) = call.attribution.as_ref() {
                                gw.hooks.record_quota_refusal(attribution);
                            }
                            return Err(admission_error(
                                name,
                                call.priority,
                                Admission::TimedOut { retry_after },
                            ));
                        }
                    }
                }
                Err(a) => {
                    if let Some(attribution) = call.attribution.as_ref() {
                        gw.hooks.record_quota_refusal(attribution);
                    }
                    return Err(admission_error(name, call.priority, a));
                }
            }
        } else {
            None
        };
        if let (Some(a), false) = (call.attribution.as_ref(), call_recorded) {
            call_recorded = true;
            let wait = permit.as_ref().map_or(Duration::ZERO, |p| p.queue_wait);
            gw.hooks.record_call(a, wait);
        }
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
