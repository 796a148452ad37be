//! `GET /v1/models`: every provider's models, `provider/id`, so an id can be
//! used as `model` directly.
//!
//! A provider with a static `models:` list answers from it. Any other is
//! asked for its own `/models` (5 s budget, never through the rate lane).
//! A failed ask is tried once more on a fresh connection: a provider that
//! closed the pooled connection the first ask went out on must not vanish
//! from the list. A provider that still fails is listed with an `error`
//! (id `provider/*`) and a warning is logged: never dropped silently.

use std::time::Duration;

use serde_json::{json, Value};

use crate::routing;
use crate::state::ProviderRuntime;

/// How long one ask for a provider's model list may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// One provider's models, or why there are none.
pub(crate) struct ProviderModels {
    pub provider: String,
    pub listed: Result<Vec<String>, String>,
}

/// Every provider's model list, in configuration order.
pub(crate) async fn list(providers: &[ProviderRuntime]) -> Vec<ProviderModels> {
    let asks = providers.iter().map(|p| async move {
        ProviderModels {
            provider: p.cfg.name.clone(),
            listed: models_of(p).await,
        }
    });
    futures_util::future::join_all(asks).await
}

async fn models_of(p: &ProviderRuntime) -> Result<Vec<String>, String> {
    if !p.cfg.models.is_empty() {
        return Ok(p.cfg.models.clone());
    }
    let first = match ask(p, &p.client).await {
        Ok(ids) => return Ok(ids),
        Err(e) => e,
    };
    // Pooled connections are the usual suspect: go again on a new one.
    let fresh = reqwest::Client::builder()
        .connect_timeout(crate::config::secs(p.cfg.timeouts.connect))
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    match ask(p, &fresh).await {
        Ok(ids) => {
            tracing::info!(provider = %p.cfg.name, first_error = %first, "model list fetched on the second try (fresh connection)");
            Ok(ids)
        }
        Err(second) => {
            tracing::warn!(provider = %p.cfg.name, first_error = %first, error = %second, "provider's model list unavailable (tried twice); listed with its error");
            Err(second)
        }
    }
}

/// One ask for a provider's `/models`: the ids of its `data`.
async fn ask(p: &ProviderRuntime, client: &reqwest::Client) -> Result<Vec<String>, String> {
    let url = routing::upstream_url(&p.cfg.base_url, "models");
    let mut req = client.get(url).timeout(LIST_TIMEOUT);
    if let Some(key) = p.key(None) {
        req = req.bearer_auth(key.expose());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("the provider answered HTTP {}", status.as_u16()));
    }
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("the answer is not JSON: {e}"))?;
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the answer has no `data` list")?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id")?.as_str().map(str::to_string))
        .collect())
}

/// The id under which a provider whose list failed is shown.
fn failed_id(provider: &str) -> String {
    format!("{provider}/*")
}

/// OpenAI's shape: `{object: list, data: [{id, object, created, owned_by}]}`;
/// a failed provider's entry carries `error`.
pub(crate) fn openai_list(lists: &[ProviderModels]) -> Value {
    let mut data = Vec::new();
    for l in lists {
        match &l.listed {
            Ok(ids) => data.extend(ids.iter().map(|id| {
                json!({"id": format!("{}/{id}", l.provider), "object": "model", "created": 0, "owned_by": l.provider})
            })),
            Err(e) => data.push(json!({"id": failed_id(&l.provider), "object": "model", "created": 0,
                "owned_by": l.provider, "error": format!("model list unavailable: {e}")})),
        }
    }
    json!({"object": "list", "data": data})
}

/// Anthropic's shape (what `client.models.list()` of its SDK reads); a
/// failed provider's entry carries `error`.
pub(crate) fn anthropic_list(lists: &[ProviderModels]) -> Value {
    let mut data = Vec::new();
    for l in lists {
        match &l.listed {
            Ok(ids) => data.extend(ids.iter().map(|id| {
                let id = format!("{}/{id}", l.provider);
                json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
            })),
            Err(e) => data.push(json!({"type": "model", "id": failed_id(&l.provider),
                "display_name": format!("{} (model list unavailable)", l.provider),
                "created_at": "1970-01-01T00:00:00Z", "error": format!("model list unavailable: {e}")})),
        }
    }
    let first = data.first().map(|m| m["id"].clone());
    let last = data.last().map(|m| m["id"].clone());
    json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
}
