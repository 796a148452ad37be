//! `moziplus doctor`'s look at a project's workspace.

use super::*;

/// One finding of `moziplus doctor` about a project's workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

/// `moziplus doctor`: the workspace exists and is writable, is a git
/// repository or not, and `git` is on PATH when it is one. Blocking.
pub fn check(root: &Root) -> Check {
    let (dir, git_repo) = match root {
        Root::Git { repo, .. } => (repo, true),
        Root::Directory { dir } => (dir, false),
    };
    let fail = |detail: String| Check { ok: false, detail };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !git_repo => {
            // Per-task directories are made on demand; the parent must allow it.
            let parent = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
            return match writable(parent) {
                Ok(()) => Check {
                    ok: true,
                    detail: format!("{} (not made yet; a directory per task)", dir.display()),
                },
                Err(e) => fail(format!("{}: not writable: {e}", parent.display())),
            };
        }
        Err(e) => return fail(format!("{}: {e}", dir.display())),
    }
    if let Err(e) = writable(dir) {
        return fail(format!("{}: not writable: {e}", dir.display()));
    }
    if !git_repo {
        return Check {
            ok: true,
            detail: format!(
                "{} (not a git repository: a directory per task)",
                dir.display()
            ),
        };
    }
    match std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--abbrev-ref", "HEAD"])
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(format!(
            "{} is a git repository but `git` is not on PATH",
            dir.display()
        )),
        Err(e) => fail(format!("cannot run git: {e}")),
        Ok(out) if !out.status.success() => fail(format!(
            "{}: git says: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => Check {
            ok: true,
            detail: format!(
                "{} (git repository on {}: a worktree per task)",
                dir.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        },
    }
}

/// Whether a file can be made in `dir` (made and removed at once).
pub(super) fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".moziplus-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}
