//! OpenAI Responses (`POST /v1/responses`) on chat-completions providers.
//!
//! Request: `instructions` → leading system message; `input` (a string or
//! items) → messages: `message` items with `input_text`/`output_text`/
//! `input_image` parts, `function_call` → assistant `tool_calls`,
//! `function_call_output` → `role: tool`; `developer` is `system`. Leading
//! system/developer messages are merged into one system message (Codex
//! sends two; several chat templates accept only one, and only first);
//! a later one becomes a user message. `reasoning` items and items of
//! other kinds are dropped with a debug log. Function tools become chat
//! tools; `custom` (freeform) tools become a function with one string
//! parameter `input` and come back as `custom_tool_call`; other tool kinds
//! (`namespace`, `web_search`, `local_shell`, …) are dropped, not refused.
//! `previous_response_id` / `conversation` are refused: the gateway is
//! stateless.
//!
//! Response: `message` and `function_call` output items, `status`
//! (`completed`, or `incomplete` on `length`), `usage` in Responses names.
//! Streams get the full event sequence with `sequence_number`.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::GatewayError;
use super::surface::{approval_text, new_id, sse_event, unix_now, StreamTranslator};
use super::tools::RiskyCall;

/// Fields accepted and dropped without a word (OpenAI-side state, caching,
/// telemetry and reasoning controls a chat provider has no use for).
const DROPPED: &[&str] = &[
    "store",
    "include",
    "prompt_cache_key",
    "client_metadata",
    "reasoning",
    "metadata",
    "service_tier",
    "truncation",
    "background",
    "safety_identifier",
    "user",
    "top_logprobs",
    "max_tool_calls",
    "prompt_cache_retention",
    "stream_options",
];

/// The Responses request fields the translation reads.
#[derive(Debug, Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    text: Option<TextOptions>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<Value>,
    #[serde(default)]
    conversation: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct TextOptions {
    #[serde(default)]
    format: Option<Value>,
}

/// A `function_call` input item.
#[derive(Debug, Deserialize)]
struct FunctionCall {
    call_id: String,
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// A `function_call_output` / `custom_tool_call_output` input item.
#[derive(Debug, Deserialize)]
struct CallOutput {
    call_id: String,
    #[serde(default)]
    output: Value,
}

/// A `custom_tool_call` input item.
#[derive(Debug, Deserialize)]
struct CustomCall {
    call_id: String,
    name: String,
    #[serde(default)]
    input: String,
}

/// What rendering the answer needs to know about the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Echo {
    /// The model as the client named it.
    pub model: String,
    /// Names of `custom` tools (their calls come back as `custom_tool_call`).
    pub custom_tools: HashSet<String>,
}

/// Translate a Responses request body to a chat-completions body.
pub(crate) fn to_chat(
    body: &Map<String, Value>,
) -> Result<(Map<String, Value>, Echo), GatewayError> {
    for key in ["previous_response_id", "conversation"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(GatewayError::BadRequest(format!(
                "`{key}` is not supported: the moziplus gateway is stateless; send the whole conversation in `input`"
            )));
        }
    }
    let req: Request = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| GatewayError::BadRequest(format!("invalid Responses request: {e}")))?;
    let _ = (&req.previous_response_id, &req.conversation);
    for key in body.keys() {
        if DROPPED.contains(&key.as_str()) {
            continue;
        }
        if !matches!(
            key.as_str(),
            "model"
                | "instructions"
                | "input"
                | "tools"
                | "tool_choice"
                | "parallel_tool_calls"
                | "max_output_tokens"
                | "temperature"
                | "top_p"
                | "text"
                | "stream"
        ) {
            tracing::debug!(field = %key, "responses: dropping unsupported request field");
        }
    }
    let mut messages = Messages::default();
    if let Some(i) = req.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.system(i.to_string());
    }
    match &req.input {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(&mut messages, item)
                    .map_err(|e| GatewayError::BadRequest(format!("input[{i}]: {e}")))?;
            }
        }
        Some(_) => {
            return Err(GatewayError::BadRequest(
                "`input` must be a string or an array of items".to_string(),
            ))
        }
    }
    let mut echo = Echo {
        model: req.model.clone(),
        ..Echo::default()
    };
    let mut chat = Map::new();
    chat.insert("model".into(), json!(req.model));
    chat.insert("messages".into(), Value::Array(messages.finish()));
    let tools = chat_tools(&req.tools, &mut echo.custom_tools)?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = req.tool_choice.as_ref().and_then(tool_choice) {
            chat.insert("tool_choice".into(), tc);
        }
        if let Some(p) = req.parallel_tool_calls {
            chat.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    if let Some(n) = req.max_output_tokens {
        chat.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        chat.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        chat.insert("top_p".into(), json!(p));
    }
    if let Some(format) = req.text.and_then(|t| t.format) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let mut schema = Map::new();
                for k in ["name", "schema", "strict", "description"] {
                    if let Some(v) = format.get(k) {
                        schema.insert(k.into(), v.clone());
                    }
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    if req.stream == Some(true) {
        chat.insert("stream".into(), json!(true));
    }
    Ok((chat, echo))
}

/// Builds the chat `messages` list: leading system texts merged, tool calls
/// attached to the assistant message they follow.
#[derive(Default)]
pub(crate) struct Messages {
    system: Vec<String>,
    list: Vec<Value>,
}

impl Messages {
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

/// Chat content from Responses content: a string, or text and image parts.
fn content(v: &Value) -> Result<Value, String> {
    let parts = match v {
        Value::String(_) => return Ok(v.clone()),
        Value::Null => return Ok(json!("")),
        Value::Array(p) => p,
        _ => return Err("`content` must be a string or an array of parts".into()),
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "summary_text") => {
                texts.push(part.get("text").and_then(Value::as_str).unwrap_or(""))
            }
            Some("input_image") => {
                let url = part.get("image_url").and_then(Value::as_str).ok_or(
                    "an `input_image` part needs `image_url` (file ids are not supported)",
                )?;
                images.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            other => tracing::debug!(part = ?other, "responses: dropping content part"),
        }
    }
    if images.is_empty() {
        return Ok(json!(texts.join("")));
    }
    let mut all: Vec<Value> = texts
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    all.extend(images);
    Ok(Value::Array(all))
}

/// Text of a tool output (a string or content parts).
fn output_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other
            .get("content")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_string),
    }
}

fn input_item(messages: &mut Messages, item: &Value) -> Result<(), String> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .or_else(|| item.get("role").map(|_| "message"));
    let parse = |what: &str| format!("invalid `{what}` item");
    match kind {
        Some("message") => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            let content = content(item.get("content").unwrap_or(&Value::Null))?;
            match role {
                "system" | "developer" => messages.system(match content {
                    Value::String(s) => s,
                    other => output_text(&other),
                }),
                "user" | "assistant" => messages.push(json!({"role": role, "content": content})),
                other => return Err(format!("unknown message role {other:?}")),
            }
        }
        Some("function_call") => {
            let c: FunctionCall = serde_json::from_value(item.clone())
                .map_err(|e| format!("{}: {e}", parse("function_call")))?;
            let args = match c.arguments {
                Value::String(s) => s,
                Value::Null => "{}".to_string(),
                other => other.to_string(),
            };
            messages.tool_call(&c.call_id, &c.name, args);
        }
        Some("custom_tool_call") => {
            let c: CustomCall = serde_json::from_value(item.clone())
                .map_err(|e| format!("{}: {e}", parse("custom_tool_call")))?;
            messages.tool_call(&c.call_id, &c.name, json!({"input": c.input}).to_string());
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            let o: CallOutput = serde_json::from_value(item.clone())
                .map_err(|e| format!("{}: {e}", parse("function_call_output")))?;
            messages.push(json!({"role": "tool", "tool_call_id": o.call_id, "content": output_text(&o.output)}));
        }
        Some("reasoning") => tracing::debug!("responses: dropping a reasoning item"),
        other => {
            tracing::debug!(kind = ?other, "responses: dropping an input item a chat provider cannot take")
        }
    }
    Ok(())
}

fn chat_tools(tools: &[Value], custom: &mut HashSet<String>) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let name = t.get("name").and_then(Value::as_str);
        match (t.get("type").and_then(Value::as_str), name) {
            (Some("function"), Some(name)) => {
                let mut f = Map::new();
                f.insert("name".into(), json!(name));
                if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                    f.insert("description".into(), d.clone());
                }
                f.insert(
                    "parameters".into(),
                    t.get("parameters")
                        .filter(|p| p.is_object())
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                out.push(json!({"type": "function", "function": f}));
            }
            (Some("function"), None) => {
                return Err(GatewayError::BadRequest(format!(
                    "tools[{i}]: a function tool needs a `name`"
                )))
            }
            (Some("custom"), Some(name)) => {
                custom.insert(name.to_string());
                let mut d = t
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(def) = t.pointer("/format/definition").and_then(Value::as_str) {
                    d.push_str("\n\nThe input must follow this grammar:\n");
                    d.push_str(def);
                }
                out.push(json!({"type": "function", "function": {
                    "name": name, "description": d,
                    "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "the raw tool input"}}, "required": ["input"]}}}));
            }
            (kind, _) => {
                tracing::debug!(kind = ?kind, "responses: dropping a tool kind chat providers do not have")
            }
        }
    }
    Ok(out)
}

fn tool_choice(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(v.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name")?.as_str()?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        _ => None,
    }
}

/// `usage` in Responses names.
fn usage_json(usage: Option<(u64, u64, u64)>) -> Value {
    let (i, o, t) = usage.unwrap_or((0, 0, 0));
    json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": t})
}

/// The Responses object around `output`.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "model": model, "output": output, "parallel_tool_calls": true,
        "tool_choice": "auto", "tools": [], "error": null, "incomplete_details": null,
        "instructions": null, "metadata": {}, "temperature": null, "top_p": null,
        "usage": usage,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(
    echo: &Echo,
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    if echo.custom_tools.contains(name) {
        let input = serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| arguments.to_string());
        return json!({"id": id, "type": "custom_tool_call", "status": status,
            "call_id": call_id, "name": name, "input": input});
    }
    json!({"id": id, "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments})
}

/// A non-streaming chat answer (already validated; `risky` calls held back
/// with their `requires_approval` entries) as a Responses object.
pub(crate) fn from_chat(
    chat: &Value,
    echo: &Echo,
    risky: &[RiskyCall],
    approvals: &[Value],
) -> Value {
    let message = chat
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(Value::Null);
    let finish = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let mut output = Vec::new();
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
    if !text.is_empty() {
        output.push(message_item(&new_id("msg_"), &text, "completed"));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let call_id = call.get("id").and_then(Value::as_str).unwrap_or("");
        if risky.iter().any(|r| r.id == call_id) {
            continue;
        }
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "{}".to_string(),
        };
        let call_id = if call_id.is_empty() {
            new_id("call_")
        } else {
            call_id.to_string()
        };
        output.push(call_item(
            echo,
            &new_id("fc_"),
            &call_id,
            name,
            &args,
            "completed",
        ));
    }
    let status = if finish == "length" {
        "incomplete"
    } else {
        "completed"
    };
    let mut resp = response_object(
        &new_id("resp_"),
        chat.get("created")
            .and_then(Value::as_u64)
            .unwrap_or_else(unix_now),
        &echo.model,
        status,
        output,
        usage_json(super::surface::chat_usage(chat)),
    );
    if status == "incomplete" {
        resp["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if !approvals.is_empty() {
        resp["requires_approval"] = Value::Array(approvals.to_vec());
    }
    resp
}

/// An output item being streamed.
struct OpenItem {
    /// Output index.
    index: usize,
    id: String,
    kind: OpenKind,
}

enum OpenKind {
    Text(String),
    Call {
        call_id: String,
        name: String,
        arguments: String,
        /// High-risk: nothing of it is sent.
        held: bool,
    },
}

/// Chat chunks → Responses stream events.
pub(crate) struct ResponsesStream {
    echo: Echo,
    high_risk: Vec<String>,
    id: String,
    created: u64,
    seq: u64,
    /// Finished output items with their output index, for `response.completed`.
    done: Vec<(usize, Value)>,
    next_index: usize,
    text: Option<OpenItem>,
    /// Tool calls by their chat `index`.
    calls: Vec<(u64, OpenItem)>,
    finish_reason: Option<String>,
    held: Vec<RiskyCall>,
}

impl ResponsesStream {
    pub fn new(echo: Echo, high_risk: Vec<String>) -> Self {
        ResponsesStream {
            echo,
            high_risk,
            id: new_id("resp_"),
            created: unix_now(),
            seq: 0,
            done: Vec::new(),
            next_index: 0,
            text: None,
            calls: Vec::new(),
            finish_reason: None,
            held: Vec::new(),
        }
    }

    fn emit(&mut self, out: &mut VecDeque<Bytes>, name: &str, mut data: Value) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse_event(out, name, &data);
    }

    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        response_object(
            &self.id,
            self.created,
            &self.echo.model,
            status,
            output,
            usage,
        )
    }

    /// The finished items in output order.
    fn take_output(&mut self) -> Vec<Value> {
        let mut done = std::mem::take(&mut self.done);
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, v)| v).collect()
    }

    fn text_delta(&mut self, delta: &str, out: &mut VecDeque<Bytes>) {
        if self.text.is_none() {
            let item = OpenItem {
                index: self.next_index,
                id: new_id("msg_"),
                kind: OpenKind::Text(String::new()),
            };
            self.next_index += 1;
            let added = json!({"output_index": item.index, "item": {"id": item.id, "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}});
            let part = json!({"item_id": item.id, "output_index": item.index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}});
            self.emit(out, "response.output_item.added", added);
            self.emit(out, "response.content_part.added", part);
            self.text = Some(item);
        }
        let Some(item) = self.text.as_mut() else {
            return;
        };
        if let OpenKind::Text(t) = &mut item.kind {
            t.push_str(delta);
        }
        let data = json!({"item_id": item.id, "output_index": item.index, "content_index": 0, "delta": delta, "logprobs": []});
        self.emit(out, "response.output_text.delta", data);
    }

    fn close_text(&mut self, out: &mut VecDeque<Bytes>) {
        let Some(item) = self.text.take() else { return };
        let OpenKind::Text(text) = &item.kind else {
            return;
        };
        let (id, index) = (item.id.clone(), item.index);
        self.emit(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let done = message_item(&id, text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        self.done.push((index, done));
    }

    fn call_delta(&mut self, tc: &Value, out: &mut VecDeque<Bytes>) {
        let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let name = tc
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = tc
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !self.calls.iter().any(|(i, _)| *i == index) {
            self.close_text(out);
            let held = self.high_risk.iter().any(|h| h == name);
            let call_id = tc
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id("call_"), str::to_string);
            let item = OpenItem {
                index: if held { usize::MAX } else { self.next_index },
                id: new_id("fc_"),
                kind: OpenKind::Call {
                    call_id,
                    name: name.to_string(),
                    arguments: String::new(),
                    held,
                },
            };
            if !held {
                self.next_index += 1;
                let OpenKind::Call { call_id, name, .. } = &item.kind else {
                    return;
                };
                let added = call_item(&self.echo, &item.id, call_id, name, "", "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": item.index, "item": added}),
                );
            }
            self.calls.push((index, item));
        }
        let Some((_, item)) = self.calls.iter_mut().find(|(i, _)| *i == index) else {
            return;
        };
        let OpenKind::Call {
            arguments,
            held,
            name: n,
            ..
        } = &mut item.kind
        else {
            return;
        };
        if n.is_empty() && !name.is_empty() {
            n.push_str(name);
        }
        arguments.push_str(args);
        if !*held && !args.is_empty() {
            let data = json!({"item_id": item.id, "output_index": item.index, "delta": args});
            let custom = self.echo.custom_tools.contains(n.as_str());
            // Custom tool input is only known once complete (it is unwrapped from JSON).
            if !custom {
                self.emit(out, "response.function_call_arguments.delta", data);
            }
        }
    }

    fn close_calls(&mut self, out: &mut VecDeque<Bytes>) {
        for (_, item) in std::mem::take(&mut self.calls) {
            let OpenKind::Call {
                call_id,
                name,
                arguments,
                held,
            } = item.kind
            else {
                continue;
            };
            let arguments = if arguments.trim().is_empty() {
                "{}".to_string()
            } else {
                arguments
            };
            if held {
                self.held.push(RiskyCall {
                    id: call_id,
                    name,
                    arguments: super::tools::strip_fences(&arguments).to_string(),
                });
                continue;
            }
            let done = call_item(
                &self.echo,
                &item.id,
                &call_id,
                &name,
                &arguments,
                "completed",
            );
            if done["type"] == "function_call" {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item.id, "output_index": item.index, "arguments": arguments}),
                );
            }
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": item.index, "item": done}),
            );
            self.done.push((item.index, done));
        }
    }
}

impl StreamTranslator for ResponsesStream {
    fn start(&mut self, out: &mut VecDeque<Bytes>) {
        let obj = self.object("in_progress", Vec::new(), Value::Null);
        self.emit(out, "response.created", json!({"response": obj}));
        let obj = self.object("in_progress", Vec::new(), Value::Null);
        self.emit(out, "response.in_progress", json!({"response": obj}));
    }

    fn chunk(&mut self, chunk: &Value, out: &mut VecDeque<Bytes>) {
        let Some(delta) = super::surface::chat_delta(chunk) else {
            return;
        };
        if let Some(text) = delta.text {
            self.text_delta(text, out);
        }
        for tc in delta.tool_calls {
            self.call_delta(tc, out);
        }
        if let Some(f) = delta.finish_reason {
            self.finish_reason = Some(f.to_string());
        }
    }

    fn held_back(&self) -> Vec<RiskyCall> {
        let mut held = self.held.clone();
        for (_, item) in &self.calls {
            if let OpenKind::Call {
                call_id,
                name,
                arguments,
                held: true,
            } = &item.kind
            {
                held.push(RiskyCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: super::tools::strip_fences(arguments).to_string(),
                });
            }
        }
        held
    }

    fn finish(
        &mut self,
        usage: Option<(u64, u64, u64)>,
        approvals: &[Value],
        out: &mut VecDeque<Bytes>,
    ) {
        let held = self.held_back();
        self.calls
            .retain(|(_, i)| !matches!(i.kind, OpenKind::Call { held: true, .. }));
        if !held.is_empty() {
            let text = approval_text(&held, approvals);
            let prefix = if self.text.is_some() { "\n\n" } else { "" };
            self.text_delta(&format!("{prefix}{text}"), out);
        }
        self.close_text(out);
        self.close_calls(out);
        let incomplete = self.finish_reason.as_deref() == Some("length");
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let output = self.take_output();
        let mut obj = self.object(status, output, usage_json(usage));
        if incomplete {
            obj["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        if !approvals.is_empty() {
            obj["requires_approval"] = Value::Array(approvals.to_vec());
        }
        let name = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, name, json!({"response": obj}));
    }

    fn fail(&mut self, message: &str, out: &mut VecDeque<Bytes>) {
        let output = self.take_output();
        let mut obj = self.object("failed", output, Value::Null);
        obj["error"] = json!({"code": "server_error", "message": message});
        self.emit(out, "response.failed", json!({"response": obj}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn codex_shaped_request_is_accepted_and_translated() {
        let (chat, echo) = to_chat(&body(json!({
            "model": "gpt-5-codex", "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: workspace-write"}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "approvals: never"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
                {"type": "message", "role": "developer", "content": "late note"}
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "description": "run", "strict": false, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
                {"type": "namespace", "name": "mcp", "tools": []},
                {"type": "web_search"},
                {"type": "custom", "name": "apply_patch", "description": "patch", "format": {"type": "grammar", "definition": "start: x"}}
            ],
            "tool_choice": "auto", "parallel_tool_calls": false, "store": false, "stream": true,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "reasoning": {"effort": "high"},
            "text": {"verbosity": "low"}, "client_metadata": {"x": 1}
        })))
        .unwrap();
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "You are Codex.\n\nsandbox: workspace-write\n\napprovals: never"})
        );
        assert_eq!(m[1], json!({"role": "user", "content": "list files"}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "exec_command");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_a", "content": "a.txt"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "late note"}));
        let tools = chat["tools"].as_array().unwrap();
        assert_eq!(
            tools.len(),
            2,
            "namespace and web_search dropped: {tools:?}"
        );
        assert_eq!(tools[0]["function"]["name"], "exec_command");
        assert!(echo.custom_tools.contains("apply_patch"));
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stream"], true);
        for dropped in [
            "store",
            "include",
            "reasoning",
            "text",
            "prompt_cache_key",
            "instructions",
            "input",
        ] {
            assert!(
                chat.get(dropped).is_none(),
                "{dropped} must not reach the chat provider"
            );
        }
    }

    #[test]
    fn sampling_and_format_are_mapped_and_state_is_refused() {
        let (chat, _) = to_chat(&body(json!({"model": "m", "input": "hi", "max_output_tokens": 64,
            "temperature": 0.2, "top_p": 0.9,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}}})))
        .unwrap();
        assert_eq!(chat["max_tokens"], 64);
        assert_eq!(chat["response_format"]["json_schema"]["name"], "out");
        let err = to_chat(&body(
            json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("stateless"), "{err}");
        let err = to_chat(&body(json!({"model": "m", "input": 5}))).unwrap_err();
        assert!(err.to_string().contains("`input`"), "{err}");
    }

    #[test]
    fn stream_events_are_complete_and_numbered() {
        let mut s = ResponsesStream::new(
            Echo {
                model: "m".into(),
                ..Echo::default()
            },
            vec!["scale_deployment".into()],
        );
        let mut out = VecDeque::new();
        s.start(&mut out);
        s.chunk(
            &json!({"choices": [{"delta": {"content": "Hel"}}]}),
            &mut out,
        );
        s.chunk(
            &json!({"choices": [{"delta": {"content": "lo"}}]}),
            &mut out,
        );
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "exec_command", "arguments": "{\"cmd\""}}]}}]}), &mut out);
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":\"ls\"}"}}]}}]}), &mut out);
        s.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "scale_deployment", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}), &mut out);
        assert_eq!(s.held_back().len(), 1);
        s.finish(Some((3, 4, 7)), &[json!({"decision_id": "D-1"})], &mut out);
        let events: Vec<Value> = out
            .iter()
            .map(|b| {
                let t = std::str::from_utf8(b).unwrap();
                serde_json::from_str(t.split("data: ").nth(1).unwrap().trim()).unwrap()
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(names[..2], ["response.created", "response.in_progress"]);
        assert!(names.contains(&"response.function_call_arguments.done"));
        assert_eq!(*names.last().unwrap(), "response.completed");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let text = serde_json::to_string(&events).unwrap();
        assert!(
            !text.contains("\"name\":\"scale_deployment\""),
            "held-back call leaked"
        );
        let done = &events.last().unwrap()["response"];
        assert_eq!(
            done["id"], events[0]["response"]["id"],
            "one response id throughout"
        );
        assert_eq!(done["usage"]["total_tokens"], 7);
        assert_eq!(done["output"][0]["type"], "message");
        assert_eq!(done["output"][1]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(done["requires_approval"][0]["decision_id"], "D-1");
    }
}
