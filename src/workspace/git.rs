//! Git for the workspaces: running `git` off the runtime thread, worktree
//! health read from git's own files, making and discarding worktrees, and
//! stale lock files.

use super::*;

/// The admin folder git keeps for the worktree at `path`, validated: the
/// repository's own (`<common dir>/worktrees/<name>`, whose `gitdir` names
/// `<path>/.git`), and the one the worktree's `.git` file points at. An
/// agent can rewrite its `.git` to `gitdir: /outside`; the daemon then
/// removed `/outside/index.lock` and put `/outside/mozi-base` into the next
/// brief (issue 23, finding 9). `None` when they disagree, or `path` is a
/// symbolic link: the worktree is then not ours as it is.
pub(super) fn admin_dir(repo: &Path, path: &Path) -> Option<PathBuf> {
    if std::fs::symlink_metadata(path)
        .ok()?
        .file_type()
        .is_symlink()
    {
        return None;
    }
    let admin = admin_of(repo, path)?;
    let text = std::fs::read_to_string(path.join(".git")).ok()?;
    let named = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let same = match (named.canonicalize(), admin.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same.then_some(admin)
}

/// The state of an existing worktree folder, read from git's files (no
/// child process: reuse stays cheap).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Health {
    Missing,
    /// Complete, on one of the task's branches (named); its base as
    /// recorded.
    Healthy {
        branch: String,
        base: Option<String>,
    },
    /// Half made (a killed `git worktree add`) or not ours: made again.
    Broken,
}

/// Where the base of a worktree is recorded (in git's admin folder of the
/// worktree, so it goes when the worktree goes).
pub(super) const BASE_FILE: &str = "mozi-base";

/// The worktree at `path` of `repo`, expected on one of `branches`.
pub(super) fn worktree_health(repo: &Path, path: &Path, branches: &[String]) -> Health {
    if std::fs::symlink_metadata(path).is_err() {
        return Health::Missing;
    }
    let Some(admin) = admin_dir(repo, path) else {
        return Health::Broken;
    };
    let initializing =
        std::fs::read_to_string(admin.join("locked")).is_ok_and(|s| s.trim() == "initializing");
    let head = std::fs::read_to_string(admin.join("HEAD")).unwrap_or_default();
    let on_branch = branches
        .iter()
        .find(|b| head.trim() == format!("ref: refs/heads/{b}"));
    let Some(branch) = on_branch.cloned() else {
        return Health::Broken;
    };
    if initializing || !admin.join("index").exists() {
        return Health::Broken;
    }
    // No run of this task is alive while its next run is prepared: a lock
    // in its index is left over from a killed one.
    let _ = std::fs::remove_file(admin.join("index.lock"));
    Health::Healthy {
        branch,
        base: std::fs::read_to_string(admin.join(BASE_FILE))
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

/// The task's worktree, healthy: reused as it is (on `mozi/<project>/<task>`,
/// or on the `mozi/<task>` of a worktree made before branches were
/// namespaced), or (first run, or a broken one) made on
/// `mozi/<project>/<task>` (a new branch from `HEAD`, or the existing
/// branch). Called with the repository's lock held.
pub(super) async fn ensure_worktree(
    repo: &Path,
    path: &Path,
    project: &str,
    task: &str,
) -> Result<TaskWorkspace, WorkspaceError> {
    let branch = branch_of(project, task);
    let (r, p, b) = (
        repo.to_path_buf(),
        path.to_path_buf(),
        [branch.clone(), legacy_branch_of(task)],
    );
    let health = tokio::task::spawn_blocking(move || worktree_health(&r, &p, &b))
        .await
        .unwrap_or(Health::Broken);
    match health {
        Health::Healthy { branch, base } => {
            return Ok(TaskWorkspace {
                path: path.to_path_buf(),
                kind: WorkspaceKind::Git,
                branch: Some(branch),
                base,
                read_only: false,
                created: false,
                review_checkout_of: None,
            })
        }
        Health::Broken => discard_worktree(repo, path).await?,
        Health::Missing => {}
    }
    if let Some(parent) = path.parent() {
        make_dir(parent).await?;
    }
    let full = format!("refs/heads/{branch}");
    let out = git(repo, &["for-each-ref", "--format=%(objectname)", &full]).await?;
    let existing = out.split_whitespace().next().map(str::to_string);
    // The commit of HEAD and the branch it is on ("HEAD -> main, …").
    let head = git(repo, &["log", "-1", "--format=%H%n%D", "HEAD"]).await?;
    let mut lines = head.lines();
    let head_commit = lines.next().unwrap_or_default().trim().to_string();
    let head_name = lines
        .next()
        .and_then(|d| d.split(", ").find_map(|r| r.strip_prefix("HEAD -> ")))
        .unwrap_or("HEAD")
        .to_string();
    let path_text = path.display().to_string();
    let base = match &existing {
        Some(commit) => {
            git_retrying(repo, &["worktree", "add", "--quiet", &path_text, &branch]).await?;
            format!("{branch} (existing branch, at {})", short(commit))
        }
        None => {
            git_retrying(
                repo,
                &[
                    "worktree", "add", "--quiet", "-b", &branch, &path_text, "HEAD",
                ],
            )
            .await?;
            format!("{head_name} ({})", short(&head_commit))
        }
    };
    let (r, p) = (repo.to_path_buf(), path.to_path_buf());
    let recorded = base.clone();
    let _ = tokio::task::spawn_blocking(move || {
        admin_dir(&r, &p).map(|a| std::fs::write(a.join(BASE_FILE), recorded))
    })
    .await;
    Ok(TaskWorkspace {
        path: path.to_path_buf(),
        kind: WorkspaceKind::Git,
        branch: Some(branch),
        base: Some(base),
        read_only: false,
        created: true,
        review_checkout_of: None,
    })
}

pub(super) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// Removes a worktree folder and git's record of it, whatever state a
/// killed `git worktree add` left them in. Called with the repository's
/// lock held; `path` is under the project's `worktrees/` (ours).
pub(super) async fn discard_worktree(repo: &Path, path: &Path) -> Result<(), WorkspaceError> {
    let (repo2, p) = (repo.to_path_buf(), path.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(admin) = admin_of(&repo2, &p) {
            std::fs::remove_dir_all(&admin).or_else(not_found_ok)?;
        }
        std::fs::remove_dir_all(&p).or_else(not_found_ok)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|error| WorkspaceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    git(repo, &["worktree", "prune"]).await.map(|_| ())
}

pub(super) fn not_found_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Git's admin folder of the worktree at `path`: the one whose `gitdir`
/// file points at `<path>/.git` (found even when `<path>/.git` was never
/// written).
pub(super) fn admin_of(repo: &Path, path: &Path) -> Option<PathBuf> {
    let want = path.join(".git");
    let entries = std::fs::read_dir(common_dir(repo).join("worktrees")).ok()?;
    entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|a| {
        std::fs::read_to_string(a.join("gitdir"))
            .is_ok_and(|g| Path::new(g.trim()) == want.as_path())
    })
}

/// The repository's git folder (`<repo>/.git`, or where a `.git` file
/// points).
pub(super) fn common_dir(repo: &Path) -> PathBuf {
    let dot = repo.join(".git");
    if dot.is_dir() {
        return dot;
    }
    match std::fs::read_to_string(&dot) {
        Ok(text) => text
            .strip_prefix("gitdir:")
            .map(|d| {
                let d = PathBuf::from(d.trim());
                // A linked worktree's admin folder: its common dir is two up.
                match d.parent().and_then(Path::parent) {
                    Some(up) if d.parent().is_some_and(|p| p.ends_with("worktrees")) => {
                        up.to_path_buf()
                    }
                    _ => d,
                }
            })
            .unwrap_or(dot),
        Err(_) => dot,
    }
}

/// The folders under `worktrees/` of `project`: name, path and whether it
/// is healthy. A symbolic link there is listed as broken (discarding it
/// removes the link, never what it points at).
pub(super) fn scan_worktrees(
    repo: &Path,
    dir: &Path,
    project: &str,
) -> Vec<(String, PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            let healthy = if name.contains(".review-") {
                false
            } else {
                let branches = [branch_of(project, &name), legacy_branch_of(&name)];
                matches!(
                    worktree_health(repo, &path, &branches),
                    Health::Healthy { .. }
                )
            };
            Some((name, path, healthy))
        })
        .collect()
}

/// Runs `git -C dir args…` and returns its stdout.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                WorkspaceError::GitMissing {
                    repo: dir.to_path_buf(),
                }
            } else {
                WorkspaceError::Io {
                    path: dir.to_path_buf(),
                    error,
                }
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(WorkspaceError::Git {
            dir: dir.to_path_buf(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// [`git`], once more after clearing a stale lock file git names in its
/// refusal (`Unable to create '…/x.lock': File exists`).
pub(super) async fn git_retrying(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    match git(dir, args).await {
        Err(WorkspaceError::Git { stderr, .. }) if stale_lock(&stderr).is_some() => {
            let lock = stale_lock(&stderr).expect("checked");
            let p = lock.clone();
            let cleared = tokio::task::spawn_blocking(move || clear_if_stale(&p, STALE_LOCK))
                .await
                .unwrap_or(false);
            if cleared {
                tracing::warn!(lock = %lock.display(), "removed a stale git lock file");
            }
            git(dir, args).await
        }
        other => other,
    }
}

/// The lock file named in git's "File exists" refusal.
pub(super) fn stale_lock(stderr: &str) -> Option<PathBuf> {
    let start = stderr.find("Unable to create '")? + "Unable to create '".len();
    let rest = &stderr[start..];
    let end = rest.find("': File exists")?;
    let path = &rest[..end];
    path.ends_with(".lock").then(|| PathBuf::from(path))
}

/// Removes `lock` when it is older than `age`. Blocking.
pub fn clear_if_stale(lock: &Path, age: Duration) -> bool {
    let old = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e >= age);
    old && std::fs::remove_file(lock).is_ok()
}
