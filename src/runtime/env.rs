//! The run environment is an allow-list.
//!
//! A run starts with an empty environment and gets exactly:
//!
//! * the base variables [`BASE`] from the daemon's environment (PATH with the
//!   `moziplus` binary's folder first);
//! * the run's `MOZI_*` (home, project, task, agent, session and its token,
//!   run kind, brief, binary, `MOZI_RUN_KEY`, `MOZI_GATEWAY`);
//! * the gateway endpoints with the run key (`OPENAI_BASE_URL`,
//!   `OPENAI_API_KEY`), plus what the adapter adds for its CLI;
//! * the daemon variables the agent names in `pass_env`, and its `env:`;
//! * set by `daemon::runs` after the adapter: the run's own `TMPDIR` (unless
//!   the agent's `env:` sets one) and `MOZI_WORKSPACE` (`crate::workspace`).
//!
//! Nothing else: not `NVIDIA_API_KEY` or any provider key, not
//! `MOZI_SERVER__API_TOKEN`, not the daemon's other `MOZI_*` settings.

use super::RunContext;

/// Variables taken from the daemon's environment when set.
pub const BASE: [&str; 5] = ["PATH", "HOME", "LANG", "TERM", "TMPDIR"];

/// Sets `key` (replacing an earlier value).
pub fn set(env: &mut Vec<(String, String)>, key: &str, value: impl Into<String>) {
    let value = value.into();
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// The value of `key`, if set.
pub fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The allow-listed environment every adapter starts from.
pub fn base(
    run: &RunContext<'_>,
    daemon_env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(24);
    for key in BASE {
        if let Some(v) = daemon_env(key) {
            env.push((key.to_string(), v));
        }
    }
    let bin_dir = run
        .exe
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = match daemon_env("PATH") {
        Some(p) if !p.is_empty() => format!("{bin_dir}:{p}"),
        _ => format!("{bin_dir}:/usr/local/bin:/usr/bin:/bin"),
    };
    set(&mut env, "PATH", path);
    let home = run.home.display().to_string();
    let pairs = [
        ("MOZI_HOME", home),
        ("MOZI_PROJECT", run.project.to_string()),
        ("MOZI_TASK", run.task.to_string()),
        ("MOZI_AGENT", run.agent.id.clone()),
        ("MOZI_SESSION", run.session_id.to_string()),
        ("MOZI_SESSION_TOKEN", run.token.to_string()),
        ("MOZI_RUN_KIND", run.run_kind.to_string()),
        ("MOZI_BIN", run.exe.display().to_string()),
        ("MOZI_BRIEF", run.brief_path.display().to_string()),
        ("MOZI_RUN_KEY", run.run_key.to_string()),
        ("MOZI_GATEWAY", run.gateway.to_string()),
        ("OPENAI_BASE_URL", format!("{}/v1", run.gateway)),
        ("OPENAI_API_KEY", run.run_key.to_string()),
    ];
    for (k, v) in pairs {
        set(&mut env, k, v);
    }
    // The run's `bb` opens the store the daemon's is in. A sandboxed run
    // reaches the board through the daemon instead, and the sandbox drops
    // this (`sandbox::wrap`): the URL may carry the database's password.
    if let Some(url) = daemon_env("MOZI_STORE__URL").filter(|u| !u.is_empty()) {
        set(&mut env, "MOZI_STORE__URL", url);
    }
    if let Some(m) = super::model_of(run.agent) {
        set(&mut env, "MOZI_MODEL", m);
    }
    for name in &run.agent.pass_env {
        if let Some(v) = daemon_env(name) {
            set(&mut env, name, v);
        }
    }
    env
}

/// [`base`] with the daemon's real environment.
pub fn base_from_process(run: &RunContext<'_>) -> Vec<(String, String)> {
    base(run, crate::secrets::env_var)
}
