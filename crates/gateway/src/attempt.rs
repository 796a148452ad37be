//! One provider's attempts at a call: breaker check, send, and the retry
//! loop around them (rules in [`crate::proxy`]'s module docs), then the
//! answer: an upstream client error passed on, a stream, or a checked JSON
//! body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use crate::breaker::BreakerDecision;
use crate::call::Call;
use crate::config::secs;
use crate::dialect::{dialect, translator, upstream_body, Dialect};
use crate::error::{GatewayError, LimitSource};
use crate::failure::{failed_attempt, StreamOutcome};
use crate::lane::LanePermit;
use crate::metrics::{self, status_label};
use crate::respond::{check_json, decorate, high_risk, passthrough_error, render_json, Rejected};
use crate::retry::backoff;
use crate::routing::Route;
use crate::state::{GatewayInner, ProviderRuntime};
use crate::stream::{self, StreamContext};
use crate::surface::{reshape_upstream_error, Surface};
use crate::upstream::{self, Endpoint, SendFailure};

/// Why an attempt sequence ended without a response.
pub(super) enum Failure {
    /// Answer the client with this.
    Final(GatewayError),
    /// The provider is failing: try the fallback provider if there is one.
    ProviderDown(GatewayError),
}

/// How one attempt ended.
enum Outcome {
    /// A response for the client.
    Answer(Response),
    /// No response. Retried when `retryable` and the backoff (at least
    /// `retry_after`) fits in the request's allowance; else the call ends
    /// with `failure`.
    Failed {
        failure: Failure,
        retryable: bool,
        retry_after: Option<Duration>,
    },
}

/// The error of a provider whose circuit breaker is open.
pub(super) fn circuit_open(provider: &str, retry_after: Duration) -> GatewayError {
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

/// A call on one route: what every attempt of it shares.
struct Attempt<'a> {
    gw: &'a Arc<GatewayInner>,
    call: &'a Call,
    route: &'a Route,
    provider: &'a ProviderRuntime,
    dialect: Dialect,
    body: Bytes,
    /// The gateway asked for stream usage itself: strip the usage-only chunk.
    strip_usage: bool,
}

/// Attempts `call` on `route` until an answer, a final failure, or the
/// retries or the allowance (`deadline`) run out. `permit` is the lane slot
/// of the first attempt; each retry of a limited provider takes a new one.
pub(super) async fn attempts(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    mut permit: Option<LanePermit>,
    deadline: Instant,
) -> Result<Response, Failure> {
    let provider = &gw.providers[route.provider];
    let name = provider.cfg.name.as_str();
    let dialect = dialect(call, provider);
    let (body, strip_usage) = upstream_body(call, route, provider, &dialect);
    let attempt = Attempt {
        gw,
        call,
        route,
        provider,
        dialect,
        body,
        strip_usage,
    };
    let mut last = None;
    for n in 0..=gw.config.retry.max_retries {
        if n > 0 {
            provider.count(|c| c.retries += 1);
            metrics::retry(name);
            if let Some(lane) = provider.lane.as_ref().filter(|_| route.limited) {
                let wait = deadline.saturating_duration_since(Instant::now());
                match lane
                    .acquire_shared(gw.hooks.as_ref(), call.priority, wait)
                    .await
                {
                    Ok(p) => permit = Some(p),
                    Err(_) => break,
                }
            }
        }
        match attempt.once(n, &mut permit).await {
            Outcome::Answer(resp) => return Ok(resp),
            Outcome::Failed {
                failure,
                retryable,
                retry_after,
            } => {
                // The slot is not held over the backoff.
                permit = None;
                if retryable && sleep_before_retry(gw, n, retry_after, deadline).await {
                    last = Some(failure);
                    continue;
                }
                return Err(failure);
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

/// Whether a 429's body says a daily (not a per-minute) quota is spent.
fn names_daily_quota(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["daily", "per day", "requests per day", "quota for today"]
        .iter()
        .any(|w| d.contains(w))
}

impl Attempt<'_> {
    fn name(&self) -> &str {
        &self.provider.cfg.name
    }

    /// Attempt number `n`: breaker, send, then the answer by status.
    async fn once(&self, n: u32, permit: &mut Option<LanePermit>) -> Outcome {
        let (provider, name) = (self.provider, self.name());
        let probe = match provider.breaker().check(Instant::now()) {
            BreakerDecision::Reject { retry_after } => {
                return Outcome::Failed {
                    failure: Failure::ProviderDown(circuit_open(name, retry_after)),
                    retryable: false,
                    retry_after: None,
                }
            }
            BreakerDecision::Probe => true,
            BreakerDecision::Allow => false,
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
            metrics::overhead(name, self.call.started.elapsed().saturating_sub(queue_wait));
        }
        let sent_at = Instant::now();
        let resp = match upstream::send(
            provider,
            permit.as_ref().map(LanePermit::key),
            self.dialect.endpoint,
            self.body.clone(),
            self.call.stream,
            &self.call.forward_headers,
        )
        .await
        {
            Ok(resp) => resp,
            Err(f) => {
                outcome.failure();
                metrics::upstream_error(name, f.metric_label());
                let (err, retryable) = send_error(name, f);
                tracing::warn!(provider = %name, model = %self.route.upstream_model, attempt = n, error = %err, "upstream attempt failed");
                return provider_down(err, retryable);
            }
        };
        let status = resp.status().as_u16();
        metrics::upstream_latency(name, sent_at.elapsed());
        let retry_after = upstream::retry_after(&resp);
        if let Some(p) = permit.as_mut() {
            p.record_response(status == 429, retry_after.filter(|_| status == 429));
        }
        if status == 429 || status >= 500 {
            return self
                .refused(status, retry_after, resp, &mut outcome, permit)
                .await;
        }
        if status >= 400 {
            // A client mistake the upstream reported: pass it on verbatim.
            outcome.success();
            metrics::upstream_error(name, status_label(status));
            return Outcome::Answer(self.client_error(status, resp).await);
        }
        if self.call.stream {
            // The breaker hears of it when the stream ends.
            outcome.armed = false;
            let settle = StreamOutcome::new(self.gw.clone(), self.route.provider, probe);
            return Outcome::Answer(self.stream(resp, permit.take(), queue_wait, settle));
        }
        self.json(n, resp, permit, queue_wait, &mut outcome).await
    }

    /// A 429 or 5xx: the upstream is busy (429, not a breaker failure) or
    /// failing.
    async fn refused(
        &self,
        status: u16,
        upstream_ra: Option<Duration>,
        resp: reqwest::Response,
        outcome: &mut ProbeGuard<'_>,
        permit: &mut Option<LanePermit>,
    ) -> Outcome {
        let name = self.name();
        let detail = upstream::snippet(
            &upstream::read_body(self.provider, resp)
                .await
                .unwrap_or_default(),
        );
        if status == 429 && names_daily_quota(&detail) {
            // This key is spent for the day; the retry (and every other
            // call) goes to the pool's other keys.
            if let Some(p) = permit.as_mut() {
                p.park_daily_quota(upstream_ra, &detail);
            }
        }
        metrics::upstream_error(name, status_label(status));
        let retryable = status == 429 || upstream::is_retryable_5xx(status);
        let failure = if status == 429 {
            outcome.success();
            Failure::Final(GatewayError::RateLimited {
                origin: LimitSource::Upstream,
                retry_after: upstream_ra.unwrap_or(Duration::from_secs(1)),
                message: format!("upstream {name} rate limit (HTTP 429): {detail}"),
            })
        } else {
            outcome.failure();
            Failure::ProviderDown(if status == 503 {
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
            })
        };
        Outcome::Failed {
            failure,
            retryable,
            retry_after: upstream_ra,
        }
    }

    /// An upstream 4xx: verbatim, or in the surface's error shape when the
    /// call was translated.
    async fn client_error(&self, status: u16, resp: reqwest::Response) -> Response {
        if self.call.surface != Surface::Chat && self.dialect.translated {
            let body = upstream::read_body(self.provider, resp)
                .await
                .unwrap_or_default();
            return reshape_upstream_error(self.call.surface, status, &body);
        }
        passthrough_error(self.provider, resp).await
    }

    /// A streamed answer; the stream owns the lane slot.
    fn stream(
        &self,
        resp: reqwest::Response,
        permit: Option<LanePermit>,
        queue_wait: Duration,
        outcome: StreamOutcome,
    ) -> Response {
        let (provider, dialect) = (self.provider, &self.dialect);
        let translate = translator(self.gw, self.call, provider, dialect, self.strip_usage);
        let ctx = StreamContext {
            translate,
            gateway: self.gw.clone(),
            attribution: self.call.attribution.clone(),
            provider: provider.cfg.name.clone(),
            model: self.route.upstream_model.clone(),
            permit,
            first_byte: secs(provider.cfg.timeouts.first_byte),
            idle: secs(provider.cfg.timeouts.idle),
            ping: secs(provider.cfg.timeouts.ping),
            strip_usage_only: self.strip_usage,
            chat_stream: matches!(dialect.endpoint, Endpoint::Chat | Endpoint::Completions),
            outcome,
            high_risk: high_risk(self.gw, provider),
            budget: self.call.budget.clone(),
        };
        let content_type = resp
            .headers()
            .get("content-type")
            .cloned()
            .filter(|_| !dialect.translated);
        let mut out = Response::new(Body::from_stream(stream::passthrough(resp, ctx)));
        let h = out.headers_mut();
        h.insert(
            "content-type",
            content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
        );
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        decorate(h, self.route, provider, queue_wait);
        out
    }

    /// A JSON answer: read, booked and checked; an invalid tool call is
    /// retried at once.
    async fn json(
        &self,
        n: u32,
        resp: reqwest::Response,
        permit: &mut Option<LanePermit>,
        queue_wait: Duration,
        outcome: &mut ProbeGuard<'_>,
    ) -> Outcome {
        let (provider, name) = (self.provider, self.name());
        let bytes = match upstream::read_body(provider, resp).await {
            Ok(b) => b,
            Err(f) => {
                // Nothing reached the client yet, so a broken body may be retried.
                outcome.failure();
                metrics::upstream_error(name, "reset");
                let (err, retryable) = send_error(name, f);
                return provider_down(err, retryable);
            }
        };
        drop(permit.take());
        let endpoint = self.dialect.endpoint;
        match check_json(self.gw, self.call, self.route, provider, endpoint, bytes).await {
            Ok(checked) => {
                outcome.success();
                let mut resp = render_json(self.call, self.dialect.translated, checked);
                decorate(resp.headers_mut(), self.route, provider, queue_wait);
                Outcome::Answer(resp)
            }
            Err(Rejected::Incomplete(problem)) => {
                // Counted here, not through the guard: the run hears of it too.
                outcome.armed = false;
                metrics::upstream_error(name, "incomplete");
                let model = &self.route.upstream_model;
                let attribution = self.call.attribution.as_ref();
                failed_attempt(self.gw, self.route.provider, attribution, model, &problem);
                provider_down(
                    GatewayError::Upstream {
                        provider: name.to_string(),
                        detail: problem,
                    },
                    true,
                )
            }
            Err(Rejected::InvalidToolCall(problem)) => {
                outcome.success();
                tracing::warn!(provider = %name, model = %self.route.upstream_model, attempt = n, problem = %problem, "invalid tool call from upstream");
                Outcome::Failed {
                    failure: Failure::Final(GatewayError::Upstream {
                        provider: name.to_string(),
                        detail: format!("invalid tool call after {} attempt(s): {problem}", n + 1),
                    }),
                    retryable: true,
                    retry_after: Some(Duration::ZERO),
                }
            }
        }
    }
}

/// A request that got no answer, and whether it may be retried: connect
/// errors may, timeouts not (they already cost the caller a full timeout).
fn send_error(provider: &str, f: SendFailure) -> (GatewayError, bool) {
    match f {
        SendFailure::Connect(detail) => (
            GatewayError::Upstream {
                provider: provider.to_string(),
                detail,
            },
            true,
        ),
        SendFailure::Timeout(detail) => (
            GatewayError::Timeout {
                provider: provider.to_string(),
                detail,
            },
            false,
        ),
    }
}

fn provider_down(err: GatewayError, retryable: bool) -> Outcome {
    Outcome::Failed {
        failure: Failure::ProviderDown(err),
        retryable,
        retry_after: None,
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
