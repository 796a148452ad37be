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
    // Anthropic counts cache reads and writes apart from `input_tokens`;
    // they are prompt tokens all the same (OpenAI's `prompt_tokens`
    // already include its cached ones).
    let prompt = field("prompt_tokens", "input_tokens")
        + field("cache_read_input_tokens", "cache_read_input_tokens")
        + field("cache_creation_input_tokens", "cache_creation_input_tokens");
    let completion = field("completion_tokens", "output_tokens");
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(prompt + completion);
    Some((prompt, completion, total))
}

/// The prompt tokens of a usage report that the provider served from its
/// cache (priced at `cached_input`): OpenAI chat's
/// `prompt_tokens_details.cached_tokens`, Responses'
/// `input_tokens_details.cached_tokens`, Anthropic's
/// `cache_read_input_tokens`. Zero when the report names none.
pub(crate) fn cached_of(v: &Value) -> u64 {
    let Some(u) = v
        .get("usage")
        .or_else(|| v.pointer("/response/usage"))
        .or_else(|| v.pointer("/message/usage"))
    else {
        return 0;
    };
    u.pointer("/prompt_tokens_details/cached_tokens")
        .or_else(|| u.pointer("/input_tokens_details/cached_tokens"))
        .or_else(|| u.get("cache_read_input_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_tokens_are_read_in_each_protocol_and_anthropic_cache_counts_as_prompt() {
        let chat = json!({"usage": {"prompt_tokens": 100, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 60}}});
        assert_eq!(usage_of(&chat), Some((100, 5, 105)));
        assert_eq!(cached_of(&chat), 60);
        let responses = json!({"response": {"usage": {"input_tokens": 80, "output_tokens": 4,
            "total_tokens": 84, "input_tokens_details": {"cached_tokens": 30}}}});
        assert_eq!(usage_of(&responses), Some((80, 4, 84)));
        assert_eq!(cached_of(&responses), 30);
        // Anthropic: input_tokens excludes the cache reads and writes.
        let messages = json!({"message": {"usage": {"input_tokens": 10, "output_tokens": 2,
            "cache_read_input_tokens": 50, "cache_creation_input_tokens": 5}}});
        assert_eq!(usage_of(&messages), Some((65, 2, 67)));
        assert_eq!(cached_of(&messages), 50);
        assert_eq!(cached_of(&json!({"usage": {"prompt_tokens": 1}})), 0);
    }
}
