//! `moziplus mcp` — the run's blackboard verbs as MCP tools, over stdio.
//!
//! One more front door onto the project service ([`crate::service`]), next
//! to `moziplus bb` and the HTTP API, built on the official Rust MCP SDK
//! (`rmcp`). The runtime adapters register it with each agent CLI (Codex's
//! `mcp_servers`, Claude Code's `--mcp-config`, OpenClaw's `mcp.servers`),
//! which starts it with the run's environment. At start it opens the
//! project's service once for its whole life and reads the run's identity
//! once, as `moziplus bb` reads it (`MOZI_HOME`, `MOZI_PROJECT`, `MOZI_TASK`,
//! `MOZI_AGENT`, `MOZI_SESSION`, `MOZI_SESSION_TOKEN`); every write passes
//! the same session checks as the CLI's.
//!
//! Each tool has a typed input (its JSON schema is derived from the Rust
//! type) and a description. A refused call is a tool result with `isError`
//! and a structured `{ "error": kind, "message": …, "cli_exit_code": n }`,
//! never a protocol error: `kind` is `not_found`, `conflict` (the CLI's exit
//! 3: retrying later may work), `forbidden`, `invalid` or `error`, and
//! `message` is the service's, as the CLI prints it. Arguments that do not
//! match the schema (a missing field, a wrong type, an unknown field) are
//! tool errors too (rmcp's own). A success is the document `moziplus bb
//! --json` prints for the same verb.
//!
//! The tools hold no rule: each hands its input to [`board::Board`], which
//! calls the service verb — or, inside a sandboxed run (`MOZI_API` set: the
//! database is hidden there), sends the same verb's `moziplus bb` command
//! line to the daemon with the run's key ([`through_daemon`]), the path
//! `moziplus bb` takes there too: the same results, kinds and messages.

mod board;
mod refusal;
mod through_daemon;

use rmcp::handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ServerCapabilities,
    ServerConfig,
};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use rmcp::{ErrorData, RoleServer};
use serde::Deserialize;
use serde_json::json;

pub use board::Board;
pub use refusal::{ErrorKind, Refusal};

use crate::blackboard::{CommentType, Verdict};
use crate::home::Home;

/// `moziplus mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {}

/// Serves the tools on stdin/stdout until the client closes the stream.
pub async fn run(home: &Home, _args: McpArgs) -> anyhow::Result<()> {
    let board = Board::open(home).await;
    let running = Server::new(board.clone())
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialization failed: {e}"));
    let waited = match running {
        Ok(running) => running.waiting().await.map(drop).map_err(Into::into),
        Err(e) => Err(e),
    };
    board.close().await;
    waited
}

/// The MCP server: the tools and the board they reach.
#[derive(Debug, Clone)]
pub struct Server {
    board: Board,
    tool_router: ToolRouter<Server>,
}

/// The result of a call, success or refusal.
fn result(outcome: Result<serde_json::Value, Refusal>) -> CallToolResult {
    match outcome {
        Ok(value) => CallToolResult::structured(value),
        Err(r) => CallToolResult::structured_error(json!({
            "error": r.kind,
            "message": r.message,
            "cli_exit_code": r.kind.exit_code(),
        })),
    }
}

// Tool inputs. Field docs become the schema's descriptions.

/// Read the board, or one task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadInput {
    /// A task id (e.g. T-0042); without it, the board summary (ready and active tasks, counts).
    pub task: Option<String>,
    /// How many ready/active tasks (or a task's comments) to show. Default 20.
    pub limit: Option<i64>,
}

/// Renew the lease of the task you hold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// Lease in seconds. Default: the project's daemon.task_timeout.
    pub lease_secs: Option<u64>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// Post an output of the current round.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// One or two sentences: what the output is.
    pub summary: String,
    /// Short inline text of the output (instead of a file).
    pub text: Option<String>,
    /// A file to store as the artifact (absolute, or relative to the agent's working directory); it is copied under the task's artifacts/<task>/outputs/.
    pub file: Option<String>,
    /// The artifact's path inside outputs/. Default: the file's name.
    pub name: Option<String>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// Kinds of comment an agent writes.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommentKind {
    Comment,
    Question,
    Answer,
    Rebuttal,
    Note,
}

impl From<CommentKind> for CommentType {
    fn from(k: CommentKind) -> CommentType {
        match k {
            CommentKind::Comment => CommentType::Comment,
            CommentKind::Question => CommentType::Question,
            CommentKind::Answer => CommentType::Answer,
            CommentKind::Rebuttal => CommentType::Rebuttal,
            CommentKind::Note => CommentType::Note,
        }
    }
}

/// Comment on a task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// The comment's text.
    pub body: String,
    /// Default: comment.
    #[serde(rename = "type")]
    pub kind: Option<CommentKind>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerdictInput {
    Approve,
    Revise,
    Reject,
}

impl From<VerdictInput> for Verdict {
    fn from(v: VerdictInput) -> Verdict {
        match v {
            VerdictInput::Approve => Verdict::Approve,
            VerdictInput::Revise => Verdict::Revise,
            VerdictInput::Reject => Verdict::Reject,
        }
    }
}

/// Review a task that is in review.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// approve, revise (another round) or reject.
    pub verdict: VerdictInput,
    /// How sure you are, 0 to 1.
    pub confidence: f64,
    /// What you found and why.
    pub body: Option<String>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// A task and who acts on it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// Mark a task failed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    /// Task id. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// Why the task cannot be done.
    pub reason: String,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// Record a decision, or propose one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideInput {
    /// The question decided.
    pub question: String,
    /// The decision (for a proposal: what you propose).
    pub decision: Option<String>,
    /// Why.
    pub rationale: Option<String>,
    /// The task it belongs to, if any.
    pub task: Option<String>,
    /// Propose instead of record: the decision stays `proposed` until a person approves or rejects it (wait for it with decision_wait).
    #[serde(default)]
    pub propose: bool,
    /// Seconds until an unanswered proposal expires as rejected.
    pub expires_secs: Option<u64>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

/// Wait for a proposed decision.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionWaitInput {
    /// The decision's id (the number of D12 is 12).
    pub id: i64,
    /// Give up after this many seconds. Default 300.
    pub timeout_secs: Option<u64>,
}

/// Record a lesson learned.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperienceAddInput {
    /// At least one tag (e.g. the tool or area the lesson is about).
    pub tags: Vec<String>,
    /// The lesson, in a sentence or two.
    pub lesson: String,
    /// The task it came from. Default: this run's task ($MOZI_TASK).
    pub task: Option<String>,
    /// Act as this agent: must be this run's own agent (any other is refused).
    pub agent: Option<String>,
}

#[tool_router]
impl Server {
    pub fn new(board: Board) -> Server {
        Server {
            board,
            tool_router: Self::tool_router(),
        }
    }

    /// The board summary, or one task with its comments, outputs, reviews and dependencies (JSON).
    #[tool(annotations(read_only_hint = true))]
    async fn read(&self, Parameters(i): Parameters<ReadInput>) -> CallToolResult {
        result(self.board.read(i).await)
    }

    /// Renew the lease of a task you hold, so the daemon does not take it back during long work.
    #[tool]
    async fn heartbeat(&self, Parameters(i): Parameters<HeartbeatInput>) -> CallToolResult {
        result(self.board.heartbeat(i).await)
    }

    /// Post an output of the task's current round: short inline `text`, or a `file` stored as the task's artifact. Only the task's holder may post, while it is working.
    #[tool]
    async fn output(&self, Parameters(i): Parameters<OutputInput>) -> CallToolResult {
        result(self.board.output(i).await)
    }

    /// Comment on a task (a question, an answer, a note, a rebuttal of a review).
    #[tool]
    async fn comment(&self, Parameters(i): Parameters<CommentInput>) -> CallToolResult {
        result(self.board.comment(i).await)
    }

    /// Review a task that is in review: approve, revise (another round) or reject, with your confidence.
    #[tool]
    async fn review(&self, Parameters(i): Parameters<ReviewInput>) -> CallToolResult {
        result(self.board.review(i).await)
    }

    /// Finish your work on the task (submit): it goes to review if it has a review protocol, else it is done. Post your output first.
    #[tool]
    async fn done(&self, Parameters(i): Parameters<TaskInput>) -> CallToolResult {
        result(self.board.done(i).await)
    }

    /// Mark the task failed, with the reason (use it when the task cannot be done, not for a passing difficulty).
    #[tool]
    async fn fail(&self, Parameters(i): Parameters<FailInput>) -> CallToolResult {
        result(self.board.fail(i).await)
    }

    /// Record a decision the team should keep to, or propose one for a person to approve (`propose`).
    #[tool]
    async fn decide(&self, Parameters(i): Parameters<DecideInput>) -> CallToolResult {
        result(self.board.decide(i).await)
    }

    /// Wait until a proposed decision is approved (success) or rejected (a `conflict` error), up to `timeout_secs`.
    #[tool(annotations(read_only_hint = true))]
    async fn decision_wait(&self, Parameters(i): Parameters<DecisionWaitInput>) -> CallToolResult {
        result(self.board.decision_wait(i).await)
    }

    /// Record a lesson learned, tagged, for later runs (distilled into skills).
    #[tool]
    async fn experience_add(
        &self,
        Parameters(i): Parameters<ExperienceAddInput>,
    ) -> CallToolResult {
        result(self.board.experience_add(i).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    /// The router's call, with rmcp's own refusal of arguments that do not
    /// match the schema given the same shape as every other refusal.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCallContext::new(self, request, context);
        Ok(match self.tool_router.call(call).await? {
            CallToolResponse::Complete(r)
                if r.is_error == Some(true) && r.structured_content.is_none() =>
            {
                let message = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                result(Err(Refusal {
                    kind: ErrorKind::Invalid,
                    message,
                }))
                .into()
            }
            other => other,
        })
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("moziplus", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The moziplus blackboard of this run's project. Without a `task`, a tool acts on \
                 this run's task; you act as this run's agent. Post your result with `output`, then \
                 finish with `done` (or `fail`).",
            )
    }
}
