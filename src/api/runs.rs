//! `POST /api/runs/bb`: the board for a run that cannot open it — a
//! sandboxed run (`runtime::sandbox`), later an agent on another host.
//!
//! The caller presents its run key (`Authorization: Bearer mozi-<token>`,
//! as for the gateway); only a run in flight has one. The daemon runs the
//! `moziplus bb` command line itself, on the project's open blackboard
//! (`daemon::board_calls`: the CLI's parser and verbs, no child process),
//! with the run's own identity — project, task, agent, session and token
//! taken from the daemon's record of the run, never from the request — so
//! the same identity rules as a local `bb` apply: the session token is
//! checked, `--agent` cannot name anyone else, and the project is the
//! run's (another `--project` or a `--home` is a usage error). A file argument would be read on the daemon's side of the
//! sandbox, so `--file` takes only `-` (the client sends the file's text as
//! `stdin`).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::api::error::ApiError;
use crate::daemon::board_calls::BoardCall;
use crate::daemon::Daemon;
use crate::service::RunIdentity;

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

/// What the command printed and how it ended (one type for the daemon
/// that runs it and the client that reads it).
pub use crate::daemon::board_calls::RunBbAnswer;

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
    let deadline_ms = {
        let runs = d.runs_lock();
        match runs.get(&run.session_id) {
            Some(info) => info.deadline_ms,
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
    let Some(calls) = d.board_calls().cloned() else {
        return Err(ApiError::unavailable(
            "this daemon runs no board for runs (it was not started by `moziplus serve`)",
        ));
    };
    let service = super::extract::project_service(&d, &run.project).await?;
    let call = BoardCall {
        service,
        args: body.args,
        stdin: body.stdin.unwrap_or_default().into_bytes(),
        identity: RunIdentity {
            agent: Some(run.agent),
            session: Some(run.session_id),
            token: Some(token.to_string()),
        },
        task: run.task,
        config: d
            .projects()
            .get(&run.project)
            .map(|slot| (slot.config, slot.settings)),
    };
    let left_ms = (deadline_ms - chrono::Utc::now().timestamp_millis()).max(1_000) as u64;
    let limit = Duration::from_millis(left_ms).min(Duration::from_secs(MAX_BB_SECS));
    let answer = tokio::time::timeout(limit, calls(call))
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "moziplus bb took longer than {} s",
                limit.as_secs()
            ))
        })?;
    Ok(Json(answer))
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
