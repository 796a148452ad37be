//! `GET /api/gateway/status`: what the gateway shows of itself — settings,
//! providers (breaker, lane, counters, masked keys), the usage ledger's
//! snapshot ([`crate::ledger`]) and the daemon's admission view.

use serde::Serialize;

use crate::breaker::BreakerSnapshot;
use crate::lane::LaneSnapshot;
use crate::ledger::LedgerSnapshot;

/// The daemon's admission view, which the hooks report; named here too
/// because the status shows it.
pub use crate::hooks::{AdmissionStatus, HeldTask, LaneLoad};

/// One provider in the status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    /// Name.
    pub name: String,
    /// Base URL.
    pub base_url: String,
    /// Goes through the rate lane.
    pub limited: bool,
    /// Env variable of the key.
    pub api_key_env: Option<String>,
    /// `****` when the key is set (never any of its characters), `None` when
    /// the env var is unset.
    pub api_key: Option<String>,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Fallback provider name.
    pub fallback: Option<String>,
    /// Breaker state.
    pub breaker: BreakerSnapshot,
    /// Rate lane (limited providers only).
    pub lane: Option<LaneSnapshot>,
    /// Requests answered, by outcome.
    pub requests: ProviderCounters,
}

/// Per-provider request counters.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ProviderCounters {
    /// Requests routed to this provider.
    pub total: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered with an error (any source).
    pub errors: u64,
    /// Upstream attempts retried.
    pub retries: u64,
    /// Requests sent on to the fallback provider.
    pub fallbacks: u64,
    /// Low-priority requests degraded to another model.
    pub degraded: u64,
}

/// Runtime-changeable settings (`/api/gateway/config`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuntimeSettings {
    /// Base rate of every limited provider, per minute.
    pub rate_per_minute: f64,
    /// Bucket capacity.
    pub capacity: f64,
    /// Queue limit per limited provider.
    pub queue_max_size: usize,
    /// Full policy.
    pub full_policy: crate::config::FullPolicy,
    /// In-flight limit per limited provider: `auto` (sized by rate x
    /// answer time) or a number.
    pub concurrency: crate::config::Concurrency,
    /// Wait allowance of urgent/high/normal, seconds.
    pub request_timeout: f64,
    /// Wait allowance of low before degrading, seconds.
    pub low_priority_timeout: f64,
}

/// Everything `/api/gateway/status` shows (and the daemon embeds).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GatewayStatus {
    /// Seconds since the gateway was built.
    pub uptime_seconds: f64,
    /// Runtime settings in force.
    pub settings: RuntimeSettings,
    /// Default provider for unknown prefixes.
    pub default_provider: Option<String>,
    /// Per provider.
    pub providers: Vec<ProviderStatus>,
    /// Token usage ledger.
    pub usage: LedgerSnapshot,
    /// Admission by quota (runs the daemon holds back to fit the lanes);
    /// absent when no daemon is attached.
    pub admission: Option<AdmissionStatus>,
}
