//! The usage report `moziplus usage`, `GET /api/usage` and the dashboard
//! read: the projects' `llm_usage` lines added up per project, agent,
//! model, task and day. One shape and one sum for every front door, so the
//! figures agree.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::blackboard::usage::UsageLine;
use crate::blackboard::{rfc3339, Millis};

/// Usage of one key (a project, agent, model, task or day).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct UsageRow {
    /// The project id, agent id, `provider/model`, `project/task` or
    /// `YYYY-MM-DD` (UTC); `total` for the total.
    pub key: String,
    /// Responses that reported usage.
    pub responses: i64,
    /// Responses no price matched (their cost counts 0).
    pub unpriced: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Prompt tokens the provider served from its cache.
    pub cached_tokens: i64,
    /// USD as `gateway.prices` priced the calls the gateway saw.
    pub cost_usd: f64,
}

impl UsageRow {
    fn add(&mut self, l: &UsageLine) {
        let b = &l.booking;
        self.responses += b.responses;
        self.unpriced += b.unpriced;
        self.prompt_tokens += b.prompt_tokens;
        self.completion_tokens += b.completion_tokens;
        self.cached_tokens += b.cached_tokens;
        self.cost_usd += b.cost;
    }
}

/// The usage of a period, all projects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct UsageReport {
    /// Start of the period (RFC 3339).
    pub since: String,
    pub total: UsageRow,
    pub by_project: Vec<UsageRow>,
    pub by_agent: Vec<UsageRow>,
    pub by_model: Vec<UsageRow>,
    pub by_task: Vec<UsageRow>,
    /// Per UTC day, oldest first.
    pub by_day: Vec<UsageRow>,
}

/// Adds up `lines` of each project (keys in name order).
pub fn usage_report(since: Millis, projects: &[(String, Vec<UsageLine>)]) -> UsageReport {
    let mut total = UsageRow {
        key: "total".into(),
        ..Default::default()
    };
    let mut maps: [BTreeMap<String, UsageRow>; 5] = Default::default();
    for (project, lines) in projects {
        for l in lines {
            total.add(l);
            let day = rfc3339(l.booking.bucket_start)
                .get(..10)
                .unwrap_or_default()
                .to_string();
            let keys = [
                project.clone(),
                l.agent.clone(),
                format!("{}/{}", l.booking.provider, l.booking.model),
                format!("{project}/{}", l.task_id),
                day,
            ];
            for (map, key) in maps.iter_mut().zip(keys) {
                map.entry(key.clone())
                    .or_insert_with(|| UsageRow {
                        key,
                        ..Default::default()
                    })
                    .add(l);
            }
        }
    }
    let [by_project, by_agent, by_model, by_task, by_day] =
        maps.map(|m| m.into_values().collect::<Vec<_>>());
    UsageReport {
        since: rfc3339(since),
        total,
        by_project,
        by_agent,
        by_model,
        by_task,
        by_day,
    }
}
