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
        // In a store's cluster only the sessions of daemons that are gone
        // (and of none) are left over; the others are live daemons' runs.
        let sessions = match left_sessions(d, &bb, true).await {
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
            let why = if live.is_empty() {
                "its processes are gone"
            } else {
                "its processes were killed"
            };
            settle(
                &service,
                &s,
                outcome,
                &format!("was left running by a previous daemon ({why})"),
            )
            .await;
        }
        // In a cluster another daemon may be between its claim and its
        // session row: its claim is not stranded. Leases cover that case.
        if d.membership().is_none() {
            give_back_stranded_claims(d, &service, None).await;
        }
        super::worktrees::recover_workspaces(d, &bb).await;
    }
}

/// A claim the previous daemon made for an agent but never got to start a run
/// for (it died between the claim and the session row): a `working` task held
/// by a configured agent with no running session. Nothing will work on it or
/// renew its lease, so it goes back now, same round, instead of when its lease
/// runs out. Claims by people (names that are no configured agent) stay.
///
/// With `min_age` (the cluster leader's duty) only claims older than that
/// go back: a live daemon writes its session row milliseconds after its
/// claim, so an older claim with no run is one its daemon died holding.
async fn give_back_stranded_claims(d: &Daemon, service: &ProjectService, min_age: Option<i64>) {
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
        if min_age.is_some_and(|age| t.claimed_at.is_none_or(|at| at > bb.now() - age)) {
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

/// The running sessions a starting daemon ends: all of them on files (one
/// daemon per home); in a store's cluster, those of daemons no longer seen.
/// A daemon judges others by their beats only once its own have been
/// steady for a window (`Membership::may_judge_others`); before that, a
/// starting daemon (`at_start`) still ends the sessions of daemons of its
/// own host whose process is gone, which it knows for certain.
async fn left_sessions(
    d: &Daemon,
    bb: &crate::blackboard::Blackboard,
    at_start: bool,
) -> crate::blackboard::BbResult<Vec<crate::blackboard::Session>> {
    match d.membership() {
        None => bb.running_sessions().await,
        Some(m) => {
            if !m.may_judge_others() {
                // Just joined, or the store just came back: the others
                // have not had a window to beat yet.
                if !at_start {
                    return Ok(Vec::new());
                }
                // Every daemon of the view counts as alive but those of
                // this host whose process is gone.
                let host = format!("{}:", m.host);
                let certainly_dead = |id: &str| {
                    id != m.cluster.id()
                        && id
                            .strip_prefix(&host)
                            .and_then(|rest| rest.split(':').next())
                            .and_then(|p| p.parse::<u32>().ok())
                            .is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
                };
                let seen = m.daemons();
                if !seen.iter().any(|x| x.id == m.cluster.id()) {
                    // No view of the cluster at all: judge nobody.
                    return Ok(Vec::new());
                }
                let keep: Vec<String> = seen
                    .into_iter()
                    .map(|x| x.id)
                    .filter(|id| !certainly_dead(id))
                    .chain(std::iter::once(m.cluster.id().to_string()))
                    .collect();
                return bb.running_sessions_not_of(&keep).await;
            }
            // As of this daemon's last beat (joining beats once): no
            // query of the cluster per project and tick.
            let alive: Vec<String> = m
                .daemons()
                .into_iter()
                .filter(|x| x.alive)
                .map(|x| x.id)
                .collect();
            if !alive.iter().any(|id| id == m.cluster.id()) {
                // No fresh view (the last beat could not read the cluster):
                // judge nobody gone rather than everybody.
                return Ok(Vec::new());
            }
            bb.running_sessions_not_of(&alive).await
        }
    }
}

/// The leader's duty in a store's cluster: the runs of daemons not seen
/// for [`super::cluster::ALIVE`] (killed, host down) are lost, and their
/// tasks go back to `pending` in the same round, as a restarted daemon's
/// own would. A late `bb done` from such a run is refused: its session
/// has ended.
pub async fn give_back_runs_of_gone_daemons(d: &Daemon, service: &ProjectService) {
    let Some(m) = d.membership() else { return };
    let bb = service.blackboard();
    let gone = match left_sessions(d, bb, false).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(project = bb.project(), error = %e, "cluster: cannot list the runs of gone daemons");
            return;
        }
    };
    for s in gone {
        if s.started_at > bb.now() - super::cluster::ALIVE.as_millis() as i64 {
            // Too young to judge: its daemon may not have beaten yet.
            continue;
        }
        tracing::warn!(project = bb.project(), session = %s.id, leader = m.cluster.id(), "cluster: a gone daemon's run is given back");
        settle(
            service,
            &s,
            Outcome::Lost,
            "was left running by a daemon that is gone (not seen for 10 s)",
        )
        .await;
    }
    give_back_stranded_claims(d, service, Some(super::cluster::ALIVE.as_millis() as i64)).await;
}

/// Ends a session nobody supervises any more with `outcome` (or as a
/// success if it had finished its task), says so on the task, and gives
/// back its claim if the claim is still this session's.
async fn settle(
    service: &ProjectService,
    s: &crate::blackboard::Session,
    outcome: Outcome,
    what: &str,
) {
    let bb = service.blackboard();
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
    let finished = ours.is_some_and(|t| matches!(t.status, TaskStatus::Review | TaskStatus::Done));
    let outcome = if finished {
        Outcome::Succeeded
    } else {
        outcome
    };
    let why = format!(
        "session {} of {} {what}; {}",
        s.id,
        s.agent,
        if finished {
            "it had finished its task".to_string()
        } else {
            outcome.to_string()
        }
    );
    tracing::warn!(project = bb.project(), session = %s.id, %outcome, "recovery");
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
