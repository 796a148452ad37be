//! Registering `moziplus mcp` (the board as MCP tools) with the agent CLIs.
//!
//! Each CLI adapter adds the server to the configuration it generates:
//! Codex's `[mcp_servers.moziplus]`, Claude Code's `--mcp-config` file (with
//! `--strict-mcp-config`), OpenClaw's `mcp.servers.moziplus`. The server is
//! the run's `moziplus` binary with the argument `mcp`; it reads the run's
//! identity from the variables of [`IDENTITY_ENV`], which each registration
//! hands on from the run's environment (the CLIs do not all pass their own
//! environment to the servers they start). The configuration itself holds no
//! per-run value: it stays the same for every run of an agent.

use super::RunContext;

/// The server's name in every CLI's configuration; Claude Code names its
/// tools `mcp__moziplus__<tool>`, OpenClaw `moziplus__<tool>`.
pub const SERVER_NAME: &str = "moziplus";

/// The run's variables `moziplus mcp` reads, as `moziplus bb` does.
pub const IDENTITY_ENV: [&str; 6] = [
    "MOZI_HOME",
    "MOZI_PROJECT",
    "MOZI_TASK",
    "MOZI_AGENT",
    "MOZI_SESSION",
    "MOZI_SESSION_TOKEN",
];

/// What a sandboxed run's server also needs to reach the board through the
/// daemon (`cli::mcp`'s `through_daemon`): the socket, the run's key and the
/// address it names as `Host`.
pub const SANDBOX_ENV: [&str; 3] = ["MOZI_API", "MOZI_RUN_KEY", "MOZI_GATEWAY"];

/// The store's URL when the daemon's is set by environment (a run outside
/// the sandbox opens the board itself; README, "Many hosts").
pub const STORE_ENV: &str = "MOZI_STORE__URL";

/// The variables a registration hands on to the server: the identity, and
/// for an agent with `permissions: sandbox` the way to the daemon, else the
/// store's URL (never into a sandbox: it may carry the database password).
pub fn handed_on(run: &RunContext<'_>) -> Vec<&'static str> {
    let mut names = IDENTITY_ENV.to_vec();
    if run.agent.permissions == crate::config::agents::Permissions::Sandbox {
        names.extend(SANDBOX_ENV);
    } else {
        names.push(STORE_ENV);
    }
    names
}

/// How long a tool call may take before the CLI gives up on it: above
/// `decision_wait`'s longest default wait (300 s).
pub const TOOL_TIMEOUT_SECS: u64 = 900;

/// The program the CLIs start: the run's own `moziplus` binary.
pub fn command(run: &RunContext<'_>) -> String {
    run.exe.display().to_string()
}

/// Its arguments.
pub fn args() -> [&'static str; 1] {
    ["mcp"]
}
