//! Building the client's response from a successful upstream answer:
//! usage booking, tool-call validation, approval annotations and the
//! gateway's own response headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::approval::{self, HighRisk};
use crate::call::{Call, Translation};
use crate::hooks::TokenUsage;
use crate::routing::Route;
use crate::state::{GatewayInner, ProviderRuntime};
use crate::upstream::{self, Endpoint};
use crate::usage::{cached_of, usage_of};
use crate::{messages, responses, tools};

pub(crate) fn decorate(
    h: &mut axum::http::HeaderMap,
    route: &Route,
    provider: &ProviderRuntime,
    queue_wait: Duration,
) {
    if let Ok(v) = HeaderValue::from_str(&provider.cfg.name) {
        h.insert("x-moziplus-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&route.upstream_model) {
        h.insert("x-moziplus-upstream-model", v);
    }
    h.insert(
        "x-moziplus-queue-wait-ms",
        HeaderValue::from(queue_wait.as_millis() as u64),
    );
}

pub(crate) async fn passthrough_error(
    provider: &ProviderRuntime,
    resp: reqwest::Response,
) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get("content-type").cloned();
    let body = upstream::read_body(provider, resp)
        .await
        .unwrap_or_default();
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().insert(
        "content-type",
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    out
}

/// A successful upstream JSON answer after booking and checks.
pub(crate) struct Checked {
    /// The parsed body (`None`: not JSON, sent on as is).
    pub value: Option<Value>,
    /// The body as received.
    pub bytes: Bytes,
    /// `value` differs from `bytes` (cleaned tool calls, withheld calls).
    pub changed: bool,
    /// The `requires_approval` entries of the withheld high-risk calls.
    pub approvals: Vec<Value>,
}

fn json_response(bytes: Bytes) -> Response {
    let mut out = Response::new(Body::from(bytes));
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    out
}

/// Why a successful upstream JSON answer is not passed on.
pub(crate) enum Rejected {
    /// A tool call failed validation (retried like a failure, not counted
    /// against the provider's breaker).
    InvalidToolCall(String),
    /// The answer is not a complete one: a failed attempt.
    Incomplete(String),
}

/// Whether a chat-completions answer is complete: `choices` is a non-empty
/// array and each choice says why it finished. A provider that cut its
/// answer off (or sent a stub) must not be reported as a finished answer.
pub(crate) fn incomplete_chat_answer(answer: &Value) -> Option<String> {
    let Some(choices) = answer.get("choices").and_then(Value::as_array) else {
        return Some("the provider's answer has no `choices`".to_string());
    };
    if choices.is_empty() {
        return Some("the provider's answer has an empty `choices` list".to_string());
    }
    let unfinished = choices
        .iter()
        .any(|c| c.get("finish_reason").is_none_or(Value::is_null));
    unfinished.then(|| {
        "the provider's answer has a choice without a `finish_reason` (truncated)".to_string()
    })
}

/// Book usage; for chat answers check the answer is complete, validate tool
/// calls and propose approvals for high-risk ones.
pub(crate) async fn check_json(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    endpoint: Endpoint,
    bytes: Bytes,
) -> Result<Checked, Rejected> {
    let mut checked = Checked {
        value: None,
        bytes,
        changed: false,
        approvals: Vec::new(),
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&checked.bytes) else {
        return Ok(checked);
    };
    if let Some((prompt, completion, total)) = usage_of(&value) {
        let usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            model: route.upstream_model.clone(),
            provider: provider.cfg.name.clone(),
            cached_tokens: cached_of(&value),
            cost_usd: None,
        };
        gw.record_usage(call.attribution.as_ref(), usage);
    }
    let patterns = high_risk(gw, provider);
    let attribution = call.attribution.as_ref();
    match endpoint {
        Endpoint::Chat => {
            if let Some(problem) = incomplete_chat_answer(&value) {
                return Err(Rejected::Incomplete(problem));
            }
            if provider.cfg.validate_tool_calls {
                if let Some(offered) = call.body.get("tools").and_then(Value::as_array) {
                    tools::validate_tool_calls(&mut value, offered)
                        .map_err(Rejected::InvalidToolCall)?;
                    checked.changed = true;
                }
            }
            let calls = approval::chat_answer_calls(&value);
            let verdicts =
                approval::decide(gw.approval_desk(), &patterns, attribution, &calls).await;
            checked.changed |= approval::withhold_in_chat_answer(&mut value, &verdicts);
            checked.approvals = approval::entries(&verdicts);
        }
        Endpoint::Responses | Endpoint::Messages if !patterns.is_empty() => {
            let calls = approval::native_answer_calls(&value);
            let verdicts =
                approval::decide(gw.approval_desk(), &patterns, attribution, &calls).await;
            checked.changed |= approval::withhold_in_native_answer(&mut value, &verdicts);
            checked.approvals = approval::entries(&verdicts);
        }
        _ => {}
    }
    checked.value = Some(value);
    Ok(checked)
}

/// The high-risk tool name patterns in force for a provider.
pub(crate) fn high_risk(gw: &GatewayInner, provider: &ProviderRuntime) -> HighRisk {
    HighRisk::new(
        provider
            .cfg
            .high_risk_tools
            .as_ref()
            .unwrap_or(&gw.config.approval.high_risk_tools),
    )
}

/// The client's response: chat and native answers as received (or as
/// changed by the checks, `requires_approval` included); translated
/// surfaces re-shaped.
pub(crate) fn render_json(call: &Call, translated: bool, checked: Checked) -> Response {
    let mut out = match (&checked.value, translated, &call.translation) {
        (Some(value), true, Translation::Responses(echo)) => json_response(Bytes::from(
            responses::from_chat(value, echo, &checked.approvals).to_string(),
        )),
        (Some(value), true, Translation::Messages { model }) => json_response(Bytes::from(
            messages::from_chat(value, model, &checked.approvals).to_string(),
        )),
        (Some(value), _, _) if checked.changed => {
            json_response(Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
        }
        _ => json_response(checked.bytes.clone()),
    };
    if !checked.approvals.is_empty() {
        let ids: Vec<&str> = checked
            .approvals
            .iter()
            .filter(|e| e["status"] == "proposed")
            .filter_map(|e| e["decision_id"].as_str())
            .collect();
        let v = if ids.is_empty() {
            "rejected".to_string()
        } else {
            ids.join(",")
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.headers_mut().insert("x-moziplus-requires-approval", v);
        }
    }
    out
}
