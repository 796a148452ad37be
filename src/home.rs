//! The moziplus *home*: the directory holding configuration and runtime data.
//!
//! Resolution order: `--home` flag, else `$MOZI_HOME`, else the current
//! directory. Every path of the on-disk layout is derived here so the layout
//! is defined in exactly one place. [`ProjectId`] lives here too: a
//! project id is a folder name before it is anything else.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A validated project id (`^[a-z0-9][a-z0-9_-]{0,63}$`): safe to use as a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(s: &str) -> Result<ProjectId, InvalidProjectId> {
        if crate::blackboard::ids::is_valid_project_id(s) {
            Ok(ProjectId(s.to_string()))
        } else {
            Err(InvalidProjectId(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not a [`ProjectId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid project id {0:?}: use 1-64 of a-z, 0-9, '_' or '-', starting with a letter or digit (ids become folder names)")]
pub struct InvalidProjectId(pub String);

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
    /// Budgets changed at run time (`moziplus budget set`, `PUT
    /// /api/budgets`): they win over `budgets:` of the configuration.
    pub fn budget_overrides_file(&self) -> PathBuf {
        self.root.join("budgets.json")
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
    /// Held (`flock`) while the registry file is edited.
    pub fn registry_lock_file(&self) -> PathBuf {
        self.projects_dir().join(".registry.lock")
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
    /// `artifacts/<task>/sessions/`: each run's brief and log.
    pub fn task_sessions_dir(&self, id: &ProjectId, task: &str) -> PathBuf {
        self.task_artifacts_dir(id, task).join("sessions")
    }
    /// The brief a run was started with (`sessions/<session>.brief.md`).
    pub fn session_brief_file(&self, id: &ProjectId, task: &str, session: &str) -> PathBuf {
        self.task_sessions_dir(id, task)
            .join(format!("{session}.brief.md"))
    }
    /// A run's log (`sessions/<session>.log`).
    pub fn session_log_file(&self, id: &ProjectId, task: &str, session: &str) -> PathBuf {
        self.task_sessions_dir(id, task)
            .join(format!("{session}.log"))
    }
    /// `artifacts/<task>/outputs/`: the files `bb output` stores.
    pub fn task_outputs_dir(&self, id: &ProjectId, task: &str) -> PathBuf {
        self.task_artifacts_dir(id, task).join("outputs")
    }
    /// The folders a new project starts with besides `artifacts/`.
    pub fn project_subdirs(&self, id: &ProjectId) -> [PathBuf; 3] {
        let dir = self.project_dir(id);
        [
            dir.join("config"),
            dir.join("experiences"),
            dir.join("skills"),
        ]
    }
    /// The project's own skills (`projects/<id>/skills/`).
    pub fn project_skills_dir(&self, id: &ProjectId) -> PathBuf {
        self.project_dir(id).join("skills")
    }
    /// Skills shipped with moziplus (`skills/builtins/`).
    pub fn builtin_skills_dir(&self) -> PathBuf {
        self.skills_dir().join("builtins")
    }
    /// Skills written or distilled here (`skills/custom/`).
    pub fn custom_skills_dir(&self) -> PathBuf {
        self.skills_dir().join("custom")
    }
    pub fn inbox_dir(&self) -> PathBuf {
        self.root.join("inbox")
    }
    /// The inbox file `inbox.path` names: relative to the home unless
    /// absolute.
    pub fn inbox_file(&self, configured: &Path) -> PathBuf {
        if configured.is_absolute() {
            configured.to_path_buf()
        } else {
            self.root.join(configured)
        }
    }
    /// The datagram socket a running daemon is woken through.
    pub fn wake_socket_file(&self) -> PathBuf {
        self.inbox_dir().join("wake.sock")
    }
    pub fn backups_dir(&self) -> PathBuf {
        self.root.join("backups")
    }
    pub fn project_backups_dir(&self, id: &ProjectId) -> PathBuf {
        self.backups_dir().join(id.as_str())
    }
    /// Where every run's `TMPDIR` lives (`tmp/<session>`).
    /// `run/`: the folder of the daemon's socket for sandboxed runs
    /// (`sandbox_socket_file`), bound read-only into every sandbox.
    pub fn sandbox_socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// `run/api.sock`: the daemon's gateway and API for sandboxed runs.
    pub fn sandbox_socket_file(&self) -> PathBuf {
        self.sandbox_socket_dir().join("api.sock")
    }
    /// `run/waits/<project>.json`: why the daemon's last tick of the
    /// project left its tasks waiting (`daemon::waits`), for `bb`.
    pub fn daemon_waits_file(&self, id: &ProjectId) -> PathBuf {
        self.sandbox_socket_dir()
            .join("waits")
            .join(format!("{}.json", id.as_str()))
    }
    pub fn runs_tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `runtimes/<runtime>/<agent>/`: an agent CLI's generated configuration
    /// and state (made private by `runtime::state_dir`).
    pub fn runtime_state_dir(&self, runtime: &str, agent: &str) -> PathBuf {
        self.root.join("runtimes").join(runtime).join(agent)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// `gateway/history.db`: the gateway's samples of the last day
    /// (`blackboard::GatewayHistory`), home-wide like the gateway.
    pub fn gateway_history_file(&self) -> PathBuf {
        self.root.join("gateway").join("history.db")
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
