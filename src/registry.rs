//! Projects: ids, the registry file and the folder tree.
//!
//! `projects/_registry.yaml` is meant to be read and diffed by people, so edits
//! are made to its text: a new project is appended as a block, a status change
//! rewrites one line. Comments and order survive. Only when the file's shape is
//! not recognised does it fall back to a full (comment-losing) rewrite. All
//! edits hold an advisory lock and replace the file atomically (write + rename).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blackboard::{ids, BbError, OpenMode, TaskStatus};
use crate::home::Home;
/// Project ids are part of the on-disk layout, so [`Home`]'s module defines
/// them; re-exported here where projects are managed.
pub use crate::home::{InvalidProjectId, ProjectId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    #[default]
    Active,
    Archived,
}

impl ProjectStatus {
    /// Its one spelling, as the registry file, `project list` and `project
    /// show` write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Active => "active",
            ProjectStatus::Archived => "archived",
        }
    }
}

impl std::fmt::Display for ProjectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub status: ProjectStatus,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    projects: Option<Vec<ProjectEntry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    InvalidId(#[from] InvalidProjectId),
    #[error("unknown project {id:?} in home {home} (see `moziplus project list`; another home: --home or MOZI_HOME)")]
    Unknown { id: String, home: String },
    #[error("project {0:?} already exists")]
    Exists(String),
    #[error("project {0:?} is archived; `moziplus project restore {0}` first")]
    Archived(String),
    #[error("project {0:?} is not archived")]
    NotArchived(String),
    #[error("cannot archive project {id:?}: {n} task(s) are working ({tasks}); wait for them or release them")]
    Busy { id: String, n: usize, tasks: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Blackboard(#[from] BbError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const REGISTRY_HEADER: &str = "\
# moziplus project registry: one entry per project.
# Maintained by `moziplus project create|archive|restore`; hand edits are fine,
# comments and order are kept.
projects:
";

/// Reads the registry (a missing file is an empty registry).
pub fn load(home: &Home) -> Result<Vec<ProjectEntry>, RegistryError> {
    let path = home.registry_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    parse(&path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Vec<ProjectEntry>, RegistryError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: RegistryFile = serde_yaml_ng::from_str(text).map_err(|e| RegistryError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let projects = file.projects.unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for p in &projects {
        if !ids::is_valid_project_id(&p.id) {
            return Err(RegistryError::File {
                path: path.display().to_string(),
                message: format!("entry has invalid project id {:?}", p.id),
            });
        }
        if !seen.insert(p.id.clone()) {
            return Err(RegistryError::File {
                path: path.display().to_string(),
                message: format!("project {:?} is listed twice", p.id),
            });
        }
    }
    Ok(projects)
}

/// Finds a registered project.
pub fn find(home: &Home, id: &ProjectId) -> Result<ProjectEntry, RegistryError> {
    load(home)?
        .into_iter()
        .find(|p| p.id == id.as_str())
        .ok_or_else(|| RegistryError::unknown(home, id))
}

/// An exclusive lock on the registry for the duration of an edit.
fn lock_registry(home: &Home) -> Result<nix::fcntl::Flock<std::fs::File>, RegistryError> {
    std::fs::create_dir_all(home.projects_dir())?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(home.registry_lock_file())?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| RegistryError::Io(e.into()))
}

fn write_atomic(path: &Path, text: &str) -> Result<(), RegistryError> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn yaml_scalar(s: &str) -> String {
    // serde_yaml_ng quotes where YAML needs it; strip the document framing.
    serde_yaml_ng::to_string(s)
        .unwrap_or_else(|_| format!("{s:?}"))
        .trim_end()
        .to_string()
}

fn entry_block(e: &ProjectEntry) -> String {
    let agents = if e.agents.is_empty() {
        "[]".to_string()
    } else {
        format!(
            "[{}]",
            e.agents
                .iter()
                .map(|a| yaml_scalar(a))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "  - id: {}\n    name: {}\n    description: {}\n    agents: {}\n    status: {}\n    created_at: {}\n",
        e.id,
        yaml_scalar(&e.name),
        yaml_scalar(&e.description),
        agents,
        match e.status {
            ProjectStatus::Active => "active",
            ProjectStatus::Archived => "archived",
        },
        yaml_scalar(&e.created_at),
    )
}

/// Appends an entry, keeping the existing text.
fn append_entry(home: &Home, entry: &ProjectEntry) -> Result<(), RegistryError> {
    let path = home.registry_file();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut entries = parse(&path, &text)?;
    if entries.iter().any(|p| p.id == entry.id) {
        return Err(RegistryError::Exists(entry.id.clone()));
    }
    // Appending text is only safe when `projects:` is the last top-level key
    // and holds a block list (or nothing yet).
    let last_top = text
        .lines()
        .rev()
        .find(|l| {
            !l.is_empty() && !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('-')
        })
        .map(str::trim_end);
    let new_text = if text.trim().is_empty() {
        format!("{REGISTRY_HEADER}{}", entry_block(entry))
    } else if last_top == Some("projects:") {
        let mut t = text.clone();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&entry_block(entry));
        t
    } else {
        entries.push(entry.clone());
        full_text(&entries)
    };
    verify_and_write(&path, &new_text, |parsed| parsed.iter().any(|p| p == entry))
}

fn full_text(entries: &[ProjectEntry]) -> String {
    let mut t = REGISTRY_HEADER.to_string();
    for e in entries {
        t.push_str(&entry_block(e));
    }
    t
}

fn verify_and_write(
    path: &Path,
    text: &str,
    check: impl Fn(&[ProjectEntry]) -> bool,
) -> Result<(), RegistryError> {
    match parse(path, text) {
        Ok(parsed) if check(&parsed) => write_atomic(path, text),
        _ => Err(RegistryError::File {
            path: path.display().to_string(),
            message: "internal error: the edited registry did not parse back; nothing was written"
                .into(),
        }),
    }
}

/// Sets one entry's `status:` by editing its line in place.
fn set_status(home: &Home, id: &str, status: ProjectStatus) -> Result<(), RegistryError> {
    let path = home.registry_file();
    let text = std::fs::read_to_string(&path)?;
    let mut entries = parse(&path, &text)?;
    let word = match status {
        ProjectStatus::Active => "active",
        ProjectStatus::Archived => "archived",
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| {
        let t = l.trim_start();
        t.strip_prefix("- id:")
            .or_else(|| t.strip_prefix("id:"))
            .map(|v| v.trim().trim_matches(['"', '\'']))
            == Some(id)
    });
    let mut new_text = None;
    if let Some(start) = start {
        let item_indent = lines[start].len() - lines[start].trim_start().len();
        let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let mut replaced = false;
        for (i, line) in lines.iter().enumerate().skip(start + 1) {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            if !t.is_empty()
                && (indent <= item_indent || t.starts_with("- "))
                && !t.starts_with('#')
            {
                break;
            }
            if let Some(rest) = t.strip_prefix("status:") {
                let comment = rest
                    .find('#')
                    .map(|i| format!(" {}", &rest[i..]))
                    .unwrap_or_default();
                out[i] = format!("{}status: {word}{comment}", &line[..indent]);
                replaced = true;
                break;
            }
        }
        if !replaced {
            out.insert(
                start + 1,
                format!("{}status: {word}", " ".repeat(item_indent + 2)),
            );
        }
        let mut t = out.join("\n");
        t.push('\n');
        new_text = Some(t);
    }
    let new_text = match new_text {
        Some(t) => t,
        None => {
            for e in entries.iter_mut().filter(|e| e.id == id) {
                e.status = status;
            }
            full_text(&entries)
        }
    };
    verify_and_write(&path, &new_text, |parsed| {
        parsed.iter().any(|p| p.id == id && p.status == status)
    })
    .or_else(|_| {
        // The text edit did not produce the expected result: rewrite in full.
        for e in entries.iter_mut().filter(|e| e.id == id) {
            e.status = status;
        }
        write_atomic(&path, &full_text(&entries))
    })
}

/// What `project create` needs.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub agents: Vec<String>,
}

/// Creates the folder tree, the migrated blackboard (0600), `project.yaml` and
/// the registry entry.
pub async fn create_project(home: &Home, new: NewProject) -> Result<ProjectEntry, RegistryError> {
    if new.name.trim().is_empty() {
        return Err(RegistryError::Invalid(
            "project name must not be empty".into(),
        ));
    }
    for a in &new.agents {
        if !ids::is_valid_agent_id(a) {
            return Err(RegistryError::Invalid(format!(
                "invalid agent id {a:?} in --agents"
            )));
        }
    }
    let _lock = lock_registry(home)?;
    let id = &new.id;
    if load(home)?.iter().any(|p| p.id == id.as_str()) {
        return Err(RegistryError::Exists(id.to_string()));
    }
    let dir = home.project_dir(id);
    if home.archived_project_dir(id).exists() {
        return Err(RegistryError::Archived(id.to_string()));
    }
    if dir.exists() {
        return Err(RegistryError::Invalid(format!(
            "{} already exists but is not in the registry; move it away or add it to {}",
            dir.display(),
            home.registry_file().display()
        )));
    }
    for sub in home.project_subdirs(id) {
        std::fs::create_dir_all(sub)?;
    }
    // What agents leave (logs, briefs, outputs) is the owner's only.
    crate::home::create_private_dir_all(&home.artifacts_dir(id))?;
    let mut project_yaml = String::from(
        "# Per-project overrides (see docs/CONFIGURATION.md, \"project.yaml\").\n\
         # max_global_agents: 3        # project-level cap on concurrent agents\n\
         # context:                    # rendered into every brief of this project\n\
         #   repo: /path/to/checkout\n",
    );
    if !new.agents.is_empty() {
        project_yaml.push_str(&format!("agents: [{}]\n", new.agents.join(", ")));
    }
    std::fs::write(home.project_config_file(id), project_yaml)?;
    let bb = open_blackboard(home, id, OpenMode::Create { max_connections: 1 }).await?;
    bb.close().await;
    let entry = ProjectEntry {
        id: id.to_string(),
        name: new.name.trim().to_string(),
        description: new.description,
        agents: new.agents,
        status: ProjectStatus::Active,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    append_entry(home, &entry)?;
    Ok(entry)
}

fn set_tree_mode(path: &Path, dir_mode: u32, file_mode: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        // Children first: a read-only directory cannot be changed inside.
        if dir_mode & 0o200 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode))?;
        }
        for entry in std::fs::read_dir(path)? {
            set_tree_mode(&entry?.path(), dir_mode, file_mode)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode))?;
    }
    Ok(())
}

/// Archives a project: refused while any task is `working`; the folder moves
/// under `projects/_archived/` and becomes read-only.
pub async fn archive_project(home: &Home, id: &ProjectId) -> Result<(), RegistryError> {
    let _lock = lock_registry(home)?;
    let entry = find(home, id)?;
    if entry.status == ProjectStatus::Archived {
        return Err(RegistryError::Archived(id.to_string()));
    }
    let bb = open_blackboard(home, id, OpenMode::CLI).await?;
    let working = bb
        .list_tasks(&crate::blackboard::TaskFilter {
            statuses: vec![TaskStatus::Working],
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    if !working.is_empty() {
        bb.close().await;
        return Err(RegistryError::Busy {
            id: id.to_string(),
            n: working.len(),
            tasks: working
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // Fold the WAL into the main file so the archive is one self-contained file.
    bb.checkpoint().await?;
    bb.close().await;
    std::fs::create_dir_all(home.archived_dir())?;
    let dest = home.archived_project_dir(id);
    if dest.exists() {
        return Err(RegistryError::Invalid(format!(
            "{} already exists; remove it before archiving {id} again",
            dest.display()
        )));
    }
    std::fs::rename(home.project_dir(id), &dest)?;
    set_tree_mode(&dest, 0o500, 0o400)?;
    set_status(home, id.as_str(), ProjectStatus::Archived)
}

/// Brings an archived project back.
pub async fn restore_project(home: &Home, id: &ProjectId) -> Result<(), RegistryError> {
    let _lock = lock_registry(home)?;
    let entry = find(home, id)?;
    if entry.status != ProjectStatus::Archived {
        return Err(RegistryError::NotArchived(id.to_string()));
    }
    let src = home.archived_project_dir(id);
    if !src.exists() {
        return Err(RegistryError::Invalid(format!(
            "{} is missing; cannot restore {id}",
            src.display()
        )));
    }
    if home.project_dir(id).exists() {
        return Err(RegistryError::Invalid(format!(
            "{} already exists; move it away before restoring {id}",
            home.project_dir(id).display()
        )));
    }
    set_tree_mode(&src, 0o755, 0o644)?;
    std::fs::rename(&src, home.project_dir(id))?;
    let db = home.blackboard_file(id);
    if db.exists() {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))?;
    }
    set_status(home, id.as_str(), ProjectStatus::Active)
}

/// Resolves an active project's id for commands that work on its blackboard.
/// Cheap: checks the id and the folder, not the registry file.
pub fn active_project(home: &Home, raw: &str) -> Result<ProjectId, RegistryError> {
    let id = ProjectId::parse(raw)?;
    if home.project_dir(&id).is_dir() {
        return Ok(id);
    }
    if home.archived_project_dir(&id).is_dir() {
        return Err(RegistryError::Archived(id.to_string()));
    }
    Err(RegistryError::unknown(home, &id))
}

impl RegistryError {
    /// `id` is not a project of `home` (the message names the home looked in).
    pub fn unknown(home: &Home, id: &ProjectId) -> RegistryError {
        RegistryError::Unknown {
            id: id.to_string(),
            home: home.root().display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> ProjectEntry {
        ProjectEntry {
            id: id.into(),
            name: format!("Project {id}: \"quoted\""),
            description: String::new(),
            agents: vec!["a".into()],
            status: ProjectStatus::Active,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn edits_keep_comments_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(home.projects_dir()).unwrap();
        std::fs::write(
            home.registry_file(),
            "# my notes about projects\nprojects:\n  # the first one\n  - id: zeta\n    name: Zeta\n    status: active # keep me\n",
        )
        .unwrap();
        append_entry(&home, &entry("alpha")).unwrap();
        set_status(&home, "zeta", ProjectStatus::Archived).unwrap();
        let text = std::fs::read_to_string(home.registry_file()).unwrap();
        assert!(text.starts_with("# my notes about projects\n"), "{text}");
        assert!(text.contains("  # the first one\n"), "{text}");
        assert!(text.contains("status: archived # keep me"), "{text}");
        let parsed = load(&home).unwrap();
        assert_eq!(
            parsed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["zeta", "alpha"]
        );
        assert_eq!(parsed[0].status, ProjectStatus::Archived);
        assert_eq!(parsed[1], entry("alpha"));
    }

    #[test]
    fn garbage_registry_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(home.projects_dir()).unwrap();
        std::fs::write(home.registry_file(), "projects: [\n").unwrap();
        let err = load(&home).unwrap_err().to_string();
        assert!(err.contains("_registry.yaml"), "{err}");
    }
}

/// Where a home's blackboards live ([`store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `projects/<id>/blackboard.db`, one SQLite file per project.
    Files,
    /// One PostgreSQL database (its URL), a schema per project.
    Postgres(String),
}

/// Where this home's blackboards live: `MOZI_STORE__URL` if set, else
/// `store:` in `config/default.yaml` (a URL, or a mapping with `url`),
/// else files under `projects/`. Read on every open, so every front
/// door and every daemon on a store agree without a restart order.
pub fn store(home: &Home) -> Result<StoreLocation, crate::blackboard::BbError> {
    let url = match std::env::var("MOZI_STORE__URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => configured_store_url(home)?,
    };
    store_at(url)
}

/// The location a `store:` URL names (`None`: files). The daemon reads it
/// from the configuration it loaded at start, not from the file again.
pub fn store_at(url: Option<String>) -> Result<StoreLocation, crate::blackboard::BbError> {
    match url.filter(|u| !u.trim().is_empty()) {
        None => Ok(StoreLocation::Files),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(StoreLocation::Postgres(u.trim().to_string()))
        }
        Some(u) => Err(crate::blackboard::BbError::Invalid(format!(
            "store URL {}: only postgres:// URLs are supported (leave `store:` out for \
             files under projects/)",
            crate::blackboard::postgres::redacted(&u)
        ))),
    }
}

fn configured_store_url(home: &Home) -> Result<Option<String>, crate::blackboard::BbError> {
    let path = home.default_config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !text.contains("store") {
        return Ok(None);
    }
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| crate::blackboard::BbError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(match value.get("store") {
        Some(serde_yaml_ng::Value::String(url)) => Some(url.clone()),
        Some(m) => m.get("url").and_then(|u| u.as_str()).map(str::to_string),
        None => None,
    })
}

/// Opens `project`'s blackboard wherever [`store`] says it lives.
pub async fn open_blackboard(
    home: &Home,
    project: &ProjectId,
    mode: crate::blackboard::OpenMode,
) -> crate::blackboard::BbResult<crate::blackboard::Blackboard> {
    open_blackboard_with_clock(
        home,
        project,
        mode,
        std::sync::Arc::new(crate::blackboard::SystemClock),
    )
    .await
}

/// [`open_blackboard`] with the clock it reads.
pub async fn open_blackboard_with_clock(
    home: &Home,
    project: &ProjectId,
    mode: crate::blackboard::OpenMode,
    clock: std::sync::Arc<dyn crate::blackboard::Clock>,
) -> crate::blackboard::BbResult<crate::blackboard::Blackboard> {
    open_blackboard_at(&store(home)?, home, project, mode, clock).await
}

/// [`open_blackboard_with_clock`] where the store's location is known.
pub async fn open_blackboard_at(
    location: &StoreLocation,
    home: &Home,
    project: &ProjectId,
    mode: crate::blackboard::OpenMode,
    clock: std::sync::Arc<dyn crate::blackboard::Clock>,
) -> crate::blackboard::BbResult<crate::blackboard::Blackboard> {
    use crate::blackboard::{Blackboard, OpenMode};
    match location {
        StoreLocation::Files => {
            Blackboard::open_with_clock(
                &home.blackboard_file(project),
                project.as_str(),
                mode,
                clock,
            )
            .await
        }
        StoreLocation::Postgres(url) => {
            let connections = match mode {
                OpenMode::Existing { max_connections } | OpenMode::Create { max_connections } => {
                    max_connections
                }
                OpenMode::Agent => 1,
            };
            Blackboard::open_postgres(url, project.as_str(), connections, clock).await
        }
    }
}
