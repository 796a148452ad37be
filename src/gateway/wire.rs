//! How a call is spoken to one provider: which endpoint (the client's
//! surface natively, or translated to chat completions), the body sent
//! upstream, and the stream translator its answer goes through.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::call::{Call, Translation};
use super::respond::high_risk;
use super::routing::Route;
use super::surface::{ChatHoldback, StreamTranslator, Surface};
use super::upstream::Endpoint;
use super::{messages, responses, GatewayInner, ProviderRuntime};

/// How one provider is spoken to for this call.
pub(super) struct Wire {
    pub endpoint: Endpoint,
    /// The surface is translated to chat completions for this provider.
    pub translated: bool,
}

pub(super) fn wire(call: &Call, provider: &ProviderRuntime) -> Wire {
    let native = call
        .surface
        .native_api()
        .is_some_and(|api| provider.cfg.native.contains(&api));
    match (call.surface, native) {
        (Surface::Chat, _) => Wire {
            endpoint: call.endpoint,
            translated: false,
        },
        (Surface::Responses, true) => Wire {
            endpoint: Endpoint::Responses,
            translated: false,
        },
        (Surface::Messages, true) => Wire {
            endpoint: Endpoint::Messages,
            translated: false,
        },
        (_, false) => Wire {
            endpoint: Endpoint::Chat,
            translated: true,
        },
    }
}

/// The body sent upstream: the client's body (or its chat translation) with
/// the upstream model name, plus `stream_options.include_usage` on chat
/// streams when the gateway wants stream usage. Returns whether the
/// usage-only chunk must be stripped again.
pub(super) fn upstream_body(
    call: &Call,
    route: &Route,
    provider: &ProviderRuntime,
    wire: &Wire,
) -> (Bytes, bool) {
    let mut body = match (&call.client_body, wire.endpoint) {
        (Some(client), Endpoint::Responses | Endpoint::Messages) => client.clone(),
        _ => call.body.clone(),
    };
    body.insert("model".into(), Value::String(route.upstream_model.clone()));
    let mut strip = false;
    let chat_like = matches!(wire.endpoint, Endpoint::Chat | Endpoint::Completions);
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
                strip = !wire.translated;
            }
        }
    }
    (
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        strip,
    )
}

/// The stream translator: the surface's for a translated call; for a chat
/// stream whose request offered a high-risk tool, the hold-back filter;
/// else none (bytes pass through untouched).
pub(super) fn translator(
    gw: &GatewayInner,
    call: &Call,
    provider: &ProviderRuntime,
    wire: &Wire,
    strip_usage_only: bool,
) -> Option<Box<dyn StreamTranslator>> {
    let high_risk = high_risk(gw, provider);
    match &call.translation {
        _ if !wire.translated && call.surface != Surface::Chat => None,
        Translation::Responses(echo) => Some(Box::new(responses::ResponsesStream::new(
            echo.clone(),
            high_risk.to_vec(),
        ))),
        Translation::Messages { model } => Some(Box::new(messages::MessagesStream::new(
            model.clone(),
            high_risk.to_vec(),
        ))),
        Translation::None => {
            let offers_risky = call
                .body
                .get("tools")
                .and_then(Value::as_array)
                .is_some_and(|tools| {
                    tools.iter().any(|t| {
                        t.pointer("/function/name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| high_risk.iter().any(|h| h == n))
                    })
                });
            (offers_risky && wire.endpoint == Endpoint::Chat).then(|| {
                Box::new(ChatHoldback::new(high_risk.to_vec(), strip_usage_only))
                    as Box<dyn StreamTranslator>
            })
        }
    }
}
