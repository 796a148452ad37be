//! How a call is spoken to one provider: which endpoint (the client's
//! surface natively, or translated to chat completions), the body sent
//! upstream, and the stream translator its answer goes through.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::call::{Call, Translation};
use crate::respond::high_risk;
use crate::routing::Route;
use crate::state::{GatewayInner, ProviderRuntime};
use crate::stream_calls::ChatHoldback;
use crate::surface::{StreamTranslator, Surface};
use crate::upstream::Endpoint;
use crate::{messages, responses};

/// How one provider is spoken to for this call.
pub(crate) struct Dialect {
    pub endpoint: Endpoint,
    /// The surface is translated to chat completions for this provider.
    pub translated: bool,
}

pub(crate) fn dialect(call: &Call, provider: &ProviderRuntime) -> Dialect {
    let native = call
        .surface
        .native_api()
        .is_some_and(|api| provider.cfg.native.contains(&api));
    match (call.surface, native) {
        (Surface::Chat, _) => Dialect {
            endpoint: call.endpoint,
            translated: false,
        },
        (Surface::Responses, true) => Dialect {
            endpoint: Endpoint::Responses,
            translated: false,
        },
        (Surface::Messages, true) => Dialect {
            endpoint: Endpoint::Messages,
            translated: false,
        },
        (_, false) => Dialect {
            endpoint: Endpoint::Chat,
            translated: true,
        },
    }
}

/// The body sent upstream: the client's body (or its chat translation) with
/// the upstream model name, plus `stream_options.include_usage` on chat
/// streams when the gateway wants stream usage. Returns whether the
/// usage-only chunk must be stripped again.
pub(crate) fn upstream_body(
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    dialect: &Dialect,
) -> (Bytes, bool) {
    let mut body = match (&call.client_body, dialect.endpoint) {
        (Some(client), Endpoint::Responses | Endpoint::Messages) => client.clone(),
        _ => call.body.clone(),
    };
    body.insert("model".into(), Value::String(route.upstream_model.clone()));
    if dialect.endpoint == Endpoint::Chat {
        empty_content_beside_tool_calls(&mut body);
    }
    let mut strip = false;
    let chat_like = matches!(dialect.endpoint, Endpoint::Chat | Endpoint::Completions);
    if call.stream && provider.cfg.stream_usage && chat_like {
        let asked = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !asked {
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
                strip = !dialect.translated;
            }
        }
    }
    (
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        strip,
    )
}

/// Assistant messages that carry `tool_calls` get `"content": ""` where
/// the client sent null or nothing. OpenAI accepts all three; strict
/// OpenAI-compatible servers (llama-cpp-python's) refuse null and missing
/// content with a 500, and none refuses `""`.
fn empty_content_beside_tool_calls(body: &mut Map<String, Value>) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for m in messages.iter_mut().filter_map(Value::as_object_mut) {
        let carries_calls = m.get("role").and_then(Value::as_str) == Some("assistant")
            && m.get("tool_calls").is_some_and(|c| !c.is_null());
        if carries_calls && m.get("content").is_none_or(Value::is_null) {
            m.insert("content".into(), Value::String(String::new()));
        }
    }
}

/// The stream translator: the surface's for a translated call; for a chat
/// stream whose request offered tools (legacy `functions` too) while a
/// high-risk list is in force, the hold-back ([`ChatHoldback`]); else none
/// (bytes pass through untouched).
pub(crate) fn translator(
    gw: &GatewayInner,
    call: &Call,
    provider: &ProviderRuntime,
    dialect: &Dialect,
    strip_usage_only: bool,
) -> Option<Box<dyn StreamTranslator>> {
    match &call.translation {
        _ if !dialect.translated && call.surface != Surface::Chat => None,
        Translation::Responses(echo) => {
            Some(Box::new(responses::ResponsesStream::new(echo.clone())))
        }
        Translation::Messages { model } => {
            Some(Box::new(messages::MessagesStream::new(model.clone())))
        }
        Translation::None => {
            let offers_tools = ["tools", "functions"]
                .iter()
                .any(|k| call.body.get(*k).is_some_and(|t| !t.is_null()));
            let holds = offers_tools
                && dialect.endpoint == Endpoint::Chat
                && !high_risk(gw, provider).is_empty();
            holds
                .then(|| Box::new(ChatHoldback::new(strip_usage_only)) as Box<dyn StreamTranslator>)
        }
    }
}
