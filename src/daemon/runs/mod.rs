//! Agent runs: spawning, supervision and the end of a run.
//!
//! Each run is a child process in its own process group (`setpgid(0, 0)`), so a
//! timeout or shutdown can signal the agent *and everything it started*. After
//! the leader exits the group is killed once more, so no grandchild outlives
//! its run. Spawning never waits for the run: a supervisor task owns the child.

mod setbacks;
mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

pub use super::in_flight::{RunInfo, RunKind};
pub use super::process::signal_group;
use super::Daemon;
use crate::blackboard::sessions::{new_token, NewSession};
use crate::blackboard::{
    Actor, Blackboard, EventLevel, ObservationLevel, Outcome, Task, TaskStatus,
};
use crate::config::agents::{AgentDef, Permissions};
use crate::runtime::{env, health, Activity, Adapter, Launch, RunContext, Transcript};
use crate::service::Setback;
use crate::workspace::{self, TaskWorkspace};
use setbacks::*;
use supervise::*;

/// Counts of runs by project and by agent (for the limits).
///
/// The per-agent counts are the cluster's on a shared store: this daemon's
/// runs plus the other daemons' as of their last beats, so `max_per_agent`
/// holds across hosts (within one beat); the total and the per-project
/// counts are this host's (`max_global_agents` is per host).
pub fn run_counts(d: &Daemon) -> (usize, HashMap<String, usize>, HashMap<String, usize>) {
    let others = d
        .membership()
        .map(|m| m.others_agent_runs())
        .unwrap_or_default();
    let runs = d.runs_lock();
    let mut per_project = HashMap::new();
    let mut per_agent = HashMap::new();
    for r in runs.values() {
        *per_project.entry(r.project.clone()).or_insert(0) += 1;
        *per_agent.entry(r.agent.clone()).or_insert(0) += 1;
    }
    for (agent, n) in others {
        *per_agent.entry(agent).or_insert(0) += n.max(0) as usize;
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
    let sandboxed = d
        .agents()
        .agents
        .iter()
        .any(|a| a.id == agent && a.permissions == Permissions::Sandbox);
    let brief = crate::brief::render_task_brief(
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
            sandbox: sandboxed.then_some(d.config().sandbox.allow_hosts.as_slice()),
        },
    )
    .await?;
    // Readiness lists the project's broken skills until a brief finds none.
    let now = chrono::Utc::now().timestamp_millis();
    let warnings = brief
        .broken_skills
        .iter()
        .map(|e| crate::runtime::health::Warning {
            project: bb.project().to_string(),
            kind: "skill".into(),
            subject: e.file.display().to_string(),
            reason: format!("skill skipped: {}; fix or remove it", e.message),
            since_ms: now,
        })
        .collect();
    d.runtime_health()
        .set_warnings(bb.project(), "skill", warnings);
    Ok(brief.text)
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
    /// What the run may touch and reach, kept with its session.
    sandbox: crate::wire::RunSandbox,
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
    let (command, sandbox) = match &prepared {
        Ok(p) => (p.launch.command_line(), Some(&p.sandbox)),
        Err(_) => (plan.runtime_name.to_string(), None),
    };
    if !record_session(d, bb, task, agent, kind, &plan, command, sandbox).await {
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
    record_log_file(bb, &plan.session_id, &p.log).await;
    hand_to_supervisor(d, bb, task, agent, kind, timeout_secs, plan, p, child).await;
}

/// Records the log's device and inode on the session, for the log API's
/// check that it serves the file the daemon created. Best effort: without
/// it the API still requires a single link.
async fn record_log_file(bb: &Blackboard, session_id: &str, log: &std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = log.metadata() else { return };
    if let Err(e) = bb
        .set_session_log_file(session_id, meta.dev(), meta.ino())
        .await
    {
        tracing::warn!(session = session_id, error = %e, "cannot record the log's identity");
    }
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
                .prepare_review(&root, bb.project(), &task.id, session_id)
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
        let (launch, sandbox) = launch(
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
        let sandbox = match sandbox {
            Some(sb) => {
                // The run's log starts with what the run may touch and reach.
                append_to_log(
                    &log,
                    &plan.session_id,
                    &format!("[mozi:sandbox] {}\n", sb.describe()),
                )
                .await;
                run_sandbox(&sb)
            }
            None => crate::wire::RunSandbox::unsandboxed(match agent.permissions {
                Permissions::Full => crate::wire::RunMode::Full,
                _ => crate::wire::RunMode::Workspace,
            }),
        };
        Ok(Prepared {
            launch,
            log,
            workspace: workspace.clone(),
            sandbox,
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
        crate::home::create_private_file(&log_file)?;
        // Appending: the sandbox's proxy writes its lines in the same log
        // (`http::sandbox_proxy`), and neither may overwrite the other.
        std::fs::OpenOptions::new().append(true).open(&log_file)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e| NotPrepared {
        why: format!("cannot prepare the run's files: {e}"),
        infra: health::is_infrastructure(&e),
    })
}

/// Appends `line` to the run's log off the runtime thread (`tokio::fs`);
/// a failure is only logged.
async fn append_to_log(log: &std::fs::File, session_id: &str, line: &str) {
    use tokio::io::AsyncWriteExt;
    let written = async {
        let mut f = tokio::fs::File::from_std(log.try_clone()?);
        f.write_all(line.as_bytes()).await?;
        f.flush().await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(session = session_id, error = %e, "cannot write the sandbox line in the run's log");
    }
}

/// The sandbox as the session's detail shows it.
fn run_sandbox(sb: &crate::runtime::sandbox::SandboxPlan) -> crate::wire::RunSandbox {
    let paths =
        |v: &[PathBuf]| -> Vec<String> { v.iter().map(|p| p.display().to_string()).collect() };
    crate::wire::RunSandbox {
        mode: crate::wire::RunMode::Sandbox,
        is_unsafe: false,
        read_write: paths(&sb.read_write)
            .into_iter()
            .chain(sb.git_fence.iter().flat_map(|f| paths(&f.read_write)))
            .collect(),
        read_only: paths(&sb.read_only)
            .into_iter()
            .chain(sb.git_fence.iter().flat_map(|f| paths(&f.read_only)))
            .collect(),
        network: Some(sb.inside_addr()),
        allow_hosts: sb.allow_hosts.clone(),
    }
}

/// The runtime's launch (`Adapter::prepare`), started in the task's
/// workspace with the run's own `TMPDIR` (unless the agent's `env:` sets
/// one) and `MOZI_WORKSPACE`; with the sandbox's plan when it runs in one.
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
) -> Result<(Launch, Option<crate::runtime::sandbox::SandboxPlan>), NotPrepared> {
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
    if agent.permissions == Permissions::Sandbox {
        let (wrapped, sb) = sandboxed(d, agent, adapter, plan, workspace, launch)?;
        return Ok((wrapped, Some(sb)));
    }
    Ok((launch, None))
}

/// `permissions: sandbox`: the launch inside bubblewrap
/// (`runtime::sandbox`). Refused, never run unsandboxed, where bubblewrap
/// cannot make a sandbox.
fn sandboxed(
    d: &Daemon,
    agent: &AgentDef,
    adapter: &Adapter,
    plan: &RunPlan,
    workspace: &TaskWorkspace,
    launch: Launch,
) -> Result<(Launch, crate::runtime::sandbox::SandboxPlan), NotPrepared> {
    use crate::runtime::sandbox;
    let bwrap = d.sandbox().map_err(|why| NotPrepared {
        why: format!("agent {} has permissions: sandbox, and {why}", agent.id),
        infra: true,
    })?;
    let socket = d.home().sandbox_socket_file();
    let served = std::fs::symlink_metadata(&socket).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    });
    if !served {
        return Err(NotPrepared {
            why: format!(
                "agent {} has permissions: sandbox, and the daemon serves no socket at {} (see the daemon's log at start)",
                agent.id,
                socket.display()
            ),
            infra: true,
        });
    }
    let sb = sandbox_plan(d, adapter, plan, workspace, &launch);
    let wrapped = sandbox::wrap(launch, &sb, bwrap, d.exe());
    Ok((wrapped, sb))
}

/// What one sandboxed run sees (`runtime::sandbox::SandboxPlan`).
fn sandbox_plan(
    d: &Daemon,
    adapter: &Adapter,
    plan: &RunPlan,
    workspace: &TaskWorkspace,
    launch: &Launch,
) -> crate::runtime::sandbox::SandboxPlan {
    use crate::runtime::sandbox;
    let user_home = crate::secrets::env_var("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != std::path::Path::new("/"));
    let expand = |p: &PathBuf| -> PathBuf {
        match (p.strip_prefix("~"), &user_home) {
            (Ok(rest), Some(h)) => h.join(rest),
            _ => p.clone(),
        }
    };
    let cfg = &d.config().sandbox;
    let mut read_write = vec![plan.tmpdir.clone()];
    let mut read_only = sandbox::toolchain_paths(launch, d.home().root(), user_home.as_deref());
    if workspace.read_only {
        read_only.push(workspace.path.clone());
    } else {
        read_write.push(workspace.path.clone());
    }
    let mut git_fence = None;
    if let Some(git) = sandbox::git_common_dir(&workspace.path) {
        if workspace.read_only {
            read_only.push(git);
        } else {
            git_fence = sandbox::git_fence(&workspace.path, &git);
            read_write.push(git);
        }
    }
    if adapter.requirement().is_some() {
        let agent = env::get(&launch.env, "MOZI_AGENT").unwrap_or_default();
        read_write.push(d.home().runtime_state_dir(adapter.name(), agent));
    }
    read_only.push(plan.brief_path.clone());
    read_only.push(d.exe().to_path_buf());
    read_only.extend(cfg.read_only.iter().map(expand).filter(|p| p.exists()));
    read_write.extend(cfg.read_write.iter().map(expand).filter(|p| p.exists()));
    sandbox::SandboxPlan {
        read_write,
        read_only,
        socket_dir: d.home().sandbox_socket_dir(),
        listen: d.config().server.bind.clone(),
        user_home,
        allow_hosts: cfg.allow_hosts.clone(),
        git_fence,
    }
}

/// The session row. `false` when it cannot be written: the task goes back
/// (same round) and the agent is held, since the blackboard is the
/// problem, not the agent.
#[allow(clippy::too_many_arguments)]
async fn record_session(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    plan: &RunPlan,
    command: String,
    sandbox: Option<&crate::wire::RunSandbox>,
) -> bool {
    let session = bb
        .create_session(&NewSession {
            id: plan.session_id.clone(),
            task_id: task.id.clone(),
            agent: agent.id.clone(),
            token: plan.token.clone(),
            command,
            log_path: Some(plan.log_path.display().to_string()),
            sandbox: sandbox.and_then(|s| serde_json::to_value(s).ok()),
            daemon: d.cluster_id(),
        })
        .await;
    let Err(e) = session else { return true };
    tracing::error!(project = plan.project, task = %task.id, error = %e, "cannot record session");
    let why = format!("could not record the session: {e}");
    hold_agent(d, bb, agent, plan.runtime_name, &why);
    give_back(d, bb, task, kind, &why, Setback::Infrastructure).await;
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
        ..
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
        super::in_flight::RunKey {
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
