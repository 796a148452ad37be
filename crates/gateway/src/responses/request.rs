//! The request: a Responses body as a chat-completions body.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::surface::ChatMessages as Messages;

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
    log_unsupported(body);
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
        if let Some(rf) = response_format(&format) {
            chat.insert("response_format".into(), rf);
        }
    }
    if req.stream == Some(true) {
        chat.insert("stream".into(), json!(true));
    }
    Ok((chat, echo))
}

/// Fields neither translated nor in [`DROPPED`] are dropped with a debug
/// log (new OpenAI fields must not break agents).
fn log_unsupported(body: &Map<String, Value>) {
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
}

/// Chat's `response_format` for a Responses `text.format` (`json_schema`,
/// `json_object`; plain text needs none).
fn response_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k) {
                    schema.insert(k.into(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        Some("json_object") => Some(json!({"type": "json_object"})),
        _ => None,
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
}
