//! Admission by quota: the ticker starts a run only when the rate lane its
//! agent will use can feed it.
//!
//! Every LLM call of a run passes the gateway, which tells the daemon
//! ([`GatewayHooks::record_call`]) how long it waited in its lane. When the
//! run ends, its calls and waits are booked on its session row; an agent's
//! *demand* is then its calls per minute of un-queued run time over its
//! last sessions ([`Blackboard::agent_demand`]). An agent with no history is
//! taken for a sequential caller: one call per answer time of its lane
//! (`60 / W` a minute), at most `daemon.admission.demand_prior` — and
//! `demand_prior` itself while the lane has seen no answer.
//!
//! The ticker sums the demand of the runs in flight per lane (*committed*)
//! and admits a run on a lane while the committed demand is under the
//! lane's capacity (the per-minute rate its unparked keys serve), or while
//! the run still fits within `capacity × headroom` — and never while the
//! lane's queue would take half of `request_timeout` to drain. A task held back stays
//! `pending`; the reason ("waiting for LLM quota: nvidia 38/40 per min
//! committed") is kept here for the status page and written once as a
//! `task.held` event. Holding a task closes its lane to every less urgent
//! task of the same tick, so priority order holds. Urgent tasks are never
//! held: their calls go ahead of others in the lane anyway.
//!
//! [`GatewayHooks::record_call`]: crate::gateway::GatewayHooks::record_call
//! [`Blackboard::agent_demand`]: crate::blackboard::Blackboard::agent_demand

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::runs::RunInfo;
use super::Daemon;
use crate::blackboard::Blackboard;
use crate::config::agents::AgentDef;
pub use crate::gateway::status::{AdmissionStatus, HeldTask, LaneLoad};
use crate::locks::Recover;

/// Gauge: the demand of the runs in flight on a lane, calls per minute.
pub const COMMITTED: &str = "moziplus_admission_committed_per_minute";
/// Gauge: tasks held back for quota on a lane.
pub const HELD: &str = "moziplus_admission_held_tasks";

/// Sessions an agent's demand is estimated from.
const DEMAND_SESSIONS: i64 = 5;

/// Calls one run made so far and the lane time they waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCalls {
    pub calls: u64,
    pub wait_ms: u64,
    /// Calls the gateway refused for quota (lane wait ran out, queue full).
    pub refused: u64,
}

/// The daemon's quota book: call counts of live runs, demand estimates,
/// and the tasks held back.
#[derive(Debug, Default)]
pub struct QuotaBook {
    calls: Mutex<HashMap<String, SessionCalls>>,
    /// Per agent: its demand from history (`None`: no history, the prior
    /// applies).
    demand: Mutex<HashMap<String, Option<f64>>>,
    held: Mutex<BTreeMap<(String, String), HeldTask>>,
    lanes: Mutex<BTreeMap<String, LaneLoad>>,
    /// Runs a call of which the gateway refused for budget: the refusal's
    /// message (the run's end blocks its task with it).
    budget_refusals: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl QuotaBook {
    /// A call of `session` went upstream after `wait` in its lane.
    pub fn record_call(&self, session: &str, wait: Duration) {
        let mut calls = lock(&self.calls);
        // Bounded by the live runs: an entry is taken when its run ends.
        if calls.len() >= 100_000 && !calls.contains_key(session) {
            return;
        }
        let c = calls.entry(session.to_string()).or_default();
        c.calls += 1;
        c.wait_ms += wait.as_millis().min(u64::MAX as u128) as u64;
    }

    /// A call of `session` was refused by the gateway for quota.
    pub fn record_refusal(&self, session: &str) {
        let mut calls = lock(&self.calls);
        if calls.len() >= 100_000 && !calls.contains_key(session) {
            return;
        }
        calls.entry(session.to_string()).or_default().refused += 1;
    }

    /// A call of `session` was refused for budget (the first refusal's
    /// message is kept).
    pub fn record_budget_refusal(&self, session: &str, message: &str) {
        let mut refusals = lock(&self.budget_refusals);
        if refusals.len() >= 100_000 && !refusals.contains_key(session) {
            return;
        }
        refusals
            .entry(session.to_string())
            .or_insert_with(|| message.to_string());
    }

    /// The budget refusal of a run that ended (removed from the book).
    pub fn take_budget_refusal(&self, session: &str) -> Option<String> {
        lock(&self.budget_refusals).remove(session)
    }

    /// The calls of a run that ended (removed from the book).
    pub fn take_calls(&self, session: &str) -> SessionCalls {
        lock(&self.calls).remove(session).unwrap_or_default()
    }

    /// Forget the cached demand of `agent` (its run just ended; the next
    /// estimate reads the store again).
    pub fn forget_demand(&self, agent: &str) {
        lock(&self.demand).remove(agent);
    }

    /// The agent's demand, calls per minute, from its history in `bb`
    /// (cached until its next run ends), else `prior`.
    pub async fn demand(&self, bb: &Blackboard, agent: &str, prior: f64) -> f64 {
        if let Some(known) = lock(&self.demand).get(agent) {
            return known.unwrap_or(prior);
        }
        let estimate = match bb.agent_demand(agent, DEMAND_SESSIONS).await {
            Ok(found) => found.map(|(d, _)| d),
            Err(e) => {
                tracing::warn!(agent, error = %e, "cannot read the agent's demand; using the prior");
                return prior;
            }
        };
        lock(&self.demand).insert(agent.to_string(), estimate);
        estimate.unwrap_or(prior)
    }

    fn cached_demand(&self, agent: &str, prior: f64) -> f64 {
        lock(&self.demand)
            .get(agent)
            .copied()
            .flatten()
            .unwrap_or(prior)
    }

    /// Replace the held tasks of `project` with `held` (keeping the time a
    /// task was first held); returns the tasks newly held.
    pub fn set_held(&self, project: &str, held: Vec<HeldTask>) -> Vec<HeldTask> {
        let mut map = lock(&self.held);
        let before: HashMap<String, HeldTask> = map
            .iter()
            .filter(|((p, _), _)| p == project)
            .map(|((_, t), h)| (t.clone(), h.clone()))
            .collect();
        map.retain(|(p, _), _| p != project);
        let mut fresh = Vec::new();
        for mut h in held {
            match before.get(&h.task) {
                Some(old) => h.since_ms = old.since_ms,
                None => fresh.push(h.clone()),
            }
            map.insert((project.to_string(), h.task.clone()), h);
        }
        drop(map);
        self.publish_held();
        fresh
    }

    /// Why `task` of `project` waits for quota, if it does.
    pub fn held_reason(&self, project: &str, task: &str) -> Option<String> {
        lock(&self.held)
            .get(&(project.to_string(), task.to_string()))
            .map(|h| h.reason.clone())
    }

    fn set_lanes(&self, lanes: Vec<LaneLoad>) {
        let mut map = lock(&self.lanes);
        for l in lanes {
            metrics::gauge!(COMMITTED, "provider" => l.lane.clone()).set(l.committed_per_minute);
            map.insert(l.lane.clone(), l);
        }
        drop(map);
        self.publish_held();
    }

    /// The held-tasks gauge of every lane seen so far.
    fn publish_held(&self) {
        let lanes: Vec<String> = lock(&self.lanes).keys().cloned().collect();
        let held = lock(&self.held);
        for lane in lanes {
            let n = held.values().filter(|h| h.lane == lane).count();
            metrics::gauge!(HELD, "provider" => lane).set(n as f64);
        }
    }

    /// The status view.
    pub fn status(&self, enabled: bool) -> AdmissionStatus {
        AdmissionStatus {
            enabled,
            lanes: lock(&self.lanes).values().cloned().collect(),
            held: lock(&self.held).values().cloned().collect(),
            demand_per_minute: lock(&self.demand)
                .iter()
                .filter_map(|(a, d)| d.map(|d| (a.clone(), (d * 100.0).round() / 100.0)))
                .collect(),
        }
    }
}

/// The limited provider an agent's calls go to, if any: its `model:`
/// routed like the gateway routes it; an agent without a model is counted
/// on the only limited provider, when there is exactly one.
pub fn lane_of(d: &Daemon, agent: &AgentDef) -> Option<String> {
    let gw = d.gateway()?;
    let cfg = gw.config();
    match agent.model.as_deref() {
        Some(model) => {
            let route = crate::gateway::routing::route(
                &cfg.providers,
                cfg.default_provider.as_deref(),
                model,
            )
            .ok()?;
            route
                .limited
                .then(|| cfg.providers[route.provider].name.clone())
        }
        None => {
            let mut limited = cfg.providers.iter().filter(|p| p.limited);
            match (limited.next(), limited.next()) {
                (Some(only), None) => Some(only.name.clone()),
                _ => None,
            }
        }
    }
}

/// The admission decisions of one tick (under the schedule lock).
pub struct Admission<'a> {
    d: &'a Daemon,
    /// The prior demand per lane (see `new`).
    priors: BTreeMap<String, f64>,
    /// Calls waiting in each lane's queue when the tick began.
    backlog: BTreeMap<String, usize>,
    /// How long a call may wait for its lane, seconds.
    request_timeout: f64,
    prior: f64,
    headroom: f64,
    lanes: BTreeMap<String, LaneLoad>,
    /// Lanes a task was held on this tick: closed to less urgent work.
    closed: BTreeMap<String, String>,
    held: Vec<HeldTask>,
}

/// What the ticker may do with a task.
pub enum Verdict {
    /// Start it; `lane` (if any) now carries its demand.
    Admit,
    /// Keep it pending for quota, with the reason.
    Hold(String),
}

impl<'a> Admission<'a> {
    /// Load the lanes: capacity from the gateway, committed demand from the
    /// runs in flight.
    pub fn new(d: &'a Daemon, running: &[RunInfo]) -> Admission<'a> {
        let cfg = &d.config().daemon.admission;
        let mut lanes: BTreeMap<String, LaneLoad> = BTreeMap::new();
        if let Some(gw) = d.gateway() {
            for p in gw.config().providers.iter().filter(|p| p.limited) {
                let capacity = gw.lane(&p.name).map_or(0.0, |l| l.capacity_per_minute());
                lanes.insert(
                    p.name.clone(),
                    LaneLoad {
                        lane: p.name.clone(),
                        capacity_per_minute: (capacity * 100.0).round() / 100.0,
                        committed_per_minute: 0.0,
                        runs: 0,
                    },
                );
            }
        }
        // Without history an agent is taken for a sequential caller on its
        // lane: one call per answer time, at most `demand_prior` a minute
        // (all of it while the lane has seen no answer: admitting for a
        // guessed slow lane would flood a fast one's queue).
        let mut priors = BTreeMap::new();
        let mut backlog = BTreeMap::new();
        if let Some(gw) = d.gateway() {
            for name in lanes.keys() {
                let lane = gw.lane(name);
                let prior = lane
                    .as_ref()
                    .and_then(|l| l.answer_time())
                    .map_or(cfg.demand_prior, |w| {
                        (60.0 / w.as_secs_f64()).min(cfg.demand_prior)
                    });
                priors.insert(name.clone(), prior);
                backlog.insert(name.clone(), lane.map_or(0, |l| l.queue_len()));
            }
        }
        let request_timeout = d.gateway().map_or(60.0, |gw| gw.settings().request_timeout);
        let book = d.quota();
        for run in running {
            let Some(agent) = d.agents().agents.iter().find(|a| a.id == run.agent) else {
                continue;
            };
            let Some(name) = lane_of(d, agent) else {
                continue;
            };
            let prior = priors.get(&name).copied().unwrap_or(cfg.demand_prior);
            let Some(lane) = lanes.get_mut(&name) else {
                continue;
            };
            lane.committed_per_minute += book.cached_demand(&agent.id, prior);
            lane.runs += 1;
        }
        Admission {
            d,
            priors,
            backlog,
            request_timeout,
            prior: cfg.demand_prior,
            headroom: cfg.headroom,
            lanes,
            closed: BTreeMap::new(),
            held: Vec::new(),
        }
    }

    /// Decide on `task` going to `agent` (tasks come most urgent first).
    pub async fn judge(
        &mut self,
        bb: &Blackboard,
        task: &crate::blackboard::Task,
        agent: &AgentDef,
    ) -> Verdict {
        let Some(lane_name) = lane_of(self.d, agent) else {
            return Verdict::Admit;
        };
        let prior = self.priors.get(&lane_name).copied().unwrap_or(self.prior);
        let demand = self.d.quota().demand(bb, &agent.id, prior).await;
        let Some(lane) = self.lanes.get_mut(&lane_name) else {
            return Verdict::Admit;
        };
        let urgent = task.priority == crate::blackboard::Priority::Urgent;
        let fits = lane.committed_per_minute < lane.capacity_per_minute
            || lane.committed_per_minute + demand <= lane.capacity_per_minute * self.headroom;
        // A queue that takes half the wait allowance to drain means the
        // runs in flight already ask for more than the lane serves.
        let queued = self.backlog.get(&lane_name).copied().unwrap_or(0);
        let drain_secs = queued as f64 * 60.0 / lane.capacity_per_minute.max(0.001);
        let backed_up = drain_secs > self.request_timeout / 2.0;
        let reason = match self.closed.get(&lane_name) {
            Some(reason) if !urgent => Some(reason.clone()),
            _ if !urgent && !fits => Some(format!(
                "waiting for LLM quota: {lane_name} {:.0}/{:.0} per min committed ({} runs), {} needs ~{:.1}/min",
                lane.committed_per_minute, lane.capacity_per_minute, lane.runs, agent.id, demand
            )),
            _ if !urgent && backed_up => Some(format!(
                "waiting for LLM quota: {lane_name} has {queued} calls queued (~{drain_secs:.0} s to drain at {:.0}/min)",
                lane.capacity_per_minute
            )),
            _ => None,
        };
        match reason {
            Some(reason) => {
                self.closed.insert(lane_name.clone(), reason.clone());
                self.held.push(HeldTask {
                    project: bb.project().to_string(),
                    task: task.id.clone(),
                    agent: agent.id.clone(),
                    lane: lane_name,
                    reason: reason.clone(),
                    since_ms: chrono::Utc::now().timestamp_millis(),
                });
                Verdict::Hold(reason)
            }
            None => {
                lane.committed_per_minute += demand;
                lane.runs += 1;
                Verdict::Admit
            }
        }
    }

    /// Publish the lanes and the tasks held in `project`; returns the ones
    /// newly held (for their event).
    pub fn finish(self, project: &str) -> Vec<HeldTask> {
        let book = self.d.quota();
        let fresh = book.set_held(project, self.held);
        book.set_lanes(self.lanes.into_values().collect());
        fresh
    }
}
