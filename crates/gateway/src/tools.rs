//! Tool-call validation.
//!
//! Models on free tiers often wrap `function.arguments` in markdown fences
//! or drop required parameters. For providers with `validate_tool_calls`, a
//! non-streaming chat response is checked: fences stripped, arguments must be
//! JSON objects, the tool must be one the request offered and its required
//! parameters present. A failed check is retried like an upstream failure.
//!
//! Which calls are high-risk and held back is [`crate::approval`]'s rule.

use serde_json::Value;

/// Remove a surrounding markdown code fence (```` ```json … ``` ````).
pub fn strip_fences(args: &str) -> &str {
    let mut s = args.trim();
    if let Some(rest) = s.strip_prefix("```") {
        s = rest.split_once('\n').map_or("", |(_, body)| body);
        s = s.trim_end();
        s = s.strip_suffix("```").unwrap_or(s);
    }
    s.trim()
}

fn tool_calls_mut(response: &mut Value) -> Vec<&mut Value> {
    let Some(choices) = response.get_mut("choices").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    choices
        .iter_mut()
        .filter_map(|c| {
            c.pointer_mut("/message/tool_calls")
                .and_then(Value::as_array_mut)
        })
        .flat_map(|calls| calls.iter_mut())
        .collect()
}

/// Validate and clean the tool calls of a chat response in place against the
/// `tools` the request offered. The error says what was wrong.
pub fn validate_tool_calls(response: &mut Value, offered: &[Value]) -> Result<(), String> {
    for call in tool_calls_mut(response) {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return Err("tool call without a function name".to_string());
        }
        let spec = offered
            .iter()
            .find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(&name));
        let Some(spec) = spec else {
            return Err(format!("tool call names unknown tool {name:?}"));
        };
        let raw = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(_)) => call
                .pointer("/function/arguments")
                .map(Value::to_string)
                .unwrap_or_default(),
            _ => "{}".to_string(),
        };
        let cleaned = strip_fences(&raw);
        let args: Value = serde_json::from_str(if cleaned.is_empty() { "{}" } else { cleaned })
            .map_err(|e| format!("arguments of tool {name:?} are not valid JSON: {e}"))?;
        let Some(obj) = args.as_object() else {
            return Err(format!("arguments of tool {name:?} must be a JSON object"));
        };
        let required = spec
            .pointer("/function/parameters/required")
            .and_then(Value::as_array);
        if let Some(missing) = required.and_then(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .find(|k| !obj.contains_key(*k))
                .map(str::to_string)
        }) {
            return Err(format!(
                "tool {name:?} is missing required parameter {missing:?}"
            ));
        }
        if let Some(f) = call.get_mut("function") {
            f["arguments"] = Value::String(args.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offered() -> Vec<Value> {
        vec![
            json!({"type":"function","function":{"name":"scale_deployment","parameters":{"type":"object","required":["name","replicas"]}}}),
        ]
    }

    fn response(args: &str) -> Value {
        json!({"choices":[{"message":{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"scale_deployment","arguments":args}}]}}]})
    }

    #[test]
    fn fences_are_stripped_and_arguments_normalised() {
        let mut r = response("```json\n{\"name\":\"api\",\"replicas\":3}\n```");
        validate_tool_calls(&mut r, &offered()).unwrap();
        let args = r
            .pointer("/choices/0/message/tool_calls/0/function/arguments")
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"name":"api","replicas":3})
        );
    }

    #[test]
    fn invalid_json_unknown_tool_and_missing_parameter_are_refused() {
        assert!(validate_tool_calls(&mut response("{name: api"), &offered())
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(
            validate_tool_calls(&mut response("{\"name\":\"api\"}"), &offered())
                .unwrap_err()
                .contains("replicas")
        );
        let mut unknown = response("{}");
        unknown["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = json!("rm_rf");
        assert!(validate_tool_calls(&mut unknown, &offered())
            .unwrap_err()
            .contains("unknown tool"));
    }
}
