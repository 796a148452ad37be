//! Agent runtimes: how each CLI is started, what it is told, how its calls
//! reach the gateway and how its output is judged.
//!
//! One module per runtime, each built against the CLI versions it names
//! ([`Requirement`]):
//!
//! * [`codex`] — `codex exec --json` (OpenAI Codex CLI), a generated
//!   `config.toml` with a `responses` model provider pointing at the gateway;
//! * [`claude_code`] — `claude -p --output-format stream-json` (Claude Code),
//!   `ANTHROPIC_BASE_URL` + `ANTHROPIC_AUTH_TOKEN` with the run key;
//! * [`openclaw`] — `openclaw agent --local --json`, a generated
//!   `openclaw.json` with a chat-completions provider pointing at the gateway;
//! * [`command`] — any program from a command template (`{model}` and the
//!   other placeholders), with `OPENAI_BASE_URL` / `OPENAI_API_KEY`;
//! * [`demo`] — the demo agent built into the binary (`moziplus demo-agent`).
//!
//! [`Adapter::prepare`] turns a run into a [`Launch`] (program, arguments,
//! the environment allow-list of [`env`], stdin, the generated files);
//! [`Transcript`] turns the CLI's output into normalised [`Activity`] and the
//! CLI's own verdict ([`CliReport`]). `daemon::runs` owns the process.

pub mod check;
pub mod claude_code;
pub mod codex;
pub mod command;
pub mod demo;
pub mod env;
pub mod health;
pub mod mcp;
pub mod openclaw;
pub mod sandbox;
pub mod transcript;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::agents::{AgentDef, AgentsFile};

pub use transcript::{Activity, ActivityKind, CliReport, Transcript};

/// The adapter an agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub enum Adapter {
    Codex,
    ClaudeCode,
    OpenClaw,
    Demo,
    /// A command template (`runtime: command` with the agent's `command:`, a
    /// `runtimes:` entry of `agents.yaml`, or an agent's own `command:`).
    Command {
        template: Vec<String>,
        /// Judge the run by an OpenClaw-style JSON result on stdout.
        json_result: bool,
    },
}

/// How a CLI's stdout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Plain text; every line is assistant text.
    #[default]
    Plain,
    /// `codex exec --json` JSONL events.
    CodexJsonl,
    /// `claude -p --output-format stream-json --verbose` events.
    ClaudeStreamJson,
    /// `openclaw agent --json`: one JSON document at the end.
    OpenClawJson,
}

/// Everything an adapter needs to know about one run.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    pub agent: &'a AgentDef,
    pub session_id: &'a str,
    /// The session token (`MOZI_SESSION_TOKEN`, for `moziplus bb`).
    pub token: &'a str,
    /// The per-run gateway key, `mozi-<token>`.
    pub run_key: &'a str,
    pub brief_path: &'a Path,
    pub brief: &'a str,
    pub timeout_secs: u64,
    pub project: &'a str,
    pub task: &'a str,
    /// `work` or `review`.
    pub run_kind: &'a str,
    pub home: &'a Path,
    /// The `moziplus` binary (absolute).
    pub exe: &'a Path,
    /// The gateway's origin, `http://host:port` (no path).
    pub gateway: &'a str,
}

/// A run ready to be exec'd.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment of the run (the process starts with an empty one).
    pub env: Vec<(String, String)>,
    /// Written to the CLI's stdin, then closed; `None` = stdin is /dev/null.
    pub stdin: Option<String>,
    pub cwd: PathBuf,
    pub format: OutputFormat,
}

impl Launch {
    /// The command line as recorded on the session.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a run could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

impl PrepareError {
    /// The underlying I/O error, if any (infrastructure failures).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            PrepareError::Io { error, .. } => Some(error),
            PrepareError::Config(_) => None,
        }
    }
}

/// The versions a CLI adapter was built against (checked by `doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// Program looked up on PATH.
    pub program: &'static str,
    /// Oldest supported version (inclusive), `major.minor.patch`.
    pub min: &'static str,
    /// First unsupported version (exclusive).
    pub below: &'static str,
    /// Node.js needed to run it, if any (inclusive minimum).
    pub node_min: Option<&'static str>,
    /// The npm package that installs it.
    pub package: &'static str,
}

impl Adapter {
    /// The adapter of `agent`: its own `command:` wins, then a `runtimes:`
    /// entry of `agents.yaml`, then the built-in runtime of that name.
    pub fn for_agent(agents: &AgentsFile, agent: &AgentDef) -> Option<Adapter> {
        if let Some(c) = &agent.command {
            let json_result = agents
                .runtimes
                .get(&agent.runtime)
                .is_some_and(|r| r.json_result);
            return Some(Adapter::Command {
                template: c.clone(),
                json_result,
            });
        }
        if let Some(r) = agents.runtimes.get(&agent.runtime) {
            return Some(Adapter::Command {
                template: r.command.clone(),
                json_result: r.json_result,
            });
        }
        match agent.runtime.as_str() {
            "codex" => Some(Adapter::Codex),
            "claude-code" => Some(Adapter::ClaudeCode),
            "openclaw" => Some(Adapter::OpenClaw),
            "demo" => Some(Adapter::Demo),
            _ => None,
        }
    }

    /// The runtime's name as shown to people.
    pub fn name(&self) -> &'static str {
        match self {
            Adapter::Codex => "codex",
            Adapter::ClaudeCode => "claude-code",
            Adapter::OpenClaw => "openclaw",
            Adapter::Demo => "demo",
            Adapter::Command { .. } => "command",
        }
    }

    /// The CLI versions this adapter supports (`None` for `command`/`demo`).
    pub fn requirement(&self) -> Option<Requirement> {
        match self {
            Adapter::Codex => Some(codex::REQUIREMENT),
            Adapter::ClaudeCode => Some(claude_code::REQUIREMENT),
            Adapter::OpenClaw => Some(openclaw::REQUIREMENT),
            Adapter::Demo | Adapter::Command { .. } => None,
        }
    }

    /// The program a run execs (before PATH lookup), for `doctor` and for
    /// telling a missing binary from a failing one.
    pub fn program(&self, home: &Path, exe: &Path) -> String {
        match self {
            Adapter::Codex => codex::REQUIREMENT.program.into(),
            Adapter::ClaudeCode => claude_code::REQUIREMENT.program.into(),
            Adapter::OpenClaw => openclaw::REQUIREMENT.program.into(),
            Adapter::Demo => exe.display().to_string(),
            Adapter::Command { template, .. } => template
                .first()
                .map(|p| p.replace("{home}", &home.display().to_string()))
                .unwrap_or_default(),
        }
    }

    /// Builds the launch of one run, writing any generated CLI configuration.
    pub fn prepare(&self, run: &RunContext<'_>) -> Result<Launch, PrepareError> {
        let mut launch = match self {
            Adapter::Codex => codex::prepare(run)?,
            Adapter::ClaudeCode => claude_code::prepare(run)?,
            Adapter::OpenClaw => openclaw::prepare(run)?,
            Adapter::Demo => demo::prepare(run),
            Adapter::Command {
                template,
                json_result,
            } => command::prepare(run, template, *json_result)?,
        };
        launch.args.extend(run.agent.extra_args.iter().cloned());
        // The agent's own `env:` comes last: it may override the adapter's.
        for (k, v) in &run.agent.env {
            env::set(&mut launch.env, k, v);
        }
        Ok(launch)
    }
}

/// Where an adapter keeps an agent's generated CLI configuration and state:
/// `<home>/runtimes/<runtime>/<agent>/`, private to the daemon's user.
pub fn state_dir(home: &Path, runtime: &str, agent: &str) -> Result<PathBuf, PrepareError> {
    let dir = crate::home::Home::new(home).runtime_state_dir(runtime, agent);
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| PrepareError::Io {
                path: dir.clone(),
                error,
            })?;
    }
    Ok(dir)
}

/// Writes `text` to `path` unless it already holds exactly that (the
/// per-agent configuration is the same for every run of the agent; an
/// unchanged file is not rewritten under a running CLI).
pub fn write_if_changed(path: &Path, text: &str) -> Result<(), PrepareError> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let io = |error| PrepareError::Io {
        path: path.to_path_buf(),
        error,
    };
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The model an agent asked for, or the one the gateway routes by default.
pub fn model_of(agent: &AgentDef) -> Option<&str> {
    agent.model.as_deref().filter(|m| !m.is_empty())
}

/// Parses `1.2.3` (anything after the third number ignored) for comparing.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether `version` lies in `[min, below)`.
pub fn version_in_range(version: &str, min: &str, below: &str) -> bool {
    match (
        parse_version(version),
        parse_version(min),
        parse_version(below),
    ) {
        (Some(v), Some(lo), Some(hi)) => v >= lo && v < hi,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(parse_version("codex-cli 0.171.0"), Some((0, 171, 0)));
        assert_eq!(parse_version("2.1.332 (Claude Code)"), Some((2, 1, 332)));
        assert_eq!(
            parse_version("OpenClaw 2026.9.6 (eb377ac)"),
            Some((2026, 9, 6))
        );
        assert_eq!(parse_version("v24.21.0"), Some((24, 21, 0)));
        assert!(version_in_range("0.171.0", "0.171.0", "0.200.0"));
        assert!(!version_in_range("0.98.0", "0.171.0", "0.200.0"));
        assert!(!version_in_range("garbage", "0.1.0", "1.0.0"));
    }
}
