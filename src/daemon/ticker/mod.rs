//! The ticker: every `tick_interval`, or at once when woken.
//!
//! One loop, so ticks never overlap: a wake during a tick is remembered by the
//! `Notify` and causes exactly one more tick afterwards, and a manual tick
//! (`POST /api/daemon/tick`, [`Daemon::tick_now`]) is a request to the same
//! loop, answered when a tick that began after it has ended. Each project is
//! ticked under its own time limit and its errors stay its own.
//!
//! Whom a task or a review seat goes to is decided by the pure functions of
//! [`choose`]; review rounds are driven by [`reviews`].

pub mod choose;
mod reviews;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::cluster::{Leadership, Membership, Room};
use super::projects::{OpenProject, ProjectSlot};
use super::runs::{run_counts, start_run, RunKind};
pub use super::tick_error::TickError;
use super::{Daemon, TickRequest};
use crate::blackboard::{Actor, ActorKind, EventLevel, ObservationLevel};
use crate::service::WaitingFor;
use choose::Team;

/// Why the tick did not start each ready task it looked at.
type Judged = std::collections::BTreeMap<String, Vec<WaitingFor>>;

/// Runs until shutdown. `requests` are the manual ticks
/// ([`Daemon::tick_now`]); they tick even while the ticker is paused, as
/// the control route always did.
pub async fn run(d: Daemon, mut requests: mpsc::UnboundedReceiver<TickRequest>) {
    let interval = Duration::from_secs(d.config().daemon.tick_interval);
    let mut shutdown = d.shutdown_signal();
    let mut waiting: Vec<TickRequest> = Vec::new();
    loop {
        if d.is_shutting_down() {
            break;
        }
        // Every request in by now is answered by this tick; one that comes
        // in while it runs waits for the next (it must see its own effects).
        while let Ok(r) = requests.try_recv() {
            waiting.push(r);
        }
        let started = chrono::Utc::now().timestamp_millis();
        if !d.ticker_paused() || !waiting.is_empty() {
            tick(&d).await;
        }
        for r in waiting.drain(..) {
            let _ = r.send(());
        }
        // No longer than until the next schedule slot is due, or the next
        // hold ends (a retry's backoff, a held agent): a backoff of 10 s
        // starts the next run 10 s later, not at the next tick.
        let now = chrono::Utc::now().timestamp_millis();
        let next = [d.next_schedule_due(), d.next_wake_after(started)]
            .into_iter()
            .flatten()
            .min();
        let sleep = match next {
            Some(due) => interval.min(Duration::from_millis((due - now).max(0) as u64)),
            None => interval,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = d.wake_notified() => {}
            Some(r) = requests.recv() => waiting.push(r),
            _ = shutdown.changed() => {}
        }
    }
    // Requests still queued are dropped with the receiver: their callers
    // learn that the ticker stopped.
}

/// One tick over every project. The daemon calls it only from [`run`], which
/// is what keeps ticks from overlapping; it is public so tests and
/// benchmarks can drive a daemon whose loop is not running.
pub async fn tick(d: &Daemon) {
    if let Some(hook) = d.tick_hook() {
        hook().await;
    }
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
        let Some(proj) = slot.open(d.home()) else {
            return;
        };
        let bb = proj.bb().clone();
        let id = proj.id.to_string();
        if let Some(e) = bb.file_problem() {
            // Removed or replaced under us: no tick writes into it. The slot
            // keeps the handle (readiness and the API report the problem);
            // marking it failed would let the next refresh re-create an
            // empty file in its place and carry on as if nothing happened.
            tracing::error!(project = %id, error = %e, "blackboard file gone; not ticking it");
            return;
        }
        let outcome = tokio::time::timeout(Duration::from_secs(10), tick_project(d, &proj)).await;
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
                if e.file_is_broken() {
                    bb.close().await;
                    d.projects().fail(&id, e.to_string());
                }
            }
            Err(_) => tracing::warn!(project = %id, "tick timed out for project"),
        }
    }
}

async fn tick_project(d: &Daemon, proj: &OpenProject) -> Result<(), TickError> {
    let (bb, service) = (proj.bb(), &proj.service);
    let project = proj.id.as_str();

    // One cheap query says what else is worth doing.
    let probe = bb.tick_probe().await?;

    // The cluster's singleton duties are the leader's (a daemon alone on
    // its files is its own leader), done through a fenced blackboard: if
    // the lease ran out meanwhile, their writes are refused.
    let lead = match d.leadership() {
        Leadership::Alone => Some(proj.clone()),
        Leadership::Leader { id, epoch } => Some(proj.fenced(&id, epoch)),
        Leadership::Follower => None,
    };

    if let Some(lp) = &lead {
        // 1. Leases and approvals that ran out.
        if probe.leases_due {
            for (task, status) in lp.service.expire_leases().await? {
                tracing::info!(project, task, %status, "lease expired");
            }
        }
        if probe.decisions_due {
            lp.service.expire_decisions().await?;
        }
        // 1a. Runs of daemons that are gone go back (a store's cluster only).
        if probe.working > 0 {
            super::recovery::give_back_runs_of_gone_daemons(d, &lp.service).await;
        }

        // 1b. Schedules: record every due slot (its task, or why it was
        // skipped) before the ready tasks are read, so a fired task can
        // start in this tick.
        if probe.schedules > 0 {
            super::schedules::fire_due(d, lp).await?;
        } else {
            d.set_schedule_due(project, None);
        }
    }

    // 2. Reviews: conclude rounds that have a verdict; route the others.
    if probe.in_review > 0 {
        reviews::conclude_reviews(d, proj).await?;
    }

    // 2b. The heartbeat policy (suspect / recover / dependency waits).
    if probe.working > 0 || probe.long_waits {
        let report = super::heartbeat::check(service, d.agents(), &d.runs()).await?;
        if report != Default::default() {
            tracing::info!(project, ?report, "heartbeat policy acted");
        }
    }

    // 2c. Experience: lessons unreferenced for `expire_days` are
    // deprecated; a tag with `distill_threshold` active lessons gets one
    // distill task (the blackboard guarantees one, even across ticks).
    if let Some(lp) = lead.as_ref().filter(|_| probe.active_lessons > 0) {
        let exp = &lp.config.experience;
        let expired = lp.bb().expire_experiences(exp.expire_days).await?;
        if !expired.is_empty() {
            tracing::info!(project, ?expired, "experiences deprecated");
        }
        if !crate::skills::distill::create_distill_tasks(lp.bb(), exp)
            .await?
            .is_empty()
        {
            d.wake();
        }
    }

    // 2d. Worktrees of tasks that ended (no I/O when there are none).
    super::worktrees::reap_workspaces(d, bb).await;

    // 3. Ready work, most urgent then oldest, within the limits. The query
    // runs outside the schedule lock; the counts are taken again under it.
    // Urgent work may also take the reserved slots, so the query runs while
    // any slot is free (the non-urgent limit is applied per task).
    let max_global = d.config().daemon.max_global_agents as usize;
    let reserved = d.config().daemon.reserved_urgent_slots as usize;
    if probe.open > 0 && run_counts(d).0 < max_global + reserved && !d.is_shutting_down() {
        let window = (max_global as i64) * 4 + 16;
        let ready = bb.ready_tasks(window, 0).await?;
        metrics::gauge!("moziplus_ready_tasks", "project" => project.to_string())
            .set(ready.len() as f64);
        // Claim → session row → spawn → supervision is one step that the
        // tick's time limit must not split (issue 13, defect 1): cancelled
        // between the claim and the supervisor, a tick left a task `working`
        // with no run, or an agent nobody supervised. So the step runs in its
        // own task; the tick waits for it, and if the tick is cancelled the
        // step still finishes (holding the schedule lock until it has).
        let (judged, looked_at) =
            tokio::spawn(start_ready(d.clone(), proj.clone(), ready, window)).await??;
        // Pages left unread leave ready tasks unseen: they wait behind them.
        let unjudged = match looked_at {
            LookedAt::All => Vec::new(),
            LookedAt::First(n) => crate::daemon::waits::beyond_the_window(&judged, n),
        };
        d.waits()
            .publish(d.home(), d.ticker_paused(), project, judged, unjudged);
    } else {
        // Nothing was judged for quota this tick (no open work, or every
        // slot taken): no task of this project waits for quota now.
        d.quota().set_held(project, Vec::new());
        let (running, _, _) = run_counts(d);
        let unjudged = if probe.open > 0 && !d.is_shutting_down() {
            vec![WaitingFor::RunSlots {
                running,
                cap: max_global + reserved,
            }]
        } else {
            Vec::new()
        };
        d.waits().publish(
            d.home(),
            d.ticker_paused(),
            project,
            Default::default(),
            unjudged,
        );
    }

    // 4. Zombie detection: outstanding work but nothing happened.
    match &lead {
        Some(lp) => detect_zombie(d, lp, probe.open, probe.last_event_id).await,
        None => Ok(()),
    }
}

/// Gives back the cluster place of a run that did not start (its runtime
/// missing, its workspace refused): a run that did is in the daemon's list,
/// and its supervisor gives the place back when it ends.
pub(super) async fn free_unless_running(
    d: &Daemon,
    m: &Membership,
    project: &str,
    task: &str,
    agent: &str,
) {
    let running = d
        .runs_lock()
        .values()
        .any(|r| r.project == project && r.task_id == task && r.agent == agent);
    if !running {
        m.free_run_slot(project, task, agent).await;
    }
}

/// Counts ticks with open tasks but no new event; at
/// `daemon.zombie_threshold` of them, says so (an alert and an urgent
/// event). Events written by this tick count as progress on the next one.
async fn detect_zombie(
    d: &Daemon,
    proj: &OpenProject,
    outstanding: i64,
    last: i64,
) -> Result<(), TickError> {
    let bb = proj.bb();
    let project = proj.id.as_str();
    let cfg = &proj.config.daemon;
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
        let side = d.waits().side(d.ticker_paused(), proj.id.as_str());
        let stuck = super::waits::stuck(proj, &side).await;
        let body = format!(
            "zombie: {outstanding} open task(s) and no state change for {} ticks{}",
            cfg.zombie_threshold,
            super::waits::stuck_text(&stuck)
        );
        bb.add_observation(ObservationLevel::Alert, &Actor::daemon(), None, &body)
            .await?;
        bb.record_event(
            EventLevel::Urgent,
            "daemon.zombie",
            None,
            &Actor::daemon(),
            json!({ "open_tasks": outstanding, "waiting": stuck }),
        )
        .await?;
        // The alert itself is an event; do not count it as progress.
        let last = bb.last_event_id().await?;
        d.projects().update(project, |s| s.last_event_id = last);
    }
    Ok(())
}

/// Pages of ready tasks one tick may read (each `window` tasks long) while
/// run slots stay free: the tasks behind a page whose tasks cannot start
/// (their agent busy, none takes their kind) must still get their turn.
const READY_PAGES_PER_TICK: usize = 4;

/// How many of the ready tasks a tick looked at.
enum LookedAt {
    All,
    /// The first `n`; more were ready behind them.
    First(usize),
}

/// What one tick's starts have counted so far, carried from page to page.
struct Starting<'a> {
    admission: super::admission::Admission<'a>,
    admission_on: bool,
    judged: Judged,
    /// A task found no slot: the less urgent after it only get their reason.
    no_slot: bool,
    running: usize,
    in_project: usize,
    busy: HashMap<String, usize>,
}

/// Claims ready tasks for eligible agents and starts their runs, under the
/// schedule lock (the limits are shared by every project). Runs in a task of
/// its own: see step 3 of [`tick_project`]. Returns why each ready task it
/// did not start waits, and how many it looked at: the first page is
/// `first_page`; while slots stay free, up to [`READY_PAGES_PER_TICK`]
/// pages of `window` tasks are read.
async fn start_ready(
    d: Daemon,
    proj: OpenProject,
    first_page: Vec<crate::blackboard::Task>,
    window: i64,
) -> Result<(Judged, LookedAt), TickError> {
    let bb = proj.bb();
    let project = proj.id.as_str();
    let max_global = d.config().daemon.max_global_agents as usize;
    let reserved = d.config().daemon.reserved_urgent_slots as usize;
    let _guard = d.schedule_lock_owned().await;
    let (running, per_project, busy) = run_counts(&d);
    let admission_on = d.config().daemon.admission.enabled;
    let live: Vec<super::runs::RunInfo> = if admission_on {
        d.runs_lock().values().cloned().collect()
    } else {
        Vec::new()
    };
    let mut st = Starting {
        admission: super::admission::Admission::new(&d, &live),
        admission_on,
        judged: Judged::new(),
        no_slot: false,
        running,
        in_project: *per_project.get(project).unwrap_or(&0),
        busy,
    };
    let mut page = first_page;
    let mut pages = 1;
    let mut looked_at = 0;
    let looked = loop {
        let full = page.len() as i64 >= window;
        looked_at += page.len();
        start_page(&mut st, &d, &proj, page).await?;
        if !full {
            break LookedAt::All;
        }
        // Every slot taken, or enough read for one tick: the rest wait.
        if st.no_slot
            || st.running >= max_global + reserved
            || pages >= READY_PAGES_PER_TICK
            || d.is_shutting_down()
        {
            break LookedAt::First(looked_at);
        }
        page = bb.ready_tasks(window, looked_at as i64).await?;
        pages += 1;
    };
    for held in st.admission.finish(project) {
        tracing::info!(project, task = %held.task, reason = %held.reason, "task held for quota");
        bb.record_event(
            EventLevel::Attention,
            "task.held",
            Some(&held.task),
            &Actor::daemon(),
            json!({ "reason": held.reason, "lane": held.lane, "agent": held.agent }),
        )
        .await?;
    }
    Ok((st.judged, looked))
}

/// One page of ready tasks, most urgent first: each started, or given why
/// it waits.
async fn start_page(
    st: &mut Starting<'_>,
    d: &Daemon,
    proj: &OpenProject,
    ready: Vec<crate::blackboard::Task>,
) -> Result<(), TickError> {
    let (bb, service) = (proj.bb(), &proj.service);
    let project = proj.id.as_str();
    let cfg = &proj.config.daemon;
    let timeout = cfg.task_timeout;
    let max_global = d.config().daemon.max_global_agents as usize;
    let project_cap = proj
        .settings
        .max_global_agents
        .map(|c| c as usize)
        .unwrap_or(max_global);
    let reserved = d.config().daemon.reserved_urgent_slots as usize;
    let reserve_for_high = d.config().daemon.reserve_for_high;
    for task in ready {
        if d.is_shutting_down() {
            break;
        }
        // Ready tasks come most urgent first: once a task finds no slot,
        // none after it will (the reserved slots are for the urgent).
        let may_reserve = task.priority == crate::blackboard::Priority::Urgent
            || (reserve_for_high && task.priority == crate::blackboard::Priority::High);
        let extra = if may_reserve { reserved } else { 0 };
        if st.no_slot || st.running >= max_global + extra || st.in_project >= project_cap + extra {
            let (running, cap) = if st.running >= max_global + extra {
                (st.running, max_global + extra)
            } else {
                (st.in_project, project_cap + extra)
            };
            st.judged
                .insert(task.id.clone(), vec![WaitingFor::RunSlots { running, cap }]);
            // The rest only get their reason (no more starts this tick).
            st.no_slot = st.no_slot || !may_reserve;
            continue;
        }
        let team = Team {
            agents: &d.agents().agents,
            allowed: proj.settings.agents.as_deref(),
            busy: &st.busy,
            max_per_agent: cfg.max_per_agent as usize,
            held: |agent: &str| d.runtime_health().held(project, agent, bb.now()),
        };
        let Some(agent) = team.for_work(task.assignee.as_deref(), &task.kind) else {
            let (busy_agents, held_agents) = team.why_nobody(task.assignee.as_deref(), &task.kind);
            let mut why = Vec::new();
            for a in held_agents {
                if let Some(p) = d.runtime_health().holding(project, &a.id, bb.now()) {
                    why.push(WaitingFor::AgentHeld {
                        agent: a.id.clone(),
                        until: p.retry_at_ms,
                        failures: p.failures,
                        reason: p.reason,
                    });
                }
            }
            if !busy_agents.is_empty() {
                why.push(WaitingFor::AgentBusy {
                    agents: busy_agents.iter().map(|a| a.id.clone()).collect(),
                    max_per_agent: cfg.max_per_agent as usize,
                });
            }
            // Nobody at all: the board's reason says which (an unknown
            // assignee, a kind no agent takes).
            if !why.is_empty() {
                st.judged.insert(task.id.clone(), why);
            }
            continue;
        };
        if st.admission_on {
            if let super::admission::Verdict::Hold(reason) =
                st.admission.judge(bb, &task, agent).await
            {
                st.judged
                    .insert(task.id.clone(), vec![WaitingFor::Quota(reason)]);
                continue;
            }
        }
        // On a store shared by several daemons, the run's place across the
        // cluster first: the per-agent and cluster limits at this moment,
        // not as of the other daemons' last beats.
        let membership = d.membership();
        if let Some(m) = membership {
            let max_agents = d.config().cluster.max_agents;
            match m
                .take_run_slot(project, &task.id, &agent.id, cfg.max_per_agent, max_agents)
                .await?
            {
                Room::Taken => {}
                Room::AgentBusy { running } => {
                    tracing::debug!(project, task = %task.id, agent = %agent.id, running, "agent busy across the cluster");
                    st.judged.insert(
                        task.id.clone(),
                        vec![WaitingFor::AgentBusy {
                            agents: vec![agent.id.clone()],
                            max_per_agent: cfg.max_per_agent as usize,
                        }],
                    );
                    continue;
                }
                Room::Full { running, cap } => {
                    st.judged.insert(
                        task.id.clone(),
                        vec![WaitingFor::RunSlots {
                            running: running as usize,
                            cap: cap as usize,
                        }],
                    );
                    st.no_slot = true;
                    continue;
                }
            }
        }
        // Claim for the agent; the lease outlives the run's own timeout so
        // the supervisor, not lease expiry, ends a slow run.
        let holder = Actor {
            name: agent.id.clone(),
            kind: ActorKind::Daemon,
        };
        let lease_secs = timeout + cfg.kill_grace + 60;
        let allowed = proj.settings.agents.as_deref();
        let claimed = match service.claim(&task.id, &holder, lease_secs, allowed).await {
            Ok(t) => t,
            Err(e) => {
                if let Some(m) = membership {
                    m.free_run_slot(project, &task.id, &agent.id).await;
                }
                if e.is_conflict() {
                    continue;
                }
                return Err(e.into());
            }
        };
        start_run(d, bb, &claimed, agent, RunKind::Work, timeout).await;
        if let Some(m) = membership {
            free_unless_running(d, m, project, &claimed.id, &agent.id).await;
        }
        *st.busy.entry(agent.id.clone()).or_insert(0) += 1;
        st.running += 1;
        st.in_project += 1;
    }
    Ok(())
}
