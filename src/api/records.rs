//! Observations and experiences of a project (read only).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{check_limit, project_service, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::blackboard::{ExperienceStatus, ObservationLevel};
use crate::daemon::Daemon;
use crate::wire::{self, Experience, Observation};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_observations))
        .routes(routes!(list_experiences))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ObservationQuery {
    /// `info`, `warn` or `alert`.
    pub level: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObservationList {
    pub observations: Vec<Observation>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExperienceQuery {
    /// `active`, `distilled` or `deprecated`.
    pub status: Option<String>,
    pub tag: Option<String>,
    /// 1..=1000, default 200.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperienceList {
    pub experiences: Vec<Experience>,
}

/// Newest observations first.
#[utoipa::path(get, path = "/api/projects/{id}/observations", tag = "records",
    params(("id" = String, Path, description = "project id"), ObservationQuery),
    responses((status = 200, body = ObservationList), (status = 400), (status = 404)))]
async fn list_observations(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ObservationQuery>,
) -> Result<Json<ObservationList>, ApiError> {
    let level: Option<ObservationLevel> = match q.level.as_deref() {
        None | Some("") => None,
        Some(l) => Some(l.parse().map_err(ApiError::bad_request)?),
    };
    let limit = check_limit(q.limit, 100, 1000)?;
    let svc = project_service(&d, &id).await?;
    Ok(Json(ObservationList {
        observations: wire::list(svc.observations(level, limit).await?),
    }))
}

/// Lessons learned, newest first.
#[utoipa::path(get, path = "/api/projects/{id}/experiences", tag = "records",
    params(("id" = String, Path, description = "project id"), ExperienceQuery),
    responses((status = 200, body = ExperienceList), (status = 400), (status = 404)))]
async fn list_experiences(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExperienceQuery>,
) -> Result<Json<ExperienceList>, ApiError> {
    let status: Option<ExperienceStatus> = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse().map_err(ApiError::bad_request)?),
    };
    let limit = check_limit(q.limit, 200, 1000)?;
    let svc = project_service(&d, &id).await?;
    let tag = q.tag.filter(|t| !t.is_empty());
    Ok(Json(ExperienceList {
        experiences: wire::list(svc.experiences(status, tag.as_deref(), limit).await?),
    }))
}
