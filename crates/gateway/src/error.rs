//! The gateway's error type and its OpenAI-shaped HTTP rendering.
//!
//! Body: `{"error": {"message", "type", "code", "limit_source"?}}`. Every
//! 429/503 the gateway produces carries `Retry-After` and says in
//! `limit_source` (and the `X-Moziplus-Limit-Source` header) whether the
//! limit is the gateway's own or the upstream's, so an agent can tell "wait
//! your turn" from "the provider is saturated". Client mistakes are 4xx with
//! a message naming what was wrong; nothing a client sends yields a 500.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Whose limit a 429/503 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The gateway's own token bucket, queue or breaker.
    Gateway,
    /// The upstream provider answered 429/503.
    Upstream,
}

impl LimitSource {
    fn as_str(self) -> &'static str {
        match self {
            LimitSource::Gateway => "gateway",
            LimitSource::Upstream => "upstream",
        }
    }
}

/// Everything that can go wrong in a gateway call.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Malformed request (bad JSON, missing field, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// The model names no configured provider and there is no default.
    #[error("unknown provider {provider:?} in model {model:?}; known providers: {known}. Use \"<provider>/<model>\", give the run's agent a `model:`, map client model names with gateway.model_map, or set gateway.default_provider.")]
    UnknownProvider {
        /// First segment of the model.
        provider: String,
        /// The model as requested.
        model: String,
        /// Comma-separated provider names and aliases.
        known: String,
    },
    /// Body larger than `max_body_bytes`.
    #[error("request body exceeds the gateway limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A body refused by a bound other than its byte limit: too many JSON
    /// items (413) or too slow to arrive (408). The daemon's guard raises it.
    #[error("{message}")]
    BodyRefused {
        /// 413 or 408.
        status: StatusCode,
        /// Which bound, and its setting.
        message: String,
        /// `too_many_items` or `body_timeout`.
        code: &'static str,
    },
    /// Missing or unknown bearer key / admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// Not found (unknown route or provider in the admin API).
    #[error("{0}")]
    NotFound(String),
    /// A change conflicting with current state (queue shrink below depth).
    #[error("{0}")]
    Conflict(String),
    /// Rate limited, by the gateway or the upstream (429).
    #[error("{message}")]
    RateLimited {
        /// Whose limit.
        origin: LimitSource,
        /// Suggested wait.
        retry_after: Duration,
        /// Human-readable reason.
        message: String,
    },
    /// Queue full, request evicted, breaker open or upstream overloaded (503).
    #[error("{message}")]
    Unavailable {
        /// Whose limit.
        origin: LimitSource,
        /// Suggested wait.
        retry_after: Duration,
        /// Machine-readable code (`queue_full`, `dropped`, `circuit_open`, …).
        code: &'static str,
        /// Human-readable reason.
        message: String,
    },
    /// A budget of the run would be crossed by this call (402): the
    /// message names the budget, its use and its limit.
    #[error("{0}")]
    BudgetExceeded(String),
    /// The upstream could not be reached or failed (502).
    #[error("upstream {provider} failed: {detail}")]
    Upstream {
        /// Provider name.
        provider: String,
        /// What happened (never contains keys).
        detail: String,
    },
    /// The upstream did not answer in time (504).
    #[error("upstream {provider} timed out: {detail}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// Which timeout.
        detail: String,
    },
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

impl GatewayError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) | GatewayError::UnknownProvider { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyRefused { status, .. } => *status,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::BudgetExceeded(_) => StatusCode::PAYMENT_REQUIRED,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::UnknownProvider { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::BodyRefused { .. } => "invalid_request_error",
            GatewayError::Unauthorized(_) => "authentication_error",
            GatewayError::NotFound(_) => "not_found_error",
            GatewayError::Conflict(_) => "conflict_error",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::Unavailable { .. } => "service_unavailable_error",
            GatewayError::Upstream { .. } | GatewayError::Timeout { .. } => "upstream_error",
        }
    }

    /// Short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::UnknownProvider { .. } => "unknown_provider",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::BodyRefused { code, .. } => code,
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::RateLimited {
                origin: LimitSource::Gateway,
                ..
            } => "gateway_rate_limited",
            GatewayError::RateLimited {
                origin: LimitSource::Upstream,
                ..
            } => "upstream_rate_limited",
            GatewayError::Unavailable { code, .. } => code,
            GatewayError::Upstream { .. } => "upstream_failed",
            GatewayError::Timeout { .. } => "upstream_timeout",
        }
    }

    fn limit(&self) -> Option<(LimitSource, Duration)> {
        match self {
            GatewayError::RateLimited {
                origin,
                retry_after,
                ..
            }
            | GatewayError::Unavailable {
                origin,
                retry_after,
                ..
            } => Some((*origin, *retry_after)),
            _ => None,
        }
    }

    /// Label for the `status` metric.
    pub fn status_label(&self) -> &'static str {
        match self.status().as_u16() {
            400 => "400",
            401 => "401",
            402 => "402",
            404 => "404",
            409 => "409",
            413 => "413",
            429 => "429",
            502 => "502",
            503 => "503",
            504 => "504",
            _ => "other",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "message": self.to_string(),
            "type": self.kind(),
            "code": self.code(),
        });
        let limit = self.limit();
        if let Some((source, _)) = limit {
            error["limit_source"] = json!(source.as_str());
        }
        let mut response = (self.status(), Json(json!({ "error": error }))).into_response();
        if let Some((source, retry_after)) = limit {
            let headers = response.headers_mut();
            headers.insert(
                "retry-after",
                HeaderValue::from(retry_after_secs(retry_after)),
            );
            headers.insert(
                "x-moziplus-limit-source",
                HeaderValue::from_static(source.as_str()),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}
