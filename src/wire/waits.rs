//! Why a task is not moving: [`Wait`], what the API (`waiting_for` on every
//! task), `bb list --json` and `bb read --json` show, and
//! [`DaemonWaits`], what the daemon publishes of its own reasons after each
//! tick of a project (the API reads them in memory; `bb` reads the file
//! `<home>/run/waits/<project>.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Task;

/// What a task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Dependencies that are not done (named in `text`).
    Dependencies,
    /// Not before a time (a retry's backoff): `until`.
    NotBefore,
    /// No agent takes its kind, or its assignee is unknown or not allowed.
    NoAgent,
    /// Its review protocol does not exist.
    UnknownProtocol,
    /// Every agent that would take it runs its maximum of runs.
    AgentBusy,
    /// The agent that would take it is held back after failures: `until`.
    AgentHeld,
    /// Every run slot (`max_global_agents`, the project's cap) is taken.
    RunSlots,
    /// Behind the more urgent ready tasks the daemon looked at on its last
    /// tick (it looks at a bounded number each tick).
    Queue,
    /// Admission by quota holds it: its agent's LLM lane is full.
    Quota,
    /// The daemon's ticker is paused (`moziplus resume`).
    Paused,
    /// No daemon serves the home (`moziplus serve`).
    DaemonStopped,
    /// Blocked because a budget was spent.
    Budget,
    /// Blocked by an operator or agent (the reason in `text`).
    Blocked,
    /// Its run waits on a decision (`D7`, named in `text`).
    Decision,
}

/// One reason a task is not moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Wait {
    pub reason: WaitReason,
    /// The reason in words, naming what it waits for.
    pub text: String,
    /// When the wait ends by itself (RFC 3339), when known.
    #[serde(default)]
    pub until: Option<String>,
}

/// A task as listed, with why it waits (empty: it does not).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ListedTask {
    #[serde(flatten)]
    pub task: Task,
    pub waiting_for: Vec<Wait>,
}

/// The daemon's own reasons for one project, as its last tick judged them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonWaits {
    /// The daemon that wrote them (a file left by another is stale).
    pub pid: u32,
    /// When (UTC ms).
    pub judged_at: i64,
    /// Whether the ticker is paused (it judges nothing then).
    pub paused: bool,
    /// Per task id: why the tick did not start it.
    pub tasks: BTreeMap<String, Vec<Wait>>,
    /// For every ready task the tick did not judge (every run slot was
    /// taken before it looked at them).
    pub unjudged: Vec<Wait>,
}
