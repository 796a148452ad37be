//! Metric names and recording helpers.
//!
//! Recorded through the `metrics` facade: the daemon installs the
//! Prometheus recorder (see [`install_prometheus_recorder`]) and serves
//! `/metrics`. Labels are bounded: `provider` comes from configuration,
//! `priority` has four values, `status` is an HTTP status class or code from
//! a fixed set. Model ids never become labels (they go to the logs).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::breaker::BreakerState;
use crate::limiter::BucketSnapshot;
use crate::queue::Priority;

/// `moziplus_gateway_requests_total{provider,priority,status}`
pub const REQUESTS: &str = "moziplus_gateway_requests_total";
/// `moziplus_gateway_tokens_available{provider}`
pub const TOKENS: &str = "moziplus_gateway_tokens_available";
/// `moziplus_gateway_rate_effective_per_minute{provider}`
pub const RATE_EFFECTIVE: &str = "moziplus_gateway_rate_effective_per_minute";
/// `moziplus_gateway_rate_base_per_minute{provider}`
pub const RATE_BASE: &str = "moziplus_gateway_rate_base_per_minute";
/// `moziplus_gateway_retreat_state{provider}` (0 normal, 1 retreat, 2 recover)
pub const RETREAT_STATE: &str = "moziplus_gateway_retreat_state";
/// `moziplus_gateway_upstream_429_ratio{provider}` (retreat window)
pub const RATIO_429: &str = "moziplus_gateway_upstream_429_ratio";
/// `moziplus_gateway_queue_depth{provider,priority}`
pub const QUEUE_DEPTH: &str = "moziplus_gateway_queue_depth";
/// `moziplus_gateway_in_flight{provider}`
pub const IN_FLIGHT: &str = "moziplus_gateway_in_flight";
/// Gauge: the in-flight limit in force (fixed, or sized by latency).
pub const IN_FLIGHT_LIMIT: &str = "moziplus_gateway_in_flight_limit";
/// Gauge: requests per minute the lane's unparked keys serve together.
pub const CAPACITY: &str = "moziplus_gateway_capacity_per_minute";
/// `moziplus_gateway_queue_wait_seconds{provider,priority}` histogram
pub const QUEUE_WAIT: &str = "moziplus_gateway_queue_wait_seconds";
/// `moziplus_gateway_upstream_latency_seconds{provider}` histogram (to headers)
pub const UPSTREAM_LATENCY: &str = "moziplus_gateway_upstream_latency_seconds";
/// `moziplus_gateway_upstream_errors_total{provider,status}`
pub const UPSTREAM_ERRORS: &str = "moziplus_gateway_upstream_errors_total";
/// `moziplus_gateway_breaker_state{provider}` (0 closed, 1 open, 2 half-open)
pub const BREAKER_STATE: &str = "moziplus_gateway_breaker_state";
/// `moziplus_gateway_fallbacks_total{provider,kind}` (kind: provider|degrade)
pub const FALLBACKS: &str = "moziplus_gateway_fallbacks_total";
/// `moziplus_gateway_retries_total{provider}`
pub const RETRIES: &str = "moziplus_gateway_retries_total";
/// `moziplus_gateway_overhead_seconds{provider}` histogram: time spent in the
/// gateway before the upstream request left, excluding queue wait.
pub const OVERHEAD: &str = "moziplus_gateway_overhead_seconds";
/// `moziplus_gateway_budget_check_seconds` histogram: a budget
/// reservation's cost per call (counting the prompt, asking the daemon).
pub const BUDGET_CHECK: &str = "moziplus_gateway_budget_check_seconds";
/// `moziplus_gateway_usage_tokens_total{provider,kind}` (kind: prompt|completion)
pub const USAGE_TOKENS: &str = "moziplus_gateway_usage_tokens_total";

/// Install a global Prometheus recorder with the gateway's histogram
/// buckets. For the daemon (which serves `handle.render()` on `/metrics`)
/// and for tests; fails if a recorder is already installed.
pub fn install_prometheus_recorder() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(QUEUE_WAIT.to_string()),
            &[0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(UPSTREAM_LATENCY.to_string()),
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(OVERHEAD.to_string()),
                &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BUDGET_CHECK.to_string()),
                &[
                    0.000005, 0.00001, 0.00002, 0.00003, 0.00004, 0.00005, 0.0001, 0.00025, 0.001,
                    0.01,
                ],
            )
        })
        .map_err(|e| e.to_string())?;
    builder.install_recorder().map_err(|e| e.to_string())
}

pub(crate) fn request(provider: &str, priority: Priority, status: &'static str) {
    counter!(REQUESTS, "provider" => provider.to_string(), "priority" => priority.as_str(), "status" => status)
        .increment(1);
}

pub(crate) fn queue_wait(provider: &str, priority: Priority, wait: Duration) {
    histogram!(QUEUE_WAIT, "provider" => provider.to_string(), "priority" => priority.as_str())
        .record(wait.as_secs_f64());
}

pub(crate) fn upstream_latency(provider: &str, latency: Duration) {
    histogram!(UPSTREAM_LATENCY, "provider" => provider.to_string()).record(latency.as_secs_f64());
}

pub(crate) fn overhead(provider: &str, elapsed: Duration) {
    histogram!(OVERHEAD, "provider" => provider.to_string()).record(elapsed.as_secs_f64());
}

/// `status` is a status code or `connect`, `timeout`, `reset`.
pub(crate) fn upstream_error(provider: &str, status: &'static str) {
    counter!(UPSTREAM_ERRORS, "provider" => provider.to_string(), "status" => status).increment(1);
}

pub(crate) fn fallback(provider: &str, kind: &'static str) {
    counter!(FALLBACKS, "provider" => provider.to_string(), "kind" => kind).increment(1);
}

pub(crate) fn retry(provider: &str) {
    counter!(RETRIES, "provider" => provider.to_string()).increment(1);
}

pub(crate) fn breaker_state(provider: &str, state: BreakerState) {
    gauge!(BREAKER_STATE, "provider" => provider.to_string()).set(state.as_gauge());
}

pub(crate) fn usage(provider: &str, prompt: u64, completion: u64) {
    counter!(USAGE_TOKENS, "provider" => provider.to_string(), "kind" => "prompt")
        .increment(prompt);
    counter!(USAGE_TOKENS, "provider" => provider.to_string(), "kind" => "completion")
        .increment(completion);
}

/// Publish the lane gauges (called by the dispatcher on every wake-up, so
/// gauges never go stale).
pub(crate) fn publish_lane(
    provider: &str,
    snap: &BucketSnapshot,
    depth: &[usize; 4],
    in_flight: usize,
    limit: usize,
) {
    let p = provider.to_string();
    gauge!(TOKENS, "provider" => p.clone()).set(snap.tokens);
    gauge!(RATE_EFFECTIVE, "provider" => p.clone()).set(snap.effective_rate_per_minute);
    gauge!(CAPACITY, "provider" => p.clone()).set(snap.effective_rate_per_minute);
    gauge!(RATE_BASE, "provider" => p.clone()).set(snap.base_rate_per_minute);
    gauge!(RETREAT_STATE, "provider" => p.clone()).set(snap.retreat_state.as_gauge());
    gauge!(RATIO_429, "provider" => p.clone()).set(snap.ratio_429_last_minute.unwrap_or(0.0));
    gauge!(IN_FLIGHT, "provider" => p.clone()).set(in_flight as f64);
    gauge!(IN_FLIGHT_LIMIT, "provider" => p.clone()).set(limit as f64);
    for priority in Priority::ALL {
        gauge!(QUEUE_DEPTH, "provider" => p.clone(), "priority" => priority.as_str())
            .set(depth[priority.index()] as f64);
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
