//! Where a task's runs work (docs/CONFIGURATION.md, "Workspaces").
//!
//! `project.yaml` `workspace:` names a folder (absolute, or relative to the
//! project folder):
//!
//! * a git repository (a `.git` at its top) gives each task its own
//!   worktree, `projects/<id>/worktrees/<task>`, on branch
//!   `mozi/<id>/<task>` from the repository's `HEAD` (namespaced by
//!   project: two projects on one repository have tasks of the same id;
//!   issue 23, finding 7); made on the task's first run, reused by
//!   its later runs and rounds, removed (branch kept) when the task is
//!   `done` or `cancelled` ([`Workspaces::release`]). A removal that git
//!   refuses (uncommitted changes) leaves the worktree.
//! * any other folder gives each task `<folder>/<task>/`;
//! * no `workspace:` gives each task `projects/<id>/workspaces/<task>/`.
//!
//! A review run gets a detached checkout of the author's branch
//! (`worktrees/<task>.review-<session>`, removed when the run ends), so it
//! sees exactly what was committed and cannot change the author's tree.
//!
//! Git runs as a child process (`git` on PATH) off the runtime thread, and
//! never two worktree operations on one repository at once (a per-repository
//! async mutex; git's own locks would make the second one fail). A lock file
//! left by a killed git (`index.lock`, a worktree still marked
//! `initializing`) is cleared: inside a task's own worktree when the task
//! starts a run (no run of it is alive then), elsewhere once it is older
//! than [`STALE_LOCK`].
//!
//! Every run also gets its own `TMPDIR`, `<home>/tmp/<session>`, removed
//! when the run ends ([`run_tmpdir`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::home::Home;
use crate::locks::Recover;
use crate::registry::ProjectId;

mod check;
mod git;

pub use check::{check, Check};
use git::*;
pub use git::{clear_if_stale, git};

/// A lock file of git older than this, with no git of ours running on the
/// repository, is left over from a killed process.
pub const STALE_LOCK: Duration = Duration::from_secs(10);

/// How a task's folder is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceKind {
    /// A git worktree on the task's branch.
    Git,
    /// A plain directory.
    Directory,
}

/// The folder a run works in, as the brief names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskWorkspace {
    /// The run's working directory.
    pub path: PathBuf,
    pub kind: WorkspaceKind,
    /// `mozi/<project>/<task>` (git only; `mozi/<task>` for a worktree made
    /// before branches were namespaced).
    pub branch: Option<String>,
    /// What the branch started from: `<ref> (<commit>)` (git only).
    pub base: Option<String>,
    /// A review run's checkout: look, do not change.
    pub read_only: bool,
    /// Made for this run (the first run of the task, or a review checkout).
    #[serde(skip)]
    pub created: bool,
    /// The repository, for a review checkout that is removed after its run.
    #[serde(skip)]
    pub review_checkout_of: Option<PathBuf>,
}

/// The project's `workspace:` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A git repository (its top folder).
    Git { repo: PathBuf, worktrees: PathBuf },
    /// Task directories go under `dir`.
    Directory { dir: PathBuf },
}

/// What became of a worktree when its task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Removed; the branch is kept.
    Removed,
    /// Git refused (uncommitted changes): the worktree stays, and why.
    Kept(String),
    /// There was none (never made, already removed, not a git workspace).
    Absent,
}

/// Why a workspace could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`git` not found on PATH (the workspace {} is a git repository; install git, see `moziplus doctor`)", repo.display())]
    GitMissing { repo: PathBuf },
    #[error("git {args} in {}: {stderr}", dir.display())]
    Git {
        dir: PathBuf,
        args: String,
        stderr: String,
    },
}

impl WorkspaceError {
    /// The machine's fault (a missing `git`, a full or read-only disk), not
    /// the agent's: the run's task goes back without costing a round.
    pub fn is_infrastructure(&self) -> bool {
        match self {
            WorkspaceError::Io { error, .. } => crate::runtime::health::is_infrastructure(error),
            WorkspaceError::GitMissing { .. } => true,
            // Git's refusals (locks, a broken repository) are not the agent's.
            WorkspaceError::Git { .. } => true,
        }
    }
}

/// The daemon's workspaces: the per-repository locks and the worktrees
/// known to exist (so the tick's reaping looks at those only).
#[derive(Debug, Default)]
pub struct Workspaces {
    repos: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// `(project, task)` of git worktrees that exist.
    live: Mutex<HashSet<(String, String)>>,
}

/// The branch of a task's worktree.
pub fn branch_of(project: &str, task: &str) -> String {
    format!("mozi/{project}/{task}")
}

/// The branch worktrees were made on before branches were namespaced by
/// project: still accepted for a worktree that exists, never made.
pub fn legacy_branch_of(task: &str) -> String {
    format!("mozi/{task}")
}

/// The `TMPDIR` of one run (see [`make_run_tmpdir`]).
pub fn run_tmpdir(home: &Home, session: &str) -> PathBuf {
    runs_tmp_root(home).join(session)
}

/// Where every run's `TMPDIR` lives; emptied when the daemon starts.
pub fn runs_tmp_root(home: &Home) -> PathBuf {
    home.runs_tmp_dir()
}

/// Creates a run's `TMPDIR` (0700). Blocking.
pub fn make_run_tmpdir(dir: &Path) -> std::io::Result<()> {
    crate::home::create_private_dir_all(dir)
}

/// Resolves a project's `workspace:` setting. Blocking (one `stat`).
pub fn root(home: &Home, project: &ProjectId, setting: Option<&Path>) -> Root {
    let project_dir = home.project_dir(project);
    let Some(setting) = setting else {
        return Root::Directory {
            dir: project_dir.join("workspaces"),
        };
    };
    let dir = project_dir.join(setting);
    if dir.join(".git").exists() {
        // One spelling per repository: its lock is keyed by this path.
        Root::Git {
            repo: dir.canonicalize().unwrap_or(dir),
            worktrees: project_dir.join("worktrees"),
        }
    } else {
        Root::Directory { dir }
    }
}

impl Workspaces {
    fn repo_lock(&self, repo: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.repos
            .locked()
            .entry(repo.to_path_buf())
            .or_default()
            .clone()
    }

    /// `(project, task)` pairs of worktrees known to exist in `project`.
    pub fn live_tasks(&self, project: &str) -> Vec<String> {
        self.live
            .locked()
            .iter()
            .filter(|(p, _)| p == project)
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn mark(&self, project: &str, task: &str, live: bool) {
        let mut set = self.live.locked();
        let key = (project.to_string(), task.to_string());
        if live {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Makes the workspace of a work run ready: the task's worktree (made
    /// on its first run, checked and reused later) or its directory.
    pub async fn prepare_work(
        &self,
        root: &Root,
        project: &str,
        task: &str,
    ) -> Result<TaskWorkspace, WorkspaceError> {
        match root {
            Root::Directory { dir } => directory(dir.join(task)).await,
            Root::Git { repo, worktrees } => {
                let path = worktrees.join(task);
                let lock = self.repo_lock(repo);
                let ws = {
                    let _held = lock.lock().await;
                    ensure_worktree(repo, &path, project, task).await?
                };
                self.mark(project, task, true);
                Ok(ws)
            }
        }
    }

    /// The workspace of a review run: a detached checkout of the author's
    /// branch (git), or the author's directory.
    pub async fn prepare_review(
        &self,
        root: &Root,
        project: &str,
        task: &str,
        session: &str,
    ) -> Result<TaskWorkspace, WorkspaceError> {
        match root {
            Root::Directory { dir } => {
                let mut ws = directory(dir.join(task)).await?;
                ws.read_only = true;
                Ok(ws)
            }
            Root::Git { repo, worktrees } => {
                let path = worktrees.join(format!("{task}.review-{session}"));
                let lock = self.repo_lock(repo);
                let _held = lock.lock().await;
                make_dir(worktrees).await?;
                // The author's branch: namespaced, or one made before.
                let mut branch = branch_of(project, task);
                let mut has_branch = false;
                for candidate in [branch_of(project, task), legacy_branch_of(task)] {
                    let full = format!("refs/heads/{candidate}");
                    if !git(repo, &["for-each-ref", "--format=%(objectname)", &full])
                        .await?
                        .trim()
                        .is_empty()
                    {
                        branch = candidate;
                        has_branch = true;
                        break;
                    }
                }
                let target = if has_branch { branch.as_str() } else { "HEAD" };
                let path_text = path.display().to_string();
                git_retrying(
                    repo,
                    &["worktree", "add", "--detach", "--quiet", &path_text, target],
                )
                .await?;
                Ok(TaskWorkspace {
                    path,
                    kind: WorkspaceKind::Git,
                    branch: Some(branch),
                    base: Some(if has_branch {
                        "the author's branch, detached".into()
                    } else {
                        "HEAD (the task has no branch yet)".into()
                    }),
                    read_only: true,
                    created: true,
                    review_checkout_of: Some(repo.clone()),
                })
            }
        }
    }

    /// Removes a review run's checkout (its changes, if any, go with it).
    pub async fn end_review(&self, ws: &TaskWorkspace) {
        let Some(repo) = &ws.review_checkout_of else {
            return;
        };
        let lock = self.repo_lock(repo);
        let _held = lock.lock().await;
        let path = ws.path.display().to_string();
        if is_symlink(&ws.path).await {
            // Replaced by the run: remove the link, never what it points at.
            tracing::warn!(
                path,
                "a review checkout was replaced by a symbolic link; removing the link"
            );
            let _ = tokio::fs::remove_file(&ws.path).await;
            let _ = git(repo, &["worktree", "prune"]).await;
            return;
        }
        if let Err(e) =
            git_retrying(repo, &["worktree", "remove", "--force", "--force", &path]).await
        {
            tracing::warn!(error = %e, "cannot remove a review checkout; removing its folder");
            let _ = tokio::fs::remove_dir_all(&ws.path).await;
            let _ = git(repo, &["worktree", "prune"]).await;
        }
    }

    /// The task ended (`done`, `cancelled`): its worktree goes, its branch
    /// stays. Git refuses while the worktree has uncommitted changes or
    /// untracked files; then the worktree stays and the reason is returned.
    pub async fn release(&self, root: &Root, project: &str, task: &str) -> Released {
        let Root::Git { repo, worktrees } = root else {
            return Released::Absent;
        };
        let path = worktrees.join(task);
        let lock = self.repo_lock(repo);
        let _held = lock.lock().await;
        self.mark(project, task, false);
        if tokio::fs::symlink_metadata(&path).await.is_err() {
            return Released::Absent;
        }
        if is_symlink(&path).await {
            // `git worktree remove` would delete what the link points at
            // (issue 23, finding 9).
            return Released::Kept(format!(
                "{} is a symbolic link, not the worktree the daemon made: refusing to let git \
                 remove it (it would delete the files it points at); remove the link by hand",
                path.display()
            ));
        }
        let text = path.display().to_string();
        match git_retrying(repo, &["worktree", "remove", &text]).await {
            Ok(_) => Released::Removed,
            Err(WorkspaceError::Git { stderr, .. }) => Released::Kept(stderr),
            Err(e) => Released::Kept(e.to_string()),
        }
    }

    /// After a restart (no run of ours alive): prunes what git lost track
    /// of, clears stale locks, removes review checkouts and broken (half
    /// made) worktrees so the next run makes them again, and returns the
    /// tasks that have a worktree (the caller releases those whose task
    /// has ended).
    pub async fn recover(&self, root: &Root, project: &str) -> Result<Vec<String>, WorkspaceError> {
        let Root::Git { repo, worktrees } = root else {
            return Ok(Vec::new());
        };
        let lock = self.repo_lock(repo);
        let _held = lock.lock().await;
        let (r, dir, p) = (repo.clone(), worktrees.clone(), project.to_string());
        let found = tokio::task::spawn_blocking(move || scan_worktrees(&r, &dir, &p))
            .await
            .map_err(|e| WorkspaceError::Io {
                path: worktrees.clone(),
                error: std::io::Error::other(e),
            })?;
        let mut tasks = Vec::new();
        for (name, path, healthy) in found {
            let review = name.contains(".review-");
            if review || !healthy {
                discard_worktree(repo, &path).await?;
            } else {
                self.mark(project, &name, true);
                tasks.push(name);
            }
        }
        git(repo, &["worktree", "prune"]).await?;
        Ok(tasks)
    }
}

async fn is_symlink(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_symlink())
}

/// A plain per-task directory, made if missing.
async fn directory(path: PathBuf) -> Result<TaskWorkspace, WorkspaceError> {
    let created = tokio::fs::symlink_metadata(&path).await.is_err();
    make_dir(&path).await?;
    Ok(TaskWorkspace {
        path,
        kind: WorkspaceKind::Directory,
        branch: None,
        base: None,
        read_only: false,
        created,
        review_checkout_of: None,
    })
}

async fn make_dir(path: &Path) -> Result<(), WorkspaceError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|error| WorkspaceError::Io {
            path: path.to_path_buf(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_is_read_from_gits_refusal() {
        let err = "fatal: Unable to create '/r/.git/worktrees/T-1/index.lock': File exists.\n\nAnother git process seems to be running";
        assert_eq!(
            stale_lock(err),
            Some(PathBuf::from("/r/.git/worktrees/T-1/index.lock"))
        );
        assert_eq!(stale_lock("fatal: not a git repository"), None);
    }

    #[test]
    fn a_fresh_lock_is_not_stale_an_old_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("index.lock");
        std::fs::write(&lock, b"").unwrap();
        assert!(!clear_if_stale(&lock, Duration::from_secs(60)));
        assert!(lock.exists());
        assert!(clear_if_stale(&lock, Duration::ZERO));
        assert!(!lock.exists());
    }
}
