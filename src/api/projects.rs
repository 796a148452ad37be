//! `/api/projects`: list, create, show, archive, restore — the same registry
//! code as `moziplus project`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::error::ApiError;
use crate::daemon::Daemon;
use crate::registry::{self, NewProject, ProjectEntry, ProjectId, ProjectStatus};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(show_project))
        .routes(routes!(archive_project))
        .routes(routes!(restore_project))
}

/// A project with its live figures (zeros for an archived project).
#[derive(Debug, Serialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub agents: Vec<String>,
    /// `active` or `archived`.
    pub status: String,
    pub created_at: String,
    pub tasks_summary: BTreeMap<String, i64>,
    pub active_agents: usize,
    pub db_size_bytes: u64,
    pub decisions_proposed: i64,
    pub last_event_id: i64,
    /// `workspace:` of `project.yaml`, resolved against the project folder:
    /// where its tasks work (a worktree per task in a git repository,
    /// otherwise a directory per task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Why the project's blackboard cannot be used right now, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Include archived projects.
    #[serde(default)]
    pub include_archived: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Agent ids allowed to work on the project (empty = all).
    #[serde(default)]
    pub agents: Vec<String>,
}

async fn view(d: &Daemon, e: ProjectEntry) -> Project {
    let mut p = Project {
        active_agents: d.runs().iter().filter(|r| r.project == e.id).count(),
        status: match e.status {
            ProjectStatus::Active => "active".into(),
            ProjectStatus::Archived => "archived".into(),
        },
        id: e.id,
        name: e.name,
        description: e.description,
        agents: e.agents,
        created_at: e.created_at,
        tasks_summary: BTreeMap::new(),
        db_size_bytes: 0,
        decisions_proposed: 0,
        last_event_id: 0,
        workspace: None,
        error: None,
    };
    if p.status != "active" {
        return p;
    }
    match d.projects().get(&p.id) {
        Some(slot) => match slot.bb {
            Some(bb) => {
                p.workspace = slot.settings.workspace.as_ref().map(|w| {
                    d.home()
                        .projects_dir()
                        .join(&p.id)
                        .join(w)
                        .display()
                        .to_string()
                });
                p.db_size_bytes = bb.size_bytes();
                match bb.project_stats().await {
                    Ok(s) => {
                        p.tasks_summary = s.tasks_summary;
                        p.decisions_proposed = s.decisions_proposed;
                        p.last_event_id = s.last_event_id;
                    }
                    Err(e) => p.error = Some(e.to_string()),
                }
            }
            None => p.error = slot.error,
        },
        None => p.error = Some("not open yet".into()),
    }
    p
}

async fn entry(d: &Daemon, raw: &str) -> Result<ProjectEntry, ApiError> {
    let id = ProjectId::parse(raw)?;
    Ok(registry::find(d.home(), &id)?)
}

/// All projects.
#[utoipa::path(get, path = "/api/projects", tag = "projects", params(ListQuery),
    responses((status = 200, body = ProjectList)))]
async fn list_projects(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ProjectList>, ApiError> {
    let _ = d.projects().refresh(&d).await;
    let mut projects = Vec::new();
    for e in registry::load(d.home())? {
        if e.status == ProjectStatus::Active || q.include_archived {
            projects.push(view(&d, e).await);
        }
    }
    Ok(Json(ProjectList { projects }))
}

/// Creates a project (folder tree, empty blackboard, registry entry).
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = CreateProject,
    security(("bearer" = [])),
    responses((status = 201, body = Project), (status = 400), (status = 409)))]
async fn create_project(
    State(d): State<Daemon>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let id = ProjectId::parse(&body.id)?;
    let e = registry::create_project(
        d.home(),
        NewProject {
            id,
            name: body.name,
            description: body.description,
            agents: body.agents,
        },
    )
    .await?;
    d.projects()
        .refresh(&d)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    d.wake();
    Ok((StatusCode::CREATED, Json(view(&d, e).await)))
}

/// One project.
#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = Project), (status = 404)))]
async fn show_project(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Project>, ApiError> {
    let e = entry(&d, &id).await?;
    if e.status == ProjectStatus::Active && d.projects().get(&e.id).is_none() {
        let _ = d.projects().refresh(&d).await;
    }
    Ok(Json(view(&d, e).await))
}

/// After an archive or restore: the daemon's open projects follow the
/// registry, the ticker looks again, and the project is answered as it is now.
async fn reopened(d: &Daemon, id: &str) -> Result<Json<Project>, ApiError> {
    d.projects()
        .refresh(d)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    d.wake();
    Ok(Json(view(d, entry(d, id).await?).await))
}

/// Archives a project (refused while a task is working).
#[utoipa::path(post, path = "/api/projects/{id}/archive", tag = "projects",
    params(("id" = String, Path, description = "project id")), security(("bearer" = [])),
    responses((status = 200, body = Project), (status = 404), (status = 409)))]
async fn archive_project(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Project>, ApiError> {
    let pid = ProjectId::parse(&id)?;
    registry::archive_project(d.home(), &pid).await?;
    reopened(&d, &id).await
}

/// Brings an archived project back.
#[utoipa::path(post, path = "/api/projects/{id}/restore", tag = "projects",
    params(("id" = String, Path, description = "project id")), security(("bearer" = [])),
    responses((status = 200, body = Project), (status = 404), (status = 409)))]
async fn restore_project(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Project>, ApiError> {
    let pid = ProjectId::parse(&id)?;
    registry::restore_project(d.home(), &pid).await?;
    reopened(&d, &id).await
}
