//! `/api/projects/{id}/schedules`: recurring tasks — list (with the next
//! firing and the last instance), create, detail with history, pause,
//! resume, run-now, remove.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{actor, check_limit, project_service, ApiJson, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::daemon::Daemon;
use crate::service::schedules::{def_from_wire, ScheduleView};
use crate::service::ProjectService;
use crate::wire::{NewSchedule, Schedule, ScheduleDetail, ScheduleFiring, Task};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules, create_schedule))
        .routes(routes!(show_schedule, remove_schedule))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
        .routes(routes!(run_schedule_now))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Recorded slots to return, newest first: 1..=500, default 50.
    pub limit: Option<i64>,
}

fn wire(v: &ScheduleView) -> Schedule {
    Schedule::new(&v.schedule, v.next_at, v.last_instance.as_ref())
}

async fn view(svc: &ProjectService, id: &str) -> Result<Schedule, ApiError> {
    Ok(wire(&svc.schedule_view(id).await?))
}

/// The project's schedules, by id, each with its next firing and last instance.
#[utoipa::path(get, path = "/api/projects/{id}/schedules", tag = "schedules",
    params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = Vec<Schedule>), (status = 404)))]
async fn list_schedules(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<Schedule>>, ApiError> {
    let svc = project_service(&d, &id).await?;
    Ok(Json(svc.schedule_views().await?.iter().map(wire).collect()))
}

/// Creates a schedule (409 when the id exists; 400 naming the field that is wrong).
#[utoipa::path(post, path = "/api/projects/{id}/schedules", tag = "schedules",
    params(("id" = String, Path, description = "project id")), request_body = NewSchedule,
    security(("bearer" = [])),
    responses((status = 201, body = Schedule), (status = 400), (status = 404), (status = 409)))]
async fn create_schedule(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(new): ApiJson<NewSchedule>,
) -> Result<(StatusCode, Json<Schedule>), ApiError> {
    let who = actor(&headers)?;
    let (def, force) = def_from_wire(new).map_err(ApiError::bad_request)?;
    let svc = project_service(&d, &id).await?;
    svc.put_schedule(&def, &who, false, force).await?;
    Ok((StatusCode::CREATED, Json(view(&svc, &def.id).await?)))
}

/// A schedule with its history of recorded slots (fired with their task's
/// state, or skipped and why), newest first.
#[utoipa::path(get, path = "/api/projects/{id}/schedules/{schedule}", tag = "schedules",
    params(("id" = String, Path, description = "project id"),
           ("schedule" = String, Path, description = "schedule id"), HistoryQuery),
    responses((status = 200, body = ScheduleDetail), (status = 400), (status = 404)))]
async fn show_schedule(
    State(d): State<Daemon>,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let limit = check_limit(q.limit, 50, 500)?;
    let svc = project_service(&d, &id).await?;
    let firings = svc
        .schedule_firings(&schedule, limit)
        .await?
        .iter()
        .map(ScheduleFiring::from)
        .collect();
    Ok(Json(ScheduleDetail {
        schedule: view(&svc, &schedule).await?,
        firings,
    }))
}

/// Removes a schedule and its history (the tasks it created stay).
#[utoipa::path(delete, path = "/api/projects/{id}/schedules/{schedule}", tag = "schedules",
    params(("id" = String, Path, description = "project id"),
           ("schedule" = String, Path, description = "schedule id")),
    security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
async fn remove_schedule(
    State(d): State<Daemon>,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let who = actor(&headers)?;
    let svc = project_service(&d, &id).await?;
    svc.remove_schedule(&schedule, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: its due slots are recorded as skipped (`paused`).
#[utoipa::path(post, path = "/api/projects/{id}/schedules/{schedule}/pause", tag = "schedules",
    params(("id" = String, Path, description = "project id"),
           ("schedule" = String, Path, description = "schedule id")),
    security(("bearer" = [])),
    responses((status = 200, body = Schedule), (status = 404)))]
async fn pause_schedule(
    State(d): State<Daemon>,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Schedule>, ApiError> {
    set_enabled(&d, &id, &schedule, &headers, false).await
}

/// Resumes a schedule; slots that passed while it was paused do not fire.
#[utoipa::path(post, path = "/api/projects/{id}/schedules/{schedule}/resume", tag = "schedules",
    params(("id" = String, Path, description = "project id"),
           ("schedule" = String, Path, description = "schedule id")),
    security(("bearer" = [])),
    responses((status = 200, body = Schedule), (status = 404)))]
async fn resume_schedule(
    State(d): State<Daemon>,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Schedule>, ApiError> {
    set_enabled(&d, &id, &schedule, &headers, true).await
}

/// Pause and resume: the one switch, then the schedule as it stands.
async fn set_enabled(
    d: &Daemon,
    id: &str,
    schedule: &str,
    headers: &HeaderMap,
    enabled: bool,
) -> Result<Json<Schedule>, ApiError> {
    let who = actor(headers)?;
    let svc = project_service(d, id).await?;
    svc.set_schedule_enabled(schedule, enabled, &who).await?;
    Ok(Json(view(&svc, schedule).await?))
}

/// Fires a schedule now, whatever its overlap policy; returns the task.
#[utoipa::path(post, path = "/api/projects/{id}/schedules/{schedule}/run", tag = "schedules",
    params(("id" = String, Path, description = "project id"),
           ("schedule" = String, Path, description = "schedule id")),
    security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 404), (status = 409)))]
async fn run_schedule_now(
    State(d): State<Daemon>,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let who = actor(&headers)?;
    let svc = project_service(&d, &id).await?;
    let task = svc.run_schedule_now(&schedule, &who).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}
