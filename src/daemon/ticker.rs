//! The ticker (SPEC §5): every `tick_interval`, or at once when woken.
//!
//! One loop, so ticks never overlap: a wake during a tick is remembered by the
//! `Notify` and causes exactly one more tick afterwards. Each project is ticked
//! under its own time limit and its errors stay its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::projects::ProjectSlot;
use super::runs::{run_counts, start_run, RunKind};
use super::Daemon;
use crate::blackboard::{Actor, ActorKind, EventLevel, ObservationLevel, Review, TaskStatus};
use crate::config::agents::AgentDef;
use crate::review::{evaluate_round, ReviewerSpec, RoundState, SKILL_CHECK_PROTOCOL};

/// Runs until shutdown.
pub async fn run(d: Daemon) {
    let interval = Duration::from_secs(d.config().daemon.tick_interval);
    let mut shutdown = d.shutdown_signal();
    loop {
        if d.is_shutting_down() {
            break;
        }
        if !d.ticker_paused() {
            tick(&d).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = d.wake_notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One tick over every project. Public so tests and benchmarks can drive it.
pub async fn tick(d: &Daemon) {
    let started = Instant::now();
    if let Err(e) = d.projects().refresh(d).await {
        tracing::warn!(error = %e, "cannot re-read the project registry; using the last one");
    }
    // Projects are independent: tick several at once (their SQLite work runs
    // on each connection's own thread), each under its own time limit so one
    // stuck on a lock cannot stall the others. Scheduling decisions that share
    // the global limits are serialized by `schedule_lock`.
    let limit = Arc::new(tokio::sync::Semaphore::new(PROJECT_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for slot in d.projects().snapshot() {
        if d.is_shutting_down() {
            break;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let d = d.clone();
        set.spawn(async move {
            tick_one(&d, slot).await;
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics::histogram!("moziplus_tick_duration_seconds").record(ms / 1000.0);
    d.record_tick(ms);
}

/// How many projects are ticked at once.
const PROJECT_CONCURRENCY: usize = 8;

async fn tick_one(d: &Daemon, slot: ProjectSlot) {
    {
        let Some(bb) = slot.bb.clone() else { return };
        let id = slot.id.to_string();
        if let Some(e) = bb.file_problem() {
            // Removed or replaced under us: no tick writes into it. The slot
            // keeps the handle (readiness and the API report the problem);
            // marking it failed would let the next refresh re-create an
            // empty file in its place and carry on as if nothing happened.
            tracing::error!(project = %id, error = %e, "blackboard file gone; not ticking it");
            return;
        }
        let outcome = tokio::time::timeout(Duration::from_secs(10), tick_project(d, &slot)).await;
        let failure = match &outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the tick ran out of its 10 s".to_string()),
        };
        d.projects().update(&id, |s| match failure {
            None => {
                s.failed_ticks = 0;
                s.tick_error = None;
            }
            Some(why) => {
                s.failed_ticks += 1;
                s.tick_error = Some(why);
            }
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(project = %id, error = %e, "tick failed for project");
                if matches!(
                    e,
                    crate::blackboard::BbError::Corrupt { .. }
                        | crate::blackboard::BbError::Missing { .. }
                ) || e.to_string().contains("malformed")
                    || e.to_string().contains("not a database")
                {
                    bb.close().await;
                    d.projects().fail(&id, e.to_string());
                }
            }
            Err(_) => tracing::warn!(project = %id, "tick timed out for project"),
        }
    }
}

/// Whether `agent` takes work of `kind` (no kinds = any kind).
fn takes_kind(agent: &AgentDef, kind: &str) -> bool {
    agent.kinds.is_empty() || agent.kinds.iter().any(|k| k == kind)
}

fn allowed(slot: &ProjectSlot, agent: &str) -> bool {
    crate::service::rules::agent_allowed(slot.settings.agents.as_deref(), agent)
}

async fn tick_project(d: &Daemon, slot: &ProjectSlot) -> Result<(), crate::blackboard::BbError> {
    let bb = slot.bb.as_ref().expect("caller checked");
    let project = slot.id.as_str();
    let cfg = &slot.config.daemon;

    // One cheap query says what else is worth doing.
    let probe = bb.tick_probe().await?;

    // 1. Leases and approvals that ran out.
    if probe.leases_due {
        for (task, status) in bb.expire_leases().await? {
            tracing::info!(project, task, %status, "lease expired");
        }
    }
    if probe.decisions_due {
        bb.expire_decisions().await?;
    }

    // 2. Reviews: conclude rounds that have a verdict; route the others.
    if probe.in_review > 0 {
        conclude_reviews(d, slot).await?;
    }

    // 2b. The heartbeat policy (suspect / recover / dependency waits).
    if probe.working > 0 || probe.long_waits {
        let report = super::heartbeat::check(bb, d.agents(), &d.runs()).await?;
        if report != Default::default() {
            tracing::info!(project, ?report, "heartbeat policy acted");
        }
    }

    // 2c. Experience (SPEC §9): lessons unreferenced for `expire_days` are
    // deprecated; a tag with `distill_threshold` active lessons gets one
    // distill task (the blackboard guarantees one, even across ticks).
    let exp = &slot.config.experience;
    let expired = bb.expire_experiences(exp.expire_days).await?;
    if !expired.is_empty() {
        tracing::info!(project, ?expired, "experiences deprecated");
    }
    if !crate::skills::distill::create_distill_tasks(bb, exp)
        .await?
        .is_empty()
    {
        d.wake();
    }

    // 3. Ready work, most urgent then oldest, within the limits. The query
    // runs outside the schedule lock; the counts are taken again under it.
    let max_global = d.config().daemon.max_global_agents as usize;
    if probe.open > 0 && run_counts(d).0 < max_global && !d.is_shutting_down() {
        let ready = bb.ready_tasks((max_global as i64) * 4 + 16).await?;
        metrics::gauge!("moziplus_ready_tasks", "project" => project.to_string())
            .set(ready.len() as f64);
        // Claim → session row → spawn → supervision is one step that the
        // tick's time limit must not split (issue 13, defect 1): cancelled
        // between the claim and the supervisor, a tick left a task `working`
        // with no run, or an agent nobody supervised. So the step runs in its
        // own task; the tick waits for it, and if the tick is cancelled the
        // step still finishes (holding the schedule lock until it has).
        tokio::spawn(start_ready(d.clone(), slot.clone(), ready))
            .await
            .map_err(|e| crate::blackboard::BbError::Io(std::io::Error::other(e)))??;
    }

    // 4. Zombie detection: outstanding work but nothing happened.
    // (Events written by this tick count as progress on the next one.)
    let last = probe.last_event_id;
    let outstanding = probe.open;
    let mut alert = false;
    d.projects().update(project, |s| {
        if outstanding > 0 && last == s.last_event_id {
            s.zombie_ticks += 1;
            if s.zombie_ticks >= cfg.zombie_threshold {
                alert = true;
                s.zombie_ticks = 0;
            }
        } else {
            s.zombie_ticks = 0;
        }
        s.last_event_id = last;
    });
    if alert {
        let body = format!(
            "zombie: {outstanding} open task(s) and no state change for {} ticks",
            cfg.zombie_threshold
        );
        bb.add_observation(ObservationLevel::Alert, &Actor::daemon(), None, &body)
            .await?;
        bb.record_event(
            EventLevel::Urgent,
            "daemon.zombie",
            None,
            &Actor::daemon(),
            json!({ "open_tasks": outstanding }),
        )
        .await?;
        // The alert itself is an event; do not count it as progress.
        let last = bb.last_event_id().await?;
        d.projects().update(project, |s| s.last_event_id = last);
    }
    Ok(())
}

/// Claims ready tasks for eligible agents and starts their runs, under the
/// schedule lock (the limits are shared by every project). Runs in a task of
/// its own: see step 3 of [`tick_project`].
async fn start_ready(
    d: Daemon,
    slot: ProjectSlot,
    ready: Vec<crate::blackboard::Task>,
) -> Result<(), crate::blackboard::BbError> {
    let bb = slot.bb.as_ref().expect("caller checked");
    let project = slot.id.as_str();
    let cfg = &slot.config.daemon;
    let timeout = cfg.task_timeout;
    let max_global = d.config().daemon.max_global_agents as usize;
    let project_cap = slot
        .settings
        .max_global_agents
        .map(|c| c as usize)
        .unwrap_or(max_global);
    let _guard = d.schedule_lock_owned().await;
    let (running, per_project, mut busy) = run_counts(&d);
    let mut free = max_global
        .saturating_sub(running)
        .min(project_cap.saturating_sub(*per_project.get(project).unwrap_or(&0)));
    for task in ready {
        if free == 0 || d.is_shutting_down() {
            break;
        }
        let candidates: Vec<&AgentDef> = d
            .agents()
            .agents
            .iter()
            .filter(|a| match &task.assignee {
                Some(x) => *x == a.id,
                None => takes_kind(a, &task.kind),
            })
            .filter(|a| allowed(&slot, &a.id))
            .filter(|a| *busy.get(&a.id).unwrap_or(&0) < cfg.max_per_agent as usize)
            .filter(|a| !d.runtime_health().held(project, &a.id, bb.now()))
            .collect();
        let Some(agent) = candidates
            .into_iter()
            .min_by_key(|a| *busy.get(&a.id).unwrap_or(&0))
        else {
            continue;
        };
        // Claim for the agent; the lease outlives the run's own timeout so
        // the supervisor, not lease expiry, ends a slow run.
        let holder = Actor {
            name: agent.id.clone(),
            kind: ActorKind::Daemon,
        };
        let lease_ms = ((timeout + cfg.kill_grace + 60) * 1000) as i64;
        let claimed = match bb.claim_task(&task.id, &holder, lease_ms).await {
            Ok(t) => t,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        };
        start_run(&d, bb, &claimed, agent, RunKind::Work, timeout).await;
        *busy.entry(agent.id.clone()).or_insert(0) += 1;
        free -= 1;
    }
    Ok(())
}

/// Review rounds (SPEC §9): for every task in `review`, applies its protocol
/// to the reviews of the current round — concludes the round when it is
/// decided, starts reviewer runs for open seats, or escalates doubtful
/// verdicts to the senior reviewer. `distill` tasks (protocol `skill-check`)
/// are checked by the daemon itself (`skills::distill::check_output`).
async fn conclude_reviews(
    d: &Daemon,
    slot: &ProjectSlot,
) -> Result<(), crate::blackboard::BbError> {
    let bb = slot.bb.as_ref().expect("caller checked");
    let in_review = bb
        .list_tasks(&crate::blackboard::TaskFilter {
            status: Some(TaskStatus::Review),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    for task in in_review {
        let name = task.review_protocol.clone().unwrap_or_default();
        if name == SKILL_CHECK_PROTOCOL {
            crate::skills::distill::check_output(d.home(), bb, &task).await?;
            continue;
        }
        let Some(protocol) = d.protocols().get(&name) else {
            let why = format!(
                "unknown review protocol {name:?}; config/review_protocols/ defines: {}",
                d.protocols().names().join(", ")
            );
            bb.fail_task(&task.id, &Actor::daemon(), &why).await?;
            continue;
        };
        if let Some(why) = &protocol.unusable {
            // The team cannot staff this protocol: the task waits in review
            // (said once per round) until agents.yaml is fixed and the
            // daemon restarted; nothing else is held.
            if d.runtime_health()
                .note_once(format!("{}:{}:{}:protocol", slot.id, task.id, task.round))
            {
                let body = format!(
                    "{} waits in review: review protocol {:?} cannot be used ({why}); add the agents it needs to config/agents.yaml and restart the daemon",
                    task.id, protocol.name
                );
                bb.add_observation(
                    ObservationLevel::Warn,
                    &Actor::daemon(),
                    Some(&task.id),
                    &body,
                )
                .await?;
            }
            continue;
        }
        let round: Vec<Review> = bb
            .reviews(&task.id)
            .await?
            .into_iter()
            .filter(|r| r.round == task.round)
            .collect();
        let state = evaluate_round(protocol, &round);
        let reviewing: Vec<String> = d
            .runs()
            .into_iter()
            .filter(|r| r.project == slot.id.as_str() && r.task_id == task.id)
            .map(|r| r.agent)
            .collect();
        match state {
            RoundState::Concluded(outcome) => {
                let why = format!("protocol {}: {}", protocol.name, outcome.summary);
                match bb
                    .conclude_review_round(
                        &task.id,
                        Some(task.round),
                        outcome.approved,
                        Some(protocol.max_rounds),
                        &Actor::daemon(),
                        &why,
                    )
                    .await
                {
                    Ok(c) => {
                        tracing::info!(project = %slot.id, task = %task.id, conclusion = ?c, "review round concluded")
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
            RoundState::AwaitingReviewers { .. } => {
                // Seats already taken by a review or a running review run.
                let mut taken: Vec<String> = round.iter().map(|r| r.reviewer.clone()).collect();
                taken.extend(reviewing.iter().cloned());
                let mut open: Vec<&ReviewerSpec> = protocol.reviewers.iter().collect();
                for who in &taken {
                    if let Some(def) = d.agents().agents.iter().find(|a| a.id == *who) {
                        if let Some(i) = open.iter().position(|s| s.matches(def)) {
                            open.remove(i);
                            continue;
                        }
                    }
                    // A reviewer outside the protocol's seats still fills one.
                    if !open.is_empty() {
                        open.pop();
                    }
                }
                for spec in open {
                    if !start_reviewer(d, slot, &task, spec, &taken).await? {
                        break;
                    }
                    // start_reviewer records whom it started in `d.runs()`.
                    taken = d
                        .runs()
                        .into_iter()
                        .filter(|r| r.project == slot.id.as_str() && r.task_id == task.id)
                        .map(|r| r.agent)
                        .chain(round.iter().map(|r| r.reviewer.clone()))
                        .collect();
                }
            }
            RoundState::AwaitingSenior { doubtful } => {
                if !reviewing.is_empty() {
                    continue;
                }
                let spec = protocol
                    .senior_reviewer
                    .as_ref()
                    .expect("AwaitingSenior needs one");
                let taken: Vec<String> = round.iter().map(|r| r.reviewer.clone()).collect();
                let can_ever = d.agents().agents.iter().any(|a| {
                    spec.matches(a)
                        && !taken.contains(&a.id)
                        && Some(a.id.as_str()) != task.claimed_by.as_deref()
                        && allowed(slot, &a.id)
                });
                if !can_ever {
                    // Nobody left who could answer: the verdicts stand as given.
                    let mut lenient = protocol.clone();
                    lenient.senior_reviewer = None;
                    if let RoundState::Concluded(o) = evaluate_round(&lenient, &round) {
                        let why = format!(
                            "protocol {}: {} (no senior reviewer ({spec}) other than this round's reviewers is available; low-confidence verdicts stand)",
                            protocol.name, o.summary
                        );
                        bb.add_observation(
                            ObservationLevel::Warn,
                            &Actor::daemon(),
                            Some(&task.id),
                            &why,
                        )
                        .await?;
                        match bb
                            .conclude_review_round(
                                &task.id,
                                Some(task.round),
                                o.approved,
                                Some(protocol.max_rounds),
                                &Actor::daemon(),
                                &why,
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if e.is_conflict() => {}
                            Err(e) => return Err(e),
                        }
                    }
                    continue;
                }
                if start_reviewer(d, slot, &task, spec, &taken).await? {
                    let body = format!(
                        "{} round {}: confidence of {} below {:.2}; escalated to the senior reviewer ({spec})",
                        task.id,
                        task.round,
                        doubtful.join(", "),
                        protocol.confidence_threshold
                    );
                    bb.add_observation(
                        ObservationLevel::Info,
                        &Actor::daemon(),
                        Some(&task.id),
                        &body,
                    )
                    .await?;
                    bb.record_event(
                        EventLevel::Attention,
                        "review.escalated",
                        Some(&task.id),
                        &Actor::daemon(),
                        json!({ "round": task.round, "doubtful": doubtful, "threshold": protocol.confidence_threshold }),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// Starts a review run on `task` by an agent that fits `spec`, is not its
/// author, has not taken a seat this round (`taken`), is allowed on the
/// project and is under its limits. Returns false when the limits are full
/// or nobody fits right now.
async fn start_reviewer(
    d: &Daemon,
    slot: &ProjectSlot,
    task: &crate::blackboard::Task,
    spec: &ReviewerSpec,
    taken: &[String],
) -> Result<bool, crate::blackboard::BbError> {
    let bb = slot.bb.as_ref().expect("caller checked");
    let guard = d.schedule_lock_owned().await;
    let (running, per_project, per_agent) = run_counts(d);
    let project_cap = slot
        .settings
        .max_global_agents
        .unwrap_or(d.config().daemon.max_global_agents) as usize;
    if running >= d.config().daemon.max_global_agents as usize
        || *per_project.get(slot.id.as_str()).unwrap_or(&0) >= project_cap
    {
        return Ok(false);
    }
    let reviewer = d.agents().agents.iter().find(|a| {
        spec.matches(a)
            && Some(a.id.as_str()) != task.claimed_by.as_deref()
            && !taken.contains(&a.id)
            && allowed(slot, &a.id)
            && *per_agent.get(&a.id).unwrap_or(&0) < slot.config.daemon.max_per_agent as usize
            && !d.runtime_health().held(slot.id.as_str(), &a.id, bb.now())
    });
    let Some(agent) = reviewer.cloned() else {
        return Ok(false);
    };
    // Session row → spawn → supervision in a task the tick's time limit
    // cannot cancel (see step 3 of `tick_project`).
    let (d, bb, task) = (d.clone(), bb.clone(), task.clone());
    let timeout = slot.config.daemon.task_timeout;
    tokio::spawn(async move {
        start_run(&d, &bb, &task, &agent, RunKind::Review, timeout).await;
        drop(guard);
    })
    .await
    .map_err(|e| crate::blackboard::BbError::Io(std::io::Error::other(e)))?;
    Ok(true)
}
