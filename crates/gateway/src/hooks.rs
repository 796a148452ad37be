//! The boundary between the gateway and the rest of the daemon.
//!
//! The gateway knows nothing of tasks, sessions or blackboards. Everything
//! it needs from the daemon goes through [`GatewayHooks`]: who a bearer key
//! belongs to, where token usage goes, and how a high-risk tool call becomes
//! a `proposed` decision. [`NoopHooks`] serves tests and standalone use.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::queue::Priority;

/// Which agent run a call belongs to, resolved from its per-session key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunAttribution {
    /// Session (agent run) id.
    pub session_id: String,
    /// Project id.
    pub project: String,
    /// Task id, if the run works on one.
    pub task: Option<String>,
    /// Agent id.
    pub agent: String,
    /// The task's priority; used when the call has no `X-Priority` header.
    pub task_priority: Option<Priority>,
    /// The agent's `model:` from `agents.yaml` (`provider/model`): where a
    /// client model name that names no provider is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Token usage of one upstream response.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenUsage {
    /// Prompt tokens (those read from the provider's cache included).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens as reported (or the sum).
    pub total_tokens: u64,
    /// Model name as sent upstream.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Prompt tokens the provider served from its cache.
    pub cached_tokens: u64,
    /// USD, from `gateway.prices`; `None` when no price matches
    /// `provider/model`. Set by the gateway before the hooks see it.
    pub cost_usd: Option<f64>,
}

/// What a call of a run may use at most, asked of the daemon before the
/// call is sent ([`GatewayHooks::reserve`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEstimate {
    /// Provider name.
    pub provider: String,
    /// Model name as sent upstream.
    pub model: String,
    /// The prompt's tokens, counted with the gateway's tokenizer
    /// (`o200k_base`, as `count_tokens`).
    pub prompt_tokens: u64,
    /// The request's max output tokens; `None` when it names none.
    pub max_output_tokens: Option<u64>,
    /// USD per million (input, output) tokens of `gateway.prices` for this
    /// model; `None` = unpriced.
    pub price: Option<(f64, f64)>,
}

/// A call refused for budget; the message names the budget, its use and
/// its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetRefusal {
    pub message: String,
}

/// An attempt that reached a provider and got no complete answer: the
/// stream broke, stalled or ended before the provider said it was finished,
/// or a JSON answer came without `choices` or a `finish_reason`.
#[derive(Debug, Clone, Serialize)]
pub struct FailedAttempt {
    /// Provider name.
    pub provider: String,
    /// Model name as sent upstream.
    pub model: String,
    /// What was wrong, as the client was told.
    pub reason: String,
}

/// A high-risk tool call awaiting a human decision: the agent does not get
/// the call until a human approves it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    /// The calling run, if known.
    pub attribution: Option<RunAttribution>,
    /// Tool name.
    pub tool_name: String,
    /// The tool call's arguments (cleaned JSON).
    pub arguments_json: String,
    /// Id of the tool call in the response.
    pub tool_call_id: String,
    /// After this long an unanswered approval counts as rejected.
    pub expires_in: Duration,
}

/// Where a proposed decision on a high-risk tool call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Nobody decided yet.
    Proposed,
    /// A human approved it: the same call may go through, once.
    Approved,
    /// Rejected or expired, with what the agent is told.
    Rejected(String),
}

/// Everything the gateway asks of the daemon. Implementations must be cheap
/// and non-blocking in `resolve_key` and `record_usage` (they run on the
/// request path); `propose_approval` may do I/O.
pub trait GatewayHooks: Send + Sync + 'static {
    /// Map a bearer key (the run's `OPENAI_API_KEY`) to its run. `None` =
    /// unknown key: anonymous, or 401 when `require_session_key` is set.
    fn resolve_key(&self, bearer_token: &str) -> Option<RunAttribution>;

    /// Called once per response that reported usage (non-streaming bodies
    /// and the final usage chunk of streams).
    fn record_usage(&self, attribution: &RunAttribution, usage: &TokenUsage);

    /// An attempt of the run failed after the provider answered (see
    /// [`FailedAttempt`]). The breaker has counted it already; the daemon
    /// books it for the run.
    fn record_failure(&self, _attribution: &RunAttribution, _failure: &FailedAttempt) {}

    /// One call of a run is going upstream, after `queue_wait` in its rate
    /// lane (zero for unlimited providers). Once per client call, not per
    /// retry; synchronous and non-blocking like `record_usage`.
    fn record_call(&self, _attribution: &RunAttribution, _queue_wait: Duration) {}

    /// A call of a run was refused by the gateway itself for quota (its
    /// lane's wait allowance ran out, or the queue was full): the client
    /// got a 429/503 with `Retry-After`. Synchronous and non-blocking.
    fn record_quota_refusal(&self, _attribution: &RunAttribution) {}

    /// Whether the daemon keeps budgets that could apply to this run's
    /// calls; `false` (the default) skips counting the prompt. Cheap and
    /// synchronous.
    fn budgets_apply(&self, _attribution: &RunAttribution) -> bool {
        false
    }

    /// Reserve a call's worst case before it is sent: `Ok(Some(id))` is
    /// released with [`GatewayHooks::release`] when the call (or its
    /// stream) ends, after its usage was reported; `Err` refuses the call
    /// (the client gets a 402 `budget_exceeded` in its protocol's shape).
    fn reserve(
        &self,
        _attribution: &RunAttribution,
        _estimate: &CallEstimate,
    ) -> BoxFuture<'static, Result<Option<u64>, BudgetRefusal>> {
        Box::pin(async { Ok(None) })
    }

    /// The call holding reservation `id` ended; synchronous and
    /// non-blocking.
    fn release(&self, _attribution: &RunAttribution, _reservation: u64) {}

    /// What the embedding daemon does to fit its runs to the lanes, for
    /// the status page.
    fn admission(&self) -> Option<AdmissionStatus> {
        None
    }

    /// Write a `proposed` decision for a high-risk tool call and return its
    /// id, which the agent sees under `requires_approval`.
    fn propose_approval(
        &self,
        request: ApprovalRequest,
    ) -> BoxFuture<'static, Result<String, String>>;

    /// Where the decision `decision_id` (from [`GatewayHooks::propose_approval`])
    /// stands, asked when the model makes the held call again. The default
    /// never approves.
    fn approval_status(
        &self,
        _attribution: Option<RunAttribution>,
        _decision_id: String,
    ) -> BoxFuture<'static, ApprovalStatus> {
        Box::pin(async { ApprovalStatus::Proposed })
    }

    /// A limited provider's rate shared with the other daemons of a cluster
    /// (one store, several hosts): asked after the lane granted a call,
    /// before it is sent. `Ok(Duration::ZERO)` sends it; `Ok(wait)` asks
    /// again after `wait` (another daemon took the cluster's token); the
    /// default (one daemon) always sends. Asked twice per call: `provider`
    /// itself, with the rate and burst of all the lane's keys together,
    /// then `<provider>#<key fingerprint>` with one key's own
    /// ([`crate::lane::key_fingerprint`]), so a key two daemons both send
    /// with keeps its own rate.
    fn shared_grant(
        &self,
        _provider: &str,
        _rate_per_minute: f64,
        _burst: u32,
    ) -> BoxFuture<'static, Duration> {
        Box::pin(async { Duration::ZERO })
    }

    /// A place among the calls a cluster's daemons have in flight to a
    /// limited provider together, at most `limit` (the lane's own limit
    /// now): asked after the lane granted a call, before the shared rate.
    /// [`SharedFlight::Go`] carries the place, held until the call is
    /// over; [`SharedFlight::Wait`] asks again after the wait. The default
    /// (one daemon) always goes.
    fn shared_flight(&self, _provider: &str, _limit: u32) -> BoxFuture<'static, SharedFlight> {
        Box::pin(async { SharedFlight::Go(None) })
    }

    /// The daemon is stopping: finish what the hooks hold (usage reports
    /// not yet booked) while the daemon's stores are still open. Called
    /// once by [`Gateway::shutdown`](crate::Gateway::shutdown); later
    /// `record_usage` calls may be refused (they must then be counted, not
    /// lost without a trace).
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The answer of [`GatewayHooks::shared_flight`].
pub enum SharedFlight {
    /// Send: the place (if any) is given back when it is dropped, with the
    /// call's permit.
    Go(Option<Box<dyn std::any::Any + Send + Sync>>),
    /// Every place is taken: ask again after this long.
    Wait(Duration),
}

/// Hooks that attribute nothing, record nothing and refuse approvals (the
/// response then carries the refusal so the agent does not run the tool).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopHooks;

impl GatewayHooks for NoopHooks {
    fn resolve_key(&self, _bearer_token: &str) -> Option<RunAttribution> {
        None
    }

    fn record_usage(&self, _attribution: &RunAttribution, _usage: &TokenUsage) {}

    fn propose_approval(
        &self,
        _request: ApprovalRequest,
    ) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("no approval service is attached to this gateway".to_string()) })
    }
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

/// One call's budget reservation ([`GatewayHooks::reserve`]); released
/// ([`GatewayHooks::release`]) when the last holder drops it.
pub(crate) struct BudgetHold {
    pub hooks: Arc<dyn GatewayHooks>,
    pub attribution: RunAttribution,
    pub id: u64,
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        self.hooks.release(&self.attribution, self.id);
    }
}
