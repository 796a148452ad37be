//! The HTTP server (SPEC §6): health, daemon status and control, metrics.
//!
//! Each resource has its own `router()`; [`router`] merges them, so the full API,
//! the event stream, the gateway (`/v1`) and the dashboard slot in beside these
//! without touching them. One error type, [`ApiError`], maps client mistakes to
//! 4xx with `{"error":{"message","type"}}`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};

use crate::daemon::Daemon;

/// An API error: a status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "message": self.message, "type": self.kind } })),
        )
            .into_response()
    }
}

/// The process-wide Prometheus recorder (installed once; later daemons in the
/// same process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); then ours
            // simply renders nothing extra.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// All routes of the daemon.
pub fn router(d: Daemon) -> Router {
    let gateway = d.gateway().map(|g| g.router()).unwrap_or_default();
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/api/daemon/status", get(status))
        .route("/api/daemon/sessions", get(sessions))
        .route("/api/daemon/stop", post(stop_ticker))
        .route("/api/daemon/start", post(start_ticker))
        .route("/api/daemon/tick", post(tick_now))
        .fallback(crate::dashboard::serve)
        .with_state(d)
        .merge(gateway)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(d): State<Daemon>) -> Response {
    let problems = d.projects().problems();
    let stats = d.tick_stats();
    let interval_ms = d.config().daemon.tick_interval as i64 * 1000;
    let ticker_alive = d.ticker_paused()
        || stats
            .last_tick_at_ms
            .is_some_and(|t| chrono::Utc::now().timestamp_millis() - t < 3 * interval_ms + 10_000);
    let ok = problems.is_empty() && ticker_alive;
    let body = json!({ "ready": ok, "ticker_alive": ticker_alive, "project_problems": problems });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn render_metrics(State(d): State<Daemon>) -> Response {
    metrics::gauge!("moziplus_active_agents").set(d.runs().len() as f64);
    metrics::gauge!("moziplus_inbox_lag_bytes").set(d.inbox_stats().pending_bytes as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics_handle().render(),
    )
        .into_response()
}

/// `GET /api/daemon/status` (SPEC §6).
pub async fn status_value(d: &Daemon) -> Value {
    let runs = d.runs();
    let mut projects = BTreeMap::new();
    for slot in d.projects().snapshot() {
        let active = runs
            .iter()
            .filter(|r| r.project == slot.id.as_str())
            .count();
        let entry = match &slot.bb {
            Some(bb) => match bb.status_counts().await {
                Ok(counts) => {
                    json!({ "active_agents": active, "tasks_summary": counts, "db_size_bytes": bb.size_bytes() })
                }
                Err(e) => json!({ "active_agents": active, "error": e.to_string() }),
            },
            None => json!({ "active_agents": active, "error": slot.error }),
        };
        projects.insert(slot.id.to_string(), entry);
    }
    let stats = d.tick_stats();
    let inbox = d.inbox_stats();
    json!({
        "ticker_running": !d.ticker_paused(),
        "last_tick": stats.last_tick,
        "last_tick_ms": stats.last_tick_ms,
        "ticks": stats.ticks,
        "tick_interval_seconds": d.config().daemon.tick_interval,
        "projects": projects,
        "inbox_pending": inbox.pending_bytes,
        "inbox": inbox,
        "active_sessions": runs.len(),
        "gateway": d.gateway().map(|g| serde_json::to_value(g.status()).unwrap_or(Value::Null)),
        "runs_started": d.runs_spawned(),
        "limits": {
            "max_global_agents": d.config().daemon.max_global_agents,
            "max_per_agent": d.config().daemon.max_per_agent,
        },
    })
}

async fn status(State(d): State<Daemon>) -> Json<Value> {
    Json(status_value(&d).await)
}

async fn sessions(State(d): State<Daemon>) -> Json<Value> {
    let mut recent = Vec::new();
    for slot in d.projects().snapshot() {
        if let Some(bb) = &slot.bb {
            if let Ok(s) = bb.recent_sessions(20).await {
                recent.extend(
                    s.into_iter()
                        .map(|s| json!({ "project": slot.id, "session": s })),
                );
            }
        }
    }
    Json(json!({ "active": d.runs(), "recent": recent }))
}

async fn stop_ticker(State(d): State<Daemon>) -> Json<Value> {
    d.pause_ticker();
    Json(json!({ "ticker_running": false }))
}

async fn start_ticker(State(d): State<Daemon>) -> Json<Value> {
    d.resume_ticker();
    Json(json!({ "ticker_running": true }))
}

async fn tick_now(State(d): State<Daemon>) -> Json<Value> {
    crate::daemon::ticker::tick(&d).await;
    Json(json!({ "ticked": true, "last_tick_ms": d.tick_stats().last_tick_ms }))
}
