//! `config/agents.yaml`: the agent team and the runtimes that start them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Source};

/// An agent's heartbeat category: sets its suspect/recover times and
/// round limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    #[default]
    Dev,
    Business,
    HighFrequency,
}

/// The limits of one [`Category`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryPolicy {
    pub heartbeat_secs: u64,
    pub suspect_after_secs: u64,
    pub recover_after_secs: u64,
    pub max_rounds: u32,
    /// Share of `max_rounds` at which a warning is raised.
    pub warn_at_percent: u32,
    /// A task waiting on dependencies longer than this notifies their assignee.
    pub dependency_wait_secs: u64,
}

impl Category {
    pub fn policy(self) -> CategoryPolicy {
        match self {
            Category::Dev => CategoryPolicy {
                heartbeat_secs: 15 * 60,
                suspect_after_secs: 30 * 60,
                recover_after_secs: 45 * 60,
                max_rounds: 100,
                warn_at_percent: 80,
                dependency_wait_secs: 2 * 3600,
            },
            Category::Business => CategoryPolicy {
                heartbeat_secs: 15 * 60,
                suspect_after_secs: 30 * 60,
                recover_after_secs: 45 * 60,
                max_rounds: 30,
                warn_at_percent: 80,
                dependency_wait_secs: 2 * 3600,
            },
            Category::HighFrequency => CategoryPolicy {
                heartbeat_secs: 10 * 60,
                suspect_after_secs: 20 * 60,
                recover_after_secs: 30 * 60,
                max_rounds: 50,
                warn_at_percent: 80,
                dependency_wait_secs: 3600,
            },
        }
    }
}

/// A runtime defined in `agents.yaml`: a command template with placeholders
/// `{agent}`, `{session}`, `{brief}`, `{timeout}`, `{project}`, `{task}`,
/// `{home}`, `{model}`, run by the `command` adapter (`runtime::command`).
/// The built-in runtimes (`codex`, `claude-code`, `openclaw`, `demo`) are
/// adapters in code (`runtime`), not templates; a `runtimes:` entry with the
/// same name replaces one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDef {
    pub command: Vec<String>,
    /// Parse stdout as OpenClaw's `--json` result to judge success.
    #[serde(default)]
    pub json_result: bool,
}

/// One agent of the team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    pub id: String,
    pub runtime: String,
    #[serde(default)]
    pub category: Category,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces the runtime's command template for this agent.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Task kinds this agent takes (empty = any).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Roles (e.g. `reviewer`, `senior-reviewer`) used by review protocols.
    #[serde(default)]
    pub roles: Vec<String>,
    /// What the agent's tools may do (`auto`, the default: `sandbox` where
    /// bubblewrap makes one, else `workspace`; or `sandbox`, `workspace`,
    /// `full`); each adapter maps it to its CLI's own flags
    /// (docs/RUNTIMES.md, "Permissions"). `auto` is resolved when the team loads
    /// ([`AgentsFile::resolve_permissions`]), never seen by an adapter.
    #[serde(default)]
    pub permissions: Permissions,
    /// Arguments appended to the runtime's own.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Variables set in the run's environment, on top of the allow-list.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the daemon's own variables passed through to the run.
    /// `MOZI_*` and the gateway's provider key variables are refused.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

/// What an agent's tools may do; the adapters map it to their CLI's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Permissions {
    /// The default: `sandbox.default_permissions` (itself `auto` unless
    /// set), where `auto` is `sandbox` on a machine where bubblewrap makes
    /// one and `workspace` elsewhere.
    #[default]
    Auto,
    /// For hosts without bubblewrap: tools write only inside the working
    /// directory and (Claude Code) shell commands are limited to
    /// `moziplus bb`.
    Workspace,
    /// The run starts inside a bubblewrap sandbox (`runtime::sandbox`):
    /// read-write only its workspace, `TMPDIR` and runtime state, no network
    /// but the daemon's; inside it every tool of the CLI is allowed.
    Sandbox,
    /// No sandbox and every tool allowed; for agents already isolated
    /// (a container, a VM). Unsafe on a shared machine.
    Full,
}

impl Permissions {
    pub fn as_str(self) -> &'static str {
        match self {
            Permissions::Auto => "auto",
            Permissions::Workspace => "workspace",
            Permissions::Sandbox => "sandbox",
            Permissions::Full => "full",
        }
    }
}

/// The names of the runtimes built into the binary (`runtime::Adapter`).
pub const BUILTIN_RUNTIMES: [&str; 5] = ["codex", "claude-code", "openclaw", "demo", "command"];

/// The whole `agents.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    #[serde(default)]
    pub runtimes: BTreeMap<String, RuntimeDef>,
    #[serde(default)]
    pub agents: Vec<AgentDef>,
}

impl AgentsFile {
    /// Gives every `auto` agent its mode: `default` (from
    /// `sandbox.default_permissions`), and where that is `auto` too,
    /// `sandbox` if `sandbox_works()` (asked at most once), else
    /// `workspace`. Returns the agents resolved, with the mode each got.
    pub fn resolve_permissions(
        &mut self,
        default: Permissions,
        sandbox_works: impl FnOnce() -> bool,
    ) -> Vec<(String, Permissions)> {
        let mut works = None;
        let mut sandbox_works = Some(sandbox_works);
        let mut resolved = Vec::new();
        for a in self
            .agents
            .iter_mut()
            .filter(|a| a.permissions == Permissions::Auto)
        {
            a.permissions = match default {
                Permissions::Auto => {
                    let ok =
                        *works.get_or_insert_with(|| sandbox_works.take().is_some_and(|f| f()));
                    if ok {
                        Permissions::Sandbox
                    } else {
                        Permissions::Workspace
                    }
                }
                other => other,
            };
            resolved.push((a.id.clone(), a.permissions));
        }
        resolved
    }

    /// Loads and checks `agents.yaml`: unique valid ids, known runtimes, and the
    /// `command` runtime only with a per-agent command.
    pub fn load(path: &Path) -> Result<AgentsFile, ConfigError> {
        let source = Source::File(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(ConfigError::Read {
                    origin: source,
                    error,
                })
            }
        };
        let file: AgentsFile = if text.trim().is_empty() {
            AgentsFile::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: source.clone(),
                message: e.to_string(),
            })?
        };
        // The line of the offending entry's field (issue 13, defect 14:
        // every error used to name the line of `agents:`).
        let bad =
            |index: usize, field: &str, key: String, message: String| ConfigError::OutOfRange {
                line: agent_entry_line(&text, index, field)
                    .or_else(|| super::find_key_line(&text, "agents")),
                origin: source.clone(),
                key,
                message,
            };
        let mut seen = std::collections::HashSet::new();
        for (i, a) in file.agents.iter().enumerate() {
            if !crate::blackboard::ids::is_valid_agent_id(&a.id) {
                return Err(bad(
                    i,
                    "id",
                    "agents.id".into(),
                    format!("{:?} is not a valid agent id", a.id),
                ));
            }
            if !seen.insert(a.id.clone()) {
                return Err(bad(
                    i,
                    "id",
                    "agents.id".into(),
                    format!("{:?} is defined twice", a.id),
                ));
            }
            for name in &a.pass_env {
                if name.starts_with("MOZI_") || name.is_empty() {
                    return Err(bad(
                        i,
                        "pass_env",
                        format!("agents.{}.pass_env", a.id),
                        format!("{name:?} cannot be passed to an agent (MOZI_* variables are the daemon's; the run gets its own)"),
                    ));
                }
            }
            if a.runtime == "command" {
                if a.command.as_ref().is_none_or(|c| c.is_empty()) {
                    return Err(bad(
                        i,
                        "command",
                        format!("agents.{}.command", a.id),
                        "is required for the `command` runtime".into(),
                    ));
                }
            } else if !file.runtimes.contains_key(&a.runtime)
                && !BUILTIN_RUNTIMES.contains(&a.runtime.as_str())
            {
                let mut known: Vec<String> =
                    BUILTIN_RUNTIMES.iter().map(|s| s.to_string()).collect();
                known.extend(file.runtimes.keys().cloned());
                return Err(bad(
                    i,
                    "runtime",
                    format!("agents.{}.runtime", a.id),
                    format!(
                        "names unknown runtime {:?}; known: {}",
                        a.runtime,
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(file)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentDef> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// The command template for an agent (its own, else its `agents.yaml`
    /// runtime's); `None` for the built-in adapters.
    pub fn command_template<'a>(&'a self, agent: &'a AgentDef) -> Option<&'a [String]> {
        if let Some(c) = &agent.command {
            return Some(c);
        }
        self.runtimes
            .get(&agent.runtime)
            .map(|r| r.command.as_slice())
    }
}

/// The 1-based line of `field` in the `index`-th entry of the top-level
/// `agents:` list (block style), else the line the entry starts on; `None`
/// if the list is not written in block style.
fn agent_entry_line(text: &str, index: usize, field: &str) -> Option<usize> {
    let mut in_agents = false;
    let mut item_indent: Option<usize> = None;
    let mut item: Option<usize> = None; // current entry's index
    let mut found_start = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent == 0 && !trimmed.starts_with('-') {
            if in_agents && found_start.is_some() {
                break;
            }
            in_agents = trimmed.starts_with("agents:");
            item_indent = None;
            continue;
        }
        if !in_agents {
            continue;
        }
        if trimmed.starts_with('-') && item_indent.is_none_or(|i| indent <= i) {
            if item == Some(index) {
                break;
            }
            item_indent = Some(indent);
            item = Some(item.map_or(0, |i| i + 1));
            if item == Some(index) {
                found_start = Some(n + 1);
            }
        }
        if item == Some(index) {
            let body = trimmed.trim_start_matches('-').trim_start();
            if body.starts_with(&format!("{field}:")) {
                return Some(n + 1);
            }
        }
    }
    found_start
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn auto_is_the_sandbox_where_bubblewrap_works_and_workspace_elsewhere() {
        let text = "agents:\n  - id: a\n    runtime: demo\n  - id: b\n    runtime: demo\n    permissions: full\n  - id: c\n    runtime: demo\n    permissions: auto\n";
        let file: AgentsFile = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(file.agents[0].permissions, Permissions::Auto, "the default");
        let modes = |f: &AgentsFile| f.agents.iter().map(|a| a.permissions).collect::<Vec<_>>();
        let mut asked = 0;
        let mut here = file.clone();
        let resolved = here.resolve_permissions(Permissions::Auto, || {
            asked += 1;
            true
        });
        assert_eq!(asked, 1, "the machine is probed once");
        assert_eq!(resolved.len(), 2);
        assert_eq!(
            modes(&here),
            [
                Permissions::Sandbox,
                Permissions::Full,
                Permissions::Sandbox
            ]
        );
        let mut no_bwrap = file.clone();
        no_bwrap.resolve_permissions(Permissions::Auto, || false);
        assert_eq!(
            modes(&no_bwrap),
            [
                Permissions::Workspace,
                Permissions::Full,
                Permissions::Workspace
            ]
        );
        let mut pinned = file.clone();
        pinned.resolve_permissions(Permissions::Workspace, || panic!("not probed"));
        assert_eq!(
            modes(&pinned),
            [
                Permissions::Workspace,
                Permissions::Full,
                Permissions::Workspace
            ]
        );
    }

    #[test]
    fn agent_errors_name_the_line_of_the_offending_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.yaml");
        let text = "# team\nagents:\n  - id: a1\n    runtime: command\n    command: [\"x\"]\n  - id: a2\n    runtime: nope\n  - id: a1\n    runtime: command\n    command: [\"y\"]\n";
        std::fs::write(&path, text).unwrap();
        let e = AgentsFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 7"), "unknown runtime on line 7: {e}");
        std::fs::write(
            &path,
            text.replace("runtime: nope", "runtime: command\n    command: [\"z\"]"),
        )
        .unwrap();
        let e = AgentsFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 9") && e.contains("defined twice"),
            "duplicate id on line 9: {e}"
        );
        std::fs::write(&path, "agents:\n  - id: ok\n    runtime: command\n    command: [\"x\"]\n  - id: b\n    runtime: command\n").unwrap();
        let e = AgentsFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 5") && e.contains("agents.b.command"),
            "missing command: entry on line 5: {e}"
        );
    }
}
