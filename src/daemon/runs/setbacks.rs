//! What a run that could not start, or ended without finishing, costs: the
//! agent held back on an infrastructure failure, the task given back or held
//! for its next round.

use super::*;

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
    abandon_start(bb, session_id, task, kind, &why, detail, false).await;
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
    abandon_start(bb, session_id, task, kind, why, detail, true).await;
    hold_next_round(d, bb, &task.id, kind).await;
}

/// A start that did not happen: the session ends failed with `detail`, an
/// alert says `why`, and the task goes back (`bump`: costing a round).
async fn abandon_start(
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    why: &str,
    detail: serde_json::Value,
    bump: bool,
) {
    end_session(bb, session_id, Outcome::Failed, None, detail).await;
    let daemon = Actor::daemon();
    let alert = ObservationLevel::Alert;
    let _ = bb
        .add_observation(alert, &daemon, Some(&task.id), why)
        .await;
    give_back(bb, task, kind, why, bump).await;
}

/// After a failed round, the task's next round waits for the backoff of
/// `daemon.retry_backoff` (by the round it is now in), so a run that fails
/// at once cannot burn every round in seconds.
pub(super) async fn hold_next_round(d: &Daemon, bb: &Blackboard, task_id: &str, kind: RunKind) {
    if kind != RunKind::Work {
        return;
    }
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

/// Returns a work run's task: with `bump` another round (or failed at the
/// limit), without it the same round (daemon-side reasons such as shutdown).
/// `task` is the run's claim: only that claim is given back (see
/// `Blackboard::give_back_claim`), never a newer one of the same agent.
pub(super) async fn give_back(bb: &Blackboard, task: &Task, kind: RunKind, why: &str, bump: bool) {
    if kind != RunKind::Work {
        return;
    }
    let (Some(holder), Some(claimed_at)) = (task.claimed_by.as_deref(), task.claimed_at) else {
        return;
    };
    for attempt in 1..=WRITE_ATTEMPTS {
        match bb
            .give_back_claim(&task.id, holder, claimed_at, why, "task.run_failed", bump)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(project = bb.project(), task = %task.id, error = %e, attempt, "cannot give the task back");
                if !matches!(e, crate::blackboard::BbError::Db(_)) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(attempt.min(5))).await;
            }
        }
    }
}
