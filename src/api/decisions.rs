//! Decisions: per project and across projects; approve and reject.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{actor, project_service, ApiPath, ApiQuery, OptionalJson};
use crate::api::error::ApiError;
use crate::blackboard::DecisionStatus;
use crate::daemon::Daemon;
use crate::wire::{self, Decision};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new()
        .routes(routes!(list_decisions))
        .routes(routes!(all_decisions))
        .routes(routes!(approve_decision))
        .routes(routes!(reject_decision))
}

/// Most decisions one listing returns per project.
const LIST_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    /// `proposed`, `approved` or `rejected`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    pub decisions: Vec<Decision>,
}

/// A decision with the project it belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectDecision {
    pub project: String,
    #[serde(flatten)]
    pub decision: Decision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllDecisions {
    pub decisions: Vec<ProjectDecision>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    #[serde(default)]
    pub rationale: String,
}

fn status_filter(q: &DecisionQuery) -> Result<Option<DecisionStatus>, ApiError> {
    match q.status.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(ApiError::bad_request),
    }
}

/// Decisions of one project, newest first.
#[utoipa::path(get, path = "/api/projects/{id}/decisions", tag = "decisions",
    params(("id" = String, Path, description = "project id"), DecisionQuery),
    responses((status = 200, body = DecisionList), (status = 404)))]
async fn list_decisions(
    State(d): State<Daemon>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DecisionQuery>,
) -> Result<Json<DecisionList>, ApiError> {
    let status = status_filter(&q)?;
    let svc = project_service(&d, &id).await?;
    Ok(Json(DecisionList {
        decisions: wire::list(svc.decisions(status, LIST_LIMIT).await?),
    }))
}

/// Decisions of every active project, newest first.
#[utoipa::path(get, path = "/api/decisions", tag = "decisions", params(DecisionQuery),
    responses((status = 200, body = AllDecisions)))]
async fn all_decisions(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<DecisionQuery>,
) -> Result<Json<AllDecisions>, ApiError> {
    let status = status_filter(&q)?;
    let mut decisions = Vec::new();
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb else { continue };
        for decision in bb.decisions(status, LIST_LIMIT).await? {
            decisions.push(ProjectDecision {
                project: slot.id.to_string(),
                decision: decision.into(),
            });
        }
    }
    decisions.sort_by_key(|d| std::cmp::Reverse(d.decision.created_at));
    Ok(Json(AllDecisions { decisions }))
}

async fn decide(
    d: Daemon,
    id: String,
    n: String,
    headers: HeaderMap,
    approve: bool,
    rationale: String,
) -> Result<Json<Decision>, ApiError> {
    let who = actor(&headers)?;
    let n = crate::blackboard::ids::parse_decision_id(&n).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{n:?} is not a decision id (D7; 7, D-7 and #7 are accepted too)"
        ))
    })?;
    let svc = project_service(&d, &id).await?;
    let decision = svc
        .settle_decision(n, approve, &who, rationale.trim())
        .await?;
    Ok(Json(decision.into()))
}

/// Approves a proposed decision (409 if already decided).
#[utoipa::path(post, path = "/api/projects/{id}/decisions/{n}/approve", tag = "decisions",
    params(("id" = String, Path, description = "project id"),
           ("n" = String, Path, description = "decision id: D7 (also 7, D-7, #7)")),
    request_body(content = Verdict, description = "optional"), security(("bearer" = [])),
    responses((status = 200, body = Decision), (status = 404), (status = 409)))]
async fn approve_decision(
    State(d): State<Daemon>,
    ApiPath((id, n)): ApiPath<(String, String)>,
    headers: HeaderMap,
    OptionalJson(v): OptionalJson<Verdict>,
) -> Result<Json<Decision>, ApiError> {
    decide(d, id, n, headers, true, v.rationale).await
}

/// Rejects a proposed decision (409 if already decided).
#[utoipa::path(post, path = "/api/projects/{id}/decisions/{n}/reject", tag = "decisions",
    params(("id" = String, Path, description = "project id"),
           ("n" = String, Path, description = "decision id: D7 (also 7, D-7, #7)")),
    request_body(content = Verdict, description = "optional"), security(("bearer" = [])),
    responses((status = 200, body = Decision), (status = 404), (status = 409)))]
async fn reject_decision(
    State(d): State<Daemon>,
    ApiPath((id, n)): ApiPath<(String, String)>,
    headers: HeaderMap,
    OptionalJson(v): OptionalJson<Verdict>,
) -> Result<Json<Decision>, ApiError> {
    decide(d, id, n, headers, false, v.rationale).await
}
