//! `GET /api/usage`: LLM usage and cost of every project, from the
//! projects' stored ledger (`llm_usage`), added up as `moziplus usage` does.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiQuery;
use crate::api::error::ApiError;
use crate::daemon::Daemon;
use crate::wire::usage::{usage_report, UsageReport};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(usage))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The last this many days (UTC, from now), 1..=400, default 30.
    pub days: Option<i64>,
}

const DAY_MS: i64 = 86_400_000;

/// Usage and cost per project, agent, model, task and day.
#[utoipa::path(get, path = "/api/usage", tag = "usage",
    params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400)))]
async fn usage(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=400).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "days must be between 1 and 400, got {days}"
        )));
    }
    let since = chrono::Utc::now().timestamp_millis() - days * DAY_MS;
    let mut projects = Vec::new();
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb else { continue };
        let lines = bb.usage_lines(since, i64::MAX).await?;
        projects.push((slot.id.to_string(), lines));
    }
    projects.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(usage_report(since, &projects)))
}
