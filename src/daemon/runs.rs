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

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Command;

use super::Daemon;
use crate::blackboard::sessions::{new_token, NewSession};
use crate::blackboard::{Actor, Blackboard, ObservationLevel, Outcome, Task, TaskStatus};
use crate::config::agents::AgentDef;

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The agent works on a task it holds.
    Work,
    /// The agent reviews a task in `review`.
    Review,
}

/// A run in flight.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub session_id: String,
    pub project: String,
    pub task_id: String,
    pub agent: String,
    pub kind: RunKind,
    pub pid: i32,
    pub started_at_ms: i64,
    pub deadline_ms: i64,
    pub log_path: PathBuf,
    /// A work run's claim (`task.claimed_at`): what the daemon gives back
    /// for this run is this claim only, never a later one of the same agent.
    #[serde(skip)]
    pub claimed_at_ms: Option<i64>,
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

/// Replaces `{placeholder}`s in a command template.
fn render_command(template: &[String], vars: &[(&str, String)]) -> Vec<String> {
    template
        .iter()
        .map(|part| {
            let mut s = part.clone();
            for (k, v) in vars {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            s
        })
        .collect()
}

/// Renders the brief of a run (see `brief::render_task_brief`); counts the
/// lessons it shows as referenced.
async fn write_brief(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    kind: RunKind,
    agent: &str,
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
        },
    )
    .await
}

/// Starts a run of `agent` on `task`. For work runs the caller has already
/// claimed the task for the agent. Never waits for the run to finish.
pub async fn start_run(
    d: &Daemon,
    bb: &Blackboard,
    task: &Task,
    agent: &AgentDef,
    kind: RunKind,
    timeout_secs: u64,
) {
    let project = bb.project().to_string();
    let session_id = format!("S-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let token = new_token();
    let sessions_dir = d
        .home()
        .task_artifacts_dir(
            &crate::registry::ProjectId::parse(&project).expect("valid id"),
            &task.id,
        )
        .join("sessions");
    let brief_path = sessions_dir.join(format!("{session_id}.brief.md"));
    let log_path = sessions_dir.join(format!("{session_id}.log"));
    let template = d
        .agents()
        .command_template(agent)
        .map(|t| t.to_vec())
        .unwrap_or_default();
    let argv = render_command(
        &template,
        &[
            ("agent", agent.id.clone()),
            ("session", session_id.clone()),
            ("brief", brief_path.display().to_string()),
            ("timeout", timeout_secs.to_string()),
            ("project", project.clone()),
            ("task", task.id.clone()),
            ("home", d.home().root().display().to_string()),
        ],
    );
    let json_result = d
        .agents()
        .runtimes
        .get(&agent.runtime)
        .is_some_and(|r| r.json_result)
        && agent.command.is_none();
    let brief = write_brief(d, bb, task, kind, &agent.id)
        .await
        .map_err(|e| format!("cannot render the brief: {e}"));
    let prepared = brief.and_then(|text| {
        (|| -> std::io::Result<std::fs::File> {
            crate::home::create_private_dir_all(&sessions_dir)?;
            crate::home::write_private_file(&brief_path, text)?;
            crate::home::create_private_file(&log_path)
        })()
        .map_err(|e| format!("cannot prepare the run's files: {e}"))
    });
    let session = bb
        .create_session(&NewSession {
            id: session_id.clone(),
            task_id: task.id.clone(),
            agent: agent.id.clone(),
            token: token.clone(),
            command: argv.join(" "),
            log_path: Some(log_path.display().to_string()),
        })
        .await;
    if let Err(e) = session {
        tracing::error!(project, task = %task.id, error = %e, "cannot record session");
        give_back(
            bb,
            task,
            kind,
            &format!("could not record the session: {e}"),
            false,
        )
        .await;
        return;
    }
    let log = match prepared {
        Ok(f) => f,
        Err(why) => {
            fail_to_start(bb, &session_id, task, kind, &why).await;
            return;
        }
    };
    let Some((program, args)) = argv.split_first() else {
        fail_to_start(
            bb,
            &session_id,
            task,
            kind,
            &format!("agent {} has no command", agent.id),
        )
        .await;
        return;
    };
    let mut cmd = Command::new(program);
    let bin_dir = d
        .exe()
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    cmd.args(args)
        .current_dir(d.home().root())
        .env("PATH", path)
        .env("MOZI_HOME", d.home().root())
        .env("MOZI_PROJECT", &project)
        .env("MOZI_TASK", &task.id)
        .env("MOZI_AGENT", &agent.id)
        .env("MOZI_SESSION", &session_id)
        .env("MOZI_SESSION_TOKEN", &token)
        .env(
            "MOZI_RUN_KIND",
            match kind {
                RunKind::Work => "work",
                RunKind::Review => "review",
            },
        )
        .env("MOZI_BIN", d.exe())
        .env("MOZI_BRIEF", &brief_path)
        .env(
            "OPENAI_BASE_URL",
            format!("http://{}/v1", d.config().server.bind),
        )
        .env("OPENAI_API_KEY", format!("mozi-{token}"))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    let log_err = log.try_clone();
    if json_result {
        cmd.stdout(Stdio::piped());
    } else {
        cmd.stdout(Stdio::from(log));
    }
    match log_err {
        Ok(f) => cmd.stderr(Stdio::from(f)),
        Err(_) => cmd.stderr(Stdio::null()),
    };
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot start agent {} ({program}): {e}", agent.id);
            fail_to_start(bb, &session_id, task, kind, &why).await;
            return;
        }
    };
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
        log_path: log_path.clone(),
        claimed_at_ms: (kind == RunKind::Work).then_some(task.claimed_at).flatten(),
    };
    d.runs_lock().insert(session_id.clone(), info.clone());
    d.add_run_key(
        format!("mozi-{token}"),
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
    tracing::info!(project, task = %task.id, agent = %agent.id, session = %session_id, pid, "run started");
    tokio::spawn(supervise(
        d.clone(),
        bb.clone(),
        info,
        child,
        timeout_secs,
        json_result,
    ));
}

/// The run could not even start: end the session and give the task back.
async fn fail_to_start(bb: &Blackboard, session_id: &str, task: &Task, kind: RunKind, why: &str) {
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

/// Sends `sig` to a whole process group; a group that is gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    if pgid <= 1 {
        return false;
    }
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    Shutdown,
}

async fn supervise(
    d: Daemon,
    bb: Blackboard,
    info: RunInfo,
    mut child: tokio::process::Child,
    timeout_secs: u64,
    json_result: bool,
) {
    let grace = Duration::from_secs(d.config().daemon.kill_grace);
    let mut shutdown = d.shutdown_signal();
    // OpenClaw-style runtimes print their result as JSON on stdout; keep the
    // last 1 MiB of it and copy everything to the log.
    let stdout_task = child.stdout.take().map(|mut out| {
        let log_path = info.log_path.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut log = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&log_path)
                .await
                .ok();
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&buf[..n]).await;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 1 << 20 {
                    tail.drain(..tail.len() - (1 << 20));
                }
            }
            tail
        })
    });
    let ending = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => Ending::Exited(s),
            Err(_) => Ending::TimedOut,
        },
        _ = tokio::time::sleep(Duration::from_secs(timeout_secs)) => Ending::TimedOut,
        _ = async { while !*shutdown.borrow_and_update() { if shutdown.changed().await.is_err() { break; } } } => Ending::Shutdown,
    };
    let status = match ending {
        Ending::Exited(s) => Some(s),
        Ending::TimedOut | Ending::Shutdown => {
            signal_group(info.pid, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(s)) => Some(s),
                _ => {
                    signal_group(info.pid, Signal::SIGKILL);
                    child.wait().await.ok()
                }
            }
        }
    };
    // Whatever the leader did, nothing of its group may outlive the run —
    // nor anything that left the group (`setsid`) but carries the run's
    // marker in its environment (issue 13, defect 14).
    signal_group(info.pid, Signal::SIGKILL);
    let session = info.session_id.clone();
    let _ = tokio::task::spawn_blocking(move || super::recovery::kill_session_processes(&session))
        .await;
    let stdout_tail = match stdout_task {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let exit_code = status.and_then(|s| s.code()).map(i64::from);
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
    if json_result && outcome == Outcome::Succeeded {
        match parse_json_result(&stdout_tail) {
            Some(v) => {
                let aborted = v.get("aborted").and_then(|a| a.as_bool()).unwrap_or(false)
                    || v.get("status")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| s == "aborted" || s == "error");
                if aborted {
                    outcome = Outcome::Failed;
                }
                detail = serde_json::json!({
                    "runId": v.get("runId").or_else(|| v.get("run_id")),
                    "usage": v.get("usage").or_else(|| v.get("result").and_then(|r| r.get("usage"))),
                    "aborted": aborted,
                });
                if let Some(u) = detail.get("usage").filter(|u| !u.is_null()) {
                    let p = u
                        .get("prompt_tokens")
                        .or_else(|| u.get("input"))
                        .and_then(|x| x.as_i64())
                        .unwrap_or(0);
                    let c = u
                        .get("completion_tokens")
                        .or_else(|| u.get("output"))
                        .and_then(|x| x.as_i64())
                        .unwrap_or(0);
                    let _ = bb.add_session_usage(&info.session_id, p, c, 0.0).await;
                }
            }
            None => {
                outcome = Outcome::Failed;
                detail = serde_json::json!({ "error": "exit 0 but no JSON result on stdout" });
            }
        }
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
        detail = serde_json::json!({ "error": "the agent exited without finishing its task (no `bb done`/`bb fail`)" });
    }
    end_session(&bb, &info.session_id, outcome, exit_code, detail.clone()).await;
    metrics::counter!("moziplus_runs_total", "outcome" => outcome.as_str()).increment(1);
    if info.kind == RunKind::Work && still_held {
        if let Some(t) = task {
            let why = match outcome {
                Outcome::TimedOut => {
                    format!("run {} timed out after {timeout_secs} s", info.session_id)
                }
                Outcome::Killed => format!("run {} stopped by daemon shutdown", info.session_id),
                _ => format!("run {} ended {}: {}", info.session_id, outcome, detail),
            };
            // Shutdown is not the agent's fault: same round. Anything else costs one.
            give_back(&bb, &t, info.kind, &why, outcome != Outcome::Killed).await;
            if outcome == Outcome::Failed || outcome == Outcome::TimedOut {
                let _ = bb
                    .add_observation(ObservationLevel::Warn, &Actor::daemon(), Some(&t.id), &why)
                    .await;
            }
        }
    }
    tracing::info!(project = %info.project, task = %info.task_id, session = %info.session_id, outcome = %outcome, "run ended");
    d.runs_lock().remove(&info.session_id);
    d.remove_run_keys(&info.session_id);
    d.wake();
}

/// The last JSON object printed on stdout (OpenClaw `--json`).
fn parse_json_result(out: &[u8]) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(out);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        return Some(v);
    }
    text.lines().rev().find_map(|l| {
        serde_json::from_str::<serde_json::Value>(l.trim())
            .ok()
            .filter(|v| v.is_object())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted() {
        let t: Vec<String> = ["run", "--agent", "{agent}", "--file={brief}", "{unknown}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = render_command(&t, &[("agent", "a1".into()), ("brief", "/b.md".into())]);
        assert_eq!(out, ["run", "--agent", "a1", "--file=/b.md", "{unknown}"]);
    }

    #[test]
    fn json_result_is_the_last_object() {
        let out = b"progress...\n{\"runId\":\"r1\",\"aborted\":false}\n";
        let v = parse_json_result(out).unwrap();
        assert_eq!(v["runId"], "r1");
        assert!(parse_json_result(b"no json here").is_none());
    }
}
