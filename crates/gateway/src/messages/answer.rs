//! A non-streaming chat answer as a Messages response, and the pieces the
//! stream shares.

use serde_json::{json, Value};

use crate::surface::new_id;
use crate::usage::usage_of;

/// Anthropic `stop_reason` for a chat `finish_reason`.
pub(super) fn stop_reason(finish: Option<&str>, has_tool_use: bool) -> &'static str {
    if has_tool_use {
        return "tool_use";
    }
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        _ => "end_turn",
    }
}

pub(super) fn usage_json(usage: Option<(u64, u64, u64)>) -> Value {
    let (i, o, _) = usage.unwrap_or((0, 0, 0));
    json!({"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(crate::tools::strip_fences(arguments)) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// A non-streaming chat answer (high-risk calls already withheld, their
/// notes in its text) as a Messages response.
pub(crate) fn from_chat(chat: &Value, model: &str, approvals: &[Value]) -> Value {
    let message = chat
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(Value::Null);
    let finish = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str);
    let mut content = Vec::new();
    let text = message.get("content").and_then(Value::as_str).unwrap_or("");
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let mut tool_use = false;
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = call.get("id").and_then(Value::as_str).unwrap_or("");
        tool_use = true;
        let args = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "{}".into(),
        };
        content.push(json!({"type": "tool_use", "id": if id.is_empty() { new_id("toolu_") } else { id.to_string() },
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
            "input": tool_input(&args)}));
    }
    let mut msg = json!({"id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason(finish, tool_use), "stop_sequence": null,
        "usage": usage_json(usage_of(chat))});
    if !approvals.is_empty() {
        msg["requires_approval"] = Value::Array(approvals.to_vec());
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_maps_tool_calls_and_stop_reasons() {
        let chat = json!({"choices": [{"message": {"role": "assistant", "content": "ok",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "Read", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
        let m = from_chat(&chat, "claude-x", &[]);
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][1]["input"], json!({"a": 1}));
        assert_eq!(m["usage"]["input_tokens"], 9);
        let long = json!({"choices": [{"message": {"content": "abc"}, "finish_reason": "length"}]});
        assert_eq!(from_chat(&long, "m", &[])["stop_reason"], "max_tokens");
    }
}
