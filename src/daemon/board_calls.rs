//! The board for a run that cannot open it (`POST /api/runs/bb`): the
//! run's `moziplus bb` command line, run inside the daemon on the project's
//! open blackboard.
//!
//! The command line's parser and verbs are the CLI's (`cli::bb`), above
//! every other module; `serve` hands them to the daemon as a [`BoardCalls`]
//! at start ([`super::Daemon::set_board_calls`]), as it hands over the
//! gateway. The API asks for them here, so no module below `cli` imports it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, ProjectSettings};
use crate::service::{ProjectService, RunIdentity};

/// One `bb` command line of a run in flight.
#[derive(Debug)]
pub struct BoardCall {
    /// The run's project, its blackboard open in the daemon.
    pub service: ProjectService,
    /// The arguments after `bb` (e.g. `["done", "--json"]`).
    pub args: Vec<String>,
    /// What `--file -` reads (the client read the file inside the sandbox).
    pub stdin: Vec<u8>,
    /// The run's identity from the daemon's own record of the run, never
    /// from the request.
    pub identity: RunIdentity,
    /// The run's task: what a verb without a task id acts on (a local
    /// `bb`'s `$MOZI_TASK`).
    pub task: String,
    /// The project's configuration as the daemon holds it (a claim's
    /// allowed agents, a heartbeat's lease), so no call reads the YAML files
    /// again; `None` when the project is not open here (then it is read
    /// off the runtime, on a blocking thread).
    pub config: Option<(Config, ProjectSettings)>,
}

/// What the command line printed and how it ended, as a `moziplus bb`
/// process would have: the answer of `POST /api/runs/bb`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunBbAnswer {
    /// `0` ok, `1` error, `2` usage, `3` conflict.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// A refusal's kind (`not_found`, `conflict`, `forbidden`, `invalid`,
    /// `error`), as the MCP tools name it; absent on success and on a
    /// usage error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Runs a [`BoardCall`].
pub type BoardCalls =
    Arc<dyn Fn(BoardCall) -> Pin<Box<dyn Future<Output = RunBbAnswer> + Send>> + Send + Sync>;
