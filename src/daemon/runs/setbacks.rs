//! What a run that could not start, or ended without finishing, costs: the
//! agent held back on an infrastructure failure, the task given back or held
//! for its next round.

use super::*;
use crate::blackboard::BbError;
use crate::home::ProjectId;
use crate::service::{Notifier, ProjectService, ServiceError};

/// Holds `agent` on this project for the infrastructure backoff and marks
/// the project degraded (readiness, dashboard).
pub(super) fn hold_agent(
    d: &Daemon,
    bb: &Blackboard,
    agent: &AgentDef,
    runtime: &str,
    why: &str,
) -> Duration {
    let wait = d.runtime_health().failed(
        bb.project(),
        &agent.id,
        runtime,
        why,
        bb.now(),
        &d.config().daemon.retry_backoff,
    );
    metrics::counter!("moziplus_runs_infrastructure_failures_total").increment(1);
    d.wake_at(bb.now() + wait.as_millis() as i64);
    wait
}

/// The run could not start for a reason that is not the agent's: end the
/// session, give the task back in the same round, hold the agent on this
/// project for the backoff, and say so.
#[allow(clippy::too_many_arguments)]
pub(super) async fn infra_failure(
    d: &Daemon,
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    agent: &AgentDef,
    runtime: &str,
    why: &str,
) {
    let wait = hold_agent(d, bb, agent, runtime, why);
    let why = format!(
        "{why} — infrastructure failure: no round counted; agent {} waits {} s before its next run on this project",
        agent.id,
        wait.as_secs()
    );
    tracing::warn!(project = bb.project(), task = %task.id, why, "run could not start (infrastructure)");
    let detail = serde_json::json!({ "error": why, "infrastructure": true });
    abandon_start(
        d,
        bb,
        session_id,
        task,
        kind,
        &why,
        detail,
        Setback::Infrastructure,
    )
    .await;
}

/// The run could not even start, for a reason of its own (a brief that
/// cannot be rendered, an empty command): end the session and give the
/// task back, costing a round.
pub(super) async fn fail_to_start(
    d: &Daemon,
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    why: &str,
) {
    tracing::warn!(project = bb.project(), task = %task.id, why, "run failed to start");
    let detail = serde_json::json!({ "error": why });
    let retry_backoff = &d.config().daemon.retry_backoff;
    let setback = Setback::RunFailed { retry_backoff };
    abandon_start(d, bb, session_id, task, kind, why, detail, setback).await;
}

/// A start that did not happen: the session ends failed with `detail`, an
/// alert says `why`, and the task goes back after `setback`.
#[allow(clippy::too_many_arguments)]
async fn abandon_start(
    d: &Daemon,
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    why: &str,
    detail: serde_json::Value,
    setback: Setback<'_>,
) {
    end_session(bb, session_id, Outcome::Failed, None, detail).await;
    let daemon = Actor::daemon();
    let alert = ObservationLevel::Alert;
    let _ = bb
        .add_observation(alert, &daemon, Some(&task.id), why)
        .await;
    give_back(d, bb, task, kind, why, setback).await;
}

/// A run whose agent released its task without progress: the next run
/// waits the backoff of `daemon.retry_backoff` (by the rounds used), so an
/// agent that always releases is not re-run at once. (A task the daemon
/// gives back gets its wait from [`ProjectService::give_back`].)
pub(super) async fn hold_released(d: &Daemon, bb: &Blackboard, task_id: &str) {
    let Ok(t) = bb.task(task_id).await else {
        return;
    };
    if t.status != TaskStatus::Pending {
        return;
    }
    let failures = u32::try_from(t.round.saturating_sub(1)).unwrap_or(u32::MAX);
    let wait = health::backoff(&d.config().daemon.retry_backoff, failures);
    if wait.is_zero() {
        return;
    }
    let until = bb.now() + wait.as_millis() as i64;
    match bb.hold_pending_until(task_id, until).await {
        // The ticker wakes when the backoff ends.
        Ok(_) => d.wake_at(until),
        Err(e) => {
            tracing::warn!(project = bb.project(), task = task_id, error = %e, "cannot hold the task for its backoff")
        }
    }
}

/// Returns a work run's task after `setback` (what that costs is
/// [`ProjectService::give_back`]'s). `task` is the run's claim: only that
/// claim is given back, never a newer one of the same agent. A store error
/// is retried (see [`WRITE_ATTEMPTS`]).
pub(super) async fn give_back(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    kind: RunKind,
    why: &str,
    setback: Setback<'_>,
) {
    if kind != RunKind::Work {
        return;
    }
    let Some(claim) = task.claim() else {
        return;
    };
    let Ok(project) = ProjectId::parse(bb.project()) else {
        tracing::error!(project = bb.project(), task = %task.id, "cannot give the task back: not a project id");
        return;
    };
    let service = ProjectService::new(bb.clone(), d.home().clone(), project, Notifier::none());
    for attempt in 1..=WRITE_ATTEMPTS {
        match service.give_back(&task.id, &claim, setback, why).await {
            Ok(Some(TaskStatus::Pending)) => {
                // A retry's backoff: the ticker wakes when it ends.
                if let Ok(Some(at)) = bb.task(&task.id).await.map(|t| t.not_before) {
                    d.wake_at(at);
                }
                return;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::error!(project = bb.project(), task = %task.id, error = %e, attempt, "cannot give the task back");
                if !matches!(e, ServiceError::Store(BbError::Db(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(attempt.min(5))).await;
            }
        }
    }
}
