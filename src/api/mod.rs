//! The REST API and the event stream of docs/API.md.
//!
//! One file per resource, each with its own `router()` returning a
//! [`utoipa_axum::router::OpenApiRouter`]: the handlers carry their
//! `#[utoipa::path]`, so `GET /api/openapi.json` is generated from the same
//! code that routes. [`router`] merges them; `http::router` mounts the result.
//!
//! Here: the merged [`router`], the OpenAPI document's header and the
//! bearer-token rule for mutating routes ([`require_token`]). What every
//! handler shares is in leaf modules the resources import, not in this
//! file: [`error`] ([`ApiError`]) and [`extract`] (the extractors that turn
//! every malformed request into a 4xx, the project lookup, the operator
//! actor of API writes).

pub mod agents;
pub mod alerts;
pub mod budgets;
pub mod decisions;
pub mod error;
pub mod event_stream;
pub mod extract;
pub mod gateway_history;
pub mod projects;
pub mod records;
pub mod runs;
pub mod schedules;
pub mod sessions;
pub mod skills;
pub mod tasks;
pub mod usage;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::daemon::Daemon;
use crate::gateway::status::{GatewayStatus, RuntimeSettings};

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
