//! `GET /api/gateway/history`: the gateway's stored samples (one per lane
//! every 10 s, kept 24 h; `daemon::gateway_history`), so the dashboard's
//! gateway charts start with the past instead of at page load.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiQuery;
use crate::api::error::ApiError;
use crate::blackboard::GatewaySample as Stored;
use crate::daemon::gateway_history::{KEEP, SAMPLE_EVERY};
use crate::daemon::Daemon;

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(gateway_history))
}

/// Most samples one answer holds (a day of six lanes).
pub const MAX_SAMPLES: i64 = 6 * 8640;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// How far back, in seconds (1–86400, default 3600).
    pub seconds: Option<i64>,
    /// Only this provider (lane).
    pub provider: Option<String>,
}

/// One lane at one moment.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewaySample {
    pub provider: String,
    /// When it was taken, ms since the epoch (charts' x axis).
    pub at_ms: i64,
    /// Requests, errors and retries since the previous sample.
    pub requests: i64,
    pub errors: i64,
    pub retries: i64,
    /// Share of answers that were 429 over the last minute.
    pub ratio_429: Option<f64>,
    pub in_flight: i64,
    /// The in-flight limit.
    pub concurrency: i64,
    /// Requests available in the bucket (not LLM tokens).
    pub tokens: f64,
    pub effective_rate_per_minute: f64,
    pub base_rate_per_minute: f64,
    pub answer_time_seconds: Option<f64>,
    /// Waiting requests per priority.
    pub queue_urgent: i64,
    pub queue_high: i64,
    pub queue_normal: i64,
    pub queue_low: i64,
}

impl From<Stored> for GatewaySample {
    fn from(s: Stored) -> Self {
        GatewaySample {
            provider: s.provider,
            at_ms: s.at,
            requests: s.requests,
            errors: s.errors,
            retries: s.retries,
            ratio_429: s.ratio_429,
            in_flight: s.in_flight,
            concurrency: s.concurrency,
            tokens: s.tokens,
            effective_rate_per_minute: s.effective_rate,
            base_rate_per_minute: s.base_rate,
            answer_time_seconds: s.answer_time,
            queue_urgent: s.queue[0],
            queue_high: s.queue[1],
            queue_normal: s.queue[2],
            queue_low: s.queue[3],
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayHistory {
    /// Seconds between samples.
    pub every_seconds: u64,
    /// Seconds a sample is kept.
    pub keep_seconds: u64,
    /// Oldest first.
    pub samples: Vec<GatewaySample>,
}

/// The gateway's samples of the last `seconds` (default an hour), oldest
/// first; empty when the gateway is off.
#[utoipa::path(get, path = "/api/gateway/history", tag = "gateway", params(HistoryQuery),
    responses((status = 200, body = GatewayHistory), (status = 400), (status = 503)))]
async fn gateway_history(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<GatewayHistory>, ApiError> {
    let keep = KEEP.as_secs() as i64;
    let seconds = q.seconds.unwrap_or(3600);
    if !(1..=keep).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "seconds={seconds}: expected 1 to {keep} (samples are kept 24 h)"
        )));
    }
    let mut samples = Vec::new();
    if d.gateway().is_some() {
        let history = d.gateway_history().await.ok_or_else(|| {
            ApiError::unavailable(format!(
                "the gateway history {} cannot be opened (see the daemon's log)",
                d.home().gateway_history_file().display()
            ))
        })?;
        let since = chrono::Utc::now().timestamp_millis() - seconds * 1000;
        samples = history
            .samples(since, q.provider.as_deref(), MAX_SAMPLES)
            .await?
            .into_iter()
            .map(GatewaySample::from)
            .collect();
    }
    Ok(Json(GatewayHistory {
        every_seconds: SAMPLE_EVERY.as_secs(),
        keep_seconds: KEEP.as_secs(),
        samples,
    }))
}
