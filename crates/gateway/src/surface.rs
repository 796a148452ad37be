//! The three client APIs the gateway speaks ("surfaces") and what differs
//! between them once a call is in the shared pipeline: how an error looks,
//! how a chat-completions answer is turned into the client's shape, and how
//! an upstream chat stream is re-cut into the client's events.
//!
//! * [`Surface::Chat`]: OpenAI chat completions (and completions/embeddings),
//!   passed through.
//! * [`Surface::Responses`]: OpenAI Responses (`POST /v1/responses`),
//!   translated by [`crate::responses`].
//! * [`Surface::Messages`]: Anthropic Messages (`POST /v1/messages`),
//!   translated by [`crate::messages`].
//!
//! A provider that lists the surface in `native` gets the client's body as
//! is (passthrough); every other provider gets chat completions.

use std::collections::VecDeque;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::approval::{ToolCall, Verdict};
use crate::config::NativeApi;
use crate::error::GatewayError;

/// Which client API a call arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Chat,
    Responses,
    Messages,
}

impl Surface {
    /// The native API a provider must declare to get this surface unchanged.
    pub fn native_api(self) -> Option<NativeApi> {
        match self {
            Surface::Chat => None,
            Surface::Responses => Some(NativeApi::Responses),
            Surface::Messages => Some(NativeApi::Messages),
        }
    }

    /// The error in this API's own shape. Chat and Responses share OpenAI's
    /// `{"error": {...}}`; Messages uses Anthropic's
    /// `{"type": "error", "error": {"type", "message"}}`. Status and the
    /// `Retry-After` / `X-Moziplus-Limit-Source` headers are the same.
    pub fn error(self, e: GatewayError) -> Response {
        match self {
            Surface::Chat | Surface::Responses => e.into_response(),
            Surface::Messages => anthropic_error(e),
        }
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A gateway error rendered the Anthropic way (headers kept).
pub(crate) fn anthropic_error(e: GatewayError) -> Response {
    let status = e.status();
    let body = json!({"type": "error", "error": {
        "type": anthropic_type(status.as_u16()), "message": e.to_string(), "code": e.code()}});
    let openai_shaped = e.into_response();
    let mut resp = (status, axum::Json(body)).into_response();
    for name in ["retry-after", "x-moziplus-limit-source"] {
        if let Some(v) = openai_shaped.headers().get(name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

/// An upstream error body (OpenAI shape, or anything) re-shaped for the
/// surface, keeping the upstream's status: a client mistake the upstream
/// reported (400, 404, 422…) arrives in the client's own error shape.
pub(crate) fn reshape_upstream_error(surface: Surface, status: u16, body: &[u8]) -> Response {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| parsed.get("message").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| crate::upstream::snippet(body));
    let status =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body = match surface {
        Surface::Messages => json!({"type": "error", "error": {
            "type": anthropic_type(status.as_u16()),
            "message": format!("upstream: {message}")}}),
        _ => json!({"error": {"message": format!("upstream: {message}"),
            "type": "invalid_request_error", "code": "upstream_rejected"}}),
    };
    (status, axum::Json(body)).into_response()
}

/// One SSE event with an `event:` line (both SDKs read it; Anthropic's
/// skips events without one).
pub(crate) fn sse_event(out: &mut VecDeque<Bytes>, name: &str, data: &Value) {
    out.push_back(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
}

/// A random id with a prefix (`resp_…`, `msg_…`, `fc_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds the chat `messages` list: leading system texts merged, tool calls
/// attached to the assistant message they follow.
#[derive(Default)]
pub(crate) struct ChatMessages {
    system: Vec<String>,
    list: Vec<Value>,
}

impl ChatMessages {
    /// A system/developer text: merged into the leading system message while
    /// no other message came yet, else sent as a user message.
    pub fn system(&mut self, text: String) {
        if self.list.is_empty() {
            self.system.push(text);
        } else {
            self.list.push(json!({"role": "user", "content": text}));
        }
    }

    pub fn push(&mut self, message: Value) {
        self.list.push(message);
    }

    /// Add a tool call to the last assistant message, or start one.
    pub fn tool_call(&mut self, id: &str, name: &str, arguments: String) {
        let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
        if let Some(last) = self.list.last_mut().filter(|m| m["role"] == "assistant") {
            match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                Some(calls) => calls.push(call),
                None => last["tool_calls"] = json!([call]),
            }
            return;
        }
        // `""`, not null or missing: llama.cpp's server (llama-cpp-python)
        // refuses both with a 500 ("Input should be a valid string").
        self.list
            .push(json!({"role": "assistant", "content": "", "tool_calls": [call]}));
    }

    pub fn finish(self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.list.len() + 1);
        if !self.system.is_empty() {
            out.push(json!({"role": "system", "content": self.system.join("\n\n")}));
        }
        out.extend(self.list);
        out
    }
}

/// What one upstream chat-completions chunk says, for the translators: the
/// text delta (empty ones left out), the tool-call deltas and the finish
/// reason of its choice 0 (the one with `index: 0`, wherever it is in the
/// array; translated calls ask for one choice). `None` for a chunk without
/// it (usage).
pub(crate) struct ChatDelta<'a> {
    pub text: Option<&'a str>,
    pub tool_calls: &'a [Value],
    pub finish_reason: Option<&'a str>,
}

pub(crate) fn chat_delta(chunk: &Value) -> Option<ChatDelta<'_>> {
    let choices = chunk.get("choices")?.as_array()?;
    let choice = choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .or_else(|| choices.iter().find(|c| c.get("index").is_none()))?;
    Some(ChatDelta {
        text: choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty()),
        tool_calls: choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str),
    })
}

/// Re-cuts an upstream chat-completions stream into a client API's events.
/// Fed parsed `data:` chunks in order. Text goes out as it comes; tool calls
/// are collected whole and sent by [`StreamTranslator::finish`] once
/// [`crate::approval::decide`] judged the complete calls.
pub(crate) trait StreamTranslator: Send {
    /// Events to send before the first upstream byte (e.g. `response.created`).
    fn start(&mut self, out: &mut VecDeque<Bytes>);
    /// One upstream chunk.
    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>);
    /// The complete tool calls of the answer, none of them sent yet.
    fn calls(&self) -> Vec<ToolCall>;
    /// Upstream ended normally. `verdicts` = one per [`StreamTranslator::calls`],
    /// in order: delivered calls are sent, withheld ones told.
    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        verdicts: &[Verdict],
        out: &mut VecDeque<Bytes>,
    );
    /// Upstream broke, stalled or was cut off after the stream started.
    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>);
    /// A keep-alive event for long waits, if the API has one.
    fn ping(&self) -> Option<Bytes> {
        None
    }
}
