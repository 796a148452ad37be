//! What a run could touch and reach: stored with its session
//! (`session.sandbox`), shown in the session's detail and on the
//! dashboard's run panel.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The permissions a run started with (an agent's `permissions:`, with
/// `auto` resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Inside a bubblewrap sandbox: only the paths listed are there, and
    /// the network is the daemon's address and the allowed hosts.
    Sandbox,
    /// No sandbox: the CLI's own restrictions (tools write in the working
    /// directory; Claude Code's shell runs `moziplus bb` only).
    Workspace,
    /// No sandbox and every tool allowed: the whole machine. Unsafe on a
    /// shared machine.
    Full,
}

/// What a run could touch and reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSandbox {
    pub mode: RunMode,
    /// `full`: the run could read and change anything its user can.
    #[serde(rename = "unsafe")]
    pub is_unsafe: bool,
    /// In a sandbox: the folders the run could change.
    pub read_write: Vec<String>,
    /// In a sandbox: the files and folders it could read (besides the
    /// system: `/usr`, `/etc` without its secrets, `/opt`).
    pub read_only: Vec<String>,
    /// In a sandbox: the one address it reached, the gateway and the API
    /// (`server.bind`).
    pub network: Option<String>,
    /// In a sandbox: `sandbox.allow_hosts`, the hosts the proxy let it
    /// connect to (every refusal is a `[mozi:sandbox]` line in its log).
    pub allow_hosts: Vec<String>,
}

impl RunSandbox {
    /// A run without a sandbox.
    pub fn unsandboxed(mode: RunMode) -> RunSandbox {
        RunSandbox {
            mode,
            is_unsafe: mode == RunMode::Full,
            read_write: Vec::new(),
            read_only: Vec::new(),
            network: None,
            allow_hosts: Vec::new(),
        }
    }
}
