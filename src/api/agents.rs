//! `GET /api/agents`: every agent of `config/agents.yaml` as the operator
//! needs to see it — runtime, model, permissions, what it is doing now
//! (idle, running which tasks, held back until when), its current "doing
//! now" line, today's runs and tokens (UTC day, every project), and its
//! last run that did not succeed.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::blackboard::{rfc3339, AgentDay};
use crate::daemon::Daemon;

pub fn router() -> OpenApiRouter<Daemon> {
    OpenApiRouter::new().routes(routes!(agents))
}

const DAY_MS: i64 = 86_400_000;

/// A run of the agent in flight.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentRun {
    pub project: String,
    pub task: String,
    pub session: String,
    /// `work` or `review`.
    pub kind: String,
    /// RFC 3339.
    pub started_at: String,
}

/// The agent held back on a project after infrastructure failures.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentHold {
    pub project: String,
    /// RFC 3339: no run of it starts on the project before.
    pub until: String,
    pub failures: u32,
    pub reason: String,
}

/// The agent's last run that did not succeed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentError {
    pub project: String,
    pub task: String,
    /// `failed`, `timed_out`, `killed` or `lost`.
    pub outcome: String,
    /// The error the run ended with (may be empty: see its log).
    pub text: String,
    /// RFC 3339.
    pub at: String,
}

/// One agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub runtime: String,
    pub model: Option<String>,
    /// `workspace`, `sandbox` or `full`.
    pub permissions: String,
    pub kinds: Vec<String>,
    /// `running` (a run in flight), `held` (held back on a project, none
    /// running) or `idle`.
    pub state: String,
    /// The state in words: `idle`, `running T-0003 (shop)`, `held back on
    /// shop until … (reason)`.
    pub state_text: String,
    pub running: Vec<AgentRun>,
    pub held: Vec<AgentHold>,
    /// The current run's latest "doing now" line (a tool call, a message).
    pub activity: Option<String>,
    /// Runs started today (UTC), every project.
    pub runs_today: i64,
    /// Their prompt and completion tokens.
    pub tokens_today: i64,
    pub last_error: Option<AgentError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// Every agent: state, current activity, today's runs and tokens, last error.
#[utoipa::path(get, path = "/api/agents", tag = "agents",
    responses((status = 200, body = AgentList)))]
async fn agents(State(d): State<Daemon>) -> Result<Json<AgentList>, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let today = now - now.rem_euclid(DAY_MS);
    // Per project: its agents' day (a project that cannot answer counts
    // nothing; its own error shows on the overview).
    let mut days: Vec<(String, AgentDay)> = Vec::new();
    for slot in d.projects().snapshot() {
        let Some(bb) = slot.bb.as_ref() else { continue };
        match bb.agent_days(today).await {
            Ok(list) => days.extend(list.into_iter().map(|a| (slot.id.to_string(), a))),
            Err(e) => {
                tracing::warn!(project = %slot.id, error = %e, "cannot read the agents' runs")
            }
        }
    }
    let runs = d.runs();
    let problems = d.degraded();
    let agents = d
        .agents()
        .agents
        .iter()
        .map(|a| {
            let running: Vec<AgentRun> = runs
                .iter()
                .filter(|r| r.agent == a.id)
                .map(|r| AgentRun {
                    project: r.project.clone(),
                    task: r.task_id.clone(),
                    session: r.session_id.clone(),
                    kind: format!("{:?}", r.kind).to_lowercase(),
                    started_at: rfc3339(r.started_at_ms),
                })
                .collect();
            let held: Vec<AgentHold> = problems
                .iter()
                .filter(|p| p.agent == a.id && p.retry_at_ms > now)
                .map(|p| AgentHold {
                    project: p.project.clone(),
                    until: rfc3339(p.retry_at_ms),
                    failures: p.failures,
                    reason: p.reason.clone(),
                })
                .collect();
            let activity = runs
                .iter()
                .filter(|r| r.agent == a.id)
                .rev()
                .find_map(|r| d.activity(&r.session_id));
            let mine = days.iter().filter(|(_, day)| day.agent == a.id);
            let (runs_today, tokens_today) = mine
                .clone()
                .fold((0, 0), |(r, t), (_, day)| (r + day.runs, t + day.tokens));
            let last_error = mine
                .filter_map(|(p, day)| day.last_error.clone().map(|e| (p.clone(), e)))
                .max_by_key(|(_, (at, ..))| *at)
                .map(|(project, (at, task, outcome, text))| AgentError {
                    project,
                    task,
                    outcome: outcome.to_string(),
                    text,
                    at: rfc3339(at),
                });
            let (state, state_text) = if !running.is_empty() {
                let tasks: Vec<String> = running
                    .iter()
                    .map(|r| format!("{} ({})", r.task, r.project))
                    .collect();
                ("running", format!("running {}", tasks.join(", ")))
            } else if !held.is_empty() {
                let holds: Vec<String> = held
                    .iter()
                    .map(|h| {
                        format!(
                            "held back on {} until {} ({})",
                            h.project, h.until, h.reason
                        )
                    })
                    .collect();
                ("held", holds.join("; "))
            } else {
                ("idle", "idle".to_string())
            };
            AgentView {
                id: a.id.clone(),
                runtime: a.runtime.clone(),
                model: a.model.clone(),
                permissions: a.permissions.as_str().to_string(),
                kinds: a.kinds.clone(),
                state: state.to_string(),
                state_text,
                running,
                held,
                activity,
                runs_today,
                tokens_today,
                last_error,
            }
        })
        .collect();
    Ok(Json(AgentList { agents }))
}
