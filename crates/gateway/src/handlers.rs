//! axum handlers: request parsing and validation for `/v1/*`, plus the
//! status route. Every client mistake becomes a 4xx naming what was wrong.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::auth::presented_keys;
use crate::call::{Call, Translation};
use crate::error::GatewayError;
use crate::hooks::RunAttribution;
use crate::proxy;
use crate::queue::Priority;
use crate::state::Gateway;
use crate::surface::Surface;
use crate::upstream::Endpoint;
use crate::{admin, cpu, routing};
use crate::{messages, responses};

impl Gateway {
    /// Routes: `POST /v1/chat/completions`, `POST /v1/completions`,
    /// `POST /v1/embeddings`, `GET /v1/models`, `GET /api/gateway/status`,
    /// `GET|POST /api/gateway/config`. Merge into the daemon's router.
    pub fn router(&self) -> axum::Router {
        router(self.clone())
    }
}

pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses_api))
        .route("/v1/messages", post(messages_api))
        .route("/v1/messages/count_tokens", post(count_tokens))
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
    handle(gw, Surface::Chat, Endpoint::Chat, headers, body).await
}

async fn completions(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Surface::Chat, Endpoint::Completions, headers, body).await
}

async fn embeddings(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Surface::Chat, Endpoint::Embeddings, headers, body).await
}

/// `POST /v1/responses` (OpenAI Responses).
async fn responses_api(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Surface::Responses, Endpoint::Chat, headers, body).await
}

/// `POST /v1/messages` (Anthropic Messages; `?beta=true` is accepted).
async fn messages_api(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    handle(gw, Surface::Messages, Endpoint::Chat, headers, body).await
}

/// `POST /v1/messages/count_tokens`: an estimate (see
/// [`messages::count_tokens`]); never calls a provider.
async fn count_tokens(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        attribution(&gw, &headers)?;
        let limit = gw
            .inner
            .config
            .max_body_bytes
            .min(cpu::COUNT_TOKENS_MAX_BODY);
        let (body, _) = read_body(&gw, body, limit).await?;
        // The tokenizer is the gateway's most CPU-heavy step: never on the
        // async worker (issue 23, finding 2).
        gw.inner
            .cpu
            .run(move || messages::count_tokens(&body))
            .await?
    }
    .await;
    match result {
        Ok(n) => Json(json!({"input_tokens": n})).into_response(),
        Err(e) => Surface::Messages.error(e),
    }
}

/// Anthropic clients (they send `anthropic-version`) and `/v1/messages…`
/// paths get Anthropic-shaped answers.
fn anthropic_client(uri: &Uri, headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version") || uri.path().starts_with("/v1/messages")
}

async fn unknown_endpoint(uri: Uri, headers: HeaderMap) -> Response {
    let e = GatewayError::NotFound(format!(
        "unknown endpoint {}; the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/messages, /v1/messages/count_tokens and /v1/models",
        uri.path()
    ));
    if anthropic_client(&uri, &headers) {
        Surface::Messages.error(e)
    } else {
        Surface::Chat.error(e)
    }
}

async fn status(State(gw): State<Gateway>) -> Json<crate::status::GatewayStatus> {
    Json(gw.status())
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

/// The body as a JSON object; a large one is parsed on a blocking thread
/// (`cpu`), so the async worker keeps answering meanwhile.
/// A request body read under `limit` bytes and the gateway's item bound,
/// parsed off the async workers when large; returns the object and its size
/// in bytes.
async fn read_body(
    gw: &Gateway,
    body: Body,
    limit: usize,
) -> Result<(Map<String, Value>, usize), GatewayError> {
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
    // What parsing would build is bounded before it is built (issue 23,
    // finding 1), here as well as in the daemon's guard, so the gateway
    // mounted on its own router is bounded too.
    let items = cpu::json_items(&bytes);
    let max_items = gw.inner.config.max_body_items;
    if items > max_items {
        return Err(GatewayError::BodyRefused {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "request body has {items} JSON items (array elements and object members), more \
                 than the gateway's max_body_items ({max_items})"
            ),
            code: "too_many_items",
        });
    }
    let size = bytes.len();
    let parsed = if size >= cpu::PARSE_OFF_THREAD_BYTES {
        gw.inner
            .cpu
            .run(move || serde_json::from_slice::<Value>(&bytes))
            .await?
    } else {
        serde_json::from_slice::<Value>(&bytes)
    };
    match parsed {
        Ok(Value::Object(map)) => Ok((map, size)),
        Ok(_) => Err(GatewayError::BadRequest(
            "request body must be a JSON object".to_string(),
        )),
        Err(e) => Err(GatewayError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

/// A gateway error for `path` in the shape its client API expects
/// (Anthropic's for `/v1/messages…`, OpenAI's otherwise).
pub fn error_for_path(path: &str, e: GatewayError) -> axum::response::Response {
    if path.starts_with("/v1/messages") {
        crate::surface::Surface::Messages.error(e)
    } else {
        crate::surface::Surface::Chat.error(e)
    }
}

/// The run key a client presents: `Authorization: Bearer` (OpenAI SDKs),
/// `x-api-key` (Anthropic SDKs) or `api-key` (Azure-style clients). The
/// first one that names a run wins.
fn attribution(gw: &Gateway, headers: &HeaderMap) -> Result<Option<RunAttribution>, GatewayError> {
    let found = presented_keys(headers).find_map(|k| gw.inner.hooks.resolve_key(k));
    if found.is_none() && gw.inner.config.require_session_key {
        return Err(GatewayError::Unauthorized(
            "a session key is required: send the run's key as `Authorization: Bearer <key>` (OPENAI_API_KEY), `x-api-key` (ANTHROPIC_API_KEY) or `api-key`"
                .to_string(),
        ));
    }
    Ok(found)
}

/// The model to route: the client's if its first segment names a provider;
/// else the calling run's agent `model:`; else the first `gateway.model_map`
/// glob that matches; else the client's as is (default provider or 400).
pub(crate) fn resolve_model(
    gw: &Gateway,
    attribution: Option<&RunAttribution>,
    model: &str,
) -> String {
    let cfg = &gw.inner.config;
    let head = model
        .split_once('/')
        .map_or(model, |(h, _)| h)
        .trim()
        .to_lowercase();
    if routing::find_provider(&cfg.providers, &head).is_some() {
        return model.to_string();
    }
    if let Some(m) = attribution.and_then(|a| a.model.as_deref()) {
        return m.to_string();
    }
    if let Some(m) = cfg.model_map.lookup(model) {
        return m.to_string();
    }
    model.to_string()
}

async fn handle(
    gw: Gateway,
    surface: Surface,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match parse(&gw, surface, endpoint, &headers, body).await {
        Ok(call) => proxy::run(&gw.inner, call).await,
        Err(e) => {
            crate::metrics::request("none", Priority::Normal, e.status_label());
            surface.error(e)
        }
    }
}

async fn parse(
    gw: &Gateway,
    surface: Surface,
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
    let (mut body, size) = read_body(gw, body, gw.inner.config.max_body_bytes).await?;
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
    if matches!(surface, Surface::Chat | Surface::Messages)
        && endpoint == Endpoint::Chat
        && !body.get("messages").is_some_and(Value::is_array)
    {
        return Err(GatewayError::BadRequest(
            "`messages` is required and must be an array".to_string(),
        ));
    }
    let model = resolve_model(gw, attribution.as_ref(), &model);
    // Translation walks the whole body: a large one is translated on the
    // CPU pool, off the async workers (issue 23, finding 2).
    let (translation, client_body, forward_headers) =
        if size >= cpu::PARSE_OFF_THREAD_BYTES && surface != Surface::Chat {
            let headers = headers.clone();
            let (result, back) = gw
                .inner
                .cpu
                .run(move || {
                    let mut body = body;
                    let result = translate(surface, &mut body, &headers);
                    (result, body)
                })
                .await?;
            body = back;
            result?
        } else {
            translate(surface, &mut body, headers)?
        };
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
        surface,
        translation,
        body,
        client_body,
        forward_headers,
        model,
        stream,
        priority,
        attribution,
        fallback_model,
        started,
        budget: None,
    })
}

/// A Responses or Messages body becomes its chat translation, kept in
/// `body`; returned: how to turn the answer back, the client's own body
/// (for providers that speak the surface natively) and the client headers
/// forwarded to them.
type Translated = (
    Translation,
    Option<Map<String, Value>>,
    Vec<(&'static str, axum::http::HeaderValue)>,
);

fn translate(
    surface: Surface,
    body: &mut Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Translated, GatewayError> {
    Ok(match surface {
        Surface::Chat => (Translation::None, None, Vec::new()),
        Surface::Responses => {
            let (chat, echo) = responses::to_chat(body)?;
            let client = std::mem::replace(body, chat);
            (Translation::Responses(echo), Some(client), Vec::new())
        }
        Surface::Messages => {
            let (chat, client_model) = messages::to_chat(body)?;
            let client = std::mem::replace(body, chat);
            let forward = ["anthropic-version", "anthropic-beta"]
                .into_iter()
                .filter_map(|name| Some((name, headers.get(name)?.clone())))
                .collect();
            (
                Translation::Messages {
                    model: client_model,
                },
                Some(client),
                forward,
            )
        }
    })
}

/// `GET /v1/models` ([`crate::models`]): OpenAI's list, or Anthropic's
/// when the client sends `anthropic-version`.
async fn models(State(gw): State<Gateway>, uri: Uri, headers: HeaderMap) -> Response {
    let lists = crate::models::list(&gw.inner.providers).await;
    if anthropic_client(&uri, &headers) {
        return Json(crate::models::anthropic_list(&lists)).into_response();
    }
    Json(crate::models::openai_list(&lists)).into_response()
}
