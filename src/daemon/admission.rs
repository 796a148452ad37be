//! Admission by quota, the ticker's side: [`Admission`] — the decisions of
//! one tick (committed demand per lane against its capacity, urgent never
//! held, holding closes the lane to less urgent work), over the
//! [`QuotaBook`](super::quota::QuotaBook) the context holds. The rule is
//! described in [`super::quota`].

use std::collections::BTreeMap;

use super::in_flight::RunInfo;
use super::quota::{HeldTask, LaneLoad};
use super::Daemon;
use crate::blackboard::Blackboard;
use crate::config::agents::AgentDef;

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
