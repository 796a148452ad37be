//! Crash recovery: what a start finds of the previous process.
//!
//! Sessions still marked running belonged to a daemon that died without ending
//! them. Their processes are looked up in `/proc` by the session's marker: a
//! process is only touched if its environment carries that session's
//! `MOZI_SESSION` (so a recycled pid is never killed by mistake), and it is
//! found whatever its process group (a `setsid` grandchild has left the
//! group). Live ones are killed — their supervisor is gone, nobody could judge
//! their result — and marked `killed`; dead ones are marked `lost`. Either way
//! the task goes back to `pending` in the same round: a crash of the daemon is
//! not the agent's failure (issue 13, defect 14).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::process::{kill_session_processes, session_processes, signal_group};
use super::Daemon;
use crate::blackboard::{Actor, ObservationLevel, Outcome, TaskStatus};
use crate::service::{ProjectService, Setback};

/// Ends every session the previous daemon left running.
///
/// Over 100 lines on purpose: the restart steps run in this order (old
/// run temp folders; per project, each left session's processes, then its
/// session and task; then stranded claims and the workspaces), and keeping
/// them in one function keeps that order visible.
pub async fn recover(d: &Daemon) {
    super::worktrees::clear_run_tmpdirs(d).await;
    for slot in d.projects().snapshot() {
        let Some(service) = slot.service(d.home()) else {
            continue;
        };
        let bb = service.blackboard().clone();
        let sessions = match bb.running_sessions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(project = %slot.id, error = %e, "recovery: cannot list sessions");
                continue;
            }
        };
        for s in sessions {
            let id = s.id.clone();
            let live = tokio::task::spawn_blocking(move || session_processes(&id))
                .await
                .unwrap_or_default();
            let outcome = if live.is_empty() {
                Outcome::Lost
            } else {
                // The group first (SIGTERM, then the grace period), then
                // every process with the marker, wherever it went.
                let pgid = s.pgid.unwrap_or(0) as i32;
                signal_group(pgid, Signal::SIGTERM);
                for pid in &live {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
                }
                let deadline =
                    tokio::time::Instant::now() + Duration::from_secs(d.config().daemon.kill_grace);
                loop {
                    let id = s.id.clone();
                    let left = tokio::task::spawn_blocking(move || session_processes(&id))
                        .await
                        .unwrap_or_default();
                    if left.is_empty() || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                signal_group(pgid, Signal::SIGKILL);
                let id = s.id.clone();
                let _ = tokio::task::spawn_blocking(move || kill_session_processes(&id)).await;
                Outcome::Killed
            };
            // Whose is the task now? Only this session's own claim is given
            // back (held by its agent, no later session on the task); a task
            // this session already finished (`bb done` before the daemon
            // died) makes the session a success.
            let newest = bb
                .sessions_for_task(&s.task_id)
                .await
                .ok()
                .and_then(|v| v.last().map(|l| l.id.clone()));
            let task = bb.task(&s.task_id).await.ok();
            let ours = task.as_ref().filter(|t| {
                t.claimed_by.as_deref() == Some(s.agent.as_str())
                    && newest.as_deref() == Some(s.id.as_str())
            });
            let finished =
                ours.is_some_and(|t| matches!(t.status, TaskStatus::Review | TaskStatus::Done));
            let outcome = if finished {
                Outcome::Succeeded
            } else {
                outcome
            };
            let why = format!(
                "session {} of {} was left running by a previous daemon ({}); {}",
                s.id,
                s.agent,
                if live.is_empty() {
                    "its processes are gone"
                } else {
                    "its processes were killed"
                },
                if finished {
                    "it had finished its task".to_string()
                } else {
                    outcome.to_string()
                }
            );
            tracing::warn!(project = %slot.id, session = %s.id, %outcome, "recovery");
            let _ = bb
                .end_session(
                    &s.id,
                    outcome,
                    None,
                    Some(serde_json::json!({ "recovered": true })),
                )
                .await;
            let _ = bb
                .add_observation(
                    ObservationLevel::Warn,
                    &Actor::daemon(),
                    Some(&s.task_id),
                    &why,
                )
                .await;
            if let Some(t) = ours.filter(|t| t.status == TaskStatus::Working) {
                if let Some(claim) = t.claim() {
                    let _ = service
                        .give_back(&t.id, &claim, Setback::RunLost, &why)
                        .await;
                }
            }
        }
        give_back_stranded_claims(d, &service).await;
        super::worktrees::recover_workspaces(d, &bb).await;
    }
}

/// A claim the previous daemon made for an agent but never got to start a run
/// for (it died between the claim and the session row): a `working` task held
/// by a configured agent with no running session. Nothing will work on it or
/// renew its lease, so it goes back now, same round, instead of when its lease
/// runs out. Claims by people (names that are no configured agent) stay.
async fn give_back_stranded_claims(d: &Daemon, service: &ProjectService) {
    let bb = service.blackboard();
    let working = match bb
        .list_tasks(&crate::blackboard::TaskFilter {
            statuses: vec![TaskStatus::Working],
            limit: 10_000,
            ..Default::default()
        })
        .await
    {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(project = bb.project(), error = %e, "recovery: cannot list working tasks");
            return;
        }
    };
    for t in working {
        let Some(claim) = t.claim() else {
            continue;
        };
        let holder = claim.holder.as_str();
        if d.agents().agent(holder).is_none() {
            continue;
        }
        let running = bb
            .sessions_for_task(&t.id)
            .await
            .map(|v| v.iter().any(|s| s.ended_at.is_none()))
            .unwrap_or(true);
        if running {
            continue;
        }
        let why = format!(
            "{} was claimed for {holder} by a previous daemon that stopped before starting its run",
            t.id
        );
        tracing::warn!(project = bb.project(), task = %t.id, "recovery: stranded claim given back");
        let _ = service
            .give_back(&t.id, &claim, Setback::RunLost, &why)
            .await;
    }
}
