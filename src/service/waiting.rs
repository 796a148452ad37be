//! Why a task is not moving: the board's and the team's reasons
//! ([`TeamView::waiting_for`]: dependencies, a not-before time, a team that
//! cannot take it, a block, a decision its run waits on) and the daemon's
//! (paused, busy or held agents, run slots, quota, a place behind the
//! tick's window), combined by [`combine`]
//! into what the API, `bb list` and `bb read` show.
//!
//! The daemon judges its reasons on every tick and publishes them
//! ([`DaemonSide`]); the board's are read when asked.

use std::collections::BTreeMap;
use std::fmt;

use super::team::{NeverStarts, TeamView};
use super::{ProjectService, ServiceResult};
use crate::blackboard::{rfc3339, Millis, Task, TaskLine, TaskStatus, WaitFacts};
use crate::wire::{DaemonWaits, ListedTask, Wait, WaitReason};

/// One reason a task is not moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingFor {
    /// Dependencies not done yet: `(id, status)`.
    Dependencies(Vec<(String, String)>),
    /// Not before this time (a retry's backoff).
    NotBefore(Millis),
    /// The home defines no agent at all.
    NoTeam,
    /// It can never start as the team stands.
    Never(NeverStarts),
    /// Blocked, with the reason given (`budget: …` when a budget ran out).
    Blocked(String),
    /// Its run waits on these decisions (still proposed).
    Decision(Vec<i64>),
    /// The daemon's ticker is paused.
    Paused,
    /// No daemon serves the home.
    DaemonStopped,
    /// Every agent that would take it runs `max_per_agent` runs.
    AgentBusy {
        agents: Vec<String>,
        max_per_agent: usize,
    },
    /// The agent that would take it is held back after failures.
    AgentHeld {
        agent: String,
        until: Millis,
        failures: u32,
        reason: String,
    },
    /// Every run slot is taken (`running` of `cap`).
    RunSlots { running: usize, cap: usize },
    /// Not looked at on the daemon's last tick: behind the `ahead` more
    /// urgent ready tasks it looked at, none of which could start.
    Queue { ahead: usize },
    /// Admission by quota holds it (the admission's reason).
    Quota(String),
}

impl fmt::Display for WaitingFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingFor::Dependencies(deps) => {
                let named: Vec<String> = deps.iter().map(|(id, s)| format!("{id} ({s})")).collect();
                write!(f, "dependencies {}", named.join(", "))
            }
            WaitingFor::NotBefore(at) => write!(f, "not before {}", rfc3339(*at)),
            WaitingFor::NoTeam => f.write_str("an agent: config/agents.yaml defines none"),
            WaitingFor::Never(why) => write!(f, "{why}"),
            WaitingFor::Blocked(reason) if reason.is_empty() => {
                f.write_str("blocked (no reason given; `bb unblock` when it may go on)")
            }
            WaitingFor::Blocked(reason) => write!(f, "blocked: {reason}"),
            WaitingFor::Decision(ids) => {
                let named: Vec<String> = ids.iter().map(|n| format!("D{n}")).collect();
                write!(
                    f,
                    "decision {} (`bb decision approve|reject`)",
                    named.join(", ")
                )
            }
            WaitingFor::Paused => f.write_str("the daemon is paused (`moziplus resume`)"),
            WaitingFor::DaemonStopped => {
                f.write_str("the daemon: none is running on this home (`moziplus serve`)")
            }
            WaitingFor::AgentBusy {
                agents,
                max_per_agent,
            } => write!(
                f,
                "a free agent: {} busy ({max_per_agent} run{} each, daemon.max_per_agent)",
                agents.join(", "),
                if *max_per_agent == 1 { "" } else { "s" }
            ),
            WaitingFor::AgentHeld {
                agent,
                until,
                failures,
                reason,
            } => write!(
                f,
                "agent {agent}, held back until {} after {failures} failure{}: {reason}",
                rfc3339(*until),
                if *failures == 1 { "" } else { "s" }
            ),
            WaitingFor::RunSlots { running, cap } => write!(
                f,
                "a run slot: {running} of {cap} running (daemon.max_global_agents or the project's cap)"
            ),
            WaitingFor::Queue { ahead } => write!(
                f,
                "its turn: the daemon looks at the {ahead} most urgent ready tasks each tick, and this one is behind them"
            ),
            WaitingFor::Quota(reason) => f.write_str(reason),
        }
    }
}

impl WaitingFor {
    /// Its code on the wire.
    pub fn reason(&self) -> WaitReason {
        match self {
            WaitingFor::Dependencies(_) => WaitReason::Dependencies,
            WaitingFor::NotBefore(_) => WaitReason::NotBefore,
            WaitingFor::NoTeam => WaitReason::NoAgent,
            WaitingFor::Never(NeverStarts::UnknownProtocol { .. }) => WaitReason::UnknownProtocol,
            WaitingFor::Never(_) => WaitReason::NoAgent,
            WaitingFor::Blocked(r) if r.starts_with("budget:") => WaitReason::Budget,
            WaitingFor::Blocked(_) => WaitReason::Blocked,
            WaitingFor::Decision(_) => WaitReason::Decision,
            WaitingFor::Paused => WaitReason::Paused,
            WaitingFor::DaemonStopped => WaitReason::DaemonStopped,
            WaitingFor::AgentBusy { .. } => WaitReason::AgentBusy,
            WaitingFor::AgentHeld { .. } => WaitReason::AgentHeld,
            WaitingFor::RunSlots { .. } => WaitReason::RunSlots,
            WaitingFor::Queue { .. } => WaitReason::Queue,
            WaitingFor::Quota(_) => WaitReason::Quota,
        }
    }

    /// Its wire form.
    pub fn to_wire(&self) -> Wait {
        let until = match self {
            WaitingFor::NotBefore(at) | WaitingFor::AgentHeld { until: at, .. } => {
                Some(rfc3339(*at))
            }
            _ => None,
        };
        Wait {
            reason: self.reason(),
            text: self.to_string(),
            until,
        }
    }
}

impl TeamView {
    /// The board's and the team's reasons `task` is not moving at `now`,
    /// from `facts` ([`crate::blackboard::Blackboard::wait_facts`]): a
    /// pending task's open dependencies, not-before time and a team that
    /// cannot take it; a blocked task's reason; a working task's proposed
    /// decisions.
    pub fn waiting_for(&self, task: &Task, facts: &WaitFacts, now: Millis) -> Vec<WaitingFor> {
        let mut why = Vec::new();
        match task.status {
            TaskStatus::Pending => {
                if let Some(open) = facts.open_dependencies.get(&task.id) {
                    why.push(WaitingFor::Dependencies(
                        open.iter()
                            .map(|(id, s)| (id.clone(), s.to_string()))
                            .collect(),
                    ));
                }
                if let Some(at) = task.not_before.filter(|at| *at > now) {
                    why.push(WaitingFor::NotBefore(at));
                }
                if self.has_no_team() {
                    why.push(WaitingFor::NoTeam);
                }
                why.extend(
                    self.task_never_starts(task)
                        .into_iter()
                        .map(WaitingFor::Never),
                );
            }
            TaskStatus::Blocked => why.push(WaitingFor::Blocked(
                facts
                    .blocked_reason
                    .get(&task.id)
                    .cloned()
                    .unwrap_or_default(),
            )),
            TaskStatus::Working => {
                if let Some(ids) = facts.proposed_decisions.get(&task.id) {
                    why.push(WaitingFor::Decision(ids.clone()));
                }
            }
            _ => {}
        }
        why
    }
}

/// What the daemon says of a project's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonSide {
    /// No daemon serves the home.
    Stopped,
    /// The daemon's ticker is paused.
    Paused,
    /// Its reasons as its last tick of the project judged them (`None`: it
    /// has not ticked the project yet).
    Running(Option<DaemonWaits>),
}

/// Every reason `task` is not moving: the board's (`board`), then the
/// daemon's for a pending task. A daemon reason of a kind the board already
/// gave is left out (both see a team that cannot take the task).
pub fn combine(task: &Task, board: &[WaitingFor], daemon: &DaemonSide) -> Vec<Wait> {
    let mut waits: Vec<Wait> = board.iter().map(WaitingFor::to_wire).collect();
    if task.status != TaskStatus::Pending {
        return waits;
    }
    match daemon {
        DaemonSide::Stopped => waits.push(WaitingFor::DaemonStopped.to_wire()),
        DaemonSide::Paused => waits.push(WaitingFor::Paused.to_wire()),
        DaemonSide::Running(None) => {}
        DaemonSide::Running(Some(judged)) => {
            let own = match judged.tasks.get(&task.id) {
                Some(own) => own.as_slice(),
                // Ready by the board, but not judged: no slot was free.
                None if board.is_empty() => judged.unjudged.as_slice(),
                None => &[],
            };
            for w in own {
                if !waits.iter().any(|x| x.reason == w.reason) {
                    waits.push(w.clone());
                }
            }
        }
    }
    waits
}

impl ProjectService {
    /// Why each of `tasks` is not moving (ids without a reason are absent),
    /// with the team and the board read once.
    pub async fn waits(
        &self,
        tasks: &[Task],
        daemon: &DaemonSide,
    ) -> ServiceResult<BTreeMap<String, Vec<Wait>>> {
        let ids: Vec<String> = tasks
            .iter()
            .filter(|t| {
                matches!(
                    t.status,
                    TaskStatus::Pending | TaskStatus::Blocked | TaskStatus::Working
                )
            })
            .map(|t| t.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let facts = self.bb.wait_facts(&ids).await?;
        let team = TeamView::load(&self.home, &self.project);
        let now = self.bb.now();
        Ok(tasks
            .iter()
            .filter_map(|t| {
                let board = team.waiting_for(t, &facts, now);
                let all = combine(t, &board, daemon);
                (!all.is_empty()).then(|| (t.id.clone(), all))
            })
            .collect())
    }

    /// Why each of `ready` (the summary's ready tasks) waits, by id: ready
    /// by the board, a task may still wait for a team that cannot take it
    /// or for the daemon. They are read by their ids in one query (the
    /// summary's ready query is not run twice); one gone since is left out.
    pub async fn ready_waits(
        &self,
        ready: &[TaskLine],
        daemon: &DaemonSide,
    ) -> ServiceResult<BTreeMap<String, Vec<Wait>>> {
        let ids: Vec<&str> = ready.iter().map(|l| l.id.as_str()).collect();
        let tasks = self.bb.tasks_by_ids(&ids).await?;
        self.waits(&tasks, daemon).await
    }

    /// `tasks` as listed, each with why it waits.
    pub async fn listed(
        &self,
        tasks: Vec<Task>,
        daemon: &DaemonSide,
    ) -> ServiceResult<Vec<ListedTask>> {
        let mut waits = self.waits(&tasks, daemon).await?;
        Ok(tasks
            .into_iter()
            .map(|t| ListedTask {
                waiting_for: waits.remove(&t.id).unwrap_or_default(),
                task: t.into(),
            })
            .collect())
    }

    /// Why one task is not moving.
    pub async fn task_waits(&self, task: &Task, daemon: &DaemonSide) -> ServiceResult<Vec<Wait>> {
        let mut waits = self.waits(std::slice::from_ref(task), daemon).await?;
        Ok(waits.remove(&task.id).unwrap_or_default())
    }
}
