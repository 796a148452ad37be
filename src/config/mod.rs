//! Layered, strictly validated configuration (SPEC §2).
//!
//! Layers, later wins: built-in defaults → `config/default.yaml` →
//! `projects/<id>/config/project.yaml` → `MOZI_<SECTION>__<KEY>` environment
//! variables → command-line flags.
//!
//! Every layer is checked on its own before it is merged, so an error can name
//! the file (or variable) it came from: YAML syntax errors and unknown keys carry
//! serde's line and column, out-of-range values name the key and the line we find
//! it on. Nothing is ever silently reset to a default.
//!
//! Merging is done on YAML values (a deep merge of mappings), then the merged
//! value is deserialized into [`Config`]; this is what makes a project file that
//! sets one review key inherit the rest from `default.yaml`.

pub mod agents;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

pub use validate::find_key_line;

/// Where a configuration layer came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Defaults,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Defaults => write!(f, "built-in defaults"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(v) => write!(f, "command-line flag {v}"),
        }
    }
}

/// A configuration error. The message always names the source, and the key and
/// line where they are known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {error}")]
    Read {
        origin: Source,
        error: std::io::Error,
    },
    /// YAML syntax error, unknown key or wrong type (serde names line/column).
    #[error("{origin}: {message}")]
    Invalid { origin: Source, message: String },
    /// A well-typed value outside its allowed range.
    #[error("{origin}{}: `{key}` {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    OutOfRange {
        origin: Source,
        key: String,
        line: Option<usize>,
        message: String,
    },
}

/// The whole configuration, after layering.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub inbox: InboxConfig,
    pub backup: BackupConfig,
    pub review: ReviewConfig,
    pub experience: ExperienceConfig,
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    /// The LLM gateway (see `docs/GATEWAY.md`).
    pub gateway: crate::gateway::GatewayConfig,
    /// Where events are pushed besides the dashboard (SPEC §8).
    pub notifications: NotificationsConfig,
}

/// `notifications:` — webhooks (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook: matching events are POSTed to `url` as the SSE JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Event levels delivered (default urgent and attention).
    #[serde(default = "WebhookConfig::default_levels")]
    pub levels: Vec<crate::blackboard::EventLevel>,
    /// Per attempt, 100..=60000 ms.
    #[serde(default = "WebhookConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per event before it is given up (1..=20).
    #[serde(default = "WebhookConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// Extra request headers (e.g. an authorization token).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl WebhookConfig {
    fn default_levels() -> Vec<crate::blackboard::EventLevel> {
        vec![
            crate::blackboard::EventLevel::Urgent,
            crate::blackboard::EventLevel::Attention,
        ]
    }
    fn default_timeout_ms() -> u64 {
        5000
    }
    fn default_max_attempts() -> u32 {
        5
    }
}

/// `daemon:` — the ticker and agent-run limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Seconds between ticks.
    pub tick_interval: u64,
    /// Seconds a single agent run may take (also the default claim lease).
    pub task_timeout: u64,
    /// Agents running at once, all projects together.
    pub max_global_agents: u32,
    /// Runs of one agent at once.
    pub max_per_agent: u32,
    /// Ticks with outstanding work but no state change before a zombie alert.
    pub zombie_threshold: u32,
    /// Seconds between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace: u64,
    /// Seconds to wait after the 1st, 2nd, 3rd … consecutive failure before
    /// trying again (the last value repeats): an agent held after an
    /// infrastructure failure, a task's next round after a failed run.
    pub retry_backoff: Vec<u64>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            tick_interval: 30,
            task_timeout: 600,
            max_global_agents: 5,
            max_per_agent: 1,
            zombie_threshold: 20,
            kill_grace: 10,
            retry_backoff: vec![10, 60, 300],
        }
    }
}

/// `inbox:` — the JSONL event inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Relative to the home unless absolute.
    pub path: PathBuf,
    /// Seconds between polls when file-system events are unavailable.
    pub watch_interval: f64,
    /// Compact the inbox once fully consumed and larger than this.
    pub max_size_bytes: u64,
    /// A longer line is skipped as one malformed line (its start is shown).
    pub max_line_bytes: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            path: PathBuf::from("inbox/daemon.jsonl"),
            watch_interval: 1.0,
            max_size_bytes: 1_048_576,
            max_line_bytes: 1_048_576,
        }
    }
}

/// `backup:` — automatic online snapshots taken by the daemon (SPEC §11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Minutes between snapshots of each blackboard; 0 turns them off.
    pub interval_minutes: u32,
    /// Snapshots kept per project (older ones are deleted).
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            interval_minutes: 60,
            keep: 24,
        }
    }
}

/// `review:` — review rounds and escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewConfig {
    pub default_max_rounds: u32,
    pub debate_max_rounds: u32,
    /// Below this a review escalates to the senior reviewer.
    pub confidence_threshold: f64,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            default_max_rounds: 3,
            debate_max_rounds: 5,
            confidence_threshold: 0.7,
        }
    }
}

/// `experience:` — lesson distillation and expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperienceConfig {
    pub distill_threshold: u32,
    pub expire_days: u32,
}

impl Default for ExperienceConfig {
    fn default() -> Self {
        ExperienceConfig {
            distill_threshold: 5,
            expire_days: 30,
        }
    }
}

/// `server:` — the HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port`; non-loopback requires `api_token`.
    pub bind: String,
    /// Bearer token for mutating and admin routes (empty = none).
    pub api_token: Option<String>,
    /// Host names (optionally `name:port`) the server answers besides the
    /// bind address and localhost/127.0.0.1/[::1]: any other `Host` header is
    /// refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Open connections at most; above it the server stops accepting until
    /// one closes. Also capped below the descriptor limit (see `http::serve`).
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers (also the idle time
    /// of a kept-alive connection) before it is closed.
    pub header_timeout: u64,
    /// Request bodies held in memory at once, all connections together
    /// (e.g. `128MB`): past it a request is answered 503.
    pub max_body_memory: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8083".into(),
            api_token: None,
            allowed_hosts: Vec::new(),
            max_connections: 1024,
            header_timeout: 10,
            max_body_memory: "64MB".into(),
        }
    }
}

impl ServerConfig {
    /// `max_body_memory` in bytes (validated at load time).
    pub fn max_body_memory_bytes(&self) -> u64 {
        parse_size(&self.max_body_memory).expect("server.max_body_memory is validated at load")
    }

    /// The parsed bind address (validated at load time).
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind
            .parse()
            .expect("server.bind is validated when the config is loaded")
    }
}

/// `logging:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: String,
    /// e.g. `10MB`, `512KB`.
    pub max_file_size: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            max_file_size: "10MB".into(),
        }
    }
}

/// Per-project settings (`projects/<id>/config/project.yaml`) that exist only at
/// project level. Section overrides (`daemon`, `review`, `experience`) are merged
/// into the global [`Config`] instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Project-level cap on concurrent agents (never above the global one).
    #[serde(default)]
    pub max_global_agents: Option<u32>,
    /// Agent ids allowed to work on this project (`None` = all).
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Free-form context rendered into briefs (paths, URLs, frameworks).
    #[serde(default)]
    pub context: Option<Mapping>,
    /// Where the project's tasks work (`crate::workspace`): absolute, or
    /// relative to the project folder. A git repository gives each task a
    /// worktree; any other folder a directory per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
}

/// The on-disk shape of `project.yaml`, used to validate it with line numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // section fields exist so serde checks them with line numbers
struct ProjectFile {
    #[serde(default)]
    max_global_agents: Option<u32>,
    #[serde(default)]
    agents: Option<Vec<String>>,
    #[serde(default)]
    context: Option<Mapping>,
    #[serde(default)]
    workspace: Option<PathBuf>,
    #[serde(default)]
    daemon: Option<ProjectDaemonOverrides>,
    #[serde(default)]
    review: Option<ReviewConfig>,
    #[serde(default)]
    experience: Option<ExperienceConfig>,
}

/// The daemon keys a project may override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields exist so serde rejects unknown keys with a line number
struct ProjectDaemonOverrides {
    task_timeout: Option<u64>,
    zombie_threshold: Option<u32>,
    max_per_agent: Option<u32>,
}

/// One parsed and individually validated layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: Source,
    pub value: Value,
}

impl Layer {
    /// Parses YAML text as a global-config layer, validating it on its own.
    pub fn from_yaml(source: Source, text: &str) -> Result<Layer, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            });
        }
        let typed: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
        typed
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                line: find_key_line(text, &key),
                origin: source.clone(),
                key,
                message,
            })?;
        let value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
        Ok(Layer { source, value })
    }

    /// Reads a file layer; a missing file is an empty layer.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let source = Source::File(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => Layer::from_yaml(source, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            }),
            Err(error) => Err(ConfigError::Read {
                origin: source,
                error,
            }),
        }
    }

    /// `MOZI_<SECTION>__<KEY>=value` variables (values parsed as YAML scalars).
    /// Variables without `__` (`MOZI_HOME`, `MOZI_TASK`, …) are not configuration.
    pub fn from_env_vars<I>(vars: I) -> Result<Vec<Layer>, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut layers = Vec::new();
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("MOZI_") && k.contains("__"))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let path: Vec<String> = name["MOZI_".len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            layers.push(Layer::from_override(
                Source::Env(name.clone()),
                &path,
                &raw,
            )?);
        }
        Ok(layers)
    }

    /// A single `section.key = value` override (env var or flag).
    pub fn from_override(source: Source, path: &[String], raw: &str) -> Result<Layer, ConfigError> {
        let scalar: Value = serde_yaml_ng::from_str(raw).unwrap_or(Value::String(raw.to_string()));
        let mut value = scalar;
        for key in path.iter().rev() {
            let mut m = Mapping::new();
            m.insert(Value::String(key.clone()), value);
            value = Value::Mapping(m);
        }
        let typed: Config =
            serde_yaml_ng::from_value(value.clone()).map_err(|e| ConfigError::Invalid {
                origin: source.clone(),
                message: format!("{} (key `{}`)", e, path.join(".")),
            })?;
        typed
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                origin: source.clone(),
                key,
                line: None,
                message,
            })?;
        Ok(Layer { source, value })
    }
}

/// Deep-merges `overlay` into `base`: mappings merge key by key, anything else
/// replaces.
pub fn merge_values(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Config {
    /// Builds a config from layers (defaults are implied underneath).
    pub fn from_layers(layers: &[Layer]) -> Result<Config, ConfigError> {
        let mut merged = serde_yaml_ng::to_value(Config::default()).expect("defaults serialize");
        for layer in layers {
            merge_values(&mut merged, &layer.value);
        }
        let last = layers
            .last()
            .map(|l| l.source.clone())
            .unwrap_or(Source::Defaults);
        let config: Config =
            serde_yaml_ng::from_value(merged).map_err(|e| ConfigError::Invalid {
                origin: last.clone(),
                message: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                origin: last,
                key,
                line: None,
                message,
            })?;
        Ok(config)
    }

    /// The global configuration of a home: defaults, `config/default.yaml`,
    /// `MOZI_*__*` environment variables, then `overrides` (flags).
    pub fn load_global(
        home: &crate::home::Home,
        overrides: &[Layer],
    ) -> Result<Config, ConfigError> {
        Config::from_layers(&global_layers(home, overrides)?)
    }

    /// The configuration as seen by one project: the global layers with the
    /// project's section overrides in between the file and the environment.
    pub fn load_for_project(
        home: &crate::home::Home,
        project: &crate::registry::ProjectId,
        overrides: &[Layer],
    ) -> Result<(Config, ProjectSettings), ConfigError> {
        let (project_layer, settings) = load_project_file(&home.project_config_file(project))?;
        let mut layers = vec![Layer::from_file(&home.default_config_file())?];
        layers.push(project_layer);
        layers.extend(Layer::from_env_vars(std::env::vars())?);
        layers.extend(overrides.iter().cloned());
        let config = Config::from_layers(&layers)?;
        if let Some(cap) = settings.max_global_agents {
            if cap > config.daemon.max_global_agents {
                return Err(ConfigError::OutOfRange {
                    origin: Source::File(home.project_config_file(project)),
                    key: "max_global_agents".into(),
                    line: None,
                    message: format!(
                        "({cap}) exceeds the global daemon.max_global_agents ({})",
                        config.daemon.max_global_agents
                    ),
                });
            }
        }
        Ok((config, settings))
    }
}

fn global_layers(home: &crate::home::Home, overrides: &[Layer]) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = vec![Layer::from_file(&home.default_config_file())?];
    layers.extend(Layer::from_env_vars(std::env::vars())?);
    layers.extend(overrides.iter().cloned());
    Ok(layers)
}

/// Parses `project.yaml`: validates it with line numbers, returns the section
/// overrides as a layer plus the project-only settings.
pub fn load_project_file(path: &Path) -> Result<(Layer, ProjectSettings), ConfigError> {
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
    if text.trim().is_empty() {
        return Ok((
            Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            },
            ProjectSettings::default(),
        ));
    }
    let file: ProjectFile = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
        origin: source.clone(),
        message: e.to_string(),
    })?;
    let out_of_range = |key: &str, message: String| ConfigError::OutOfRange {
        origin: source.clone(),
        key: key.to_string(),
        line: find_key_line(&text, key),
        message,
    };
    if let Some(cap) = file.max_global_agents {
        if cap == 0 {
            return Err(out_of_range(
                "max_global_agents",
                "must be at least 1".into(),
            ));
        }
    }
    if let Some(agents) = &file.agents {
        for a in agents {
            if !crate::blackboard::ids::is_valid_agent_id(a) {
                return Err(out_of_range(
                    "agents",
                    format!("has an invalid agent id {a:?}"),
                ));
            }
        }
    }
    if file
        .workspace
        .as_ref()
        .is_some_and(|w| w.as_os_str().is_empty())
    {
        return Err(out_of_range(
            "workspace",
            "must name a directory (absolute, or relative to the project folder)".into(),
        ));
    }
    let mut all: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
        origin: source.clone(),
        message: e.to_string(),
    })?;
    let mut sections = Mapping::new();
    if let Value::Mapping(m) = &mut all {
        for key in ["daemon", "review", "experience"] {
            if let Some(v) = m.remove(key) {
                sections.insert(Value::String(key.into()), v);
            }
        }
    }
    // Validate the section overrides as a global layer (range checks), but
    // report the project file's own line numbers.
    let sections_value = Value::Mapping(sections);
    let typed: Config =
        serde_yaml_ng::from_value(sections_value.clone()).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
    if let Err((key, message)) = typed.validate() {
        return Err(ConfigError::OutOfRange {
            line: find_key_line(&text, &key),
            origin: source,
            key,
            message,
        });
    }
    let settings = ProjectSettings {
        max_global_agents: file.max_global_agents,
        agents: file.agents,
        context: file.context,
        workspace: file.workspace,
    };
    Ok((
        Layer {
            source,
            value: sections_value,
        },
        settings,
    ))
}

/// Parses a size such as `10MB`, `512KB`, `1GB` or a plain byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" | "KIB" => 1024,
        "MB" | "M" | "MIB" => 1024 * 1024,
        "GB" | "G" | "GIB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests;
