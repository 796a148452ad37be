//! A non-streaming chat answer as a Responses object, and the item shapes
//! the stream shares.

use serde_json::{json, Value};

use super::Echo;
use crate::surface::{new_id, unix_now};
use crate::usage::usage_of;

/// `usage` in Responses names.
pub(super) fn usage_json(usage: Option<(u64, u64, u64)>) -> Value {
    let (i, o, t) = usage.unwrap_or((0, 0, 0));
    json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": t})
}

/// The Responses object around `output`.
pub(super) fn response_object(
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

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

pub(super) fn call_item(
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

/// A non-streaming chat answer (already validated, high-risk calls already
/// withheld with their `requires_approval` entries) as a Responses object.
pub(crate) fn from_chat(chat: &Value, echo: &Echo, approvals: &[Value]) -> Value {
    let message = chat
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(Value::Null);
    let finish = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let mut output = Vec::new();
    let text = message.get("content").and_then(Value::as_str).unwrap_or("");
    if !text.is_empty() {
        output.push(message_item(&new_id("msg_"), text, "completed"));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let call_id = call.get("id").and_then(Value::as_str).unwrap_or("");
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
        usage_json(usage_of(chat)),
    );
    if status == "incomplete" {
        resp["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if !approvals.is_empty() {
        resp["requires_approval"] = Value::Array(approvals.to_vec());
    }
    resp
}
