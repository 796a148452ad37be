//! Token usage as upstream answers report it, read from a whole body or one
//! stream event. Depends on nothing else in the gateway.

use serde_json::Value;

/// Usage of a chunk or body: chat's `usage.prompt_tokens`/`completion_tokens`,
/// or the Responses/Anthropic `input_tokens`/`output_tokens`, at the top
/// level or under `response` / `message` (native streams).
pub(crate) fn usage_of(v: &Value) -> Option<(u64, u64, u64)> {
    let u = v
        .get("usage")
        .or_else(|| v.pointer("/response/usage"))
        .or_else(|| v.pointer("/message/usage"))?
        .as_object()?;
    let field = |a: &str, b: &str| {
        u.get(a)
            .or_else(|| u.get(b))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let prompt = field("prompt_tokens", "input_tokens");
    let completion = field("completion_tokens", "output_tokens");
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(prompt + completion);
    Some((prompt, completion, total))
}

/// Two usage reports of one stream combined (Anthropic streams split input
/// and output tokens over two events).
pub(crate) fn merge_usage(a: Option<(u64, u64, u64)>, b: (u64, u64, u64)) -> (u64, u64, u64) {
    match a {
        None => b,
        Some(a) => {
            let (p, c) = (a.0.max(b.0), a.1.max(b.1));
            (p, c, a.2.max(b.2).max(p + c))
        }
    }
}
