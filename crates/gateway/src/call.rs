//! A parsed client request, as the handlers hand it to the pipeline
//! ([`crate::proxy`]) and the response builders ([`crate::respond`]) read it.

use axum::http::HeaderValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use std::sync::Arc;

use crate::hooks::BudgetHold;
use crate::hooks::RunAttribution;
use crate::queue::Priority;
use crate::responses;
use crate::surface::Surface;
use crate::upstream::Endpoint;

/// A parsed client request.
pub(crate) struct Call {
    pub endpoint: Endpoint,
    /// The client API the call arrived on (error shape, answer shape).
    pub surface: Surface,
    /// How to turn a chat answer into the surface's shape.
    pub translation: Translation,
    /// The body sent to a chat provider (for Responses/Messages calls: the
    /// translation).
    pub body: Map<String, Value>,
    /// The client's own body, for providers that speak the surface natively.
    pub client_body: Option<Map<String, Value>>,
    /// Client headers forwarded to native providers (`anthropic-version`,
    /// `anthropic-beta`).
    pub forward_headers: Vec<(&'static str, HeaderValue)>,
    pub model: String,
    pub stream: bool,
    pub priority: Priority,
    pub attribution: Option<RunAttribution>,
    pub fallback_model: Option<String>,
    pub started: Instant,
    /// The call's budget reservation, kept by the call and its stream
    /// until they end ([`crate::budget`]).
    pub budget: Option<Arc<BudgetHold>>,
}

/// What a chat answer is turned into.
pub(crate) enum Translation {
    /// Chat (or completions/embeddings): passed on.
    None,
    /// OpenAI Responses.
    Responses(responses::Echo),
    /// Anthropic Messages; the client's model name is echoed.
    Messages { model: String },
}
