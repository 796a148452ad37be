//! Agent runs: spawning, supervision and the end of a run.
//!
//! Each run is a child process in its own process group (`setpgid(0, 0)`), so a
//! timeout or shutdown can signal the agent *and everything it started*. After
//! the leader exits the group is killed once more, so no grandchild outlives
//! its run. Spawning never waits for the run: a supervisor task owns the child.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::process::Command;

pub use super::process::signal_group;
use super::Daemon;
use crate::blackboard::sessions::{new_token, NewSession};
use crate::blackboard::{
    Actor, Blackboard, EventLevel, ObservationLevel, Outcome, Task, TaskStatus,
};
use crate::config::agents::AgentDef;
use crate::runtime::{env, health, Activity, Adapter, Launch, RunContext, Transcript};
use crate::workspace::{self, TaskWorkspace};

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The agent works on a task it holds.
    Work,
    /// The agent reviews a task in `review`.
    Review,
}

/// A run in flight.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunInfo {
    pub session_id: String,
    pub project: String,
    pub task_id: String,
    pub agent: String,
    pub kind: RunKind,
    pub pid: i32,
    pub started_at_ms: i64,
    pub deadline_ms: i64,
    #[schema(value_type = String)]
    pub log_path: PathBuf,
    /// A work run's claim (`task.claimed_at`): what the daemon gives back
    /// for this run is this claim only, never a later one of the same agent.
    #[serde(skip)]
    pub claimed_at_ms: Option<i64>,
    /// Where the run works (`crate::workspace`).
    #[serde(skip)]
    pub workspace: Option<TaskWorkspace>,
    /// The run's own `TMPDIR`, removed when it ends.
    #[serde(skip)]
    pub tmpdir: PathBuf,
}

/// Counts of runs by project and by agent (for the limits).
pub fn run_counts(d: &Daemon) -> (usize, HashMap<String, usize>, HashMap<String, usize>) {
    let runs = d.runs_lock();
    let mut per_project = HashMap::new();
    let mut per_agent = HashMap::new();
    for r in runs.values() {
        *per_project.entry(r.project.clone()).or_insert(0) += 1;
        *per_agent.entry(r.agent.clone()).or_insert(0) += 1;
    }
    (runs.len(), per_project, per_agent)
}

/// Renders the brief of a run (see `brief::render_task_brief`); counts the
/// lessons it shows as referenced.
async fn write_brief(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    kind: RunKind,
    agent: &str,
    workspace: &TaskWorkspace,
) -> Result<String, crate::brief::TaskBriefError> {
    let settings = d.projects().get(bb.project()).map(|s| s.settings);
    crate::brief::render_task_brief(
        d.home(),
        bb,
        d.briefs(),
        d.protocols(),
        task,
        crate::brief::BriefRequest {
            kind: match kind {
                RunKind::Work => crate::brief::BriefKind::Work,
                RunKind::Review => crate::brief::BriefKind::Review,
            },
            agent,
            project_context: settings.as_ref().and_then(|s| s.context.as_ref()),
            count_references: true,
            bin: &d.exe().display().to_string(),
            workspace: Some(workspace),
        },
    )
    .await
}

/// The names and paths of one run, fixed before anything is made.
struct RunPlan {
    project: String,
    session_id: String,
    token: String,
    run_key: String,
    sessions_dir: PathBuf,
    brief_path: PathBuf,
    log_path: PathBuf,
    /// The run's own `TMPDIR`.
    tmpdir: PathBuf,
    adapter: Option<Adapter>,
    runtime_name: &'static str,
}

impl RunPlan {
    fn new(d: &Daemon, bb: &Blackboard, task: &Task, agent: &AgentDef) -> RunPlan {
        let project = bb.project().to_string();
        let session_id = format!("S-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let token = new_token();
        let project_id = crate::registry::ProjectId::parse(&project).expect("valid id");
        let sessions_dir = d.home().task_sessions_dir(&project_id, &task.id);
        let adapter = Adapter::for_agent(d.agents(), agent);
        RunPlan {
            run_key: format!("mozi-{token}"),
            brief_path: d
                .home()
                .session_brief_file(&project_id, &task.id, &session_id),
            log_path: d
                .home()
                .session_log_file(&project_id, &task.id, &session_id),
            tmpdir: workspace::run_tmpdir(d.home(), &session_id),
            runtime_name: adapter.as_ref().map(|a| a.name()).unwrap_or("unknown"),
            adapter,
            sessions_dir,
            project,
            session_id,
            token,
        }
    }
}

/// A run ready to be spawned.
struct Prepared {
    launch: Launch,
    log: std::fs::File,
    workspace: TaskWorkspace,
}

/// Why a run could not be prepared: the message, and whether it is the
/// machine's fault (infrastructure) rather than the run's own.
struct NotPrepared {
    why: String,
    infra: bool,
}

/// Starts a run of `agent` on `task`. For work runs the caller has already
/// claimed the task for the agent. Never waits for the run to finish.
///
/// The steps: the task's workspace, the brief, the run's files and the
/// runtime's launch ([`prepare`]); the session row ([`record_session`]);
/// the process ([`spawn_child`]); then [`supervise`] owns it
/// ([`hand_to_supervisor`]). A failure that is not the agent's (see
/// `runtime::health`) gives the task back in the same round.
pub async fn start_run(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    timeout_secs: u64,
) {
    let plan = RunPlan::new(d, bb, task, agent);
    let prepared = prepare(d, bb, task, agent, kind, timeout_secs, &plan).await;
    let command = match &prepared {
        Ok(p) => p.launch.command_line(),
        Err(_) => plan.runtime_name.to_string(),
    };
    if !record_session(d, bb, task, agent, kind, &plan, command).await {
        if let Ok(p) = &prepared {
            clean_up_run(d, &p.workspace, &plan.tmpdir).await;
        }
        return;
    }
    let p = match prepared {
        Ok(p) => p,
        Err(NotPrepared { why, infra }) => {
            not_started(d, bb, &plan, task, kind, agent, &why, infra).await;
            return;
        }
    };
    let child = match spawn_child(&p.launch, agent, plan.runtime_name) {
        Ok(c) => c,
        Err((why, infra)) => {
            clean_up_run(d, &p.workspace, &plan.tmpdir).await;
            not_started(d, bb, &plan, task, kind, agent, &why, infra).await;
            return;
        }
    };
    hand_to_supervisor(d, bb, task, agent, kind, timeout_secs, plan, p, child).await;
}

/// The task's workspace (`crate::workspace`): its worktree or directory for
/// a work run, a read-only checkout of the author's branch for a review.
async fn prepare_workspace(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    kind: RunKind,
    session_id: &str,
) -> Result<TaskWorkspace, NotPrepared> {
    let root = super::worktrees::workspace_root(d, bb.project()).await;
    let ws = match kind {
        RunKind::Work => {
            d.workspaces()
                .prepare_work(&root, bb.project(), &task.id)
                .await
        }
        RunKind::Review => {
            d.workspaces()
                .prepare_review(&root, &task.id, session_id)
                .await
        }
    };
    ws.map_err(|e| NotPrepared {
        why: format!("cannot prepare the task's workspace: {e}"),
        infra: e.is_infrastructure(),
    })
}

/// The workspace, the brief, the run's files (brief, log, `TMPDIR`) and the
/// runtime's launch. Undoes what it made when a later step fails.
async fn prepare(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    timeout_secs: u64,
    plan: &RunPlan,
) -> Result<Prepared, NotPrepared> {
    let Some(adapter) = &plan.adapter else {
        return Err(NotPrepared {
            why: format!(
                "agent {} names runtime {:?}, which has no adapter",
                agent.id, agent.runtime
            ),
            infra: false,
        });
    };
    let workspace = prepare_workspace(d, bb, task, kind, &plan.session_id).await?;
    let made = async {
        let brief = write_brief(d, bb, task, kind, &agent.id, &workspace)
            .await
            .map_err(|e| {
                let text = e.to_string();
                NotPrepared {
                    infra: health::message_is_infrastructure(&text),
                    why: format!("cannot render the brief: {text}"),
                }
            })?;
        let log = write_run_files(plan, &brief).await?;
        let launch = launch(
            d,
            task,
            agent,
            adapter,
            kind,
            timeout_secs,
            plan,
            &brief,
            &workspace,
        )?;
        Ok(Prepared {
            launch,
            log,
            workspace: workspace.clone(),
        })
    }
    .await;
    if made.is_err() {
        clean_up_run(d, &workspace, &plan.tmpdir).await;
    }
    made
}

/// Brief, log and `TMPDIR`, off the runtime thread (the daemon's runtime
/// is one thread); returns the log.
async fn write_run_files(plan: &RunPlan, brief: &str) -> Result<std::fs::File, NotPrepared> {
    let (dir, brief_file, log_file, tmpdir, body) = (
        plan.sessions_dir.clone(),
        plan.brief_path.clone(),
        plan.log_path.clone(),
        plan.tmpdir.clone(),
        brief.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        crate::home::create_private_dir_all(&dir)?;
        crate::home::write_private_file(&brief_file, body)?;
        workspace::make_run_tmpdir(&tmpdir)?;
        crate::home::create_private_file(&log_file)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e| NotPrepared {
        why: format!("cannot prepare the run's files: {e}"),
        infra: health::is_infrastructure(&e),
    })
}

/// The runtime's launch (`Adapter::prepare`), started in the task's
/// workspace with the run's own `TMPDIR` (unless the agent's `env:` sets
/// one) and `MOZI_WORKSPACE`.
#[allow(clippy::too_many_arguments)]
fn launch(
    d: &Daemon,
    task: &Task,
    agent: &AgentDef,
    adapter: &Adapter,
    kind: RunKind,
    timeout_secs: u64,
    plan: &RunPlan,
    brief: &str,
    workspace: &TaskWorkspace,
) -> Result<Launch, NotPrepared> {
    let gateway = format!("http://{}", d.config().server.bind);
    let ctx = RunContext {
        agent,
        session_id: &plan.session_id,
        token: &plan.token,
        run_key: &plan.run_key,
        brief_path: &plan.brief_path,
        brief,
        timeout_secs,
        project: &plan.project,
        task: &task.id,
        run_kind: match kind {
            RunKind::Work => "work",
            RunKind::Review => "review",
        },
        home: d.home().root(),
        exe: d.exe(),
        gateway: &gateway,
    };
    let mut launch = adapter.prepare(&ctx).map_err(|e| NotPrepared {
        infra: e.io().is_some_and(health::is_infrastructure),
        why: format!("cannot prepare the {} runtime: {e}", adapter.name()),
    })?;
    launch.cwd = workspace.path.clone();
    if !agent.env.contains_key("TMPDIR") {
        env::set(&mut launch.env, "TMPDIR", plan.tmpdir.display().to_string());
    }
    env::set(
        &mut launch.env,
        "MOZI_WORKSPACE",
        workspace.path.display().to_string(),
    );
    Ok(launch)
}

/// The session row. `false` when it cannot be written: the task goes back
/// (same round) and the agent is held, since the blackboard is the
/// problem, not the agent.
async fn record_session(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    plan: &RunPlan,
    command: String,
) -> bool {
    let session = bb
        .create_session(&NewSession {
            id: plan.session_id.clone(),
            task_id: task.id.clone(),
            agent: agent.id.clone(),
            token: plan.token.clone(),
            command,
            log_path: Some(plan.log_path.display().to_string()),
        })
        .await;
    let Err(e) = session else { return true };
    tracing::error!(project = plan.project, task = %task.id, error = %e, "cannot record session");
    let why = format!("could not record the session: {e}");
    hold_agent(d, bb, agent, plan.runtime_name, &why);
    give_back(bb, task, kind, &why, false).await;
    false
}

/// A recorded run that could not start: an infrastructure failure (same
/// round, agent held) or the run's own (a round).
#[allow(clippy::too_many_arguments)]
async fn not_started(
    d: &Daemon,
    bb: &Blackboard,
    plan: &RunPlan,
    task: &Task,
    kind: RunKind,
    agent: &AgentDef,
    why: &str,
    infra: bool,
) {
    if infra {
        infra_failure(
            d,
            bb,
            &plan.session_id,
            task,
            kind,
            agent,
            plan.runtime_name,
            why,
        )
        .await;
    } else {
        fail_to_start(d, bb, &plan.session_id, task, kind, why).await;
    }
}

/// Execs the launch: an empty environment plus the launch's, its own
/// process group, piped output. The error says whether it is the machine's.
fn spawn_child(
    launch: &Launch,
    agent: &AgentDef,
    runtime_name: &str,
) -> Result<tokio::process::Child, (String, bool)> {
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(if launch.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "runtime {runtime_name}: `{}` not found on PATH (agent {}; install it or fix PATH, see `moziplus doctor`)",
                launch.program, agent.id
            )
        } else {
            format!("cannot start agent {} ({}): {e}", agent.id, launch.program)
        };
        (why, health::is_infrastructure(&e))
    })
}

/// The run is alive: its brief goes to stdin when the CLI reads it there,
/// it is registered (limits, gateway key, status) and [`supervise`] owns it.
#[allow(clippy::too_many_arguments)]
async fn hand_to_supervisor(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    timeout_secs: u64,
    plan: RunPlan,
    p: Prepared,
    mut child: tokio::process::Child,
) {
    let Prepared {
        launch,
        log,
        workspace,
    } = p;
    let project = plan.project;
    let session_id = plan.session_id;
    d.runtime_health().started(&project, &agent.id);
    if let (Some(text), Some(mut stdin)) = (launch.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A CLI that exits without reading its brief closes the pipe;
            // its exit is judged, not this write.
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let pid = child.id().unwrap_or(0) as i32;
    let _ = bb
        .set_session_process(&session_id, pid as i64, pid as i64)
        .await;
    let started = bb.now();
    let info = RunInfo {
        session_id: session_id.clone(),
        project: project.clone(),
        task_id: task.id.clone(),
        agent: agent.id.clone(),
        kind,
        pid,
        started_at_ms: started,
        deadline_ms: started + (timeout_secs as i64) * 1000,
        log_path: plan.log_path,
        claimed_at_ms: (kind == RunKind::Work).then_some(task.claimed_at).flatten(),
        workspace: Some(workspace),
        tmpdir: plan.tmpdir,
    };
    d.runs_lock().insert(session_id.clone(), info.clone());
    d.add_run_key(
        plan.run_key,
        super::gateway_hooks::RunKey {
            session_id: session_id.clone(),
            project: project.clone(),
            task: task.id.clone(),
            agent: agent.id.clone(),
            priority: task.priority,
        },
    );
    d.count_spawn();
    metrics::counter!("moziplus_runs_started_total").increment(1);
    tracing::info!(project, task = %task.id, agent = %agent.id, session = %session_id, pid, runtime = plan.runtime_name, "run started");
    tokio::spawn(supervise(
        d.clone(),
        bb.clone(),
        info,
        child,
        timeout_secs,
        Transcript::new(launch.format),
        tokio::fs::File::from_std(log),
    ));
}

/// What a run leaves behind that is its alone: its `TMPDIR` and a review
/// run's checkout. (A work run's worktree is the task's, kept for its next
/// round.)
async fn clean_up_run(d: &Daemon, workspace: &TaskWorkspace, tmpdir: &std::path::Path) {
    d.workspaces().end_review(workspace).await;
    let dir = tmpdir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

/// Holds `agent` on this project for the infrastructure backoff and marks
/// the project degraded (readiness, dashboard).
fn hold_agent(d: &Daemon, bb: &Blackboard, agent: &AgentDef, runtime: &str, why: &str) -> Duration {
    let wait = d.runtime_health().failed(
        bb.project(),
        &agent.id,
        runtime,
        why,
        bb.now(),
        &d.config().daemon.retry_backoff,
    );
    metrics::counter!("moziplus_runs_infrastructure_failures_total").increment(1);
    wait
}

/// The run could not start for a reason that is not the agent's: end the
/// session, give the task back in the same round, hold the agent on this
/// project for the backoff, and say so.
#[allow(clippy::too_many_arguments)]
async fn infra_failure(
    d: &Daemon,
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    agent: &AgentDef,
    runtime: &str,
    why: &str,
) {
    let wait = hold_agent(d, bb, agent, runtime, why);
    let why = format!(
        "{why} — infrastructure failure: no round counted; agent {} waits {} s before its next run on this project",
        agent.id,
        wait.as_secs()
    );
    tracing::warn!(project = bb.project(), task = %task.id, why, "run could not start (infrastructure)");
    end_session(
        bb,
        session_id,
        Outcome::Failed,
        None,
        serde_json::json!({ "error": why, "infrastructure": true }),
    )
    .await;
    let _ = bb
        .add_observation(
            ObservationLevel::Alert,
            &Actor::daemon(),
            Some(&task.id),
            &why,
        )
        .await;
    give_back(bb, task, kind, &why, false).await;
}

/// The run could not even start, for a reason of its own (a brief that
/// cannot be rendered, an empty command): end the session and give the
/// task back, costing a round.
async fn fail_to_start(
    d: &Daemon,
    bb: &Blackboard,
    session_id: &str,
    task: &Task,
    kind: RunKind,
    why: &str,
) {
    tracing::warn!(project = bb.project(), task = %task.id, why, "run failed to start");
    end_session(
        bb,
        session_id,
        Outcome::Failed,
        None,
        serde_json::json!({ "error": why }),
    )
    .await;
    let _ = bb
        .add_observation(
            ObservationLevel::Alert,
            &Actor::daemon(),
            Some(&task.id),
            why,
        )
        .await;
    give_back(bb, task, kind, why, true).await;
    hold_next_round(d, bb, &task.id, kind).await;
}

/// After a failed round, the task's next round waits for the backoff of
/// `daemon.retry_backoff` (by the round it is now in), so a run that fails
/// at once cannot burn every round in seconds.
async fn hold_next_round(d: &Daemon, bb: &Blackboard, task_id: &str, kind: RunKind) {
    if kind != RunKind::Work {
        return;
    }
    let Ok(t) = bb.task(task_id).await else {
        return;
    };
    if t.status != TaskStatus::Pending {
        return;
    }
    let failures = u32::try_from(t.round.saturating_sub(1)).unwrap_or(u32::MAX);
    let wait = health::backoff(&d.config().daemon.retry_backoff, failures);
    if wait.is_zero() {
        return;
    }
    let until = bb.now() + wait.as_millis() as i64;
    if let Err(e) = bb.hold_pending_until(task_id, until).await {
        tracing::warn!(project = bb.project(), task = task_id, error = %e, "cannot hold the task for its backoff");
    }
}

/// Returns a work run's task: with `bump` another round (or failed at the
/// limit), without it the same round (daemon-side reasons such as shutdown).
/// `task` is the run's claim: only that claim is given back (see
/// `Blackboard::give_back_claim`), never a newer one of the same agent.
async fn give_back(bb: &Blackboard, task: &Task, kind: RunKind, why: &str, bump: bool) {
    if kind != RunKind::Work {
        return;
    }
    let (Some(holder), Some(claimed_at)) = (task.claimed_by.as_deref(), task.claimed_at) else {
        return;
    };
    for attempt in 1..=WRITE_ATTEMPTS {
        match bb
            .give_back_claim(&task.id, holder, claimed_at, why, "task.run_failed", bump)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(project = bb.project(), task = %task.id, error = %e, attempt, "cannot give the task back");
                if !matches!(e, crate::blackboard::BbError::Db(_)) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(attempt.min(5))).await;
            }
        }
    }
}

/// How often the end of a run is written before giving up when the database
/// fails (held by another process past its busy timeout, say): a run's end
/// must not be lost to a moment of contention.
const WRITE_ATTEMPTS: u64 = 30;

/// Ends a session, retrying while the write fails (see [`WRITE_ATTEMPTS`]).
async fn end_session(
    bb: &Blackboard,
    id: &str,
    outcome: Outcome,
    exit_code: Option<i64>,
    detail: serde_json::Value,
) {
    for attempt in 1..=WRITE_ATTEMPTS {
        match bb
            .end_session(id, outcome, exit_code, Some(detail.clone()))
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(project = bb.project(), session = id, error = %e, attempt, "cannot record the end of a run");
                if !matches!(e, crate::blackboard::BbError::Db(_)) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(attempt.min(5))).await;
            }
        }
    }
}

enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    Shutdown,
}

/// Lines of stderr kept for the observation of a failed run.
const STDERR_TAIL: usize = 8;
/// `session.activity` events published per run; the rest stay in the log.
const MAX_ACTIVITY_EVENTS: usize = 500;
/// How long output is still read after the process group was killed.
const DRAIN: Duration = Duration::from_secs(3);

/// The session log: stdout and stderr as they come (one writer, appending,
/// so neither overwrites the other) and, for structured CLIs, each
/// normalised activity as a `[mozi:activity] {json}` line.
struct SessionLog {
    file: tokio::fs::File,
    broken: bool,
}

impl SessionLog {
    async fn write(&mut self, prefix: &str, line: &str) {
        use tokio::io::AsyncWriteExt;
        if self.broken {
            return;
        }
        let mut buf = String::with_capacity(prefix.len() + line.len() + 1);
        buf.push_str(prefix);
        buf.push_str(line);
        buf.push('\n');
        if self.file.write_all(buf.as_bytes()).await.is_err() {
            self.broken = true;
        }
    }
}

/// The live transcript of a run: activity goes to the log and, up to
/// [`MAX_ACTIVITY_EVENTS`], to the event stream (`session.activity`,
/// level `optional`).
struct Live<'a> {
    bb: &'a Blackboard,
    info: &'a RunInfo,
    log: SessionLog,
    published: usize,
    structured: bool,
}

impl Live<'_> {
    async fn publish(&mut self, acts: Vec<Activity>) {
        for a in acts {
            let value = serde_json::to_value(&a).unwrap_or_default();
            if self.structured {
                let line = serde_json::json!({ "activity": value }).to_string();
                self.log.write("[mozi:activity] ", &line).await;
            }
            if self.published < MAX_ACTIVITY_EVENTS {
                self.published += 1;
                let mut payload = serde_json::json!({
                    "session": self.info.session_id,
                    "agent": self.info.agent,
                });
                if let (Some(p), Some(v)) = (payload.as_object_mut(), value.as_object()) {
                    p.extend(v.clone());
                }
                let _ = self
                    .bb
                    .record_event(
                        EventLevel::Optional,
                        "session.activity",
                        Some(&self.info.task_id),
                        &Actor::daemon(),
                        payload,
                    )
                    .await;
            }
        }
    }
}

async fn supervise(
    d: Daemon,
    bb: Blackboard,
    info: RunInfo,
    mut child: tokio::process::Child,
    timeout_secs: u64,
    mut transcript: Transcript,
    log: tokio::fs::File,
) {
    let structured = transcript.format() != crate::runtime::OutputFormat::Plain;
    let mut live = Live {
        bb: &bb,
        info: &info,
        log: SessionLog {
            file: log,
            broken: false,
        },
        published: 0,
        structured,
    };
    let (ending, status, stderr_tail) = watch(
        &d,
        &info,
        &mut child,
        timeout_secs,
        &mut transcript,
        &mut live,
    )
    .await;
    // Nothing that left the group (`setsid`) but carries the run's marker in
    // its environment may outlive the run either (issue 13, defect 14).
    let session = info.session_id.clone();
    let _ =
        tokio::task::spawn_blocking(move || super::process::kill_session_processes(&session)).await;
    let (tail_acts, report) = transcript.finish();
    live.publish(tail_acts).await;
    let exit_code = status.and_then(|s| s.code()).map(i64::from);
    let stderr_text = stderr_tail.iter().cloned().collect::<Vec<_>>().join("\n");
    let (mut outcome, mut detail) = verdict(ending, &report, exit_code, &stderr_text, timeout_secs);
    if let Some(cost) = report.cost_usd.filter(|c| *c > 0.0) {
        // Tokens are booked by the gateway as the calls pass; the cost only
        // the CLI knows.
        let _ = bb.add_session_usage(&info.session_id, 0, 0, cost).await;
    }
    // A work run that "succeeded" but left its task working did not finish it.
    let task = bb.task(&info.task_id).await.ok();
    // Held by this run's own claim, not merely by the same agent.
    let still_held = task.as_ref().is_some_and(|t| {
        t.status == TaskStatus::Working
            && t.claimed_by.as_deref() == Some(info.agent.as_str())
            && info.claimed_at_ms.is_some()
            && t.claimed_at == info.claimed_at_ms
    });
    if info.kind == RunKind::Work && outcome == Outcome::Succeeded && still_held {
        outcome = Outcome::Failed;
        if let Some(m) = detail.as_object_mut() {
            m.insert(
                "error".into(),
                serde_json::json!(
                    "the agent exited without finishing its task (no `bb done`/`bb fail`)"
                ),
            );
        }
    }
    end_session(&bb, &info.session_id, outcome, exit_code, detail.clone()).await;
    metrics::counter!("moziplus_runs_total", "outcome" => outcome.as_str()).increment(1);
    if info.kind == RunKind::Work && still_held {
        if let Some(t) = task {
            let end = RunEnd {
                outcome,
                detail: &detail,
                exit_code,
                stderr_text: &stderr_text,
                timeout_secs,
            };
            give_back_after_run(&d, &bb, &info, &t, end).await;
        }
    }
    if let Some(ws) = &info.workspace {
        clean_up_run(&d, ws, &info.tmpdir).await;
    }
    tracing::info!(project = %info.project, task = %info.task_id, session = %info.session_id, outcome = %outcome, "run ended");
    d.runs_lock().remove(&info.session_id);
    d.remove_run_keys(&info.session_id);
    // The task may have ended with this run: its worktree goes now.
    super::worktrees::reap_workspaces(&d, &bb).await;
    d.wake();
}

/// Reads the run's output until the run is over: stdout to the log and the
/// transcript, stderr to the log with its last lines kept; a timeout or
/// shutdown signals the group (SIGTERM, SIGKILL after `kill_grace`), and the
/// group is SIGKILLed once the leader exits.
async fn watch(
    d: &Daemon,
    info: &RunInfo,
    child: &mut tokio::process::Child,
    timeout_secs: u64,
    transcript: &mut Transcript,
    live: &mut Live<'_>,
) -> (
    Ending,
    Option<std::process::ExitStatus>,
    std::collections::VecDeque<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let grace = Duration::from_secs(d.config().daemon.kill_grace);
    let mut shutdown = d.shutdown_signal();
    let mut out = child
        .stdout
        .take()
        .map(|o| tokio::io::BufReader::new(o).lines());
    let mut err = child
        .stderr
        .take()
        .map(|e| tokio::io::BufReader::new(e).lines());
    let mut stderr_tail: std::collections::VecDeque<String> = Default::default();
    let timeout = tokio::time::sleep(Duration::from_secs(timeout_secs));
    tokio::pin!(timeout);
    let far = Duration::from_secs(10 * 365 * 24 * 3600);
    // After SIGTERM (timeout, shutdown): SIGKILL when the grace runs out.
    let kill_at = tokio::time::sleep(far);
    tokio::pin!(kill_at);
    // After the leader exited and the group was killed: stop reading.
    let drain = tokio::time::sleep(far);
    tokio::pin!(drain);
    let mut stopping: Option<Ending> = None;
    let mut status: Option<std::process::ExitStatus> = None;
    let mut waited = false;
    loop {
        if waited && out.is_none() && err.is_none() {
            break;
        }
        tokio::select! {
            line = async { out.as_mut().expect("guarded").next_line().await }, if out.is_some() => match line {
                Ok(Some(l)) => {
                    live.log.write("", &l).await;
                    let acts = transcript.line(&l);
                    live.publish(acts).await;
                }
                _ => out = None,
            },
            line = async { err.as_mut().expect("guarded").next_line().await }, if err.is_some() => match line {
                Ok(Some(l)) => {
                    live.log.write("", &l).await;
                    if stderr_tail.len() == STDERR_TAIL {
                        stderr_tail.pop_front();
                    }
                    stderr_tail.push_back(l);
                }
                _ => err = None,
            },
            s = child.wait(), if !waited => {
                waited = true;
                status = s.ok();
                // Whatever the leader did, nothing of its group may outlive the run.
                signal_group(info.pid, Signal::SIGKILL);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            },
            _ = &mut timeout, if stopping.is_none() && !waited => {
                stopping = Some(Ending::TimedOut);
                signal_group(info.pid, Signal::SIGTERM);
                kill_at.as_mut().reset(tokio::time::Instant::now() + grace);
            },
            _ = async { while !*shutdown.borrow_and_update() { if shutdown.changed().await.is_err() { std::future::pending::<()>().await } } }, if stopping.is_none() && !waited => {
                stopping = Some(Ending::Shutdown);
                signal_group(info.pid, Signal::SIGTERM);
                kill_at.as_mut().reset(tokio::time::Instant::now() + grace);
            },
            _ = &mut kill_at, if !waited => {
                signal_group(info.pid, Signal::SIGKILL);
                kill_at.as_mut().reset(tokio::time::Instant::now() + far);
            },
            _ = &mut drain, if waited => {
                out = None;
                err = None;
            },
        }
    }
    let ending = match (stopping, status) {
        (Some(e), _) => e,
        (None, Some(s)) => Ending::Exited(s),
        (None, None) => Ending::TimedOut,
    };
    (ending, status, stderr_tail)
}

/// The run's outcome and the session's `detail`: how the process ended,
/// corrected by the CLI's own verdict.
fn verdict(
    ending: Ending,
    report: &crate::runtime::CliReport,
    exit_code: Option<i64>,
    stderr_text: &str,
    timeout_secs: u64,
) -> (Outcome, serde_json::Value) {
    let (mut outcome, mut detail) = match ending {
        Ending::TimedOut => (
            Outcome::TimedOut,
            serde_json::json!({ "timeout_secs": timeout_secs }),
        ),
        Ending::Shutdown => (
            Outcome::Killed,
            serde_json::json!({ "reason": "daemon shutdown" }),
        ),
        Ending::Exited(s) if s.success() => (Outcome::Succeeded, serde_json::json!({})),
        Ending::Exited(s) => (
            Outcome::Failed,
            serde_json::json!({ "exit_code": s.code(), "signal": std::os::unix::process::ExitStatusExt::signal(&s) }),
        ),
    };
    if outcome == Outcome::Failed {
        // A CLI that says why it failed (and exits non-zero): its words first.
        if let (Some(e), Some(m)) = (&report.error, detail.as_object_mut()) {
            let code = exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            m.insert("error".into(), serde_json::json!(format!("{e}{code}")));
        }
    } else if outcome == Outcome::Succeeded {
        if let Some(e) = &report.error {
            outcome = Outcome::Failed;
            detail = serde_json::json!({ "error": e });
        } else if report.missing_result {
            outcome = Outcome::Failed;
            detail = serde_json::json!({ "error": "exit 0 but the CLI printed no result" });
        }
    }
    if let Some(m) = detail.as_object_mut() {
        if *report != crate::runtime::CliReport::default() {
            m.insert(
                "cli".into(),
                serde_json::to_value(report).unwrap_or_default(),
            );
        }
        if outcome != Outcome::Succeeded && !stderr_text.is_empty() {
            m.insert("stderr_tail".into(), serde_json::json!(stderr_text));
        }
    }
    (outcome, detail)
}

/// How a run ended, for the observation of a task given back.
struct RunEnd<'a> {
    outcome: Outcome,
    detail: &'a serde_json::Value,
    exit_code: Option<i64>,
    stderr_text: &'a str,
    timeout_secs: u64,
}

/// A work run ended still holding its own claim: the task goes back (a
/// round for the agent's failures, none for a shutdown), with why.
async fn give_back_after_run(
    d: &Daemon,
    bb: &Blackboard,
    info: &RunInfo,
    t: &Task,
    end: RunEnd<'_>,
) {
    let RunEnd {
        outcome,
        detail,
        exit_code,
        stderr_text,
        timeout_secs,
    } = end;
    let mut why = match outcome {
        Outcome::TimedOut => {
            format!("run {} timed out after {timeout_secs} s", info.session_id)
        }
        Outcome::Killed => format!("run {} stopped by daemon shutdown", info.session_id),
        _ => {
            let reason = detail
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .or_else(|| exit_code.map(|c| format!("exit code {c}")))
                .unwrap_or_else(|| detail.to_string());
            format!("run {} ended {}: {reason}", info.session_id, outcome)
        }
    };
    if outcome != Outcome::Succeeded && outcome != Outcome::Killed && !stderr_text.is_empty() {
        why.push_str("; last stderr lines:\n");
        why.push_str(stderr_text);
    }
    // Shutdown is not the agent's fault: same round. Anything else costs one.
    give_back(bb, t, info.kind, &why, outcome != Outcome::Killed).await;
    if outcome == Outcome::Failed || outcome == Outcome::TimedOut {
        hold_next_round(d, bb, &t.id, info.kind).await;
        let _ = bb
            .add_observation(ObservationLevel::Warn, &Actor::daemon(), Some(&t.id), &why)
            .await;
    }
}

/// Shutdown: the supervisors see the signal and stop their runs; wait for
/// them (bounded by the grace period plus a margin), then kill what is left.
pub async fn stop_all(d: &Daemon) {
    let grace = Duration::from_secs(d.config().daemon.kill_grace) + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + grace;
    while !d.runs_lock().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<RunInfo> = d.runs_lock().values().cloned().collect();
    for r in left {
        signal_group(r.pid, Signal::SIGKILL);
    }
    // Give the supervisors a moment to record the ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !d.runs_lock().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
