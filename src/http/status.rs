//! The daemon status document (`GET /api/daemon/status`), typed so
//! the OpenAPI document describes it and the dashboard's types are generated
//! from it.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::daemon::projects::ProjectProblem;
use crate::daemon::InboxStats;
use crate::daemon::{Daemon, RunInfo};
use crate::gateway::status::GatewayStatus;
use crate::gateway::BreakerState;
use crate::runtime::health::Problem;

/// Everything `GET /api/daemon/status` shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct DaemonStatus {
    /// The ticker runs (not paused by `POST /api/daemon/stop`).
    pub ticker_running: bool,
    /// When the last tick ended (RFC 3339, UTC), `null` before the first.
    pub last_tick: Option<String>,
    /// How long the last tick took, milliseconds (0 before the first).
    pub last_tick_ms: f64,
    /// Ticks since the daemon started.
    pub ticks: u64,
    /// `daemon.tick_interval`, seconds.
    pub tick_interval_seconds: u64,
    /// Per project, by project id.
    pub projects: BTreeMap<String, ProjectStatus>,
    /// Bytes of the inbox not yet applied (also `inbox.pending_bytes`).
    pub inbox_pending: u64,
    /// The inbox reader's counters.
    pub inbox: InboxStats,
    /// Runs in flight.
    pub active_sessions: usize,
    /// The embedded gateway's status (as `GET /api/gateway/status`), `null`
    /// when the gateway is not mounted.
    pub gateway: Option<GatewayStatus>,
    /// Runs spawned since the daemon started.
    pub runs_started: u64,
    /// Runs that cannot start for the machine's reasons (README, Runtimes).
    pub degraded: Vec<Problem>,
    /// Review protocols the team cannot staff (their tasks are held).
    pub unusable_review_protocols: Vec<UnusableProtocol>,
    /// The concurrency limits in force.
    pub limits: Limits,
    /// The daemons sharing this daemon's PostgreSQL store; `null` on files
    /// (one daemon per home).
    pub cluster: Option<ClusterStatus>,
}

/// The daemons of one PostgreSQL store, as of this daemon's last beat.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterStatus {
    /// This daemon's id (`host:pid:start`).
    pub this_daemon: String,
    /// Every daemon seen in the last day, alive ones first.
    pub daemons: Vec<ClusterDaemon>,
}

/// One daemon of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterDaemon {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Its `server.bind`.
    pub bind: String,
    /// The agents of its `agents.yaml`.
    pub agents: Vec<String>,
    /// Runs in flight at its last beat.
    pub runs: i64,
    /// Its last beat (RFC 3339, UTC).
    pub last_seen: String,
    /// Seen in the last 10 s and not stopped.
    pub alive: bool,
    /// Holds the leader's lease.
    pub leader: bool,
}

/// One project in the status: its counts when its blackboard is open, the
/// reason otherwise.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectStatus {
    /// Runs in flight on this project.
    pub active_agents: usize,
    /// Task counts by status (absent when the blackboard is unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tasks_summary: Option<BTreeMap<String, i64>>,
    /// Size of the blackboard file (absent when it is unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub db_size_bytes: Option<u64>,
    /// Why the project is unavailable (absent when it is open).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// `GET /health/ready`: whether the daemon can do its work, and what stops
/// it. Served with 200 when `ready`, else 503.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// No broken project, the ticker alive and no run blocked by the
    /// machine.
    pub ready: bool,
    /// The last tick ended less than three intervals (plus 10 s) ago, or
    /// the ticker is paused on purpose.
    pub ticker_alive: bool,
    /// Projects whose blackboard cannot be used, and why.
    pub project_problems: Vec<ProjectProblem>,
    /// Runs that cannot start for the machine's reasons (a CLI not
    /// installed, a read-only home or database, no file descriptors), and
    /// providers the gateway cannot use as configured (`runtime: "provider
    /// NAME"`, empty `project` and `agent`: an open breaker, parked keys, a
    /// rate retreated below half); the daemon is not ready until they pass.
    pub degraded: Vec<Problem>,
    /// Informational: review protocols the team cannot staff hold only
    /// their own tasks.
    pub unusable_review_protocols: Vec<UnusableProtocol>,
    /// Informational: what the operator should fix though it holds no other
    /// work back — a broken skill the briefs skip (`kind: skill`), a task
    /// in review whose seat only its author fits (`kind: review`).
    pub warnings: Vec<crate::runtime::health::Warning>,
    /// Each upstream's breaker and key (an open breaker also shows in
    /// `degraded`); `null` when the gateway is not mounted.
    pub gateway: Option<GatewayReadiness>,
}

/// The gateway's part of the readiness document.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayReadiness {
    /// By provider name.
    pub providers: BTreeMap<String, ProviderReadiness>,
}

/// One upstream in the readiness document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderReadiness {
    pub breaker: BreakerState,
    /// Its API key's environment variable is set.
    pub key_set: bool,
}

impl Readiness {
    /// The readiness of `d` now.
    pub fn of(d: &Daemon) -> Readiness {
        let project_problems = d.projects().problems();
        let stats = d.tick_stats();
        let interval_ms = d.config().daemon.tick_interval as i64 * 1000;
        let ticker_alive = d.ticker_paused()
            || stats.last_tick_at_ms.is_some_and(|t| {
                chrono::Utc::now().timestamp_millis() - t < 3 * interval_ms + 10_000
            });
        let degraded = d.degraded();
        let gateway = d.gateway().map(|g| GatewayReadiness {
            providers: g
                .status()
                .providers
                .into_iter()
                .map(|p| {
                    let key_set = p.api_key.is_some();
                    (
                        p.name,
                        ProviderReadiness {
                            breaker: p.breaker.state,
                            key_set,
                        },
                    )
                })
                .collect(),
        });
        Readiness {
            ready: project_problems.is_empty() && ticker_alive && degraded.is_empty(),
            ticker_alive,
            project_problems,
            degraded,
            unusable_review_protocols: unusable_protocols(d),
            warnings: d.runtime_health().warnings(),
            gateway,
        }
    }
}

fn unusable_protocols(d: &Daemon) -> Vec<UnusableProtocol> {
    d.protocols()
        .unusable()
        .into_iter()
        .map(|(protocol, reason)| UnusableProtocol { protocol, reason })
        .collect()
}

/// A review protocol the team cannot staff, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnusableProtocol {
    pub protocol: String,
    pub reason: String,
}

/// `daemon.max_global_agents` and `daemon.max_per_agent`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub max_global_agents: u32,
    pub max_per_agent: u32,
}

/// `GET /api/daemon/sessions`: the runs in flight and each project's latest
/// sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DaemonSessions {
    /// Runs in flight, oldest first.
    pub active: Vec<ActiveRun>,
    /// Up to 20 recent sessions per open project.
    pub recent: Vec<ProjectSession>,
}

/// A run in flight as the operator reads it: its task's title and what it
/// is doing (working, or waiting on a decision it proposed).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveRun {
    #[serde(flatten)]
    pub run: RunInfo,
    /// The title of its task (empty when the task cannot be read).
    pub task_title: String,
    /// `working`, or `waiting` on a decision.
    pub state: String,
    /// `working`, or `waiting on decision D3` (every proposed decision of
    /// its task, named).
    pub state_text: String,
    /// The run's latest "doing now" line.
    pub activity: Option<String>,
}

/// A session with the project it belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSession {
    pub project: String,
    pub session: crate::wire::Session,
}

impl DaemonStatus {
    /// The status of `d` now.
    pub async fn of(d: &Daemon) -> DaemonStatus {
        let runs = d.runs();
        let mut projects = BTreeMap::new();
        for slot in d.projects().snapshot() {
            let active_agents = runs
                .iter()
                .filter(|r| r.project == slot.id.as_str())
                .count();
            let mut entry = ProjectStatus {
                active_agents,
                tasks_summary: None,
                db_size_bytes: None,
                error: None,
            };
            match &slot.bb {
                Some(bb) => match bb.status_counts().await {
                    Ok(counts) => {
                        entry.tasks_summary = Some(counts);
                        // A file's size; a PostgreSQL schema has none to show.
                        entry.db_size_bytes = (bb.backend() == crate::blackboard::Backend::Sqlite)
                            .then(|| bb.size_bytes());
                    }
                    Err(e) => entry.error = Some(e.to_string()),
                },
                // A slot without a blackboard always says why (`projects.rs`).
                None => entry.error = slot.error.clone(),
            }
            projects.insert(slot.id.to_string(), entry);
        }
        let stats = d.tick_stats();
        let inbox = d.inbox_stats();
        let config = d.config();
        DaemonStatus {
            ticker_running: !d.ticker_paused(),
            last_tick: stats.last_tick,
            last_tick_ms: stats.last_tick_ms,
            ticks: stats.ticks,
            tick_interval_seconds: config.daemon.tick_interval,
            projects,
            inbox_pending: inbox.pending_bytes,
            inbox,
            active_sessions: runs.len(),
            gateway: d.gateway().map(|g| g.status()),
            runs_started: d.runs_spawned(),
            degraded: d.degraded(),
            unusable_review_protocols: unusable_protocols(d),
            limits: Limits {
                max_global_agents: config.daemon.max_global_agents,
                max_per_agent: config.daemon.max_per_agent,
            },
            cluster: d.membership().map(|m| ClusterStatus {
                this_daemon: m.cluster.id().to_string(),
                daemons: m
                    .daemons()
                    .into_iter()
                    .map(|x| ClusterDaemon {
                        id: x.id,
                        host: x.host,
                        pid: x.pid,
                        bind: x.bind,
                        agents: x.agents,
                        runs: x.runs,
                        last_seen: crate::blackboard::rfc3339(x.last_seen),
                        alive: x.alive,
                        leader: x.leader,
                    })
                    .collect(),
            }),
        }
    }
}
