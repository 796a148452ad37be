//! What the daemon knows of each run in flight: its record ([`RunInfo`],
//! kept in the [`Daemon`](super::Daemon) for the ticker's limits, the API and
//! shutdown) and what a run's gateway key maps to ([`RunKey`]). Plain data,
//! so the context that holds it and the parts that fill it import it from
//! here.

use std::path::PathBuf;

use serde::Serialize;

use crate::blackboard::Priority as TaskPriority;
use crate::workspace::TaskWorkspace;

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The agent works on a task it holds.
    Work,
    /// The agent reviews a task in `review`.
    Review,
}

/// A run in flight.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunInfo {
    pub session_id: String,
    pub project: String,
    pub task_id: String,
    pub agent: String,
    pub kind: RunKind,
    pub pid: i32,
    pub started_at_ms: i64,
    pub deadline_ms: i64,
    #[schema(value_type = String)]
    pub log_path: PathBuf,
    /// A work run's claim (`task.claimed_at`): what the daemon gives back
    /// for this run is this claim only, never a later one of the same agent.
    #[serde(skip)]
    pub claimed_at_ms: Option<i64>,
    /// Where the run works (`crate::workspace`).
    #[serde(skip)]
    pub workspace: Option<TaskWorkspace>,
    /// The run's own `TMPDIR`, removed when it ends.
    #[serde(skip)]
    pub tmpdir: PathBuf,
}

/// What the daemon remembers of a running agent's API key.
#[derive(Debug, Clone)]
pub struct RunKey {
    pub session_id: String,
    pub project: String,
    pub task: String,
    pub agent: String,
    pub priority: TaskPriority,
}
