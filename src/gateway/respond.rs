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

use super::call::{Call, Translation};
use super::config::secs;
use super::hooks::{ApprovalRequest, TokenUsage};
use super::routing::Route;
use super::upstream::{self, Endpoint};
use super::usage::usage_of;
use super::{messages, responses, tools, GatewayInner, ProviderRuntime};

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
    /// `value` differs from `bytes` (cleaned tool calls, approvals).
    pub changed: bool,
    /// High-risk tool calls found, with their `requires_approval` entries.
    pub risky: Vec<tools::RiskyCall>,
    pub approvals: Vec<Value>,
    /// Decision ids proposed.
    pub decision_ids: Vec<String>,
}

fn json_response(bytes: Bytes) -> Response {
    let mut out = Response::new(Body::from(bytes));
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    out
}

/// Book usage; for chat answers validate tool calls and propose approvals
/// for high-risk ones. `Err` = invalid tool call (retry).
pub(crate) async fn check_json(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    endpoint: Endpoint,
    bytes: Bytes,
) -> Result<Checked, String> {
    let mut checked = Checked {
        value: None,
        bytes,
        changed: false,
        risky: Vec::new(),
        approvals: Vec::new(),
        decision_ids: Vec::new(),
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
        };
        gw.record_usage(call.attribution.as_ref(), &usage);
    }
    if endpoint != Endpoint::Chat {
        checked.value = Some(value);
        return Ok(checked);
    }
    if provider.cfg.validate_tool_calls {
        if let Some(offered) = call.body.get("tools").and_then(Value::as_array) {
            tools::validate_tool_calls(&mut value, offered)?;
            checked.changed = true;
        }
    }
    let risky = tools::risky_calls(&value, high_risk(gw, provider));
    for c in &risky {
        let request = ApprovalRequest {
            attribution: call.attribution.clone(),
            tool_name: c.name.clone(),
            arguments_json: c.arguments.clone(),
            tool_call_id: c.id.clone(),
            expires_in: secs(gw.config.approval.expiry),
        };
        let decision = gw.hooks.propose_approval(request).await;
        if let Ok(id) = &decision {
            checked.decision_ids.push(id.clone());
        }
        tracing::info!(tool = %c.name, decision = ?decision, "high-risk tool call needs approval");
        checked.approvals.push(tools::approval_entry(
            c,
            &decision,
            gw.config.approval.expiry,
        ));
    }
    checked.risky = risky;
    checked.value = Some(value);
    Ok(checked)
}

/// The high-risk tool names in force for a provider.
pub(crate) fn high_risk<'a>(gw: &'a GatewayInner, provider: &'a ProviderRuntime) -> &'a [String] {
    provider
        .cfg
        .high_risk_tools
        .as_ref()
        .unwrap_or(&gw.config.approval.high_risk_tools)
}

/// The client's response: chat (and native answers) as received plus
/// `requires_approval`; translated surfaces re-shaped, with high-risk calls
/// held back.
pub(crate) fn render_json(call: &Call, translated: bool, mut checked: Checked) -> Response {
    let mut out = match (&checked.value, translated, &call.translation) {
        (Some(value), true, Translation::Responses(echo)) => json_response(Bytes::from(
            responses::from_chat(value, echo, &checked.risky, &checked.approvals).to_string(),
        )),
        (Some(value), true, Translation::Messages { model }) => json_response(Bytes::from(
            messages::from_chat(value, model, &checked.risky, &checked.approvals).to_string(),
        )),
        (Some(_), _, _) if !checked.approvals.is_empty() => {
            let mut value = checked.value.take().unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                obj.insert(
                    "requires_approval".into(),
                    Value::Array(checked.approvals.clone()),
                );
            }
            json_response(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
        }
        (Some(value), _, _) if checked.changed => {
            json_response(Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
        }
        _ => json_response(checked.bytes.clone()),
    };
    if !checked.risky.is_empty() {
        let v = if checked.decision_ids.is_empty() {
            "rejected".to_string()
        } else {
            checked.decision_ids.join(",")
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.headers_mut().insert("x-moziplus-requires-approval", v);
        }
    }
    out
}
