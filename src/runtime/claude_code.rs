//! Claude Code (`@anthropic-ai/claude-code`), built against 2.1.332; needs
//! Node.js >= 22.
//!
//! `claude -p --output-format stream-json --verbose`: the brief comes on
//! stdin, events come as stream-json on stdout (the final `result` carries
//! `is_error`, `usage`, `total_cost_usd`, `session_id`). Its calls reach the
//! gateway through `ANTHROPIC_BASE_URL` (the gateway's origin; Claude Code
//! appends `/v1/messages`) with `ANTHROPIC_AUTH_TOKEN` = the run key. Each
//! agent gets its own `CLAUDE_CONFIG_DIR` (`<home>/runtimes/claude-code/<agent>/`),
//! and non-essential traffic (telemetry, update checks) is switched off.
//! The agent's `model:` reaches Claude Code (`--model`) only when it is a
//! Claude model name; otherwise the gateway routes the run's calls to it.
//!
//! Permissions (Claude Code asks before tools; in `-p` mode an unapproved
//! tool is denied): `workspace` (default) = `--permission-mode acceptEdits`
//! (file edits in the working directory) and `--allowedTools` for reading
//! and `Bash(<moziplus> bb:*)` — shell commands are limited to the blackboard
//! CLI; `full` = every tool allowed (`--allowedTools Bash Edit Write …`).
//! `--dangerously-skip-permissions` is not used: Claude Code refuses it as root.
//!
//! The board is also there as MCP tools: `--mcp-config <state>/mcp.json
//! --strict-mcp-config` registers `moziplus mcp` (and only it: no user or
//! project MCP configuration is read), and both permission modes allow its
//! tools (`mcp__moziplus`). Claude Code starts the server with its own
//! environment, the run's; `ENABLE_TOOL_SEARCH=false` offers the tools from
//! the first turn instead of deferring them behind its tool search.

use super::{
    env, model_of, state_dir, write_if_changed, Launch, OutputFormat, PrepareError, Requirement,
    RunContext,
};
use crate::config::agents::Permissions;

pub const REQUIREMENT: Requirement = Requirement {
    program: "claude",
    min: "2.1.0",
    below: "3.0.0",
    node_min: Some("22.0.0"),
    package: "@anthropic-ai/claude-code",
};

/// The `--allowedTools` of a permission mode.
pub fn allowed_tools(run: &RunContext<'_>) -> Vec<String> {
    let bb = format!("Bash({} bb:*)", run.exe.display());
    let board = format!("mcp__{}", super::mcp::SERVER_NAME);
    let mut tools: Vec<String> = match run.agent.permissions {
        // `auto` is resolved when the team loads; as `workspace` if not.
        Permissions::Workspace | Permissions::Auto => vec![
            bb,
            "Read".into(),
            "Glob".into(),
            "Grep".into(),
            "Edit".into(),
            "Write".into(),
        ],
        Permissions::Sandbox | Permissions::Full => [
            "Bash",
            "Read",
            "Glob",
            "Grep",
            "Edit",
            "Write",
            "WebFetch",
            "WebSearch",
            "NotebookEdit",
            "TodoWrite",
            "Task",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    tools.push(board);
    tools
}

/// The generated `--mcp-config` file of an agent.
pub fn mcp_config_json(run: &RunContext<'_>) -> String {
    let name = super::mcp::SERVER_NAME;
    let cfg = serde_json::json!({
        "mcpServers": {
            name: {
                "type": "stdio",
                "command": super::mcp::command(run),
                "args": super::mcp::args(),
            }
        }
    });
    serde_json::to_string_pretty(&cfg).unwrap_or_default()
}

/// Whether Claude Code accepts `model` itself. It refuses other names
/// (`[claude-code:unrecognized_model]`, exit 0 without a turn), so an agent
/// model such as `nvidia/qwen/…` is not passed to the CLI: the gateway
/// routes every call of the run, whatever model Claude Code names, to the
/// agent's `model:` (it knows the run by its key).
pub fn is_claude_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("claude") || ["sonnet", "opus", "haiku"].contains(&m.as_str())
}

pub fn prepare(run: &RunContext<'_>) -> Result<Launch, PrepareError> {
    let dir = state_dir(run.home, "claude-code", &run.agent.id)?;
    let mcp_config = dir.join("mcp.json");
    write_if_changed(&mcp_config, &mcp_config_json(run))?;
    let mut e = env::base_from_process(run);
    env::set(&mut e, "CLAUDE_CONFIG_DIR", dir.display().to_string());
    env::set(&mut e, "ANTHROPIC_BASE_URL", run.gateway);
    env::set(&mut e, "ANTHROPIC_AUTH_TOKEN", run.run_key);
    env::set(&mut e, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    env::set(&mut e, "DISABLE_AUTOUPDATER", "1");
    // The board's MCP tools are offered from the first turn, not deferred
    // behind Claude Code's tool search (which the model would have to call
    // first to find them).
    env::set(&mut e, "ENABLE_TOOL_SEARCH", "false");
    let cli_model = model_of(run.agent).filter(|m| is_claude_model(m));
    if let Some(m) = cli_model {
        env::set(&mut e, "ANTHROPIC_MODEL", m);
    }
    // `--allowedTools` takes a variable list: one comma-separated value,
    // followed by a flag, so nothing after it is taken for a tool.
    let mut args: Vec<String> = vec![
        "-p".into(),
        "--allowedTools".into(),
        allowed_tools(run).join(","),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        // `--mcp-config` takes a variable list: a flag follows it.
        "--mcp-config".into(),
        mcp_config.display().to_string(),
        "--strict-mcp-config".into(),
    ];
    if let Some(m) = cli_model {
        args.extend(["--model".to_string(), m.to_string()]);
    }
    match run.agent.permissions {
        Permissions::Workspace | Permissions::Auto => {
            args.extend(["--permission-mode".to_string(), "acceptEdits".to_string()]);
        }
        Permissions::Sandbox => {
            // Every tool, no prompt: the sandbox is the boundary. As root,
            // Claude Code refuses this mode unless told it is sandboxed.
            args.push("--dangerously-skip-permissions".into());
            env::set(&mut e, "IS_SANDBOX", "1");
        }
        Permissions::Full => {}
    }
    Ok(Launch {
        program: REQUIREMENT.program.into(),
        args,
        env: e,
        stdin: Some(run.brief.to_string()),
        cwd: run.home.to_path_buf(),
        format: OutputFormat::ClaudeStreamJson,
    })
}
