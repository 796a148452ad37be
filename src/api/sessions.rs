//! Agent sessions of a project and their logs (read, and tail as SSE).

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{check_limit, open_project, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::blackboard::{self, Blackboard};
use crate::daemon::Daemon;
use crate::wire::{self, Session};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(read_log))
        .routes(routes!(stream_log))
}

/// Largest slice of a log one read returns.
pub const MAX_LOG_READ: u64 = 1024 * 1024;
/// How often the log tail looks for new bytes.
const TAIL_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only the sessions of this task.
    pub task: Option<String>,
    /// 1..=1000, default 50 (ignored with `task`: all its sessions).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to read from (default 0).
    pub offset: Option<u64>,
    /// Bytes to read, 1..=1048576 (default 65536).
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogSlice {
    pub offset: u64,
    pub next_offset: u64,
    /// The bytes read, as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// Size of the log file now.
    pub size: u64,
    /// The session has ended (the log will not grow).
    pub ended: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// Byte offset to start from (default 0).
    pub offset: Option<u64>,
}

/// Sessions, newest first (or every session of `task`).
#[utoipa::path(get, path = "/api/projects/{id}/sessions", tag = "sessions",
    params(("id" = String, Path, description = "project id"), SessionQuery),
    responses((status = 200, body = SessionList), (status = 400), (status = 404)))]
async fn list_sessions(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let limit = check_limit(q.limit, 50, 1000)?;
    let bb = open_project(&d, &id).await?;
    let sessions = match q.task.as_deref().filter(|t| !t.is_empty()) {
        Some(task) => bb.sessions_for_task(task).await?,
        None => bb.recent_sessions(limit).await?,
    };
    Ok(Json(SessionList {
        sessions: wire::list(sessions),
    }))
}

/// The session, its log's path and the folder the log must be in.
async fn session_and_log(
    d: &Daemon,
    bb: &Blackboard,
    sid: &str,
) -> Result<(blackboard::Session, std::path::PathBuf, std::path::PathBuf), ApiError> {
    let s = bb.session(sid).await?;
    let path = s
        .log_path
        .clone()
        .ok_or_else(|| ApiError::not_found(format!("session {sid} has no log")))?;
    let project = crate::registry::ProjectId::parse(bb.project())?;
    Ok((s, path.into(), d.home().project_dir(&project)))
}

/// A refused log (a link, not a regular file, outside the project) is 403;
/// other trouble reading it is ours.
fn log_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidInput => {
            ApiError::forbidden(format!("refusing to read the log: {e}"))
        }
        _ => ApiError::internal(format!("cannot read the log: {e}")),
    }
}

/// The device and inode of the file the daemon created as a session's log
/// (`detail.log_file`, see `Blackboard::set_session_log_file`).
pub(crate) fn created_log_file(session: &blackboard::Session) -> Option<(u64, u64)> {
    let id = session.detail.as_ref()?.get("log_file")?;
    Some((
        id.get("dev")?.as_i64()? as u64,
        id.get("ino")?.as_i64()? as u64,
    ))
}

/// Reads up to `limit` bytes at `offset`; a missing file reads as empty.
/// The log must be a regular file, not a symbolic link, inside `root` (the
/// project's folder), with one link, and — when the session recorded it —
/// the very file the daemon created (device and inode): the agent whose log
/// it is can replace it, or hard-link an outside file in its place (issue
/// 23, finding 5).
pub(crate) fn read_slice(
    path: &std::path::Path,
    root: &std::path::Path,
    created: Option<(u64, u64)>,
    offset: u64,
    limit: u64,
) -> std::io::Result<(Vec<u8>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut f = match crate::safe_fs::open_confined(path, root) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "{} has {} links (another name points at the same file); the daemon's logs have one",
            path.display(),
            meta.nlink()
        )));
    }
    if created.is_some_and(|id| id != (meta.dev(), meta.ino())) {
        return Err(refused(format!(
            "{} is not the file the daemon created as this session's log (it was replaced)",
            path.display()
        )));
    }
    let size = f.metadata()?.len();
    if offset >= size {
        return Ok((Vec::new(), size));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    Ok((buf, size))
}

/// A slice of a session's log.
#[utoipa::path(get, path = "/api/projects/{id}/sessions/{sid}/log", tag = "sessions",
    params(("id" = String, Path, description = "project id"),
           ("sid" = String, Path, description = "session id"), LogQuery),
    responses((status = 200, body = LogSlice), (status = 400), (status = 404)))]
async fn read_log(
    State(d): State<Daemon>,
    ApiPath((id, sid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<LogSlice>, ApiError> {
    let limit = q.limit.unwrap_or(65_536);
    if !(1..=MAX_LOG_READ).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LOG_READ}, got {limit}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let bb = open_project(&d, &id).await?;
    let (session, path, root) = session_and_log(&d, &bb, &sid).await?;
    let created = created_log_file(&session);
    let (bytes, size) =
        tokio::task::spawn_blocking(move || read_slice(&path, &root, created, offset, limit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(log_error)?;
    Ok(Json(LogSlice {
        offset,
        next_offset: offset + bytes.len() as u64,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        size,
        ended: session.ended_at.is_some(),
    }))
}

/// The log as it grows: `event: log` frames `{"offset","text"}`, then
/// `event: end` once the session ended and everything was sent.
#[utoipa::path(get, path = "/api/projects/{id}/sessions/{sid}/log/stream", tag = "sessions",
    params(("id" = String, Path, description = "project id"),
           ("sid" = String, Path, description = "session id"), TailQuery),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 404)))]
async fn stream_log(
    State(d): State<Daemon>,
    ApiPath((id, sid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TailQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let bb = open_project(&d, &id).await?;
    let (session, path, root) = session_and_log(&d, &bb, &sid).await?;
    let start = q.offset.unwrap_or(0);
    {
        // Refuse a replaced log up front, with the reason; later refusals
        // (a swap mid-stream) end the stream.
        let (path, root) = (path.clone(), root.clone());
        let created = created_log_file(&session);
        tokio::task::spawn_blocking(move || read_slice(&path, &root, created, start, 1))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(log_error)?;
    }
    let shutdown = d.shutdown_signal();
    struct Tail {
        bb: Blackboard,
        sid: String,
        path: std::path::PathBuf,
        root: std::path::PathBuf,
        offset: u64,
        done: bool,
    }
    let state = Tail {
        bb,
        sid,
        path,
        root,
        offset: start,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut t| {
        let mut shutdown = shutdown.clone();
        async move {
            if t.done {
                return None;
            }
            loop {
                // Read the ended flag before the file: bytes written before the
                // end are then always sent before `end`.
                let session = t.bb.session(&t.sid).await.ok();
                let ended = session.as_ref().is_none_or(|s| s.ended_at.is_some());
                let created = session.as_ref().and_then(created_log_file);
                let (path, root) = (t.path.clone(), t.root.clone());
                let offset = t.offset;
                let read = tokio::task::spawn_blocking(move || {
                    read_slice(&path, &root, created, offset, 65_536)
                })
                .await
                .ok()
                .and_then(Result::ok);
                if let Some((bytes, _)) = read.filter(|(b, _)| !b.is_empty()) {
                    let frame = serde_json::json!({
                        "offset": t.offset,
                        "text": String::from_utf8_lossy(&bytes),
                    });
                    t.offset += bytes.len() as u64;
                    let ev = Event::default().event("log").data(frame.to_string());
                    return Some((Ok(ev), t));
                }
                if ended {
                    t.done = true;
                    let frame = serde_json::json!({ "offset": t.offset });
                    let ev = Event::default().event("end").data(frame.to_string());
                    return Some((Ok(ev), t));
                }
                tokio::select! {
                    _ = tokio::time::sleep(TAIL_POLL) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
