//! The request: a Messages body as a chat-completions body, and the
//! `count_tokens` estimate.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::surface::ChatMessages;

/// The Messages request fields the translation reads.
#[derive(Debug, Deserialize)]
struct Request {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

/// A `tool_use` block.
#[derive(Debug, Deserialize)]
struct ToolUse {
    id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

/// A `tool_result` block.
#[derive(Debug, Deserialize)]
struct ToolResult {
    tool_use_id: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    is_error: bool,
}

/// Text of a `system` value or of `tool_result` content: a string or blocks.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

fn image_part(block: &Value) -> Result<Value, String> {
    let source = block
        .get("source")
        .ok_or("an `image` block needs `source`")?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or("an image `url` source needs `url`")?
            .to_string(),
        other => return Err(format!("image source type {other:?} is not supported")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Translate a Messages request body to a chat-completions body. Returns the
/// client's model name too (echoed in the answer).
pub(crate) fn to_chat(
    body: &Map<String, Value>,
) -> Result<(Map<String, Value>, String), GatewayError> {
    let req: Request = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| GatewayError::BadRequest(format!("invalid Messages request: {e}")))?;
    let mut messages = ChatMessages::default();
    if let Some(system) = &req.system {
        let text = text_of(system);
        if !text.is_empty() {
            messages.system(text);
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        message(&mut messages, m)
            .map_err(|e| GatewayError::BadRequest(format!("messages[{i}]: {e}")))?;
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(req.model));
    chat.insert("messages".into(), Value::Array(messages.finish()));
    let tools = chat_tools(&req.tools)?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            let choice = match tc.kind.as_str() {
                "auto" => Some(json!("auto")),
                "any" => Some(json!("required")),
                "none" => Some(json!("none")),
                "tool" => {
                    let name = tc.name.as_deref().ok_or_else(|| {
                        GatewayError::BadRequest("tool_choice of type `tool` needs `name`".into())
                    })?;
                    Some(json!({"type": "function", "function": {"name": name}}))
                }
                other => {
                    return Err(GatewayError::BadRequest(format!(
                        "tool_choice type {other:?} is not one of auto, any, tool, none"
                    )))
                }
            };
            if let Some(c) = choice {
                chat.insert("tool_choice".into(), c);
            }
            if tc.disable_parallel_tool_use == Some(true) {
                chat.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if let Some(n) = req.max_tokens {
        chat.insert("max_tokens".into(), json!(n));
    }
    if let Some(stop) = req.stop_sequences.filter(|s| !s.is_empty()) {
        chat.insert("stop".into(), json!(stop));
    }
    if let Some(t) = req.temperature {
        chat.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        chat.insert("top_p".into(), json!(p));
    }
    if req.stream == Some(true) {
        chat.insert("stream".into(), json!(true));
    }
    Ok((chat, req.model))
}

fn message(out: &mut ChatMessages, m: &Message) -> Result<(), String> {
    let blocks = match &m.content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(b) => b.clone(),
        _ => return Err("`content` must be a string or an array of blocks".into()),
    };
    match m.role.as_str() {
        "system" => {
            out.system(text_of(&Value::Array(blocks)));
        }
        "user" => {
            let mut parts = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(json!({"type": "text", "text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
                    Some("image") => parts.push(image_part(b)?),
                    Some("tool_result") => {
                        let r: ToolResult = serde_json::from_value(b.clone())
                            .map_err(|e| format!("invalid `tool_result` block: {e}"))?;
                        let mut text = text_of(&r.content);
                        if r.is_error {
                            text = format!("Error: {text}");
                        }
                        out.push(json!({"role": "tool", "tool_call_id": r.tool_use_id, "content": text}));
                    }
                    other => tracing::debug!(block = ?other, "messages: dropping a user content block"),
                }
            }
            push_user(out, parts);
        }
        "assistant" => {
            let mut text = Vec::new();
            let mut calls = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ),
                    Some("tool_use") => {
                        let u: ToolUse = serde_json::from_value(b.clone())
                            .map_err(|e| format!("invalid `tool_use` block: {e}"))?;
                        let args = if u.input.is_null() {
                            "{}".to_string()
                        } else {
                            u.input.to_string()
                        };
                        calls.push((u.id, u.name, args));
                    }
                    other => {
                        tracing::debug!(block = ?other, "messages: dropping an assistant content block")
                    }
                }
            }
            let text = text.join("");
            if !text.is_empty() || calls.is_empty() {
                out.push(json!({"role": "assistant", "content": text}));
            }
            for (id, name, args) in calls {
                out.tool_call(&id, &name, args);
            }
        }
        other => {
            return Err(format!(
                "unknown role {other:?}; expected user or assistant"
            ))
        }
    }
    Ok(())
}

/// The user turn's text/image parts as one user message (a plain string
/// when it is only text), unless there are none (a pure tool-result turn).
fn push_user(out: &mut ChatMessages, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if parts.iter().all(|p| p["type"] == "text") {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        out.push(json!({"role": "user", "content": text.join("\n\n")}));
    } else {
        out.push(json!({"role": "user", "content": parts}));
    }
}

fn chat_tools(tools: &[Value]) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str);
        let schema = t.get("input_schema");
        match (kind, schema) {
            (None | Some("custom"), Some(schema)) => {
                let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                    GatewayError::BadRequest(format!("tools[{i}]: a tool needs a `name`"))
                })?;
                let mut f = Map::new();
                f.insert("name".into(), json!(name));
                if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                    f.insert("description".into(), d.clone());
                }
                f.insert("parameters".into(), schema.clone());
                out.push(json!({"type": "function", "function": f}));
            }
            _ => {
                tracing::debug!(kind = ?kind, "messages: dropping a server tool chat providers do not have")
            }
        }
    }
    Ok(out)
}

/// `POST /v1/messages/count_tokens`: an estimate of the prompt's input
/// tokens with the `o200k_base` BPE (tiktoken-rs). The upstream model's own
/// tokenizer is unknown, so this is an estimate, not Anthropic's count:
/// text of every message, tool call and tool definition, plus 3 tokens of
/// framing per message.
pub(crate) fn count_tokens(body: &Map<String, Value>) -> Result<u64, GatewayError> {
    let mut body = body.clone();
    body.remove("stream");
    let (chat, _) = to_chat(&body)?;
    Ok(crate::cpu::count_chat(&chat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claude_code_shaped_request_is_accepted_and_translated() {
        let (chat, model) = to_chat(&body(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 32000,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "system", "content": "extra system text"},
                {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "a.rs"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "fn main(){}"}]},
                    {"type": "text", "text": "go on"}]}
            ],
            "tools": [{"name": "Read", "description": "read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "adaptive"}, "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "metadata": {"user_id": "u"}, "top_k": 5, "stop_sequences": ["STOP"], "stream": true
        })))
        .unwrap();
        assert_eq!(model, "claude-sonnet-4-5");
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "You are Claude Code.\n\nextra system text"})
        );
        assert_eq!(m[1], json!({"role": "user", "content": "fix the bug"}));
        assert_eq!(m[2]["content"], "Reading.");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"file_path\":\"a.rs\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "fn main(){}"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "go on"}));
        assert_eq!(chat["tools"].as_array().unwrap().len(), 1);
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stop"], json!(["STOP"]));
        assert_eq!(chat["max_tokens"], 32000);
        for dropped in [
            "thinking",
            "context_management",
            "output_config",
            "metadata",
            "top_k",
            "system",
        ] {
            assert!(
                chat.get(dropped).is_none(),
                "{dropped} must not reach the chat provider"
            );
        }
    }

    #[test]
    fn count_tokens_estimates_and_grows_with_text() {
        let short = count_tokens(&body(
            json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
        ))
        .unwrap();
        let long = count_tokens(&body(json!({"model": "m", "messages": [{"role": "user", "content": "hello world, this is a longer prompt"}]}))).unwrap();
        assert!(short >= 4 && long > short + 5, "{short} {long}");
    }
}
