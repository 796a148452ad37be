//! The configuration's shape: every section of `default.yaml` and
//! `project.yaml` with its defaults. Reading, layering and checking them is
//! [`super::load`]'s job; range checks are in `validate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

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
    /// Where events are pushed besides the dashboard.
    pub notifications: NotificationsConfig,
    /// What a `permissions: sandbox` run sees beyond its own folders.
    pub sandbox: SandboxConfig,
    /// Caps on what runs spend, enforced by the gateway on every call.
    pub budgets: super::budgets::BudgetsConfig,
    /// Where the blackboards live (read by `Home::store`).
    pub store: StoreConfig,
    /// Limits of every daemon on one PostgreSQL store together.
    pub cluster: ClusterConfig,
}

/// `cluster:` — what holds across every daemon on one PostgreSQL store
/// (see `store:`); on SQLite files there is one daemon and it is unused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Runs at once across every daemon (unset: only each host's
    /// `daemon.max_global_agents`). Each daemon counts its own setting:
    /// give every host the same value.
    pub max_agents: Option<u32>,
}

/// `store:` — where every project's blackboard lives: unset, a SQLite file
/// per project under `projects/`; `postgres://…` (or `{ url: postgres://… }`),
/// one PostgreSQL database with a schema per project, shared by every
/// daemon pointed at it. `MOZI_STORE__URL` overrides it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(from = "StoreSetting")]
pub struct StoreConfig {
    pub url: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSetting {
    Url(String),
    Table(StoreTable),
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct StoreTable {
    url: Option<String>,
}

impl From<StoreSetting> for StoreConfig {
    fn from(s: StoreSetting) -> StoreConfig {
        match s {
            StoreSetting::Url(url) => StoreConfig { url: Some(url) },
            StoreSetting::Table(t) => StoreConfig { url: t.url },
        }
    }
}

/// `sandbox:` — extra paths shown inside every sandboxed run
/// (`runtime::sandbox`); absolute paths, `~` for the user's home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Files and folders a run may read.
    pub read_only: Vec<PathBuf>,
    /// Folders a run may change.
    pub read_write: Vec<PathBuf>,
    /// The bubblewrap program (default: `/usr/bin/bwrap`, else `PATH`).
    pub bwrap: Option<PathBuf>,
    /// Hosts a run may reach through the daemon's proxy (`HTTPS_PROXY`
    /// inside the sandbox): `host`, `host:port`, `*.domain[:port]` or an IP
    /// literal (`10.0.0.5:443`, `[::1]:8080`). Without a port every port of
    /// the host is allowed. Everything else is refused and the refusal is
    /// written in the run's log (`config::allow_hosts`).
    pub allow_hosts: Vec<String>,
    /// What an agent without `permissions:` (or with `auto`) gets: `auto`
    /// (the default: `sandbox` where bubblewrap makes one, else
    /// `workspace`), `sandbox`, `workspace` or `full`.
    pub default_permissions: super::agents::Permissions,
}

/// `notifications:` — webhooks.
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
    /// Run slots beyond `max_global_agents` that only urgent tasks (and
    /// high ones with `reserve_for_high`) may take, so urgent work never
    /// waits for another run to end.
    pub reserved_urgent_slots: u32,
    /// Let high-priority tasks use the reserved slots too.
    pub reserve_for_high: bool,
    /// Admission by quota (see `daemon::quota`).
    pub admission: AdmissionConfig,
}

/// `daemon.admission:` — start runs only while the rate lane their agent
/// uses can feed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    pub enabled: bool,
    /// Calls per minute assumed for an agent with no history while its
    /// lane has seen no answer; after that one call per answer time of the
    /// lane, at most this.
    pub demand_prior: f64,
    /// A run is admitted while the lane's committed demand is under its
    /// capacity, or while it still fits within capacity x headroom.
    pub headroom: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            demand_prior: 8.0,
            headroom: 1.25,
        }
    }
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
            reserved_urgent_slots: 1,
            reserve_for_high: false,
            admission: AdmissionConfig::default(),
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

/// `backup:` — automatic online snapshots taken by the daemon.
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
    /// A review seat that no agent but the task's author fits (reported on
    /// the task once per round and listed in readiness), then: `wait` (the
    /// task waits for the team to change), `fail` (the task fails with that
    /// reason), `decide` (an operator decision is proposed: approved, the
    /// round concludes approved without the seat; rejected or expired, the
    /// task fails) or `role:NAME` (an agent of that role takes the seat).
    pub unstaffed_seat: String,
}

/// What happens to a review seat only the task's author fits
/// (`review.unstaffed_seat`, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnstaffedSeat {
    Wait,
    Fail,
    Decide,
    Role(String),
}

impl ReviewConfig {
    /// `review.unstaffed_seat` parsed; the error names the accepted forms.
    pub fn unstaffed_policy(&self) -> Result<UnstaffedSeat, String> {
        match self.unstaffed_seat.as_str() {
            "wait" => Ok(UnstaffedSeat::Wait),
            "fail" => Ok(UnstaffedSeat::Fail),
            "decide" => Ok(UnstaffedSeat::Decide),
            other => match other.strip_prefix("role:").map(str::trim) {
                Some(role) if !role.is_empty() => Ok(UnstaffedSeat::Role(role.to_string())),
                _ => Err(format!(
                    "must be wait, fail, decide or role:NAME (a role of config/agents.yaml), got {other:?}"
                )),
            },
        }
    }
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            default_max_rounds: 3,
            debate_max_rounds: 5,
            confidence_threshold: 0.7,
            unstaffed_seat: "wait".into(),
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
    /// Seconds a client has to send a whole request body, from its headers:
    /// past it 408.
    pub body_timeout: u64,
    /// The slowest a body may arrive (e.g. `1KB`, per second, averaged over
    /// 5 s windows): below it 408.
    pub body_min_rate: String,
    /// `/v1` calls one client (one key or token; clients without one
    /// together) may have in flight: past it 429.
    pub max_requests_per_client: u32,
    /// JSON items (array elements plus object members, at every depth) a
    /// request body may hold: past it 413 before anything parses it.
    pub max_body_items: u64,
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
            body_timeout: 60,
            body_min_rate: "1KB".into(),
            max_requests_per_client: 32,
            max_body_items: 100_000,
        }
    }
}

impl ServerConfig {
    /// `max_body_memory` in bytes (validated at load time).
    pub fn max_body_memory_bytes(&self) -> u64 {
        parse_size(&self.max_body_memory).expect("server.max_body_memory is validated at load")
    }

    /// `body_min_rate` in bytes per second (validated at load time).
    pub fn body_min_rate_bytes(&self) -> u64 {
        parse_size(&self.body_min_rate).expect("server.body_min_rate is validated at load")
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
    /// Recurring tasks (`schedules:`), each in the shape `POST
    /// /api/projects/{id}/schedules` accepts; the daemon checks them and
    /// syncs them into the project's store when it opens the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Value>,
}

/// The on-disk shape of `project.yaml`, used to validate it with line numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // section fields exist so serde checks them with line numbers
pub(super) struct ProjectFile {
    #[serde(default)]
    pub(super) max_global_agents: Option<u32>,
    #[serde(default)]
    pub(super) agents: Option<Vec<String>>,
    #[serde(default)]
    pub(super) context: Option<Mapping>,
    #[serde(default)]
    pub(super) workspace: Option<PathBuf>,
    #[serde(default)]
    pub(super) schedules: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) daemon: Option<ProjectDaemonOverrides>,
    #[serde(default)]
    pub(super) review: Option<ReviewConfig>,
    #[serde(default)]
    pub(super) experience: Option<ExperienceConfig>,
}

/// The daemon keys a project may override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields exist so serde rejects unknown keys with a line number
pub(super) struct ProjectDaemonOverrides {
    pub(super) task_timeout: Option<u64>,
    pub(super) zombie_threshold: Option<u32>,
    pub(super) max_per_agent: Option<u32>,
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
