//! `/api/budgets`: the budgets in force with their use (`GET`), and
//! budgets changed at run time (`PUT` sets one, `DELETE` goes back to the
//! configuration's). A change is stored in `<home>/budgets.json` first,
//! wins over `budgets:` of the configuration, and unblocks the tasks
//! blocked for budget that have room again.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiQuery};
use crate::api::error::ApiError;
use crate::config::budgets::{check_limit, BudgetKey};
use crate::config::BudgetLimit;
use crate::daemon::gateway_hooks::budgets::Budgets;
use crate::daemon::Daemon;
use crate::wire::budgets::{BudgetChange, BudgetChanged, BudgetList};

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(list_budgets, set_budget, clear_budget))
}

fn budgets(d: &Daemon) -> Result<std::sync::Arc<Budgets>, ApiError> {
    d.budgets()
        .ok_or_else(|| ApiError::unavailable("the gateway, which enforces budgets, is not running"))
}

fn key(raw: &str) -> Result<BudgetKey, ApiError> {
    BudgetKey::parse(raw).map_err(ApiError::bad_request)
}

/// Every budget in force: each entry of the configuration and each set at
/// run time, each `*` entry applied to every project, agent and task with
/// spend, with their use in the window in force.
#[utoipa::path(get, path = "/api/budgets", tag = "budgets",
    responses((status = 200, body = BudgetList), (status = 503)))]
async fn list_budgets(State(d): State<Daemon>) -> Result<Json<BudgetList>, ApiError> {
    Ok(Json(budgets(&d)?.list(&d).await))
}

/// Sets a budget at run time (neither `tokens` nor `usd`: no cap). It is
/// stored, wins over the configuration, and the tasks blocked for budget
/// that have room again go back to `pending`, their round unchanged.
#[utoipa::path(put, path = "/api/budgets", tag = "budgets",
    request_body = BudgetChange,
    security(("bearer" = [])),
    responses((status = 200, body = BudgetChanged), (status = 400), (status = 503)))]
async fn set_budget(
    State(d): State<Daemon>,
    ApiJson(change): ApiJson<BudgetChange>,
) -> Result<Json<BudgetChanged>, ApiError> {
    let key = key(&change.budget)?;
    let limit = BudgetLimit {
        tokens: change.tokens,
        usd: change.usd,
    };
    check_limit(&limit).map_err(ApiError::bad_request)?;
    apply(&d, &key, Some(limit)).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BudgetQuery {
    /// The budget (`task:alpha/T-0001`, `project:alpha:day`, …).
    pub budget: String,
}

/// Removes a budget set at run time: the configuration's entry (if any)
/// applies again; tasks blocked for budget with room again are unblocked.
#[utoipa::path(delete, path = "/api/budgets", tag = "budgets",
    params(BudgetQuery),
    security(("bearer" = [])),
    responses((status = 200, body = BudgetChanged), (status = 400), (status = 503)))]
async fn clear_budget(
    State(d): State<Daemon>,
    ApiQuery(q): ApiQuery<BudgetQuery>,
) -> Result<Json<BudgetChanged>, ApiError> {
    let key = key(&q.budget)?;
    apply(&d, &key, None).await
}

async fn apply(
    d: &Daemon,
    key: &BudgetKey,
    limit: Option<BudgetLimit>,
) -> Result<Json<BudgetChanged>, ApiError> {
    let b = budgets(d)?;
    let unblocked = b.change(d, key, limit).await.map_err(ApiError::internal)?;
    Ok(Json(BudgetChanged {
        budget: b.line(key).await,
        unblocked,
    }))
}
