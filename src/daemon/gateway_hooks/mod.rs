//! The daemon's side of the gateway boundary ([`GatewayHooks`]): the gateway
//! knows nothing of tasks except the per-run key an agent presents
//! (`OPENAI_API_KEY=mozi-<session token>`), which maps to its run here.
//! Token usage goes through one batching writer ([`usage`]).

pub mod budgets;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use budgets::Budgets;
use usage::{Booking, UsageSink, UsageWriter};

pub use super::in_flight::RunKey;
use super::Daemon;
use crate::blackboard::usage::UsageBooking;
use crate::blackboard::{
    Actor, Clock, DecisionStatus, EventLevel, Priority as TaskPriority, SystemClock,
};
use crate::gateway::{
    ApprovalRequest, ApprovalStatus, BudgetRefusal, CallEstimate, FailedAttempt, GatewayHooks,
    Priority, RunAttribution, TokenUsage,
};
use crate::locks::Recover;

/// Hooks backed by the daemon's runs and blackboards.
pub struct DaemonHooks {
    daemon: Daemon,
    usage: Arc<UsageWriter>,
    /// When usage is booked (the quarter hour of its `llm_usage` line).
    clock: Arc<dyn Clock>,
    /// Budgets (`budgets:`), on the same clock.
    budgets: Arc<Budgets>,
    /// The `model` label values given out so far (bounded: [`MODEL_LABELS`]).
    model_labels: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// `moziplus_llm_tokens_total{project,agent,model,kind}` (kind: prompt,
/// completion, cached): the tokens of the responses the gateway booked.
pub const LLM_TOKENS: &str = "moziplus_llm_tokens_total";
/// `moziplus_llm_cost_microusd_total{project,agent,model}`: their cost in
/// millionths of a USD.
pub const LLM_COST: &str = "moziplus_llm_cost_microusd_total";
/// `moziplus_llm_responses_total{project,agent,model}`.
pub const LLM_RESPONSES: &str = "moziplus_llm_responses_total";
/// Distinct `model` labels at most; later models are labelled `other`
/// (client-chosen names must not grow the series without bound). Projects
/// and agents come from the registry and `agents.yaml`.
pub const MODEL_LABELS: usize = 64;

impl DaemonHooks {
    /// Starts the usage writer too (call inside a tokio runtime).
    pub fn new(daemon: Daemon) -> Arc<DaemonHooks> {
        Self::with_clock(daemon, Arc::new(SystemClock))
    }

    /// As [`DaemonHooks::new`], on a given clock (tests).
    pub fn with_clock(daemon: Daemon, clock: Arc<dyn Clock>) -> Arc<DaemonHooks> {
        let sink = Arc::new(ProjectLedgers {
            daemon: daemon.clone(),
        });
        let usage = UsageWriter::start(sink, usage::CHANNEL_CAPACITY, usage::MAX_BATCH);
        let budgets = Arc::new(Budgets::new(
            daemon.config().budgets.clone(),
            daemon.budget_overrides_at_start(),
            clock.clone(),
        ));
        daemon.set_budgets(budgets.clone());
        budgets.start_shared_writes(daemon.clone());
        Arc::new(DaemonHooks {
            daemon,
            usage: Arc::new(usage),
            clock,
            budgets,
            model_labels: Default::default(),
        })
    }

    /// The `model` label of `provider/model`: itself while fewer than
    /// [`MODEL_LABELS`] were given out, else `other`.
    fn model_label(&self, provider: &str, model: &str) -> String {
        let name = format!("{provider}/{model}");
        let mut seen = self.model_labels.locked();
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= MODEL_LABELS {
            return "other".to_string();
        }
        seen.insert(name.clone());
        name
    }

    /// The budgets and their spend.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The usage writer (its counts, for tests and status).
    pub fn usage(&self) -> &UsageWriter {
        &self.usage
    }
}

/// Books usage batches into the projects' blackboards.
struct ProjectLedgers {
    daemon: Daemon,
}

impl UsageSink for ProjectLedgers {
    fn book<'a>(
        &'a self,
        project: &'a str,
        rows: &'a [UsageBooking],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let bb = self
                .daemon
                .projects()
                .get(project)
                .and_then(|s| s.bb)
                .ok_or_else(|| format!("project {project} is unavailable"))?;
            bb.add_usage(rows).await.map_err(|e| e.to_string())
        })
    }
}

fn priority(p: TaskPriority) -> Priority {
    match p {
        TaskPriority::Urgent => Priority::Urgent,
        TaskPriority::High => Priority::High,
        TaskPriority::Normal => Priority::Normal,
        TaskPriority::Low => Priority::Low,
    }
}

/// A budget passed its soft threshold (once per window): a
/// `budget.soft_threshold` event (level attention: the webhooks get it)
/// and a warning observation on the run's project and task.
pub(crate) fn soft_threshold(daemon: &Daemon, a: &RunAttribution, c: budgets::SoftCrossing) {
    let text = format!(
        "budget {} passed {:.0}% of its limit: {} of {} {}",
        c.scope.name(),
        daemon.config().budgets.soft_threshold * 100.0,
        c.spent,
        c.limit,
        c.unit
    );
    tracing::warn!(budget = %c.scope.name(), spent = c.spent, limit = c.limit, unit = c.unit, "a budget passed its soft threshold");
    let Some(bb) = daemon.projects().get(&a.project).and_then(|s| s.bb) else {
        return;
    };
    let payload = serde_json::json!({
        "budget": c.scope.name(),
        "unit": c.unit,
        "spent": c.spent,
        "limit": c.limit,
        "agent": a.agent,
        "session": a.session_id,
    });
    let task = a.task.clone();
    // On the request path: the writes must not hold the answer up.
    tokio::spawn(async move {
        let event = bb
            .record_event(
                EventLevel::Attention,
                "budget.soft_threshold",
                task.as_deref(),
                &Actor::daemon(),
                payload,
            )
            .await;
        let observation = bb
            .add_observation(
                crate::blackboard::ObservationLevel::Warn,
                &Actor::daemon(),
                task.as_deref(),
                &text,
            )
            .await;
        if let Err(e) = event.map(|_| ()).and(observation.map(|_| ())) {
            tracing::warn!(error = %e, "cannot record a budget's soft threshold");
        }
    });
}

impl GatewayHooks for DaemonHooks {
    fn resolve_key(&self, bearer_token: &str) -> Option<RunAttribution> {
        self.daemon.run_key(bearer_token).map(|k| RunAttribution {
            model: self
                .daemon
                .agents()
                .agents
                .iter()
                .find(|a| a.id == k.agent)
                .and_then(|a| a.model.clone()),
            session_id: k.session_id,
            project: k.project,
            task: Some(k.task),
            agent: k.agent,
            task_priority: Some(priority(k.priority)),
        })
    }

    fn record_usage(&self, attribution: &RunAttribution, usage: &TokenUsage) {
        let model = self.model_label(&usage.provider, &usage.model);
        let labels = [
            ("project", attribution.project.clone()),
            ("agent", attribution.agent.clone()),
            ("model", model),
        ];
        metrics::counter!(LLM_RESPONSES, &labels).increment(1);
        metrics::counter!(LLM_COST, &labels)
            .increment((usage.cost_usd.unwrap_or(0.0) * 1e6).round().max(0.0) as u64);
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("cached", usage.cached_tokens),
        ] {
            let mut l = labels.to_vec();
            l.push(("kind", kind.to_string()));
            metrics::counter!(LLM_TOKENS, &l).increment(n);
        }
        self.usage.book(Booking {
            project: attribution.project.clone(),
            session: attribution.session_id.clone(),
            provider: usage.provider.clone(),
            model: usage.model.clone(),
            at_ms: self.clock.now_ms(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cost_usd: usage.cost_usd,
        });
        if self.daemon.membership().is_some() {
            self.budgets.spend_shared(attribution, usage);
        } else if self.budgets.book.enabled() {
            for crossing in self.budgets.spend(attribution, usage) {
                soft_threshold(&self.daemon, attribution, crossing);
            }
        }
    }

    fn budgets_apply(&self, _attribution: &RunAttribution) -> bool {
        self.budgets.book.enabled()
    }

    fn reserve(
        &self,
        attribution: &RunAttribution,
        estimate: &CallEstimate,
    ) -> BoxFuture<'static, Result<Option<u64>, BudgetRefusal>> {
        let (daemon, budgets) = (self.daemon.clone(), self.budgets.clone());
        let (attribution, estimate) = (attribution.clone(), estimate.clone());
        Box::pin(async move {
            budgets
                .reserve(&daemon, &attribution, &estimate)
                .await
                .map_err(|refusal| {
                    // The run ends: its task is blocked with the reason when
                    // the run's end is booked (`runs::supervise`), without
                    // costing a round.
                    let message = refusal.message();
                    daemon
                        .quota()
                        .record_budget_refusal(&attribution.session_id, &message);
                    let pid = daemon
                        .runs_lock()
                        .get(&attribution.session_id)
                        .map(|r| r.pid);
                    if let Some(pid) = pid {
                        crate::daemon::process::signal_group(
                            pid,
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    tracing::warn!(
                        session = %attribution.session_id,
                        project = %attribution.project,
                        task = attribution.task.as_deref().unwrap_or(""),
                        agent = %attribution.agent,
                        budget = %refusal.scope.name(),
                        "an LLM call of this run was refused for budget"
                    );
                    BudgetRefusal { message }
                })
        })
    }

    fn release(&self, _attribution: &RunAttribution, reservation: u64) {
        self.budgets.release(reservation);
    }

    /// The daemon's log names the run, task and provider, and the run's
    /// live transcript gets it as a `session.activity` of kind `error` (the
    /// agent itself got the error in its API's shape).
    fn record_failure(&self, attribution: &RunAttribution, failure: &FailedAttempt) {
        tracing::warn!(
            session = %attribution.session_id,
            project = %attribution.project,
            task = attribution.task.as_deref().unwrap_or(""),
            agent = %attribution.agent,
            provider = %failure.provider,
            model = %failure.model,
            reason = %failure.reason,
            "an LLM call of this run failed after the provider answered"
        );
        let Some(bb) = self
            .daemon
            .projects()
            .get(&attribution.project)
            .and_then(|s| s.bb)
        else {
            return;
        };
        let payload = serde_json::json!({
            "session": attribution.session_id,
            "agent": attribution.agent,
            "kind": "error",
            "text": format!(
                "LLM call failed ({} {}): {}",
                failure.provider, failure.model, failure.reason
            ),
        });
        let task = attribution.task.clone();
        // Called on the request path: the write must not hold the answer up.
        tokio::spawn(async move {
            let recorded = bb
                .record_event(
                    EventLevel::Optional,
                    "session.activity",
                    task.as_deref(),
                    &Actor::daemon(),
                    payload,
                )
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record a failed LLM call in the run's transcript");
            }
        });
    }

    fn record_call(&self, attribution: &RunAttribution, queue_wait: std::time::Duration) {
        self.daemon
            .quota()
            .record_call(&attribution.session_id, queue_wait);
    }

    fn record_quota_refusal(&self, attribution: &RunAttribution) {
        self.daemon.quota().record_refusal(&attribution.session_id);
    }

    fn admission(&self) -> Option<crate::gateway::status::AdmissionStatus> {
        let enabled = self.daemon.config().daemon.admission.enabled;
        Some(self.daemon.quota().status(enabled))
    }

    fn shared_grant(
        &self,
        provider: &str,
        rate_per_minute: f64,
        burst: u32,
    ) -> BoxFuture<'static, Duration> {
        let Some(cluster) = self.daemon.membership().map(|m| m.cluster.clone()) else {
            return Box::pin(async { Duration::ZERO });
        };
        let lane = provider.to_string();
        Box::pin(async move {
            let interval = Duration::from_secs_f64(60.0 / rate_per_minute.max(0.001));
            match cluster.grant(&lane, interval, burst).await {
                Ok(wait_ms) => Duration::from_millis(wait_ms.max(0) as u64),
                Err(e) => {
                    // The store is unreachable: each daemon's own lane
                    // still limits, and the provider's 429s retreat it.
                    tracing::warn!(provider = %lane, error = %e, "cluster rate lane unreachable; the local lane alone limits");
                    Duration::ZERO
                }
            }
        })
    }

    fn shared_flight(
        &self,
        provider: &str,
        limit: u32,
    ) -> BoxFuture<'static, crate::gateway::SharedFlight> {
        use crate::gateway::SharedFlight;
        let Some(cluster) = self.daemon.membership().map(|m| m.cluster.clone()) else {
            return Box::pin(async { SharedFlight::Go(None) });
        };
        let lane = provider.to_string();
        Box::pin(async move {
            match crate::daemon::cluster::take_flight_place(&cluster, &lane, limit).await {
                Ok(Some(place)) => SharedFlight::Go(Some(Box::new(place))),
                // Every place is taken: calls take seconds, so a look every
                // 200 ms loses little of a place given back.
                Ok(None) => SharedFlight::Wait(Duration::from_millis(200)),
                Err(e) => {
                    tracing::warn!(provider = %lane, error = %e, "cluster in-flight places unreachable; the local lane alone limits");
                    SharedFlight::Go(None)
                }
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let usage = self.usage.clone();
        Box::pin(async move { usage.close().await })
    }

    fn propose_approval(
        &self,
        request: ApprovalRequest,
    ) -> BoxFuture<'static, Result<String, String>> {
        let daemon = self.daemon.clone();
        Box::pin(async move {
            let attribution = request.attribution.ok_or(
                "high-risk tool calls need a run's API key (OPENAI_API_KEY of a moziplus run)",
            )?;
            let service = daemon
                .projects()
                .get(&attribution.project)
                .and_then(|s| s.service(daemon.home()))
                .ok_or_else(|| format!("project {} is unavailable", attribution.project))?;
            let d = service
                .propose(
                    attribution.task.clone(),
                    format!(
                        "Allow {} to call high-risk tool `{}`?",
                        attribution.agent, request.tool_name
                    ),
                    request.arguments_json.clone(),
                    format!(
                        "tool call {} proposed through the gateway",
                        request.tool_call_id
                    ),
                    request.expires_in,
                    &Actor::session(attribution.agent.clone()),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(crate::blackboard::ids::format_decision_id(d.id))
        })
    }

    /// The decision as the project's blackboard has it now (an overdue
    /// proposal is expired first, i.e. rejected). A decision that cannot
    /// be read is still open: the call stays held.
    fn approval_status(
        &self,
        attribution: Option<RunAttribution>,
        decision_id: String,
    ) -> BoxFuture<'static, ApprovalStatus> {
        let daemon = self.daemon.clone();
        Box::pin(async move {
            let parsed = crate::blackboard::ids::parse_decision_id(&decision_id);
            let (Some(attribution), Some(id)) = (attribution, parsed) else {
                return ApprovalStatus::Proposed;
            };
            let Some(service) = daemon
                .projects()
                .get(&attribution.project)
                .and_then(|s| s.service(daemon.home()))
            else {
                return ApprovalStatus::Proposed;
            };
            match service.decision(id).await {
                Ok(d) => match d.status {
                    DecisionStatus::Approved => ApprovalStatus::Approved,
                    DecisionStatus::Rejected => ApprovalStatus::Rejected(format!(
                        "{} ({})",
                        d.rationale,
                        d.decided_by.as_deref().unwrap_or("unknown")
                    )),
                    DecisionStatus::Proposed => ApprovalStatus::Proposed,
                },
                Err(e) => {
                    tracing::warn!(decision = %decision_id, error = %e, "cannot read the decision of a held tool call; it stays held");
                    ApprovalStatus::Proposed
                }
            }
        })
    }
}
