//! `POST /api/runs/bb`: the board for a run that cannot open it — a
//! sandboxed run (`runtime::sandbox`), later an agent on another host.
//!
//! The caller presents its run key (`Authorization: Bearer mozi-<token>`,
//! as for the gateway); only a run in flight has one. The daemon runs
//! `moziplus bb` for it with the run's own identity — project, task, agent,
//! session and token taken from the daemon's record of the run, never from
//! the request — so the same identity rules as a local `bb` apply: the
//! session token is checked, `--agent` cannot name anyone else, and the
//! project is the run's (a second `--project` or `--home` is a usage
//! error). A file argument would be read on the daemon's side of the
//! sandbox, so `--file` takes only `-` (the client sends the file's text as
//! `stdin`).

use std::process::Stdio;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::api::error::ApiError;
use crate::daemon::Daemon;

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(run_bb))
}

/// The path of [`run_bb`] (the bearer layer lets its own key through).
pub const BB_PATH: &str = "/api/runs/bb";

/// The longest a forwarded `bb` may take (a `decision wait` is bounded by
/// the run's own deadline too).
const MAX_BB_SECS: u64 = 600;

/// A `moziplus bb` command line of a run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBb {
    /// The arguments after `bb` (e.g. `["done", "--json"]`).
    pub args: Vec<String>,
    /// Text given to the command's stdin (`--file -`).
    #[serde(default)]
    pub stdin: Option<String>,
}

/// What the command printed and its exit code (`0` ok, `1` error, `2`
/// usage, `3` conflict).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunBbAnswer {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// A refusal's kind (`not_found`, `conflict`, `forbidden`, `invalid`,
    /// `error`), as the MCP tools name it; absent on success and on a
    /// usage error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Set on the `bb` the daemon runs for a run: a refused command exits with
/// one of [`KIND_EXITS`], which also names its kind.
pub const KIND_EXIT_ENV: &str = "MOZI_BB_KIND_EXIT";

/// The exit codes of a refusal under [`KIND_EXIT_ENV`]: (code, kind, the
/// exit code `bb` gives it otherwise).
pub const KIND_EXITS: [(i32, &str, i32); 5] = [
    (64, "not_found", 1),
    (65, "conflict", 3),
    (66, "forbidden", 1),
    (67, "invalid", 1),
    (68, "error", 1),
];

/// The public exit code and the kind of a child's exit code.
fn public_exit(code: i32) -> (i32, Option<String>) {
    match KIND_EXITS.iter().find(|(c, _, _)| *c == code) {
        Some((_, kind, public)) => (*public, Some(kind.to_string())),
        None => (code, None),
    }
}

/// Runs `moziplus bb` as the run that presents its key.
#[utoipa::path(post, path = "/api/runs/bb", tag = "runs", request_body = RunBb,
    responses((status = 200, body = RunBbAnswer), (status = 401), (status = 403), (status = 400)))]
async fn run_bb(
    State(d): State<Daemon>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunBb>,
) -> Result<Json<RunBbAnswer>, ApiError> {
    let Some(key) = crate::gateway::bearer(&headers) else {
        return Err(ApiError::unauthorized(
            "send the run's key: Authorization: Bearer $MOZI_RUN_KEY",
        ));
    };
    let (Some(run), Some(token)) = (d.run_key(key), key.strip_prefix("mozi-")) else {
        return Err(ApiError::forbidden(
            "this key is no run in flight: only a running agent may use /api/runs/bb",
        ));
    };
    let (kind, deadline_ms) = {
        let runs = d.runs_lock();
        match runs.get(&run.session_id) {
            Some(info) => (info.kind, info.deadline_ms),
            None => {
                return Err(ApiError::forbidden(format!(
                    "session {} has ended",
                    run.session_id
                )))
            }
        }
    };
    if let Some(bad) = file_argument(&body.args) {
        return Err(ApiError::bad_request(format!(
            "--file {bad:?} refused: through the daemon a file is sent as stdin (`--file -`); `moziplus bb` does this itself"
        )));
    }
    let mut cmd = tokio::process::Command::new(d.exe());
    cmd.arg("--home")
        .arg(d.home().root())
        .args(["bb", "--project", &run.project])
        .args(&body.args)
        .env_clear()
        .env(
            "PATH",
            crate::secrets::env_var("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("MOZI_HOME", d.home().root())
        .env("MOZI_PROJECT", &run.project)
        .env("MOZI_TASK", &run.task)
        .env("MOZI_AGENT", &run.agent)
        .env("MOZI_SESSION", &run.session_id)
        .env("MOZI_SESSION_TOKEN", token)
        .env(KIND_EXIT_ENV, "1")
        .env(
            "MOZI_RUN_KIND",
            match kind {
                crate::daemon::runs::RunKind::Work => "work",
                crate::daemon::runs::RunKind::Review => "review",
            },
        )
        .stdin(if body.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot run {}: {e}", d.exe().display())))?;
    if let (Some(text), Some(mut stdin)) = (body.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let left_ms = (deadline_ms - chrono::Utc::now().timestamp_millis()).max(1_000) as u64;
    let limit = Duration::from_millis(left_ms).min(Duration::from_secs(MAX_BB_SECS));
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(ApiError::internal(format!("moziplus bb failed: {e}"))),
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "moziplus bb took longer than {} s",
                limit.as_secs()
            )))
        }
    };
    let (code, kind) = public_exit(out.status.code().unwrap_or(1));
    Ok(Json(RunBbAnswer {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        kind,
    }))
}

/// A `--file` value other than `-`, if any.
fn file_argument(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--file" {
            it.next().map(String::as_str)
        } else {
            a.strip_prefix("--file=")
        };
        if let Some(v) = value.filter(|v| *v != "-") {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_exit_becomes_the_public_code_and_its_kind() {
        assert_eq!(public_exit(66), (1, Some("forbidden".into())));
        assert_eq!(public_exit(65), (3, Some("conflict".into())));
        assert_eq!(public_exit(2), (2, None));
        assert_eq!(public_exit(0), (0, None));
    }

    #[test]
    fn only_stdin_passes_as_a_file() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(file_argument(&args(&["output", "--file", "-"])), None);
        assert_eq!(file_argument(&args(&["output", "--file=-"])), None);
        assert_eq!(
            file_argument(&args(&["output", "--file", "/etc/passwd"])),
            Some("/etc/passwd")
        );
        assert_eq!(
            file_argument(&args(&["output", "--file=/root/.ssh/id"])),
            Some("/root/.ssh/id")
        );
        assert_eq!(file_argument(&args(&["done"])), None);
    }
}
