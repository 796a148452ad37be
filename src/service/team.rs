//! Whether a task can ever start: its assignee, kind and review protocol
//! against the home's team (`config/agents.yaml` and the project's `agents:`
//! list) and its `config/review_protocols/`. Creation refuses what can never
//! start unless forced ([`super::ProjectService::create_task`]); doctor names
//! the pending tasks that cannot.
//!
//! A home that defines no agent is not judged: nothing is configured yet, and
//! every task would be refused (doctor reports the empty team itself).

use std::fmt;

use crate::blackboard::{Task, DEFAULT_TASK_KIND};
use crate::config::agents::{AgentDef, AgentsFile};
use crate::config::{Config, ReviewConfig};
use crate::home::Home;
use crate::registry::ProjectId;
use crate::review::{Protocols, SKILL_CHECK_PROTOCOL};

/// Why a task can never start as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeverStarts {
    /// The assignee is not an agent of `agents.yaml`.
    UnknownAssignee { name: String, known: Vec<String> },
    /// The assignee exists but the project's `agents:` list leaves it out.
    AssigneeNotAllowed { name: String, allowed: Vec<String> },
    /// No agent allowed on the project takes this kind.
    NoAgentForKind { kind: String, taken: Vec<String> },
    /// No protocol of `config/review_protocols/` has this name.
    UnknownProtocol { name: String, known: Vec<String> },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl fmt::Display for NeverStarts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeverStarts::UnknownAssignee { name, known } => write!(
                f,
                "unknown assignee {name:?} (config/agents.yaml defines: {})",
                list(known)
            ),
            NeverStarts::AssigneeNotAllowed { name, allowed } => write!(
                f,
                "assignee {name:?} is not allowed on the project (its agents: {})",
                list(allowed)
            ),
            NeverStarts::NoAgentForKind { kind, taken } => write!(
                f,
                "no agent takes kind {kind:?} (kinds taken: {})",
                list(taken)
            ),
            NeverStarts::UnknownProtocol { name, known } => write!(
                f,
                "unknown review protocol {name:?} (config/review_protocols/ defines: {})",
                list(known)
            ),
        }
    }
}

/// The team as a task's creation sees it.
#[derive(Debug, Clone, Default)]
pub struct TeamView {
    agents: Vec<AgentDef>,
    /// The project's `agents:` list (`None`: every agent).
    allowed: Option<Vec<String>>,
    /// Protocol names; `None` when the folder does not load (doctor says
    /// why), so protocols are not judged.
    protocols: Option<Vec<String>>,
    /// The protocols the team can staff, with their `applies_to` kinds, in
    /// name order: a task created without a protocol gets the first one
    /// covering its kind.
    by_kind: Vec<(String, Vec<String>)>,
}

/// A `--protocol` value that asks for no review, even where a protocol's
/// `applies_to` covers the task's kind.
pub const NO_REVIEW: &str = "none";

impl TeamView {
    /// Reads the team from `home` for `project`. A file that does not load
    /// judges nothing of its own (doctor and `serve` report it).
    pub fn load(home: &Home, project: &ProjectId) -> TeamView {
        let file = match AgentsFile::load(&home.agents_file()) {
            Ok(file) if !file.agents.is_empty() => file,
            // No team to judge by: nothing more to read.
            _ => return TeamView::default(),
        };
        let allowed = Config::load_for_project(home, project, &[])
            .ok()
            .and_then(|(_, settings)| settings.agents);
        let loaded = Protocols::load(
            &home.review_protocols_dir(),
            &ReviewConfig::default(),
            &file,
        )
        .ok();
        let protocols = loaded
            .as_ref()
            .map(|p| p.names().into_iter().map(str::to_string).collect());
        let by_kind = loaded
            .iter()
            .flat_map(|p| p.iter())
            .filter(|p| p.unusable.is_none())
            .map(|p| (p.name.clone(), p.applies_to.clone()))
            .collect();
        TeamView {
            agents: file.agents,
            allowed,
            protocols,
            by_kind,
        }
    }

    /// The review protocol a new task gets: the one it names (`none`: no
    /// review), else the first protocol (by name) whose `applies_to` holds
    /// its kind and that the team can staff, else none.
    pub fn protocol_for(&self, named: Option<&str>, kind: &str) -> Option<String> {
        match named {
            Some(NO_REVIEW) => None,
            Some(name) => Some(name.to_string()),
            None => self
                .by_kind
                .iter()
                .find(|(_, kinds)| kinds.iter().any(|k| k == kind))
                .map(|(name, _)| name.clone()),
        }
    }

    fn allowed(&self, agent: &AgentDef) -> bool {
        super::rules::agent_allowed(self.allowed.as_deref(), &agent.id)
    }

    /// Every reason a task with this assignee, kind and protocol can never
    /// start (empty: it can, or the home has no team to judge by). An
    /// assignee takes the task whatever its kind, as the ticker does.
    pub fn never_starts(
        &self,
        assignee: Option<&str>,
        kind: &str,
        protocol: Option<&str>,
    ) -> Vec<NeverStarts> {
        let mut why = Vec::new();
        if self.agents.is_empty() {
            return why;
        }
        match assignee {
            Some(name) => match self.agents.iter().find(|a| a.id == name) {
                None => why.push(NeverStarts::UnknownAssignee {
                    name: name.into(),
                    known: self.agents.iter().map(|a| a.id.clone()).collect(),
                }),
                Some(a) if !self.allowed(a) => why.push(NeverStarts::AssigneeNotAllowed {
                    name: name.into(),
                    allowed: self.allowed.clone().unwrap_or_default(),
                }),
                Some(_) => {}
            },
            None => {
                let team: Vec<&AgentDef> = self.agents.iter().filter(|a| self.allowed(a)).collect();
                if !team.iter().any(|a| super::rules::takes_kind(a, kind)) {
                    let mut taken: Vec<String> =
                        team.iter().flat_map(|a| a.kinds.iter().cloned()).collect();
                    taken.sort();
                    taken.dedup();
                    why.push(NeverStarts::NoAgentForKind {
                        kind: kind.into(),
                        taken,
                    });
                }
            }
        }
        if let (Some(name), Some(known)) = (protocol, &self.protocols) {
            if name != SKILL_CHECK_PROTOCOL && !known.iter().any(|k| k == name) {
                why.push(NeverStarts::UnknownProtocol {
                    name: name.into(),
                    known: known.clone(),
                });
            }
        }
        why
    }

    /// [`Self::never_starts`] for a stored task.
    pub fn task_never_starts(&self, task: &Task) -> Vec<NeverStarts> {
        self.never_starts(
            task.assignee.as_deref(),
            &task.kind,
            task.review_protocol.as_deref(),
        )
    }

    /// [`Self::never_starts`] for a task about to be created.
    pub fn new_task_never_starts(&self, new: &crate::blackboard::NewTask) -> Vec<NeverStarts> {
        self.never_starts(
            new.assignee.as_deref(),
            new.kind.as_deref().unwrap_or(DEFAULT_TASK_KIND),
            new.review_protocol.as_deref(),
        )
    }
}

/// Why a pending task is not running yet, as far as the board and the team
/// say (the daemon's own holds — busy agents, quota, a paused ticker — are
/// not seen from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingFor {
    /// Dependencies not done yet: `(id, status)`.
    Dependencies(Vec<(String, String)>),
    /// Not before this time (a retry's backoff).
    NotBefore(crate::blackboard::Millis),
    /// The home defines no agent at all.
    NoTeam,
    /// It can never start as the team stands.
    Never(NeverStarts),
}

impl fmt::Display for WaitingFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingFor::Dependencies(deps) => {
                let named: Vec<String> = deps.iter().map(|(id, s)| format!("{id} ({s})")).collect();
                write!(f, "dependencies {}", named.join(", "))
            }
            WaitingFor::NotBefore(at) => {
                write!(f, "not before {}", crate::blackboard::rfc3339(*at))
            }
            WaitingFor::NoTeam => f.write_str("an agent: config/agents.yaml defines none"),
            WaitingFor::Never(why) => write!(f, "{why}"),
        }
    }
}

impl TeamView {
    /// Every reason the pending task of `detail` is not running at `now`
    /// (empty for a task that is not pending, or ready).
    pub fn waiting_for(
        &self,
        detail: &crate::blackboard::TaskDetail,
        now: crate::blackboard::Millis,
    ) -> Vec<WaitingFor> {
        use crate::blackboard::TaskStatus;
        let t = &detail.task;
        let mut why = Vec::new();
        if t.status != TaskStatus::Pending {
            return why;
        }
        let open: Vec<(String, String)> = detail
            .depends_on
            .iter()
            .filter(|d| d.status != TaskStatus::Done)
            .map(|d| (d.id.clone(), d.status.to_string()))
            .collect();
        if !open.is_empty() {
            why.push(WaitingFor::Dependencies(open));
        }
        if let Some(at) = t.not_before.filter(|at| *at > now) {
            why.push(WaitingFor::NotBefore(at));
        }
        if self.agents.is_empty() {
            why.push(WaitingFor::NoTeam);
        }
        why.extend(self.task_never_starts(t).into_iter().map(WaitingFor::Never));
        why
    }
}
