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

use super::config::secs;
use super::hooks::{ApprovalRequest, TokenUsage};
use super::proxy::Call;
use super::routing::Route;
use super::upstream::{self, Endpoint};
use super::{stream, tools, GatewayInner, ProviderRuntime};

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

/// Book usage, validate tool calls, attach approvals. `Err` = invalid tool
/// call (retry).
pub(crate) async fn finish_json(
    gw: &Arc<GatewayInner>,
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    bytes: Bytes,
) -> Result<Response, String> {
    let json_response = |bytes: Bytes| {
        let mut out = Response::new(Body::from(bytes));
        out.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        out
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(json_response(bytes));
    };
    if let Some((prompt, completion, total)) = stream::usage_of(&value) {
        let usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            model: route.upstream_model.clone(),
            provider: provider.cfg.name.clone(),
        };
        gw.record_usage(call.attribution.as_ref(), &usage);
    }
    if call.endpoint != Endpoint::Chat {
        return Ok(json_response(bytes));
    }
    let mut changed = false;
    if provider.cfg.validate_tool_calls {
        if let Some(offered) = call.body.get("tools").and_then(Value::as_array) {
            tools::validate_tool_calls(&mut value, offered)?;
            changed = true;
        }
    }
    let high_risk = provider
        .cfg
        .high_risk_tools
        .as_ref()
        .unwrap_or(&gw.config.approval.high_risk_tools);
    let risky = tools::risky_calls(&value, high_risk);
    let mut ids = Vec::new();
    if !risky.is_empty() {
        let mut entries = Vec::new();
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
                ids.push(id.clone());
            }
            tracing::info!(tool = %c.name, decision = ?decision, "high-risk tool call needs approval");
            entries.push(tools::approval_entry(
                c,
                &decision,
                gw.config.approval.expiry,
            ));
        }
        if let Some(obj) = value.as_object_mut() {
            obj.insert("requires_approval".into(), Value::Array(entries));
        }
        changed = true;
    }
    let mut out = if changed {
        json_response(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
    } else {
        json_response(bytes)
    };
    if !risky.is_empty() {
        let v = if ids.is_empty() {
            "rejected".to_string()
        } else {
            ids.join(",")
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.headers_mut().insert("x-moziplus-requires-approval", v);
        }
    }
    Ok(out)
}
