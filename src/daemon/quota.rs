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
//! Here is the book ([`QuotaBook`]); the ticker's per-tick decisions are
//! [`super::admission`].
//!
//! [`GatewayHooks::record_call`]: crate::gateway::GatewayHooks::record_call
//! [`Blackboard::agent_demand`]: crate::blackboard::Blackboard::agent_demand

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::blackboard::Blackboard;
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

    pub(super) fn cached_demand(&self, agent: &str, prior: f64) -> f64 {
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

    pub(super) fn set_lanes(&self, lanes: Vec<LaneLoad>) {
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
