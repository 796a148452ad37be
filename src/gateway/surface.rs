//! The three client APIs the gateway speaks ("surfaces") and what differs
//! between them once a call is in the shared pipeline: how an error looks,
//! how a chat-completions answer is turned into the client's shape, and how
//! an upstream chat stream is re-cut into the client's events.
//!
//! * [`Surface::Chat`]: OpenAI chat completions (and completions/embeddings),
//!   passed through.
//! * [`Surface::Responses`]: OpenAI Responses (`POST /v1/responses`),
//!   translated by [`super::responses`].
//! * [`Surface::Messages`]: Anthropic Messages (`POST /v1/messages`),
//!   translated by [`super::messages`].
//!
//! A provider that lists the surface in `native` gets the client's body as
//! is (passthrough); every other provider gets chat completions.

use std::collections::VecDeque;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::config::NativeApi;
use super::error::GatewayError;
use super::tools::RiskyCall;

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
        .unwrap_or_else(|| super::upstream::snippet(body));
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

/// The text of a chat answer's `message`, followed by the note on the calls
/// held back for approval (both translated answers show it).
pub(crate) fn answer_text(message: &Value, risky: &[RiskyCall], approvals: &[Value]) -> String {
    let mut text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !risky.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&approval_text(risky, approvals));
    }
    text
}

/// What the client is told instead of a held-back high-risk tool call.
pub(crate) fn approval_text(calls: &[RiskyCall], entries: &[Value]) -> String {
    let mut lines = Vec::new();
    for (c, e) in calls.iter().zip(entries) {
        match e.get("decision_id").and_then(Value::as_str) {
            Some(id) => lines.push(format!(
                "The high-risk tool call `{}` needs a human decision before it runs: decision {id} is proposed. Wait for it with `moziplus bb decision wait {id}`, then call the tool again if it was approved.",
                c.name
            )),
            None => lines.push(format!(
                "The high-risk tool call `{}` was not delivered: {}",
                c.name,
                e.get("reason").and_then(Value::as_str).unwrap_or("approval could not be requested")
            )),
        }
    }
    lines.join("\n")
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
        self.list
            .push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
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
/// reason of its first choice. `None` for a chunk without choices (usage).
pub(crate) struct ChatDelta<'a> {
    pub text: Option<&'a str>,
    pub tool_calls: &'a [Value],
    pub finish_reason: Option<&'a str>,
}

pub(crate) fn chat_delta(chunk: &Value) -> Option<ChatDelta<'_>> {
    let choice = chunk.pointer("/choices/0")?;
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
/// Fed parsed `data:` chunks in order; high-risk tool calls are held back
/// and handed to the caller at the end to become approval requests.
pub(crate) trait StreamTranslator: Send {
    /// Events to send before the first upstream byte (e.g. `response.created`).
    fn start(&mut self, out: &mut VecDeque<Bytes>);
    /// One upstream chunk.
    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>);
    /// Tool calls held back because they are high-risk.
    fn held_back(&self) -> Vec<RiskyCall>;
    /// Upstream ended normally. `approvals` = the `requires_approval`
    /// entries for [`StreamTranslator::held_back`], in order.
    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        approvals: &[Value],
        out: &mut VecDeque<Bytes>,
    );
    /// Upstream broke or stalled after the stream started.
    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>);
    /// A keep-alive event for long waits, if the API has one.
    fn ping(&self) -> Option<Bytes> {
        None
    }
}

/// Chat streams whose request offered a high-risk tool: chunks pass through
/// unchanged except the deltas of high-risk tool calls, which are held back
/// (SPEC 7.6: such a call never reaches the agent unapproved). Once a call
/// was held, the closing chunks wait until the approvals are proposed; then
/// a content chunk names the decisions and the finish chunk carries
/// `requires_approval`.
pub(crate) struct ChatHoldback {
    high_risk: Vec<String>,
    strip_usage_only: bool,
    /// Chat tool-call index → held back?
    calls: Vec<(u64, bool)>,
    held: Vec<RiskyCall>,
    /// Chunks from the first finish chunk on, while a call is held.
    tail: Vec<Value>,
    /// Some call was passed on (the finish reason stays `tool_calls`).
    passed_call: bool,
    id: Option<Value>,
    model: Option<Value>,
}

impl ChatHoldback {
    pub fn new(high_risk: Vec<String>, strip_usage_only: bool) -> Self {
        ChatHoldback {
            high_risk,
            strip_usage_only,
            calls: Vec::new(),
            held: Vec::new(),
            tail: Vec::new(),
            passed_call: false,
            id: None,
            model: None,
        }
    }

    fn send(out: &mut VecDeque<Bytes>, chunk: &Value) {
        out.push_back(Bytes::from(format!("data: {chunk}\n\n")));
    }
}

impl StreamTranslator for ChatHoldback {
    fn start(&mut self, _out: &mut VecDeque<Bytes>) {}

    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>) {
        let mut chunk = chunk.clone();
        if self.id.is_none() {
            self.id = chunk.get("id").cloned();
            self.model = chunk.get("model").cloned();
        }
        let usage_only = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| c.is_empty());
        if usage_only && self.strip_usage_only {
            return;
        }
        if let Some(calls) = chunk
            .pointer_mut("/choices/0/delta/tool_calls")
            .and_then(Value::as_array_mut)
        {
            calls.retain(|tc| {
                let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
                let held = match self.calls.iter().find(|(i, _)| *i == index) {
                    Some((_, held)) => *held,
                    None => {
                        let name = tc
                            .pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let held = self.high_risk.iter().any(|h| h == name);
                        self.calls.push((index, held));
                        if held {
                            self.held.push(RiskyCall {
                                id: tc
                                    .get("id")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string(),
                                name: name.to_string(),
                                arguments: String::new(),
                            });
                        } else {
                            self.passed_call = true;
                        }
                        held
                    }
                };
                if held {
                    if let (Some(last), Some(args)) = (
                        self.held.last_mut(),
                        tc.pointer("/function/arguments").and_then(Value::as_str),
                    ) {
                        last.arguments.push_str(args);
                    }
                }
                !held
            });
            if calls.is_empty() {
                if let Some(delta) = chunk
                    .pointer_mut("/choices/0/delta")
                    .and_then(Value::as_object_mut)
                {
                    delta.remove("tool_calls");
                }
            }
        }
        let finished = chunk
            .pointer("/choices/0/finish_reason")
            .is_some_and(|f| !f.is_null());
        if !self.held.is_empty() && (finished || !self.tail.is_empty()) {
            self.tail.push(chunk);
            return;
        }
        let empty_delta = chunk
            .pointer("/choices/0/delta")
            .and_then(Value::as_object)
            .is_some_and(|d| d.is_empty() || d.keys().all(|k| k == "role"));
        if empty_delta
            && !finished
            && !usage_only
            && !self.held.is_empty()
            && chunk.get("usage").is_none()
        {
            return;
        }
        Self::send(out, &chunk);
    }

    fn held_back(&self) -> Vec<RiskyCall> {
        self.held
            .iter()
            .map(|c| RiskyCall {
                arguments: super::tools::strip_fences(&c.arguments).to_string(),
                ..c.clone()
            })
            .collect()
    }

    fn finish(
        &mut self,
        _usage: Option<(u64, u64, u64)>,
        approvals: &[Value],
        out: &mut VecDeque<Bytes>,
    ) {
        if !self.held.is_empty() {
            let text = approval_text(&self.held_back(), approvals);
            let note = json!({"id": self.id, "object": "chat.completion.chunk", "model": self.model,
                "choices": [{"index": 0, "delta": {"content": format!("\n\n{text}")}, "finish_reason": null}]});
            Self::send(out, &note);
            for mut chunk in std::mem::take(&mut self.tail) {
                if let Some(f) = chunk.pointer_mut("/choices/0/finish_reason") {
                    if !f.is_null() {
                        if !self.passed_call {
                            *f = json!("stop");
                        }
                        chunk["requires_approval"] = Value::Array(approvals.to_vec());
                    }
                }
                Self::send(out, &chunk);
            }
        }
        out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        let body = json!({"error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"}});
        Self::send(out, &body);
    }
}
