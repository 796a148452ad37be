//! The skills a project's briefs draw from: builtin, custom
//! (distilled) and the project's own, later sources overriding earlier ones
//! of the same id.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{open_project, ApiPath};
use crate::api::error::ApiError;
use crate::daemon::Daemon;
use crate::registry::ProjectId;

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(list_skills))
}

/// One skill as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkillInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub version: u32,
    /// `builtin`, `custom` or `project`.
    pub source: String,
    /// Experiences a distilled skill was made from.
    pub source_experiences: Vec<i64>,
    /// The skill's folder.
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkillList {
    pub skills: Vec<SkillInfo>,
}

/// Skills available to the project's briefs, by id.
#[utoipa::path(get, path = "/api/projects/{id}/skills", tag = "records",
    params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = SkillList), (status = 400), (status = 404), (status = 503)))]
async fn list_skills(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SkillList>, ApiError> {
    // Same checks (and errors) as every project route.
    let bb = open_project(&d, &id).await?;
    let project = ProjectId::parse(bb.project())?;
    // Reads every skill folder: off the runtime.
    let home = d.home().clone();
    let skills =
        tokio::task::spawn_blocking(move || crate::skills::list_skills(&home, Some(&project)))
            .await
            .map_err(|e| ApiError::unavailable(format!("skills cannot be read: {e}")))?
            .map_err(|e| ApiError::unavailable(format!("skills cannot be read: {e}")))?;
    Ok(Json(SkillList {
        skills: skills
            .into_iter()
            .map(|s| SkillInfo {
                source: serde_json::to_value(s.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                id: s.id,
                name: s.name,
                description: s.description,
                tags: s.tags,
                version: s.version,
                source_experiences: s.source_experiences,
                path: s.path.display().to_string(),
            })
            .collect(),
    }))
}
