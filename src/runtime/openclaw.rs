//! OpenClaw (`openclaw` on npm), built against 2026.9.6; needs Node.js
//! >= 24.16 (under older Node npm installs a 0.0.1 placeholder package).
//!
//! `openclaw agent --local --session-id <session> --message-file <brief>
//! --timeout <s> --json`: `--local` runs the agent in this process (without it
//! the CLI is a client of OpenClaw's own gateway and its tools would run
//! without the run's `MOZI_*`). Each agent gets its own state
//! (`OPENCLAW_STATE_DIR` = `<home>/runtimes/openclaw/<agent>/`) and a
//! generated `openclaw.json` (`OPENCLAW_CONFIG_PATH`) whose only provider,
//! `mozi`, points at the gateway's chat completions (`api:
//! "openai-completions"`) with `apiKey: "${MOZI_RUN_KEY}"` — OpenClaw
//! substitutes the run key from the environment, so calls are booked to the
//! run. The result JSON nests its verdict under `meta`
//! (`meta.aborted`, `meta.agentMeta.usage`, `meta.agentMeta.sessionId`).
//!
//! Permissions: OpenClaw's `exec` tool runs unsandboxed in `--local` mode
//! (its sandbox needs Docker); `workspace` and `full` behave alike here, and
//! the run's cwd is the home. `sandbox` contains it like every runtime
//! (`super::sandbox`).
//!
//! The board is also there as MCP tools: `openclaw.json` registers `moziplus
//! mcp` under `mcp.servers.moziplus`, whose `env` hands the run's identity on
//! through OpenClaw's `${VAR}` substitution (see [`super::mcp`]).

use serde_json::json;

use super::{
    env, model_of, state_dir, write_if_changed, Launch, OutputFormat, PrepareError, Requirement,
    RunContext,
};

pub const REQUIREMENT: Requirement = Requirement {
    program: "openclaw",
    min: "2026.9.0",
    below: "2027.0.0",
    node_min: Some("24.16.0"),
    package: "openclaw",
};

/// The model id OpenClaw is told when agents.yaml names none (the gateway
/// routes it to its default provider).
pub const DEFAULT_MODEL: &str = "default";

/// The generated `openclaw.json` of an agent.
pub fn config_json(run: &RunContext<'_>, state: &std::path::Path) -> String {
    let model = model_of(run.agent).unwrap_or(DEFAULT_MODEL);
    // OpenClaw starts an MCP server with a few base variables and the
    // entry's `env`; its `${VAR}` substitution hands on the run's identity.
    let identity: serde_json::Map<String, serde_json::Value> = super::mcp::handed_on(run)
        .into_iter()
        .map(|k| (k.to_string(), format!("${{{k}}}").into()))
        .collect();
    let name = super::mcp::SERVER_NAME;
    let cfg = json!({
        "mcp": {
            "servers": {
                name: {
                    "command": super::mcp::command(run),
                    "args": super::mcp::args(),
                    "env": identity,
                    "requestTimeoutMs": super::mcp::TOOL_TIMEOUT_SECS * 1000
                }
            }
        },
        "models": {
            "mode": "replace",
            "providers": {
                "mozi": {
                    "baseUrl": format!("{}/v1", run.gateway),
                    "apiKey": "${MOZI_RUN_KEY}",
                    "api": "openai-completions",
                    "models": [{
                        "id": model,
                        "name": model,
                        "reasoning": false,
                        "input": ["text"],
                        "contextWindow": 128000,
                        "maxTokens": 8192
                    }]
                }
            }
        },
        "agents": {
            "defaults": {
                "model": { "primary": format!("mozi/{model}") },
                "workspace": state.join("workspace").display().to_string()
            }
        }
    });
    serde_json::to_string_pretty(&cfg).unwrap_or_default()
}

pub fn prepare(run: &RunContext<'_>) -> Result<Launch, PrepareError> {
    let dir = state_dir(run.home, "openclaw", &run.agent.id)?;
    let config = dir.join("openclaw.json");
    write_if_changed(&config, &config_json(run, &dir))?;
    let mut e = env::base_from_process(run);
    env::set(&mut e, "OPENCLAW_STATE_DIR", dir.display().to_string());
    env::set(&mut e, "OPENCLAW_CONFIG_PATH", config.display().to_string());
    let args = vec![
        "agent".to_string(),
        "--local".into(),
        "--session-id".into(),
        run.session_id.to_string(),
        "--message-file".into(),
        run.brief_path.display().to_string(),
        "--timeout".into(),
        run.timeout_secs.to_string(),
        "--json".into(),
    ];
    Ok(Launch {
        program: REQUIREMENT.program.into(),
        args,
        env: e,
        stdin: None,
        cwd: run.home.to_path_buf(),
        format: OutputFormat::OpenClawJson,
    })
}
