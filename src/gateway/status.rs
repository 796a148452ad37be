//! `GET /api/gateway/status` and the in-memory usage ledger.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::breaker::BreakerSnapshot;
use super::hooks::{RunAttribution, TokenUsage};
use super::lane::LaneSnapshot;

/// Most keys kept per ledger dimension; the oldest key is forgotten first.
/// The daemon's session records are the durable store; this is a live view.
pub const LEDGER_MAX_KEYS: usize = 10_000;

/// Usage totals of one key.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct UsageTotals {
    /// Responses that reported usage.
    pub responses: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Prompt tokens the provider served from its cache.
    pub cached_tokens: u64,
    /// USD, as `gateway.prices` prices the usage the gateway saw.
    pub cost_usd: f64,
    /// Responses whose `provider/model` no price matched (cost 0 here).
    pub unpriced_responses: u64,
}

impl UsageTotals {
    fn add(&mut self, u: &TokenUsage) {
        self.responses += 1;
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.total_tokens += u.total_tokens;
        self.cached_tokens += u.cached_tokens;
        match u.cost_usd {
            Some(c) => self.cost_usd += c,
            None => self.unpriced_responses += 1,
        }
    }
}

#[derive(Debug, Default)]
struct BoundedTotals {
    map: HashMap<String, UsageTotals>,
    order: VecDeque<String>,
}

impl BoundedTotals {
    fn add(&mut self, key: String, u: &TokenUsage) {
        if !self.map.contains_key(&key) {
            if self.order.len() >= LEDGER_MAX_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
            self.order.push_back(key.clone());
        }
        self.map.entry(key).or_default().add(u);
    }
}

/// Token usage per session, task, agent, project and provider.
#[derive(Debug, Default)]
pub struct Ledger {
    by_session: BoundedTotals,
    by_task: BoundedTotals,
    by_agent: BoundedTotals,
    by_project: BoundedTotals,
    by_provider: BoundedTotals,
    by_model: BoundedTotals,
    anonymous: UsageTotals,
}

/// Serializable copy of the ledger.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LedgerSnapshot {
    /// Keyed by session id.
    pub by_session: HashMap<String, UsageTotals>,
    /// Keyed by `project/task`.
    pub by_task: HashMap<String, UsageTotals>,
    /// Keyed by agent id.
    pub by_agent: HashMap<String, UsageTotals>,
    /// Keyed by project id.
    pub by_project: HashMap<String, UsageTotals>,
    /// Keyed by provider name.
    pub by_provider: HashMap<String, UsageTotals>,
    /// Keyed by `provider/model` (the model as sent upstream).
    pub by_model: HashMap<String, UsageTotals>,
    /// Calls without a known run key.
    pub anonymous: UsageTotals,
}

impl Ledger {
    /// Add one response's usage.
    pub fn record(&mut self, attribution: Option<&RunAttribution>, usage: &TokenUsage) {
        self.by_provider.add(usage.provider.clone(), usage);
        self.by_model
            .add(format!("{}/{}", usage.provider, usage.model), usage);
        match attribution {
            Some(a) => {
                self.by_session.add(a.session_id.clone(), usage);
                if let Some(task) = &a.task {
                    self.by_task.add(format!("{}/{}", a.project, task), usage);
                }
                self.by_agent.add(a.agent.clone(), usage);
                self.by_project.add(a.project.clone(), usage);
            }
            None => self.anonymous.add(usage),
        }
    }

    /// Copy for status output.
    pub fn snapshot(&self) -> LedgerSnapshot {
        LedgerSnapshot {
            by_session: self.by_session.map.clone(),
            by_task: self.by_task.map.clone(),
            by_agent: self.by_agent.map.clone(),
            by_project: self.by_project.map.clone(),
            by_provider: self.by_provider.map.clone(),
            by_model: self.by_model.map.clone(),
            anonymous: self.anonymous.clone(),
        }
    }
}

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
    pub full_policy: super::config::FullPolicy,
    /// In-flight limit per limited provider: `auto` (sized by rate x
    /// answer time) or a number.
    pub concurrency: super::config::Concurrency,
    /// Wait allowance of urgent/high/normal, seconds.
    pub request_timeout: f64,
    /// Wait allowance of low before degrading, seconds.
    pub low_priority_timeout: f64,
}

/// A task the daemon's ticker held back for quota (admission by quota).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldTask {
    pub project: String,
    pub task: String,
    /// The agent it would have gone to.
    pub agent: String,
    /// The lane (provider) it waits for.
    pub lane: String,
    /// In words, for people.
    pub reason: String,
    /// When it was first held (ms since the epoch).
    pub since_ms: i64,
}

/// One lane's load as the ticker last saw it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneLoad {
    pub lane: String,
    /// Requests per minute the lane serves now.
    pub capacity_per_minute: f64,
    /// Sum of the demand of its runs in flight, calls per minute.
    pub committed_per_minute: f64,
    /// Runs in flight on it.
    pub runs: usize,
}

/// Admission by quota, as the daemon reports it through its hooks.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct AdmissionStatus {
    /// Whether admission by quota is on (`daemon.admission.enabled`).
    pub enabled: bool,
    /// Per lane, as of the last tick that looked for work.
    pub lanes: Vec<LaneLoad>,
    /// Tasks held back for quota.
    pub held: Vec<HeldTask>,
    /// Known agent demands, calls per minute (from history or the prior).
    pub demand_per_minute: std::collections::BTreeMap<String, f64>,
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
