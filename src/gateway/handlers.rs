//! axum handlers: request parsing and validation for `/v1/*`, plus the
//! status route. Every client mistake becomes a 4xx naming what was wrong.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::error::GatewayError;
use super::hooks::RunAttribution;
use super::proxy::{self, Call};
use super::queue::Priority;
use super::upstream::Endpoint;
use super::{admin, routing, Gateway};

pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/{*rest}", any(unknown_endpoint))
        .route("/api/gateway/status", get(status))
        .route(
            "/api/gateway/config",
            get(admin::get_config).post(admin::post_config),
        )
        .with_state(gateway)
}

async fn chat(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Endpoint::Chat, headers, body).await
}

async fn completions(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Endpoint::Completions, headers, body).await
}

async fn embeddings(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Endpoint::Embeddings, headers, body).await
}

async fn unknown_endpoint() -> GatewayError {
    GatewayError::NotFound(
        "unknown endpoint; the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models"
            .to_string(),
    )
}

async fn status(State(gw): State<Gateway>) -> Json<super::GatewayStatus> {
    Json(gw.status())
}

/// The bearer token of `Authorization`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, GatewayError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| GatewayError::BadRequest(format!("header {name} is not valid text"))),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Map<String, Value>, GatewayError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            GatewayError::PayloadTooLarge { limit }
        } else {
            GatewayError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(GatewayError::BadRequest(
            "request body is empty; expected a JSON object".to_string(),
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::BadRequest(
            "request body must be a JSON object".to_string(),
        )),
        Err(e) => Err(GatewayError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

fn attribution(gw: &Gateway, headers: &HeaderMap) -> Result<Option<RunAttribution>, GatewayError> {
    let found = bearer(headers).and_then(|t| gw.inner.hooks.resolve_key(t));
    if found.is_none() && gw.inner.config.require_session_key {
        return Err(GatewayError::Unauthorized(
            "a session key is required: send the run's key as `Authorization: Bearer <key>` (OPENAI_API_KEY)"
                .to_string(),
        ));
    }
    Ok(found)
}

async fn handle(gw: Gateway, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    match parse(&gw, endpoint, &headers, body).await {
        Ok(call) => proxy::run(&gw.inner, call).await,
        Err(e) => {
            super::metrics::request("none", Priority::Normal, e.status_label());
            e.into_response()
        }
    }
}

async fn parse(
    gw: &Gateway,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Call, GatewayError> {
    let started = Instant::now();
    if let Some(len) = header(headers, "content-length")?.and_then(|l| l.parse::<usize>().ok()) {
        if len > gw.inner.config.max_body_bytes {
            return Err(GatewayError::PayloadTooLarge {
                limit: gw.inner.config.max_body_bytes,
            });
        }
    }
    let attribution = attribution(gw, headers)?;
    let body = read_body(body, gw.inner.config.max_body_bytes).await?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(Value::String(_)) | None => {
            return Err(GatewayError::BadRequest(
                "`model` is required, as \"<provider>/<model>\" (e.g. \"nvidia/meta/llama-3.1-8b-instruct\")".to_string(),
            ))
        }
        Some(_) => return Err(GatewayError::BadRequest("`model` must be a string".to_string())),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::BadRequest(
                "`stream` must be true or false".to_string(),
            ))
        }
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(GatewayError::BadRequest(
            "embeddings cannot be streamed".to_string(),
        ));
    }
    if endpoint == Endpoint::Chat && !body.get("messages").is_some_and(Value::is_array) {
        return Err(GatewayError::BadRequest(
            "`messages` is required and must be an array".to_string(),
        ));
    }
    let priority = match header(headers, "x-priority")? {
        Some(p) => p
            .parse::<Priority>()
            .map_err(|e| GatewayError::BadRequest(format!("header X-Priority: {e}")))?,
        None => attribution
            .as_ref()
            .and_then(|a| a.task_priority)
            .unwrap_or(Priority::Normal),
    };
    let fallback_model = header(headers, "x-fallback-model")?.map(str::to_string);
    if let Some(fm) = &fallback_model {
        routing::route(
            &gw.inner.config.providers,
            gw.inner.config.default_provider.as_deref(),
            fm,
        )
        .map_err(|e| GatewayError::BadRequest(format!("header X-Fallback-Model: {e}")))?;
    }
    Ok(Call {
        endpoint,
        body,
        model,
        stream,
        priority,
        attribution,
        fallback_model,
        started,
    })
}

/// `GET /v1/models`: configured static lists, else each provider's own
/// `/models` (5 s budget, never through the rate lane), ids prefixed with the
/// provider name so they can be used as `model` directly.
async fn models(State(gw): State<Gateway>) -> Response {
    let fetches = gw.inner.providers.iter().map(|p| async move {
        if !p.cfg.models.is_empty() {
            return p.cfg.models.clone();
        }
        let url = routing::upstream_url(&p.cfg.base_url, "models");
        let mut req = p.client.get(url).timeout(Duration::from_secs(5));
        if let Some(key) = &p.key {
            req = req.bearer_auth(key.expose());
        }
        let Ok(resp) = req.send().await else {
            return Vec::new();
        };
        let Ok(body) = resp.json::<Value>().await else {
            return Vec::new();
        };
        body.get("data")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .filter_map(|m| m.get("id")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    });
    let lists = futures_util::future::join_all(fetches).await;
    let mut data = Vec::new();
    for (p, ids) in gw.inner.providers.iter().zip(lists) {
        for id in ids {
            data.push(json!({"id": format!("{}/{}", p.cfg.name, id), "object": "model", "owned_by": p.cfg.name}));
        }
    }
    Json(json!({"object": "list", "data": data})).into_response()
}
