//! The in-memory usage ledger: token usage and cost per session, task,
//! agent, project, provider and model, as the gateway saw it (bounded: the
//! oldest key is forgotten first). Booked by `GatewayInner::record_usage`;
//! shown in `GET /api/gateway/status`. The daemon's session records are the
//! durable store; this is a live view.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::hooks::{RunAttribution, TokenUsage};

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
