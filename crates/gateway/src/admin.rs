//! `GET/POST /api/gateway/config`: read and change the runtime settings.
//!
//! Guarded by `Authorization: Bearer <admin_token>` when a token is
//! configured. Changes apply to every limited provider's lane. A change is
//! all-or-nothing: it is validated completely, and shrinking the queue below
//! any lane's current depth refuses the whole change (409) naming the depth.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{bearer, constant_time_eq};
use crate::config::{Concurrency, FullPolicy};
use crate::error::GatewayError;
use crate::state::{lock, Gateway};
use crate::status::RuntimeSettings;

/// Body of `POST /api/gateway/config`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// New base rate per minute.
    pub rate_per_minute: Option<f64>,
    /// New bucket capacity.
    pub capacity: Option<f64>,
    /// New queue limit.
    pub queue_max_size: Option<usize>,
    /// New full policy.
    pub full_policy: Option<FullPolicy>,
    /// New in-flight limit: `"auto"` or a number.
    pub concurrency: Option<Concurrency>,
    /// New wait allowance, seconds.
    pub request_timeout: Option<f64>,
    /// New low-priority wait, seconds.
    pub low_priority_timeout: Option<f64>,
}

/// Marks a request whose caller the embedding server has already checked
/// against its own credentials (the daemon's `server.api_token`): the admin
/// token is then not asked again.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuthorized;

/// Largest body of a settings change (a handful of numbers).
const MAX_SETTINGS_BODY: usize = 64 * 1024;

fn authorize(
    gw: &Gateway,
    headers: &HeaderMap,
    pre: Option<Extension<AdminAuthorized>>,
) -> Result<(), GatewayError> {
    let Some(token) = &gw.inner.config.admin_token else {
        return Ok(());
    };
    if pre.is_some() {
        return Ok(());
    }
    match bearer(headers) {
        Some(given) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => Ok(()),
        Some(_) => Err(GatewayError::Unauthorized(
            "admin token does not match".to_string(),
        )),
        None => Err(GatewayError::Unauthorized(
            "the gateway config API needs `Authorization: Bearer <admin token>`".to_string(),
        )),
    }
}

pub(crate) async fn get_config(
    State(gw): State<Gateway>,
    pre: Option<Extension<AdminAuthorized>>,
    headers: HeaderMap,
) -> Result<Json<RuntimeSettings>, GatewayError> {
    authorize(&gw, &headers, pre)?;
    Ok(Json(gw.inner.settings()))
}

fn positive(key: &str, v: Option<f64>) -> Result<(), GatewayError> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(GatewayError::BadRequest(format!(
            "`{key}` must be a positive number, got {x}"
        ))),
        _ => Ok(()),
    }
}

pub(crate) async fn post_config(
    State(gw): State<Gateway>,
    pre: Option<Extension<AdminAuthorized>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<RuntimeSettings>, GatewayError> {
    authorize(&gw, &headers, pre)?;
    // Read here rather than by an extractor, so an oversized body is this
    // API's JSON 413 like every other error.
    let body = axum::body::to_bytes(body, MAX_SETTINGS_BODY)
        .await
        .map_err(|e| {
            if e.to_string().contains("length limit") {
                GatewayError::PayloadTooLarge {
                    limit: MAX_SETTINGS_BODY,
                }
            } else {
                GatewayError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let update: SettingsUpdate = serde_json::from_value(raw)
        .map_err(|e| GatewayError::BadRequest(format!("invalid config change: {e}")))?;
    gw.apply_settings(update).map(Json)
}

impl Gateway {
    /// Apply a runtime settings change (what `POST /api/gateway/config`
    /// does). All-or-nothing; see the module docs.
    pub fn apply_settings(&self, update: SettingsUpdate) -> Result<RuntimeSettings, GatewayError> {
        positive("rate_per_minute", update.rate_per_minute)?;
        positive("capacity", update.capacity)?;
        positive("request_timeout", update.request_timeout)?;
        positive("low_priority_timeout", update.low_priority_timeout)?;
        if update.queue_max_size == Some(0) {
            return Err(GatewayError::BadRequest(
                "`queue_max_size` must be at least 1".to_string(),
            ));
        }
        if update.concurrency == Some(Concurrency::Fixed(0)) {
            return Err(GatewayError::BadRequest(
                "`concurrency` must be \"auto\" or at least 1".to_string(),
            ));
        }
        let lanes: Vec<_> = self
            .inner
            .providers
            .iter()
            .filter_map(|p| p.lane.clone())
            .collect();
        let mut settings = lock(&self.inner.settings);
        if let Some(max) = update.queue_max_size {
            // Check every lane first so a refusal changes nothing.
            if let Some(lane) = lanes.iter().find(|l| l.queue_len() > max) {
                return Err(GatewayError::Conflict(lane.set_max_size(max).unwrap_err()));
            }
            for lane in &lanes {
                lane.set_max_size(max).map_err(GatewayError::Conflict)?;
            }
            settings.queue_max_size = max;
        }
        for lane in &lanes {
            if let Some(rate) = update.rate_per_minute {
                lane.set_rate(rate);
            }
            if let Some(capacity) = update.capacity {
                lane.set_capacity(capacity);
            }
            if let Some(policy) = update.full_policy {
                lane.set_policy(policy);
            }
            if let Some(concurrency) = update.concurrency {
                lane.set_concurrency(concurrency);
            }
        }
        if let Some(v) = update.rate_per_minute {
            settings.rate_per_minute = v;
        }
        if let Some(v) = update.capacity {
            settings.capacity = v;
        }
        if let Some(v) = update.full_policy {
            settings.full_policy = v;
        }
        if let Some(v) = update.concurrency {
            settings.concurrency = v;
        }
        if let Some(v) = update.request_timeout {
            settings.request_timeout = v;
        }
        if let Some(v) = update.low_priority_timeout {
            settings.low_priority_timeout = v;
        }
        tracing::info!(settings = ?*settings, "gateway settings changed");
        Ok(settings.clone())
    }
}
