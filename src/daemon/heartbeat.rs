//! The heartbeat policy, checked by the daemon for every agent in
//! one place instead of each agent polling.
//!
//! A working task's *progress* is the newest event on it written by anyone but
//! the daemon. By the holder's category ([`Category::policy`]):
//! * past `suspect_after` without progress: a nudge (system comment and a
//!   `task.suspect` event), once per quiet spell;
//! * past `recover_after`: the claim is recovered — a comment says why, the
//!   creator is notified (`task.recovered` event naming them), and the task
//!   goes back (`pending`, round + 1) after its run, if any, is stopped;
//! * a round at `warn_at_percent` of the category's `max_rounds`: a warning.
//!
//! A pending task waiting on unfinished dependencies longer than the
//! category's `dependency_wait_secs` notifies the dependency's agent, once per
//! (task, dependency).
//!
//! Every decision is derived from the blackboard (no in-memory state), so a
//! restart neither repeats nor forgets a notification.

use nix::sys::signal::Signal;
use serde_json::json;

use super::runs::{signal_group, RunInfo, RunKind};
use super::tick_error::TickError;
use crate::blackboard::{Actor, Claim, CommentType, EventLevel, ObservationLevel};
use crate::config::agents::{AgentsFile, Category};
use crate::service::{ProjectService, Setback};

fn category_of(agents: &AgentsFile, agent: Option<&str>) -> Category {
    agent
        .and_then(|a| agents.agent(a))
        .map(|a| a.category)
        .unwrap_or_default()
}

/// What one check did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeartbeatReport {
    pub nudged: Vec<String>,
    pub recovered: Vec<String>,
    pub round_warnings: Vec<String>,
    pub dependency_notices: Vec<(String, String)>,
}

/// Applies the policy to one project. `runs` are the daemon's runs in flight
/// (a recovered task's run is stopped; its supervisor then returns the task).
pub async fn check(
    service: &ProjectService,
    agents: &AgentsFile,
    runs: &[RunInfo],
) -> Result<HeartbeatReport, TickError> {
    let bb = service.blackboard();
    let now = bb.now();
    let daemon = Actor::daemon();
    let mut report = HeartbeatReport::default();
    for w in bb.working_activity().await? {
        let policy = category_of(agents, Some(&w.agent)).policy();
        let quiet = now - w.last_activity;
        if quiet >= (policy.recover_after_secs as i64) * 1000 {
            let why = format!(
                "no progress from {} for {} min (recover after {} min): claim recovered; @{} please check the task",
                w.agent,
                quiet / 60_000,
                policy.recover_after_secs / 60,
                w.creator
            );
            service
                .comment(&w.task_id, &daemon, CommentType::System, &why)
                .await?;
            bb.record_event(
                EventLevel::Attention,
                "task.recovered",
                Some(&w.task_id),
                &daemon,
                json!({ "agent": w.agent, "notify": w.creator, "quiet_ms": quiet }),
            )
            .await?;
            match runs.iter().find(|r| {
                r.project == bb.project()
                    && r.task_id == w.task_id
                    && r.kind == RunKind::Work
                    && r.agent == w.agent
            }) {
                // The supervisor sees the run end and returns the task.
                Some(run) => {
                    signal_group(run.pid, Signal::SIGTERM);
                }
                // Only this claim: a release or a new claim since the read
                // above is left alone.
                None => {
                    let claim = Claim {
                        holder: w.agent.clone(),
                        claimed_at: w.claimed_at,
                    };
                    service
                        .give_back(&w.task_id, &claim, Setback::Stuck, &why)
                        .await?;
                }
            }
            report.recovered.push(w.task_id.clone());
        } else if quiet >= (policy.suspect_after_secs as i64) * 1000
            && w.nudged_at.is_none_or(|n| n < w.last_activity)
        {
            let body = format!(
                "@{}: no progress on {} for {} min. Post a heartbeat (`moziplus bb heartbeat`), an output, or `bb release` if you are stuck.",
                w.agent,
                w.task_id,
                quiet / 60_000
            );
            service
                .comment(&w.task_id, &daemon, CommentType::System, &body)
                .await?;
            bb.record_event(
                EventLevel::Attention,
                "task.suspect",
                Some(&w.task_id),
                &daemon,
                json!({ "agent": w.agent, "quiet_ms": quiet }),
            )
            .await?;
            report.nudged.push(w.task_id.clone());
        }
        let warn_at =
            (u64::from(policy.max_rounds) * u64::from(policy.warn_at_percent)).div_ceil(100) as i64;
        if w.round == warn_at {
            service
                .observe(
                    ObservationLevel::Warn,
                    &daemon,
                    Some(&w.task_id),
                    &format!(
                        "{} is on round {} of the {} rounds its {:?} agent category allows",
                        w.task_id,
                        w.round,
                        policy.max_rounds,
                        category_of(agents, Some(&w.agent))
                    ),
                )
                .await?;
            report.round_warnings.push(w.task_id.clone());
        }
    }
    notify_dependency_waits(service, agents, now, &mut report).await?;
    Ok(report)
}

/// Dependency waits: the owner of a dependency that a task has waited on
/// past its category's threshold is asked (once per wait) to finish it.
async fn notify_dependency_waits(
    service: &ProjectService,
    agents: &AgentsFile,
    now: i64,
    report: &mut HeartbeatReport,
) -> Result<(), TickError> {
    let bb = service.blackboard();
    let daemon = Actor::daemon();
    // Dependency waits: the shortest threshold bounds the query; each row is
    // then held to its own category's threshold.
    let shortest = [Category::Dev, Category::Business, Category::HighFrequency]
        .iter()
        .map(|c| c.policy().dependency_wait_secs)
        .min()
        .unwrap_or(3600) as i64;
    for w in bb.long_dependency_waits(now - shortest * 1000).await? {
        let policy = category_of(agents, w.task_assignee.as_deref()).policy();
        let waited = now - w.waiting_since;
        if waited < (policy.dependency_wait_secs as i64) * 1000 {
            continue;
        }
        let who = w
            .dependency_agent
            .clone()
            .unwrap_or_else(|| "unassigned".into());
        let body = format!(
            "@{who}: {} has been waiting {} min on {} — please finish it or say what blocks it.",
            w.task_id,
            waited / 60_000,
            w.dependency_id
        );
        service
            .comment(&w.dependency_id, &daemon, CommentType::System, &body)
            .await?;
        bb.record_event(
            EventLevel::Attention,
            "task.dependency_wait",
            Some(&w.dependency_id),
            &daemon,
            json!({ "waiting": w.task_id, "notify": who, "waited_ms": waited }),
        )
        .await?;
        report
            .dependency_notices
            .push((w.task_id.clone(), w.dependency_id.clone()));
    }
    Ok(())
}
