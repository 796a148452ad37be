//! Budgets as `moziplus budget list`, `GET /api/budgets` and the
//! dashboard's Costs view show them, and the change `PUT /api/budgets`
//! and `moziplus budget set` accept.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One budget: its limit, where the limit comes from, and its use in the
/// window in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetLine {
    /// `task:<project>/<task>`, `agent:<id>:day`, `project:<id>:day`,
    /// `project:<id>:month`, `home:day`; `*` in place of an id for the
    /// entry every one without its own uses.
    pub budget: String,
    /// For people: `task T-0001 of project alpha`, `project alpha per day`.
    pub name: String,
    /// `config` (`budgets:`), `override` (set at run time; wins over the
    /// configuration), or the `*` entry it applies (`project:*:day`).
    pub source: String,
    /// The cap in tokens (prompt + completion); none = no token cap.
    pub limit_tokens: Option<u64>,
    /// The cap in USD; none = no USD cap.
    pub limit_usd: Option<f64>,
    /// Spent in the window in force (a task: all its runs); none for a `*`
    /// entry, which applies to each one on its own line.
    pub used_tokens: Option<u64>,
    pub used_usd: Option<f64>,
    /// Reserved by calls in flight.
    pub held_tokens: Option<u64>,
    pub held_usd: Option<f64>,
    /// Start of the window in force (RFC 3339); none for a task.
    pub window_start: Option<String>,
}

/// Every budget in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetList {
    /// The hour (0–23, in `time_zone`) windows begin.
    pub reset_hour: u32,
    /// UTC offset of the windows.
    pub time_zone: String,
    /// Share of a cap reported once per window.
    pub soft_threshold: f64,
    pub budgets: Vec<BudgetLine>,
}

/// A budget set at run time. Neither `tokens` nor `usd`: no cap, whatever
/// the configuration says (`DELETE /api/budgets` goes back to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetChange {
    /// The budget (`task:alpha/T-0001`, `project:alpha:day`, …).
    pub budget: String,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub usd: Option<f64>,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetChanged {
    /// The budget's line after the change.
    pub budget: BudgetLine,
    /// Tasks blocked for budget that have room again and went back to
    /// `pending` (`<project>/<task>`), their round unchanged.
    pub unblocked: Vec<String>,
}
