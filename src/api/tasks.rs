//! `/api/projects/{id}/tasks`: keyset-paginated listing, creation with
//! dependencies, detail, operator transitions, comments.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{actor, check_limit, parse_list, project_service, ApiJson, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::blackboard::{CommentType, TaskQuery, TaskStatus};
use crate::daemon::Daemon;
use crate::wire::{Comment, ListedTask, NewTask, Task, TaskDetail};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(show_task, update_task))
        .routes(routes!(set_task_status))
        .routes(routes!(add_comment))
        .routes(routes!(waiting_tasks))
}

/// Largest page of tasks.
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskListQuery {
    /// Comma list of statuses.
    pub status: Option<String>,
    /// Designated assignee or current claimant.
    pub assignee: Option<String>,
    pub tag: Option<String>,
    pub kind: Option<String>,
    /// `urgent`, `high`, `normal` or `low`.
    pub priority: Option<String>,
    /// Text in the title or description, or a task id.
    pub q: Option<String>,
    /// 1..=500, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Each with `waiting_for`: why it is not moving (empty: it is not
    /// waiting).
    pub tasks: Vec<ListedTask>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Tasks matching the filters, all pages.
    pub total: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `pending` (unblock, retry), `blocked`, `cancelled` or `failed`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
}

/// An operator's edit of an open task; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskEdit {
    /// `urgent`, `high`, `normal` or `low`.
    #[serde(default)]
    pub priority: Option<String>,
    /// The designated agent; `""` clears it (any agent taking the kind).
    #[serde(default)]
    pub assignee: Option<String>,
    /// Assign an agent the task could never start with (not configured yet).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    pub body: String,
    /// `comment` (default), `question`, `answer`, `rebuttal` or `note`.
    #[serde(default)]
    pub comment_type: Option<String>,
}

/// The opaque cursor: the hex of `priority:seq` of the last row served.
fn encode_cursor((p, s): (i64, i64)) -> String {
    hex::encode(format!("{p}:{s}"))
}

fn decode_cursor(raw: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad_request(format!("bad cursor {raw:?}: pass next_cursor unchanged"));
    let text = String::from_utf8(hex::decode(raw).map_err(|_| bad())?).map_err(|_| bad())?;
    let (p, s) = text.split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Tasks of a project, most urgent first, then oldest.
#[utoipa::path(get, path = "/api/projects/{id}/tasks", tag = "tasks",
    params(("id" = String, Path, description = "project id"), TaskListQuery),
    responses((status = 200, body = TaskList), (status = 400), (status = 404)))]
async fn list_tasks(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let svc = project_service(&d, &id).await?;
    let query = TaskQuery {
        statuses: parse_list(q.status.as_deref())?,
        assignee: non_empty(q.assignee),
        tag: non_empty(q.tag),
        kind: non_empty(q.kind),
        priority: non_empty(q.priority)
            .map(|p| p.parse())
            .transpose()
            .map_err(ApiError::bad_request)?,
        q: non_empty(q.q),
        limit: check_limit(q.limit, 100, MAX_PAGE)?,
        after: non_empty(q.cursor)
            .as_deref()
            .map(decode_cursor)
            .transpose()?,
    };
    let page = svc.task_page(&query).await?;
    let daemon = d.waits().side(d.ticker_paused(), svc.project().as_str());
    Ok(Json(TaskList {
        tasks: svc.listed(page.tasks, &daemon).await?,
        next_cursor: page.next.map(encode_cursor),
        total: page.total,
    }))
}

/// Why the open tasks wait, by task id (`GET …/waiting`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingTasks {
    /// Per task id (only tasks that wait): its reasons, as `waiting_for`.
    pub waiting: std::collections::BTreeMap<String, Vec<crate::wire::Wait>>,
}

/// Most open tasks `GET …/waiting` judges (the most urgent first).
pub const MAX_WAITING: i64 = 500;

/// Why each open task (pending, blocked, working; the 500 most urgent)
/// waits: the dashboard reads it every few seconds, since the daemon's
/// reasons change on its ticks without an event.
#[utoipa::path(get, path = "/api/projects/{id}/waiting", tag = "tasks",
    params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = WaitingTasks), (status = 400), (status = 404)))]
async fn waiting_tasks(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WaitingTasks>, ApiError> {
    let svc = project_service(&d, &id).await?;
    let filter = crate::blackboard::TaskFilter {
        statuses: vec![
            TaskStatus::Pending,
            TaskStatus::Blocked,
            TaskStatus::Working,
        ],
        limit: MAX_WAITING,
        ..Default::default()
    };
    let tasks = svc.list_tasks(&filter).await?;
    let daemon = d.waits().side(d.ticker_paused(), svc.project().as_str());
    Ok(Json(WaitingTasks {
        waiting: svc.waits(&tasks, &daemon).await?,
    }))
}

/// Creates a task (with its dependencies and tags).
#[utoipa::path(post, path = "/api/projects/{id}/tasks", tag = "tasks",
    params(("id" = String, Path, description = "project id")), request_body = NewTask,
    security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 400), (status = 404)))]
async fn create_task(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(new): ApiJson<NewTask>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let who = actor(&headers)?;
    let force = new.force;
    let task = project_service(&d, &id)
        .await?
        .create_task(new.into(), &who, force)
        .await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// A task with its dependencies, comments, outputs, reviews and sessions.
#[utoipa::path(get, path = "/api/projects/{id}/tasks/{task}", tag = "tasks",
    params(("id" = String, Path, description = "project id"),
           ("task" = String, Path, description = "task id, e.g. T-0042")),
    responses((status = 200, body = TaskDetail), (status = 400), (status = 404)))]
async fn show_task(
    State(d): State<Daemon>,
    ApiPath((id, task)): ApiPath<(String, String)>,
) -> Result<Json<TaskDetail>, ApiError> {
    let svc = project_service(&d, &id).await?;
    let detail = svc.task_detail(&task, 500).await?;
    let daemon = d.waits().side(d.ticker_paused(), svc.project().as_str());
    let waits = svc.task_waits(&detail.task, &daemon).await?;
    let mut detail = TaskDetail::from(detail);
    detail.waiting_for = waits;
    Ok(Json(detail))
}

/// Reprioritises or reassigns an open task (409 when it is finished: reopen
/// it first; 400 naming the agents when the assignee could never take it).
#[utoipa::path(patch, path = "/api/projects/{id}/tasks/{task}", tag = "tasks",
    params(("id" = String, Path, description = "project id"),
           ("task" = String, Path, description = "task id")),
    request_body = TaskEdit, security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 400), (status = 404), (status = 409)))]
async fn update_task(
    State(d): State<Daemon>,
    ApiPath((id, task)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(edit): ApiJson<TaskEdit>,
) -> Result<Json<Task>, ApiError> {
    let who = actor(&headers)?;
    let priority = non_empty(edit.priority)
        .map(|p| p.parse())
        .transpose()
        .map_err(ApiError::bad_request)?;
    let assignee = edit
        .assignee
        .map(|a| Some(a.trim().to_string()).filter(|a| !a.is_empty()));
    if priority.is_none() && assignee.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: send \"priority\" (urgent, high, normal, low) and/or \"assignee\" (\"\" clears it)",
        ));
    }
    let svc = project_service(&d, &id).await?;
    let task = svc
        .update_task(&task, priority, assignee, &who, edit.force)
        .await?;
    Ok(Json(task.into()))
}

/// An operator transition: cancel, block, unblock or retry (409 naming both
/// states when the lifecycle does not allow it).
#[utoipa::path(post, path = "/api/projects/{id}/tasks/{task}/status", tag = "tasks",
    params(("id" = String, Path, description = "project id"),
           ("task" = String, Path, description = "task id")),
    request_body = StatusChange, security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 400), (status = 404), (status = 409)))]
async fn set_task_status(
    State(d): State<Daemon>,
    ApiPath((id, task)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(change): ApiJson<StatusChange>,
) -> Result<Json<Task>, ApiError> {
    let who = actor(&headers)?;
    let to: TaskStatus = change.status.parse().map_err(ApiError::bad_request)?;
    let svc = project_service(&d, &id).await?;
    let task = svc
        .set_status(&task, to, &who, change.reason.trim())
        .await?;
    Ok(Json(task.into()))
}

/// Adds a comment to a task.
#[utoipa::path(post, path = "/api/projects/{id}/tasks/{task}/comments", tag = "tasks",
    params(("id" = String, Path, description = "project id"),
           ("task" = String, Path, description = "task id")),
    request_body = NewComment, security(("bearer" = [])),
    responses((status = 201, body = Comment), (status = 400), (status = 404)))]
async fn add_comment(
    State(d): State<Daemon>,
    ApiPath((id, task)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(c): ApiJson<NewComment>,
) -> Result<(StatusCode, Json<Comment>), ApiError> {
    let who = actor(&headers)?;
    let kind: CommentType = match c.comment_type.as_deref() {
        None | Some("") => CommentType::Comment,
        Some(k) => k.parse().map_err(ApiError::bad_request)?,
    };
    let svc = project_service(&d, &id).await?;
    let comment = svc.comment(&task, &who, kind, &c.body).await?;
    Ok((StatusCode::CREATED, Json(comment.into())))
}
