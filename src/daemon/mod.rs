//! The daemon: one tokio process that ticks, consumes the inbox,
//! starts agent runs and supervises them.
//!
//! [`Daemon`] is the single explicit context every part receives — no globals —
//! so tests can run two daemons in one process. Its parts:
//!
//! * [`projects`] — the open blackboards; one broken project never stalls the rest.
//! * [`ticker`] — the tick loop (never overlapping; woken by the inbox and CLI
//!   writes; manual ticks are requests to it: [`Daemon::tick_now`]).
//! * [`runs`] — spawning agent processes in their own process groups and
//!   supervising them (timeouts, exit judgement, kill of the whole group).
//! * [`recovery`] — what a start finds after a crash.
//! * [`inbox_consumer`] — the JSONL inbox consumer; it also listens on the wake
//!   socket ([`crate::inbox::wake`]).
//! * [`snapshots`] — automatic online snapshots with retention.
//! * [`demo_project`] — the bundled demo project.
//!
//! This file holds the context — its state and accessors — and imports only
//! leaves whose state it holds ([`in_flight`], [`projects`], [`event_hub`],
//! [`quota`], [`waits`], [`provider_health`], [`error`]; the one exception is
//! the gateway hooks' `Budgets`, which the API reads). A part that takes a
//! [`Daemon`] sits above this file, and [`control`] (start, shutdown,
//! pause) above them all.
//!
//! Shutdown is designed in: a `watch` channel tells every task to stop; runs get
//! `kill_grace` seconds after SIGTERM, then SIGKILL; databases close last.

pub mod admission;
pub mod board_calls;
pub mod budget_book;
pub mod cluster;
pub mod control;
pub mod demo_project;
pub mod error;
pub mod event_hub;
pub mod event_pump;
pub mod gateway_history;
pub mod gateway_hooks;
pub mod heartbeat;
pub mod home_lock;
pub mod in_flight;
pub mod inbox_consumer;
pub mod process;
pub mod project_open;
pub mod projects;
pub mod provider_health;
pub mod provider_watch;
pub mod quota;
pub mod recovery;
pub mod runs;
pub mod sandbox_socket;
pub mod schedules;
pub mod snapshots;
pub mod tick_error;
pub mod ticker;
pub mod waits;
pub mod webhooks;
pub mod worktrees;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::config::agents::AgentsFile;
use crate::config::{Config, Layer};
use crate::home::Home;

use crate::locks::Recover;
pub use error::DaemonError;
pub use in_flight::{RunInfo, RunKey};

/// Ticker statistics shown by `/api/daemon/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickStats {
    pub ticks: u64,
    pub last_tick: Option<String>,
    pub last_tick_ms: f64,
    pub last_tick_at_ms: Option<i64>,
}

/// What the status endpoint shows of the inbox.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct InboxStats {
    pub applied: u64,
    pub malformed: u64,
    pub compactions: u64,
    pub pending_bytes: u64,
    pub last_error: Option<String>,
}

/// Awaited at the start of every tick: [`Daemon::set_tick_hook`].
pub type TickHook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// A manual tick asked of the ticker loop ([`Daemon::tick_now`]): answered
/// once a tick that began after it has ended.
pub(crate) type TickRequest = oneshot::Sender<()>;

/// A manual tick could not be run: the ticker loop has stopped (shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the ticker is not running (the daemon is shutting down)")]
pub struct TickerStopped;

/// Shared daemon state. Clone is cheap.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    home: Home,
    config: Config,
    overrides: Vec<Layer>,
    agents: AgentsFile,
    /// `config/review_protocols/*.yaml`, checked at start.
    protocols: crate::review::Protocols,
    /// Templates, components and guardrails of briefs, checked at start.
    briefs: crate::brief::BriefEngine,
    projects: projects::ProjectSet,
    runs: Mutex<HashMap<String, RunInfo>>,
    /// Per-run API keys (`mozi-<token>`) → the run, for the gateway.
    run_keys: Mutex<HashMap<String, RunKey>>,
    gateway: std::sync::OnceLock<crate::gateway::Gateway>,
    /// A run's `bb` command lines (`POST /api/runs/bb`), set by `serve`.
    board_calls: std::sync::OnceLock<board_calls::BoardCalls>,
    /// This daemon's place among the daemons of a PostgreSQL store
    /// (`cluster`), set at start; unset on files.
    membership: std::sync::OnceLock<cluster::Membership>,
    wake: Notify,
    /// Manual ticks, answered by the ticker loop (`ticker::run`), so a
    /// manual tick never overlaps another; the loop takes the receiver.
    tick_requests: mpsc::UnboundedSender<TickRequest>,
    tick_receiver: Mutex<Option<mpsc::UnboundedReceiver<TickRequest>>>,
    /// Awaited at the start of every tick (tests make a tick slow with it).
    tick_hook: std::sync::OnceLock<TickHook>,
    /// The event pump's fan-out (SSE clients, webhooks).
    events: event_hub::EventHub,
    /// Serializes the decisions that share the global limits (project ticks
    /// run concurrently; starting runs must not race past the caps).
    schedule: Arc<tokio::sync::Mutex<()>>,
    ticker_paused: AtomicBool,
    stats: Mutex<TickStats>,
    inbox_stats: Mutex<InboxStats>,
    shutdown_tx: watch::Sender<bool>,
    exe: PathBuf,
    spawned: AtomicU64,
    /// Infrastructure failures of runs and their backoff (`runtime::health`).
    runtime_health: crate::runtime::health::RuntimeHealth,
    /// Per-repository worktree locks and the worktrees that exist.
    workspaces: crate::workspace::Workspaces,
    quota: quota::QuotaBook,
    /// Why the last tick of each project left its tasks waiting.
    waits: waits::WaitBook,
    provider_health: provider_health::ProviderHealth,
    /// Per project, when its next schedule slot is due (UTC ms): the
    /// ticker sleeps no longer than that.
    schedule_due: Mutex<HashMap<String, i64>>,
    /// When a hold ends (a task's retry backoff, an agent held back after
    /// an infrastructure failure; UTC ms): the ticker wakes then, so a
    /// backoff lasts what it says and not until the next tick.
    wake_deadlines: Mutex<std::collections::BTreeSet<i64>>,
    /// Per running session: its agent's latest "doing now" line.
    activities: Mutex<HashMap<String, String>>,
    /// `bwrap` and whether it makes a sandbox here, probed at the first
    /// sandboxed run (`runtime::sandbox::probe`).
    sandbox: std::sync::OnceLock<Result<PathBuf, String>>,
    /// Budgets set at run time, as read at start (`<home>/budgets.json`).
    budget_overrides: Vec<crate::config::budgets::BudgetOverride>,
    /// The budgets behind the gateway's hooks, for the API.
    budgets: Mutex<Option<Arc<gateway_hooks::budgets::Budgets>>>,
    /// The gateway's stored history (`gateway/history.db`), opened on
    /// first use.
    gateway_history: tokio::sync::OnceCell<crate::blackboard::GatewayHistory>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("home", &self.inner.home)
            .finish()
    }
}

/// Refuses an agent whose `pass_env` names a provider key of the gateway or
/// the API token: the run environment never carries them.
fn check_pass_env(config: &Config, agents: &AgentsFile) -> Result<(), DaemonError> {
    let mut secret: Vec<String> = config
        .gateway
        .providers
        .iter()
        .flat_map(|p| p.key_envs())
        .collect();
    secret.push("NVIDIA_API_KEY".to_string());
    for a in &agents.agents {
        if let Some(name) = a.pass_env.iter().find(|n| secret.contains(n)) {
            return Err(DaemonError::Refused(format!(
                "config/agents.yaml: agents.{}.pass_env names {name}, a provider key of the gateway; agents reach providers only through the gateway",
                a.id
            )));
        }
    }
    Ok(())
}

impl Daemon {
    /// Loads configuration and agents; opens nothing yet.
    pub fn new(home: Home, overrides: Vec<Layer>) -> Result<Daemon, DaemonError> {
        let config = Config::load_global(&home, &overrides)?;
        let mut agents = AgentsFile::load(&home.agents_file())?;
        check_pass_env(&config, &agents)?;
        // `permissions: auto` (the default) becomes `sandbox` where
        // bubblewrap makes one, else `workspace`; probed once, here.
        let sandbox = std::sync::OnceLock::new();
        let socket = crate::runtime::sandbox::socket_path_fits(&home.sandbox_socket_file());
        let resolved = agents.resolve_permissions(config.sandbox.default_permissions, || {
            socket.is_ok()
                && sandbox
                    .get_or_init(|| crate::runtime::sandbox::probe(config.sandbox.bwrap.as_deref()))
                    .is_ok()
        });
        let why_not = match (&socket, sandbox.get()) {
            (Err(why), _) | (Ok(()), Some(Err(why))) => Some(why),
            _ => None,
        };
        let unsandboxed = resolved
            .iter()
            .filter(|(_, p)| *p != crate::config::agents::Permissions::Sandbox)
            .count();
        if let (Some(why), true) = (why_not, unsandboxed > 0) {
            tracing::warn!(
                agents = unsandboxed,
                "agents without `permissions:` run with `workspace`, not in a sandbox: {why}"
            );
        }
        let protocols =
            crate::review::Protocols::load(&home.review_protocols_dir(), &config.review, &agents)?;
        let briefs = crate::brief::BriefEngine::load(&home)?;
        let budget_overrides =
            crate::config::budgets::load_overrides(&home.budget_overrides_file())
                .map_err(DaemonError::Refused)?;
        // A malformed skill folder is refused now rather than at the first run.
        crate::skills::list_skills(&home, None)?;
        let (shutdown_tx, _) = watch::channel(false);
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("moziplus"));
        let (tick_requests, tick_receiver) = mpsc::unbounded_channel();
        Ok(Daemon {
            inner: Arc::new(Inner {
                projects: projects::ProjectSet::default(),
                home,
                config,
                overrides,
                agents,
                protocols,
                briefs,
                runs: Mutex::new(HashMap::new()),
                run_keys: Mutex::new(HashMap::new()),
                gateway: std::sync::OnceLock::new(),
                board_calls: std::sync::OnceLock::new(),
                membership: std::sync::OnceLock::new(),
                wake: Notify::new(),
                tick_requests,
                tick_receiver: Mutex::new(Some(tick_receiver)),
                tick_hook: std::sync::OnceLock::new(),
                events: event_hub::EventHub::default(),
                schedule: Arc::new(tokio::sync::Mutex::new(())),
                ticker_paused: AtomicBool::new(false),
                stats: Mutex::new(TickStats::default()),
                inbox_stats: Mutex::new(InboxStats::default()),
                shutdown_tx,
                exe,
                spawned: AtomicU64::new(0),
                runtime_health: Default::default(),
                workspaces: Default::default(),
                quota: Default::default(),
                waits: Default::default(),
                provider_health: Default::default(),
                schedule_due: Mutex::new(HashMap::new()),
                sandbox,
                budget_overrides,
                budgets: Mutex::new(None),
                gateway_history: tokio::sync::OnceCell::new(),
                wake_deadlines: Mutex::new(Default::default()),
                activities: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Budgets set at run time, as read at start.
    pub fn budget_overrides_at_start(&self) -> Vec<crate::config::budgets::BudgetOverride> {
        self.inner.budget_overrides.clone()
    }

    /// The budgets the gateway enforces (set by `DaemonHooks`).
    pub fn budgets(&self) -> Option<Arc<gateway_hooks::budgets::Budgets>> {
        self.inner.budgets.locked().clone()
    }

    pub fn set_budgets(&self, budgets: Arc<gateway_hooks::budgets::Budgets>) {
        *self.inner.budgets.locked() = Some(budgets);
    }

    pub fn home(&self) -> &Home {
        &self.inner.home
    }
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn overrides(&self) -> &[Layer] {
        &self.inner.overrides
    }
    pub fn agents(&self) -> &AgentsFile {
        &self.inner.agents
    }
    pub fn protocols(&self) -> &crate::review::Protocols {
        &self.inner.protocols
    }
    pub fn briefs(&self) -> &crate::brief::BriefEngine {
        &self.inner.briefs
    }
    pub fn projects(&self) -> &projects::ProjectSet {
        &self.inner.projects
    }
    /// The `moziplus` binary agents should call.
    pub fn exe(&self) -> &std::path::Path {
        &self.inner.exe
    }
    /// The `bwrap` of sandboxed runs, or why there is none (probed once).
    pub fn sandbox(&self) -> Result<&std::path::Path, &str> {
        match self.inner.sandbox.get_or_init(|| {
            crate::runtime::sandbox::probe(self.inner.config.sandbox.bwrap.as_deref())
        }) {
            Ok(p) => Ok(p.as_path()),
            Err(e) => Err(e.as_str()),
        }
    }

    /// Infrastructure problems of runs (degraded projects) and their backoff.
    pub fn runtime_health(&self) -> &crate::runtime::health::RuntimeHealth {
        &self.inner.runtime_health
    }

    /// Records when `project`'s next schedule slot is due (`None`: none).
    pub fn set_schedule_due(&self, project: &str, due: Option<i64>) {
        let mut map = self.inner.schedule_due.locked();
        match due {
            Some(at) => map.insert(project.to_string(), at),
            None => map.remove(project),
        };
    }

    /// The earliest next schedule slot over every project.
    pub fn next_schedule_due(&self) -> Option<i64> {
        self.inner.schedule_due.locked().values().min().copied()
    }

    /// Sets a running session's "doing now" line (empty: forget it, the
    /// run ended).
    pub(crate) fn set_activity(&self, session: &str, line: String) {
        let mut map = self.inner.activities.locked();
        if line.is_empty() {
            map.remove(session);
        } else {
            map.insert(session.to_string(), line);
        }
    }

    /// A running session's latest "doing now" line.
    pub fn activity(&self, session: &str) -> Option<String> {
        self.inner.activities.locked().get(session).cloned()
    }

    /// Asks for a tick at `at_ms` (UTC ms): a hold ends then.
    pub fn wake_at(&self, at_ms: i64) {
        let mut set = self.inner.wake_deadlines.locked();
        // Bounded: past deadlines go at every tick; this many future ones
        // means the tick interval serves them anyway.
        if set.len() < 10_000 {
            set.insert(at_ms);
        }
    }

    /// The earliest hold ending after `since_ms` (the start of the tick
    /// that just ran); those before it are forgotten, that tick saw them.
    pub fn next_wake_after(&self, since_ms: i64) -> Option<i64> {
        let mut set = self.inner.wake_deadlines.locked();
        let later = set.split_off(&(since_ms + 1));
        *set = later;
        set.first().copied()
    }

    pub fn workspaces(&self) -> &crate::workspace::Workspaces {
        &self.inner.workspaces
    }

    /// Why each project's last tick left its ready tasks waiting.
    pub fn waits(&self) -> &waits::WaitBook {
        &self.inner.waits
    }

    /// Admission by quota: call counts, demand estimates, held tasks.
    pub fn quota(&self) -> &quota::QuotaBook {
        &self.inner.quota
    }

    /// The current infrastructure problems (readiness, status, dashboard):
    /// kept while retried, forgotten a longest backoff after the last retry
    /// time passed without a new attempt.
    pub fn degraded(&self) -> Vec<crate::runtime::health::Problem> {
        let linger = self
            .config()
            .daemon
            .retry_backoff
            .iter()
            .max()
            .copied()
            .unwrap_or(0) as i64
            * 1000
            + 10_000;
        let mut problems = self
            .runtime_health()
            .problems(chrono::Utc::now().timestamp_millis(), linger);
        // A provider's problem holds back every run that calls it.
        problems.extend(self.provider_health().problems().into_iter().map(|p| {
            crate::runtime::health::Problem {
                project: String::new(),
                agent: String::new(),
                runtime: format!("provider {}", p.provider),
                reason: p.reason,
                failures: 0,
                since_ms: p.since_ms,
                retry_at_ms: p.since_ms,
            }
        }));
        // The store of a cluster: a beat that could not be written means
        // the daemons cannot see each other or claim work.
        if let Some(reason) = self.membership().and_then(|m| m.store_problem()) {
            problems.push(crate::runtime::health::Problem {
                project: String::new(),
                agent: String::new(),
                runtime: "store".into(),
                reason,
                failures: 0,
                since_ms: chrono::Utc::now().timestamp_millis(),
                retry_at_ms: chrono::Utc::now().timestamp_millis(),
            });
        }
        problems
    }

    /// The gateway's providers as the operator should see them (an open
    /// breaker, a parked key, a deep retreat).
    pub fn provider_health(&self) -> &provider_health::ProviderHealth {
        &self.inner.provider_health
    }

    /// The embedded gateway, once mounted.
    pub fn gateway(&self) -> Option<&crate::gateway::Gateway> {
        self.inner.gateway.get()
    }
    /// Mounts the gateway (once).
    /// The gateway's stored history, opened (created) on first use; `None`
    /// (logged) when the file cannot be opened — the next call tries again.
    pub async fn gateway_history(&self) -> Option<crate::blackboard::GatewayHistory> {
        let path = self.home().gateway_history_file();
        let opened = self
            .inner
            .gateway_history
            .get_or_try_init(|| crate::blackboard::GatewayHistory::open(&path))
            .await;
        match opened {
            Ok(h) => Some(h.clone()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the gateway history");
                None
            }
        }
    }
    pub fn set_gateway(&self, gw: crate::gateway::Gateway) {
        let _ = self.inner.gateway.set(gw);
    }
    /// Hands over what runs a run's `bb` command lines (`serve` does, with
    /// the CLI's parser and verbs; see [`board_calls`]).
    pub fn set_board_calls(&self, calls: board_calls::BoardCalls) {
        let _ = self.inner.board_calls.set(calls);
    }
    /// What runs a run's `bb` command lines, once `serve` has set it.
    pub fn board_calls(&self) -> Option<&board_calls::BoardCalls> {
        self.inner.board_calls.get()
    }
    // The run keys are read on every gateway call: a panic elsewhere while
    // the lock was held (a map of whole entries; no half-written state) must
    // not take the gateway down, so a poisoned lock is recovered.
    /// Registers a run's gateway key (`start_run` does; tests and embedders too).
    pub fn add_run_key(&self, key: String, run: RunKey) {
        self.inner.run_keys.locked().insert(key, run);
    }
    pub(crate) fn remove_run_keys(&self, session_id: &str) {
        self.inner
            .run_keys
            .locked()
            .retain(|_, r| r.session_id != session_id);
    }
    pub fn run_key(&self, key: &str) -> Option<RunKey> {
        self.inner.run_keys.locked().get(key).cloned()
    }

    /// Asks for a tick as soon as possible (coalesced).
    /// This daemon's membership of its store's cluster (PostgreSQL only).
    pub fn membership(&self) -> Option<&cluster::Membership> {
        self.inner.membership.get()
    }

    /// Whether this daemon does the cluster's singleton duties now.
    pub fn leadership(&self) -> cluster::Leadership {
        match self.membership() {
            None => cluster::Leadership::Alone,
            Some(m) => m.leadership(),
        }
    }

    /// Where the blackboards live, from the configuration loaded at start
    /// (`store:` or `MOZI_STORE__URL`): no file is read again.
    pub fn store_location(
        &self,
    ) -> Result<crate::registry::StoreLocation, crate::blackboard::BbError> {
        crate::registry::store_at(self.config().store.url.clone())
    }

    /// This daemon's cluster id (`host:pid:start`), on PostgreSQL.
    pub fn cluster_id(&self) -> Option<String> {
        self.membership().map(|m| m.cluster.id().to_string())
    }

    pub fn wake(&self) {
        self.inner.wake.notify_one();
        self.inner.events.wake();
    }
    /// The event fan-out (`GET /api/events`, webhooks).
    pub fn events(&self) -> &event_hub::EventHub {
        &self.inner.events
    }
    pub(crate) fn wake_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.wake.notified()
    }

    /// Held while deciding and starting runs (see `Inner::schedule`); owned,
    /// so a task that outlives its caller can hold it (`ticker::start_ready`).
    pub(crate) async fn schedule_lock_owned(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.schedule.clone().lock_owned().await
    }

    /// Ticks now, through the ticker loop: returns once a tick that began
    /// after the call has ended, so its effects are visible and it never
    /// overlapped another tick. Requests made during one tick share the
    /// next. Works while the ticker is paused; waits for the loop when the
    /// daemon has not started it yet ([`Daemon::start`]).
    pub async fn tick_now(&self) -> Result<(), TickerStopped> {
        let (reply, done) = oneshot::channel();
        self.inner
            .tick_requests
            .send(reply)
            .map_err(|_| TickerStopped)?;
        done.await.map_err(|_| TickerStopped)
    }

    /// Sets the hook awaited at the start of every tick (once per daemon).
    /// For tests: a slow hook makes a slow tick without a slow project.
    #[doc(hidden)]
    pub fn set_tick_hook(&self, hook: TickHook) {
        let _ = self.inner.tick_hook.set(hook);
    }
    pub(crate) fn tick_hook(&self) -> Option<&TickHook> {
        self.inner.tick_hook.get()
    }

    pub fn ticker_paused(&self) -> bool {
        self.inner.ticker_paused.load(Ordering::SeqCst)
    }

    pub fn tick_stats(&self) -> TickStats {
        self.inner.stats.locked().clone()
    }
    pub(crate) fn record_tick(&self, ms: f64) {
        let mut s = self.inner.stats.locked();
        s.ticks += 1;
        s.last_tick_ms = ms;
        let now = chrono::Utc::now();
        s.last_tick = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        s.last_tick_at_ms = Some(now.timestamp_millis());
    }

    pub fn inbox_stats(&self) -> InboxStats {
        self.inner.inbox_stats.locked().clone()
    }
    pub(crate) fn update_inbox_stats(&self, f: impl FnOnce(&mut InboxStats)) {
        f(&mut self.inner.inbox_stats.locked());
    }

    /// Snapshot of the runs in flight.
    pub fn runs(&self) -> Vec<RunInfo> {
        let mut v: Vec<RunInfo> = self.inner.runs.locked().values().cloned().collect();
        v.sort_by_key(|r| r.started_at_ms);
        v
    }
    pub(crate) fn runs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunInfo>> {
        self.inner.runs.locked()
    }
    pub fn runs_spawned(&self) -> u64 {
        self.inner.spawned.load(Ordering::Relaxed)
    }
    pub(crate) fn count_spawn(&self) {
        self.inner.spawned.fetch_add(1, Ordering::Relaxed);
    }

    /// A receiver that turns `true` when shutdown begins.
    /// A receiver whose `changed()` fires at shutdown, also when the
    /// shutdown was sent before it was made: a part spawned just before a
    /// SIGTERM, that subscribes after it, would otherwise wait for a change
    /// that already happened (a daemon stopped at start hung until its
    /// shutdown deadline).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        let mut rx = self.inner.shutdown_tx.subscribe();
        if *rx.borrow() {
            rx.mark_changed();
        }
        rx
    }
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown_tx.borrow()
    }
}
