//! The REST API and the event stream of docs/API.md.
//!
//! One file per resource, each with its own `router()` returning a
//! [`utoipa_axum::router::OpenApiRouter`]: the handlers carry their
//! `#[utoipa::path]`, so `GET /api/openapi.json` is generated from the same
//! code that routes. [`router`] merges them; `http::router` mounts the result.
//!
//! Shared here: the extractors that turn every malformed request into a 4xx
//! [`ApiError`] ([`ApiJson`], [`ApiQuery`], [`ApiPath`]), the project lookup
//! ([`open_project`]), the operator actor of API writes ([`actor`]) and the
//! bearer-token rule for mutating routes ([`require_token`]).

pub mod agents;
pub mod alerts;
pub mod budgets;
pub mod decisions;
pub mod error;
pub mod event_stream;
pub mod gateway_history;
pub mod projects;
pub mod records;
pub mod runs;
pub mod schedules;
pub mod sessions;
pub mod skills;
pub mod tasks;
pub mod usage;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::blackboard::{Actor, Blackboard};
use crate::daemon::Daemon;
use crate::gateway::status::{GatewayStatus, RuntimeSettings};
use crate::registry::{self, ProjectId};
use crate::service::{identity, Notifier, ProjectService, ServiceError};

pub use error::ApiError;

/// Largest request body the API accepts (bodies are small JSON documents).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Every API route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .merge(agents::router())
        .merge(projects::router())
        .merge(tasks::router())
        .merge(decisions::router())
        .merge(records::router())
        .merge(runs::router())
        .merge(sessions::router())
        .merge(skills::router())
        .merge(schedules::router())
        .merge(event_stream::router())
        .merge(alerts::router())
        .merge(gateway_history::router())
        .merge(usage::router())
        .merge(budgets::router())
}

/// The document's header: title, version, the bearer scheme, and the
/// gateway's routes (served by `gateway::handlers`, described here).
pub fn base_document() -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("moziplus")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The moziplus daemon's HTTP API (docs/API.md). Mutating routes need \
                     `Authorization: Bearer <server.api_token>` when a token is configured.",
                ))
                .build(),
        )
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    // The gateway's JSON documents, so their routes can name them.
    let mut schemas = Vec::new();
    for (name, schema) in [
        (GatewayStatus::name(), GatewayStatus::schema()),
        (RuntimeSettings::name(), RuntimeSettings::schema()),
    ] {
        schemas.push((name.into_owned(), schema));
    }
    GatewayStatus::schemas(&mut schemas);
    RuntimeSettings::schemas(&mut schemas);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    for (method, path, summary) in GATEWAY_ROUTES {
        let body = match *path {
            "/api/gateway/status" => Some(GatewayStatus::name()),
            "/api/gateway/config" => Some(RuntimeSettings::name()),
            _ => None,
        };
        let ok = match body {
            Some(name) => utoipa::openapi::ResponseBuilder::new()
                .description("OK")
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(name)))
                        .build(),
                )
                .build(),
            None => utoipa::openapi::Response::new("OK"),
        };
        let op = utoipa::openapi::path::OperationBuilder::new()
            .summary(Some(*summary))
            .tag("gateway")
            .description(Some("See docs/GATEWAY.md."))
            .response("200", ok)
            .build();
        doc.paths
            .add_path_operation(*path, vec![method.clone()], op);
    }
    doc
}

/// The gateway's routes (`gateway::handlers::router`).
const GATEWAY_ROUTES: &[(utoipa::openapi::HttpMethod, &str, &str)] = {
    use utoipa::openapi::HttpMethod::{Get, Post};
    &[
        (
            Post,
            "/v1/chat/completions",
            "OpenAI-compatible chat completions (streaming or not)",
        ),
        (Post, "/v1/completions", "OpenAI-compatible completions"),
        (Post, "/v1/embeddings", "OpenAI-compatible embeddings"),
        (
            Post,
            "/v1/responses",
            "OpenAI Responses (streaming or not), translated onto chat-only providers",
        ),
        (
            Post,
            "/v1/messages",
            "Anthropic Messages (streaming or not; `?beta=true` accepted), translated onto chat-only providers",
        ),
        (
            Post,
            "/v1/messages/count_tokens",
            "Anthropic token count (an estimate from a tokenizer)",
        ),
        (Get, "/v1/models", "Models the gateway routes"),
        (
            Get,
            "/api/gateway/status",
            "Gateway snapshot: settings, providers, breakers, lanes, usage",
        ),
        (
            Get,
            "/api/gateway/config",
            "Runtime gateway settings (admin)",
        ),
        (
            Post,
            "/api/gateway/config",
            "Change runtime gateway settings (admin)",
        ),
    ]
};

/// A JSON body; malformed JSON, a wrong content type, missing fields and
/// oversized bodies are 4xx [`ApiError`]s naming what was wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError::from_status(rej.status(), rej.body_text())),
        }
    }
}

/// A JSON body that may be left out entirely (then `T::default()`); when
/// present it is checked like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let has_type = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|rej| ApiError::from_status(rej.status(), rej.body_text()))?;
        if bytes.is_empty() && !has_type {
            return Ok(OptionalJson(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| OptionalJson(v))
    }
}

/// Query parameters; a bad one is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

/// Path parameters; a bad one is a 400 naming it.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

/// The open blackboard of an active project: 400 for a malformed id, 404 for
/// an unknown or archived project, 503 when the project is registered but its
/// database cannot be used.
pub async fn open_project(d: &Daemon, raw: &str) -> Result<Blackboard, ApiError> {
    let id = ProjectId::parse(raw)?;
    if d.projects().get(id.as_str()).is_none() {
        // Created by the CLI since the last tick: pick it up now.
        if let Err(e) = d.projects().refresh(d).await {
            return Err(ApiError::unavailable(e.to_string()));
        }
    }
    match d.projects().get(id.as_str()) {
        Some(slot) => match slot.bb {
            // Removed or replaced under the daemon: refuse rather than let
            // writes vanish into the unlinked file.
            Some(bb) => match bb.file_problem() {
                None => Ok(bb),
                Some(e) => Err(ApiError::unavailable(format!(
                    "project {id} is unavailable: {e}"
                ))),
            },
            None => Err(ApiError::unavailable(format!(
                "project {id} is unavailable: {}",
                slot.error.unwrap_or_default()
            ))),
        },
        None => match registry::active_project(d.home(), id.as_str()) {
            Err(e) => Err(ApiError::not_found(e.to_string())),
            Ok(_) => Err(ApiError::not_found(format!(
                "project {id:?} is not in the registry (see `moziplus project list`)"
            ))),
        },
    }
}

/// The project service of an active project (see [`open_project`]), whose
/// writes wake the daemon after they commit.
pub async fn project_service(d: &Daemon, raw: &str) -> Result<ProjectService, ApiError> {
    let bb = open_project(d, raw).await?;
    let id = ProjectId::parse(raw)?;
    let waker = d.clone();
    Ok(ProjectService::new(
        bb,
        d.home().clone(),
        id,
        Notifier::new(move || waker.wake()),
    ))
}

/// Who an API write is recorded as: `operator:api`, or the `X-Mozi-Actor`
/// header's name (see [`identity::api_operator`]).
pub fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
    let given = headers
        .get("x-mozi-actor")
        .map(|v| v.to_str().unwrap_or(""));
    Ok(identity::api_operator(given)?)
}

/// Service refusals are the caller's mistakes (400/403/404/409); store
/// trouble is ours (500/503).
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::NotFound(_) => ApiError::not_found(message),
            ServiceError::Conflict(_) | ServiceError::IllegalTransition(_) => {
                ApiError::conflict(message)
            }
            ServiceError::Invalid(_) => ApiError::bad_request(message),
            ServiceError::Forbidden(_) => ApiError::forbidden(message),
            ServiceError::Timeout(_) => ApiError::unavailable(message),
            ServiceError::Store(e) => e.into(),
            ServiceError::Io { .. } => ApiError::internal(message),
        }
    }
}

/// With `server.api_token` set, every request that is not a read (GET, HEAD,
/// OPTIONS) needs `Authorization: Bearer <token>`.
pub async fn require_token(State(d): State<Daemon>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let token = d.config().server.api_token.as_deref().unwrap_or("");
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // A run's own route checks the run's key itself (`runs::run_bb`).
    if token.is_empty() || read || req.uri().path() == runs::BB_PATH {
        return next.run(req).await;
    }
    match crate::gateway::bearer(req.headers()) {
        Some(g) if crate::gateway::constant_time_eq(g.as_bytes(), token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::unauthorized("wrong bearer token").into_response(),
        None => ApiError::unauthorized(
            "this route changes state: send Authorization: Bearer <server.api_token>",
        )
        .into_response(),
    }
}

/// Parses a comma list of values (`status=pending,working`).
pub(crate) fn parse_list<T: std::str::FromStr<Err = String>>(
    raw: Option<&str>,
) -> Result<Vec<T>, ApiError> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(ApiError::bad_request))
        .collect()
}

/// Checks a `limit` parameter against `1..=max`, defaulting when absent.
pub(crate) fn check_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}
