//! The HTTP server: health, daemon status and control, metrics.
//!
//! Each resource has its own `router()`; [`router`] merges them, so the full API,
//! the event stream, the gateway (`/v1`) and the dashboard slot in beside these
//! without touching them. Their one error type lives below all of them, in
//! [`crate::api::error`].

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::daemon::Daemon;

/// Kept for the routes mounted here; `api` and `dashboard` name it from
/// [`crate::api::error`] (the layer rule: `api` does not import `http`).
pub use crate::api::ApiError;

pub mod body;
pub mod guard;
pub mod sandbox_proxy;
pub mod serve;
pub mod status;

pub use status::{ActiveRun, DaemonSessions, DaemonStatus, ProjectSession, Readiness};

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

/// All routes of the daemon: the routes here and in `crate::api` (described
/// by the OpenAPI document they generate, served at `/api/openapi.json`),
/// behind the bearer-token rule for writes, then the gateway (own auth).
pub fn router(d: Daemon) -> Router {
    let gateway = d.gateway().map(|g| g.router()).unwrap_or_default();
    let (routes, doc) = OpenApiRouter::with_openapi(crate::api::base_document())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(render_metrics))
        .routes(routes!(status))
        .routes(routes!(sessions))
        .routes(routes!(stop_ticker))
        .routes(routes!(start_ticker))
        .routes(routes!(tick_now))
        .routes(routes!(openapi_json))
        .merge(crate::api::router())
        .split_for_parts();
    let doc = Arc::new(OpenApiDocument(
        doc.to_json().expect("the OpenAPI document serializes"),
    ));
    routes
        .fallback(crate::dashboard::serve)
        .layer(axum::Extension(doc))
        .layer(axum::middleware::from_fn_with_state(
            d.clone(),
            crate::api::require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::MAX_BODY_BYTES,
        ))
        .with_state(d.clone())
        .merge(gateway)
        .layer(axum::middleware::from_fn_with_state(
            guard::Guard::new(&d),
            guard::guard,
        ))
}

/// What a sandboxed run reaches over `<home>/run/api.sock`
/// (`runtime::sandbox`): `/health`, the gateway (`/v1/*`, its own key
/// checks) and `POST /api/runs/bb` (the run's key) — nothing else of the
/// API: not another project's board, not the daemon's controls. Behind the
/// same guard and body limit as the TCP listener.
pub fn sandbox_router(d: Daemon) -> Router {
    let gateway = d.gateway().map(|g| g.router()).unwrap_or_default();
    let (runs, _) = OpenApiRouter::<Daemon>::new()
        .merge(crate::api::runs::router())
        .split_for_parts();
    runs.route("/health", axum::routing::get(health))
        .fallback(sandbox_not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::MAX_BODY_BYTES,
        ))
        .with_state(d.clone())
        .merge(gateway)
        .layer(axum::middleware::from_fn_with_state(
            guard::Guard::new(&d),
            guard::guard,
        ))
        // Outermost: a `CONNECT` names another host, which the guard's
        // Host check would refuse before the proxy could judge it.
        .layer(axum::middleware::from_fn_with_state(
            d.clone(),
            sandbox_proxy::proxy,
        ))
}

async fn sandbox_not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!(
        "{} is not reachable from a sandboxed run: only the gateway (/v1/*) and POST /api/runs/bb are",
        uri.path()
    ))
    .into_response()
}

/// The generated OpenAPI document, serialized once.
#[derive(Debug)]
struct OpenApiDocument(String);

/// The OpenAPI 3.1 document of this API, generated from the handlers.
#[utoipa::path(get, path = "/api/openapi.json", tag = "daemon",
    responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<Arc<OpenApiDocument>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.0.clone(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/health", tag = "daemon", responses((status = 200, body = Object, description = "liveness")))]
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready (200) or not (503), with the same document either way.
#[utoipa::path(get, path = "/health/ready", tag = "daemon", responses((status = 200, body = Readiness, description = "ready"), (status = 503, body = Readiness, description = "not ready: see `project_problems`, `ticker_alive` and `degraded`")))]
async fn ready(State(d): State<Daemon>) -> Response {
    let readiness = Readiness::of(&d);
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "daemon", responses((status = 200, content_type = "text/plain", body = String)))]
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

/// `GET /api/daemon/status`.
#[utoipa::path(get, path = "/api/daemon/status", tag = "daemon", responses((status = 200, body = DaemonStatus)))]
async fn status(State(d): State<Daemon>) -> Json<DaemonStatus> {
    Json(DaemonStatus::of(&d).await)
}

#[utoipa::path(get, path = "/api/daemon/sessions", tag = "daemon", responses((status = 200, body = DaemonSessions)))]
async fn sessions(State(d): State<Daemon>) -> Json<DaemonSessions> {
    let mut recent = Vec::new();
    for slot in d.projects().snapshot() {
        if let Some(bb) = &slot.bb {
            if let Ok(s) = bb.recent_sessions(20).await {
                recent.extend(s.into_iter().map(|session| ProjectSession {
                    project: slot.id.to_string(),
                    session: session.into(),
                }));
            }
        }
    }
    let runs = d.runs();
    let mut active = Vec::with_capacity(runs.len());
    for slot in d.projects().snapshot() {
        let mine: Vec<&crate::daemon::RunInfo> = runs
            .iter()
            .filter(|r| r.project == slot.id.as_str())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let ids: Vec<String> = mine.iter().map(|r| r.task_id.clone()).collect();
        let facts = match &slot.bb {
            Some(bb) => bb.wait_facts(&ids).await.unwrap_or_default(),
            None => Default::default(),
        };
        for r in mine {
            let title = match &slot.bb {
                Some(bb) => bb
                    .task(&r.task_id)
                    .await
                    .map(|t| t.title)
                    .unwrap_or_default(),
                None => String::new(),
            };
            let (state, state_text) = match facts.proposed_decisions.get(&r.task_id) {
                Some(ids) if r.kind == crate::daemon::runs::RunKind::Work => {
                    let named: Vec<String> = ids.iter().map(|n| format!("D{n}")).collect();
                    (
                        "waiting",
                        format!("waiting on decision {}", named.join(", ")),
                    )
                }
                _ => ("working", "working".to_string()),
            };
            active.push(ActiveRun {
                run: r.clone(),
                task_title: title,
                state: state.to_string(),
                state_text,
                activity: d.activity(&r.session_id),
            });
        }
    }
    active.sort_by_key(|a| a.run.started_at_ms);
    Json(DaemonSessions { active, recent })
}

#[utoipa::path(post, path = "/api/daemon/stop", tag = "daemon", security(("bearer" = [])), responses((status = 200, body = Object)))]
async fn stop_ticker(State(d): State<Daemon>) -> Json<Value> {
    d.pause_ticker();
    Json(json!({ "ticker_running": false }))
}

#[utoipa::path(post, path = "/api/daemon/start", tag = "daemon", security(("bearer" = [])), responses((status = 200, body = Object)))]
async fn start_ticker(State(d): State<Daemon>) -> Json<Value> {
    d.resume_ticker();
    Json(json!({ "ticker_running": true }))
}

/// A tick now, run by the ticker loop (never beside another tick); answered
/// when a tick that began after the request has ended.
#[utoipa::path(post, path = "/api/daemon/tick", tag = "daemon", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 503, body = Object, description = "the daemon is shutting down")))]
async fn tick_now(State(d): State<Daemon>) -> Result<Json<Value>, ApiError> {
    d.tick_now()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(
        json!({ "ticked": true, "last_tick_ms": d.tick_stats().last_tick_ms }),
    ))
}
