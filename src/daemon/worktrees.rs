//! The daemon's side of task workspaces (`crate::workspace`): resolving a
//! project's `workspace:`, removing the worktrees of tasks that ended, and
//! reconciling the worktrees with the tasks after a restart. Used by `runs`
//! (a run's start and end), `recovery` and the tick.

use super::Daemon;
use crate::blackboard::{Actor, BbError, Blackboard, ObservationLevel, TaskStatus};
use crate::workspace::{self, Released, Root};

/// The project's `workspace:` resolved (one `stat`, off the runtime thread).
pub async fn workspace_root(d: &Daemon, project: &str) -> Root {
    let setting = d.projects().get(project).and_then(|s| s.settings.workspace);
    let home = d.home().clone();
    let id = crate::registry::ProjectId::parse(project).expect("valid id");
    tokio::task::spawn_blocking(move || workspace::root(&home, &id, setting.as_deref()))
        .await
        .expect("workspace root")
}

/// Removes the worktrees of this project's tasks that are `done` or
/// `cancelled` (or gone) and have no run: the branch stays. A worktree git
/// will not remove (uncommitted changes) stays too, with an observation on
/// its task saying so; it is not tried again until the next start. Cheap
/// when no worktree exists (no I/O at all).
pub async fn reap_workspaces(d: &Daemon, bb: &Blackboard) {
    let project = bb.project();
    let candidates = d.workspaces().live_tasks(project);
    if candidates.is_empty() {
        return;
    }
    let running: Vec<String> = d
        .runs()
        .into_iter()
        .filter(|r| r.project == project)
        .map(|r| r.task_id)
        .collect();
    let mut root = None;
    for task in candidates.into_iter().filter(|t| !running.contains(t)) {
        let ended = match bb.task(&task).await {
            Ok(t) => matches!(t.status, TaskStatus::Done | TaskStatus::Cancelled),
            Err(BbError::NotFound { .. }) => true,
            Err(_) => false,
        };
        if !ended {
            continue;
        }
        if root.is_none() {
            root = Some(workspace_root(d, project).await);
        }
        let root = root.as_ref().expect("set above");
        release(d, bb, root, &task).await;
    }
}

/// Releases one ended task's worktree and says what happened.
async fn release(d: &Daemon, bb: &Blackboard, root: &Root, task: &str) {
    match d.workspaces().release(root, bb.project(), task).await {
        Released::Removed => {
            tracing::info!(
                project = bb.project(),
                task,
                "worktree removed (branch kept)"
            );
        }
        Released::Absent => {}
        Released::Kept(why) => {
            let path = match root {
                Root::Git { worktrees, .. } => worktrees.join(task).display().to_string(),
                Root::Directory { dir } => dir.join(task).display().to_string(),
            };
            let text = format!(
                "the worktree of {task} was kept at {path} (branch {}): git would not remove it: {why}. Commit or discard its changes, then `git worktree remove {path}`",
                workspace::branch_of(bb.project(), task)
            );
            tracing::warn!(project = bb.project(), task, why, "worktree kept");
            let _ = bb
                .add_observation(ObservationLevel::Warn, &Actor::daemon(), Some(task), &text)
                .await;
        }
    }
}

/// After a restart: every run's `TMPDIR` of the previous process goes; the
/// project's worktrees are reconciled with its tasks (review checkouts and
/// half-made worktrees removed, stale locks cleared, the worktrees of ended
/// tasks released).
pub async fn recover_workspaces(d: &Daemon, bb: &Blackboard) {
    let root = workspace_root(d, bb.project()).await;
    if let Err(e) = d.workspaces().recover(&root, bb.project()).await {
        tracing::warn!(project = bb.project(), error = %e, "recovery: cannot reconcile the worktrees");
        let _ = bb
            .add_observation(
                ObservationLevel::Warn,
                &Actor::daemon(),
                None,
                &format!(
                    "the worktrees could not be reconciled with the tasks after a restart: {e}"
                ),
            )
            .await;
    }
    reap_workspaces(d, bb).await;
}

/// Removes the `TMPDIR`s runs of a previous process left (none of ours is
/// alive when this runs).
pub async fn clear_run_tmpdirs(d: &Daemon) {
    let dir = workspace::runs_tmp_root(d.home());
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}
