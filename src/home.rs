//! The moziplus *home*: the directory holding configuration and runtime data.
//!
//! Resolution order (SPEC §1): `--home` flag, else `$MOZI_HOME`, else the current
//! directory. Every path the program touches is derived here so the layout is
//! defined in exactly one place.

use std::path::{Path, PathBuf};

use crate::registry::ProjectId;

/// Paths of one moziplus home. Cheap to clone; holds no open handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home rooted at `root` (not required to exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        // Make the root absolute so paths handed to agents stay valid whatever
        // their working directory is.
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&root))
                .unwrap_or(root)
        };
        Home { root }
    }

    /// Resolves the home from an explicit flag, then `$MOZI_HOME`, then the cwd.
    pub fn resolve(flag: Option<&Path>) -> Self {
        if let Some(p) = flag {
            return Home::new(p);
        }
        match std::env::var_os("MOZI_HOME") {
            Some(v) if !v.is_empty() => Home::new(PathBuf::from(v)),
            _ => Home::new(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Held (`flock`, with the holder's PID inside) by the one daemon
    /// serving this home.
    pub fn daemon_lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn default_config_file(&self) -> PathBuf {
        self.config_dir().join("default.yaml")
    }
    pub fn agents_file(&self) -> PathBuf {
        self.config_dir().join("agents.yaml")
    }
    pub fn guardrails_file(&self) -> PathBuf {
        self.config_dir().join("guardrails.yaml")
    }
    pub fn template_components_file(&self) -> PathBuf {
        self.config_dir().join("template_components.yaml")
    }
    pub fn review_protocols_dir(&self) -> PathBuf {
        self.config_dir().join("review_protocols")
    }
    pub fn prompt_templates_dir(&self) -> PathBuf {
        self.root.join("prompt_templates")
    }
    pub fn skills_dir(&self) -> PathBuf {
        self.root.join("skills")
    }
    pub fn projects_dir(&self) -> PathBuf {
        self.root.join("projects")
    }
    pub fn registry_file(&self) -> PathBuf {
        self.projects_dir().join("_registry.yaml")
    }
    pub fn archived_dir(&self) -> PathBuf {
        self.projects_dir().join("_archived")
    }
    pub fn project_dir(&self, id: &ProjectId) -> PathBuf {
        self.projects_dir().join(id.as_str())
    }
    pub fn archived_project_dir(&self, id: &ProjectId) -> PathBuf {
        self.archived_dir().join(id.as_str())
    }
    pub fn blackboard_file(&self, id: &ProjectId) -> PathBuf {
        self.project_dir(id).join("blackboard.db")
    }
    pub fn project_config_file(&self, id: &ProjectId) -> PathBuf {
        self.project_dir(id).join("config").join("project.yaml")
    }
    pub fn artifacts_dir(&self, id: &ProjectId) -> PathBuf {
        self.project_dir(id).join("artifacts")
    }
    /// `artifacts/<task>/` — task ids are validated before they reach here.
    pub fn task_artifacts_dir(&self, id: &ProjectId, task: &str) -> PathBuf {
        self.artifacts_dir(id).join(task)
    }
    pub fn inbox_dir(&self) -> PathBuf {
        self.root.join("inbox")
    }
    pub fn backups_dir(&self) -> PathBuf {
        self.root.join("backups")
    }
    pub fn project_backups_dir(&self, id: &ProjectId) -> PathBuf {
        self.backups_dir().join(id.as_str())
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// Creates `dir` and any missing parents with mode 0700 (what agents write:
/// session logs, briefs, outputs — issue 13, defect 14), and tightens `dir`
/// itself if it already existed with a looser mode.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or truncates) a file readable by its owner only (0600).
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Writes `bytes` to a file readable by its owner only (0600).
pub fn write_private_file(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    create_private_file(path)?.write_all(bytes.as_ref())
}
