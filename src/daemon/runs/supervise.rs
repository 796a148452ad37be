//! A run's supervisor: it owns the child, tees its output into the session
//! log and the live transcript, enforces the timeout and records the end.

use super::*;
use crate::runtime::transcript::ActivityKind;

/// How often the end of a run is written before giving up when the database
/// fails (held by another process past its busy timeout, say): a run's end
/// must not be lost to a moment of contention.
pub(super) const WRITE_ATTEMPTS: u64 = 30;

/// Ends a session, retrying while the write fails (see [`WRITE_ATTEMPTS`]).
pub(super) async fn end_session(
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

pub(super) enum Ending {
    Exited(std::process::ExitStatus),
    TimedOut,
    Shutdown,
}

/// Lines of stderr kept for the observation of a failed run.
pub(super) const STDERR_TAIL: usize = 8;
/// `session.activity` events published per run; the rest stay in the log.
pub(super) const MAX_ACTIVITY_EVENTS: usize = 500;
/// How long output is still read after the process group was killed.
pub(super) const DRAIN: Duration = Duration::from_secs(3);

/// The session log: stdout and stderr as they come (one writer, appending,
/// so neither overwrites the other) and, for structured CLIs, each
/// normalised activity as a `[mozi:activity] {json}` line.
pub(super) struct SessionLog {
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
pub(super) struct Live<'a> {
    d: &'a Daemon,
    bb: &'a Blackboard,
    info: &'a RunInfo,
    log: SessionLog,
    published: usize,
    structured: bool,
}

impl Live<'_> {
    async fn publish(&mut self, acts: Vec<Activity>) {
        for a in acts {
            // The agent's "doing now" line (the Agents view).
            let now = match a.kind {
                ActivityKind::ToolCall => Some(format!(
                    "{}: {}",
                    a.tool.as_deref().unwrap_or("tool"),
                    a.text
                )),
                ActivityKind::AssistantText | ActivityKind::Error if !a.text.trim().is_empty() => {
                    Some(a.text.clone())
                }
                _ => None,
            };
            if let Some(line) = now {
                let first = line.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                self.d
                    .set_activity(&self.info.session_id, first.chars().take(200).collect());
            }
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

pub(super) async fn supervise(
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
        d: &d,
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
    let _ = tokio::task::spawn_blocking(move || {
        crate::daemon::process::kill_session_processes(&session)
    })
    .await;
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
    // What the run asked of the gateway: the demand estimate of admission
    // by quota (`daemon::quota`) reads it back.
    let calls = d.quota().take_calls(&info.session_id);
    let budget_refusal = d.quota().take_budget_refusal(&info.session_id);
    if calls.calls > 0 {
        if let Err(e) = bb
            .add_session_calls(&info.session_id, calls.calls, calls.wait_ms)
            .await
        {
            tracing::warn!(session = %info.session_id, error = %e, "cannot book the run's LLM calls");
        }
        d.quota().forget_demand(&info.agent);
    }
    // Pending again and not by the daemon's hand: the run gave its task
    // back itself (`bb release`), without progress.
    let released = !still_held
        && task
            .as_ref()
            .is_some_and(|t| t.status == TaskStatus::Pending);
    end_session(&bb, &info.session_id, outcome, exit_code, detail.clone()).await;
    metrics::counter!("moziplus_runs_total", "outcome" => outcome.as_str()).increment(1);
    if info.kind == RunKind::Work && released {
        // Its next run waits the backoff too: an agent that always releases
        // was re-run at once (issue 23, finding 11: 291 sessions in 80 s).
        hold_released(&d, &bb, &info.task_id).await;
    }
    if info.kind == RunKind::Work && still_held && budget_refusal.is_some() {
        // The gateway refused a call of the run for budget and ended it: the
        // task waits for an operator, blocked with the reason; the run
        // costs no round.
        let reason = format!("budget: {}", budget_refusal.as_deref().unwrap_or_default());
        if let Err(e) = bb
            .set_status(
                &info.task_id,
                TaskStatus::Blocked,
                &Actor::daemon(),
                &reason,
            )
            .await
        {
            tracing::error!(project = %info.project, task = %info.task_id, error = %e, "cannot block the task of a run refused for budget");
        }
        let _ = bb
            .add_observation(
                ObservationLevel::Warn,
                &Actor::daemon(),
                Some(&info.task_id),
                &format!("run {} ended: {reason}", info.session_id),
            )
            .await;
    } else if info.kind == RunKind::Work && still_held {
        if let Some(t) = task {
            let end = RunEnd {
                outcome,
                detail: &detail,
                exit_code,
                stderr_text: &stderr_text,
                timeout_secs,
                quota_refused: calls.refused,
            };
            give_back_after_run(&d, &bb, &info, &t, end).await;
        }
    }
    if let Some(ws) = &info.workspace {
        clean_up_run(&d, ws, &info.tmpdir).await;
    }
    // A run that did not succeed is the operator's business: WARN, not INFO.
    if outcome == Outcome::Succeeded {
        tracing::info!(project = %info.project, task = %info.task_id, session = %info.session_id, outcome = %outcome, "run ended");
    } else {
        tracing::warn!(project = %info.project, task = %info.task_id, session = %info.session_id, agent = %info.agent, outcome = %outcome, "run ended without success");
    }
    d.runs_lock().remove(&info.session_id);
    if let Some(m) = d.membership() {
        m.free_run_slot(&info.project, &info.task_id, &info.agent)
            .await;
    }
    d.set_activity(&info.session_id, String::new());
    d.remove_run_keys(&info.session_id);
    // The task may have ended with this run: its worktree goes now.
    crate::daemon::worktrees::reap_workspaces(&d, &bb).await;
    d.wake();
}

/// Reads the run's output until the run is over: stdout to the log and the
/// transcript, stderr to the log with its last lines kept; a timeout or
/// shutdown signals the group (SIGTERM, SIGKILL after `kill_grace`), and the
/// group is SIGKILLed once the leader exits.
pub(super) async fn watch(
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
pub(super) fn verdict(
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
pub(super) struct RunEnd<'a> {
    outcome: Outcome,
    detail: &'a serde_json::Value,
    exit_code: Option<i64>,
    stderr_text: &'a str,
    timeout_secs: u64,
    /// Calls of the run the gateway refused for quota (its own 429/503:
    /// the lane's queue wait ran out or the queue was full).
    quota_refused: u64,
}

/// A work run ended still holding its own claim: the task goes back (a
/// round for the agent's failures, none for a shutdown), with why.
pub(super) async fn give_back_after_run(
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
        quota_refused,
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
    // Shutdown is not the agent's fault: same round. Nor is a failure after
    // the gateway refused the run's calls for quota (its lane's queue wait
    // ran out): the task goes back in the same round, after the backoff.
    // Anything else costs one.
    let starved = outcome == Outcome::Failed && quota_refused > 0;
    if starved {
        why.push_str(&format!(
            "; the gateway refused {quota_refused} of its LLM calls for quota, so this round is not charged"
        ));
    }
    let retry_backoff = &d.config().daemon.retry_backoff;
    let setback = match outcome {
        Outcome::Killed => Setback::RunLost,
        Outcome::Failed if starved => Setback::QuotaRefused { retry_backoff },
        Outcome::Failed | Outcome::TimedOut => Setback::RunFailed { retry_backoff },
        Outcome::Succeeded | Outcome::Lost => Setback::RunEnded,
    };
    give_back(d, bb, t, info.kind, &why, setback).await;
    if outcome == Outcome::Failed || outcome == Outcome::TimedOut {
        let _ = bb
            .add_observation(ObservationLevel::Warn, &Actor::daemon(), Some(&t.id), &why)
            .await;
    }
}
