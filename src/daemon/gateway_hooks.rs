//! The daemon's side of the gateway boundary ([`GatewayHooks`]): the gateway
//! knows nothing of tasks except the per-run key an agent presents
//! (`OPENAI_API_KEY=mozi-<session token>`), which maps to its run here.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Daemon;
use crate::blackboard::{Actor, NewDecision, Priority as TaskPriority};
use crate::gateway::{ApprovalRequest, GatewayHooks, Priority, RunAttribution, TokenUsage};

/// What the daemon remembers of a running agent's API key.
#[derive(Debug, Clone)]
pub struct RunKey {
    pub session_id: String,
    pub project: String,
    pub task: String,
    pub agent: String,
    pub priority: TaskPriority,
}

/// Hooks backed by the daemon's runs and blackboards.
pub struct DaemonHooks {
    daemon: Daemon,
}

impl DaemonHooks {
    pub fn new(daemon: Daemon) -> Arc<DaemonHooks> {
        Arc::new(DaemonHooks { daemon })
    }
}

fn priority(p: TaskPriority) -> Priority {
    match p {
        TaskPriority::Urgent => Priority::Urgent,
        TaskPriority::High => Priority::High,
        TaskPriority::Normal => Priority::Normal,
        TaskPriority::Low => Priority::Low,
    }
}

impl GatewayHooks for DaemonHooks {
    fn resolve_key(&self, bearer_token: &str) -> Option<RunAttribution> {
        self.daemon.run_key(bearer_token).map(|k| RunAttribution {
            model: self
                .daemon
                .agents()
                .agents
                .iter()
                .find(|a| a.id == k.agent)
                .and_then(|a| a.model.clone()),
            session_id: k.session_id,
            project: k.project,
            task: Some(k.task),
            agent: k.agent,
            task_priority: Some(priority(k.priority)),
        })
    }

    fn record_usage(&self, attribution: &RunAttribution, usage: &TokenUsage) {
        let Some(bb) = self
            .daemon
            .projects()
            .get(&attribution.project)
            .and_then(|s| s.bb)
        else {
            return;
        };
        let session = attribution.session_id.clone();
        let (p, c) = (usage.prompt_tokens as i64, usage.completion_tokens as i64);
        tokio::spawn(async move {
            if let Err(e) = bb.add_session_usage(&session, p, c, 0.0).await {
                tracing::warn!(session, error = %e, "cannot record token usage");
            }
        });
    }

    fn propose_approval(
        &self,
        request: ApprovalRequest,
    ) -> BoxFuture<'static, Result<String, String>> {
        let daemon = self.daemon.clone();
        Box::pin(async move {
            let attribution = request.attribution.ok_or(
                "high-risk tool calls need a run's API key (OPENAI_API_KEY of a moziplus run)",
            )?;
            let bb = daemon
                .projects()
                .get(&attribution.project)
                .and_then(|s| s.bb)
                .ok_or_else(|| format!("project {} is unavailable", attribution.project))?;
            let now = bb.now();
            let d = bb
                .add_decision(
                    NewDecision {
                        task_id: attribution.task.clone(),
                        question: format!(
                            "Allow {} to call high-risk tool `{}`?",
                            attribution.agent, request.tool_name
                        ),
                        decision: request.arguments_json.clone(),
                        rationale: format!(
                            "tool call {} proposed through the gateway",
                            request.tool_call_id
                        ),
                        settled: false,
                        expires_at: Some(now + request.expires_in.as_millis() as i64),
                    },
                    &Actor::session(attribution.agent.clone()),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(d.id.to_string())
        })
    }
}
