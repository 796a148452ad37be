//! Decisions: recorded or proposed, approved or rejected by a person, and
//! expired by the daemon when nobody answered in time.

use serde_json::json;
use sqlx::FromRow;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::model::{Decision, DecisionStatus, EventLevel, Millis};
use crate::records::check_body;
use crate::tasks::{check_task_id, fetch_task};

/// A decision to record (`bb decide`, or a high-risk tool call).
#[derive(Debug, Clone, Default)]
pub struct NewDecision {
    pub task_id: Option<String>,
    pub question: String,
    pub decision: String,
    pub rationale: String,
    /// `true` records a settled decision (`approved` by its author); `false`
    /// proposes it for a human to approve or reject.
    pub settled: bool,
    /// Unanswered proposals become `rejected` at this time.
    pub expires_at: Option<Millis>,
}

pub(super) fn decision_from_row(r: &sqlx::any::AnyRow) -> BbResult<Decision> {
    Ok(Decision::from_row(r)?)
}

impl Blackboard {
    /// Records or proposes a decision.
    pub async fn add_decision(&self, new: NewDecision, actor: &Actor) -> BbResult<Decision> {
        check_body("decision question", &new.question)?;
        if let Some(t) = &new.task_id {
            check_task_id(t)?;
        }
        write_tx!(self, |tx, now| {
            if let Some(t) = &new.task_id {
                fetch_task(&mut tx, t).await?;
            }
            let (status, decided_by, decided_at) = if new.settled {
                (
                    DecisionStatus::Approved,
                    Some(actor.name.as_str()),
                    Some(now),
                )
            } else {
                (DecisionStatus::Proposed, None, None)
            };
            let row = sqlx::query(
                "INSERT INTO decision (task_id, author, question, decision, rationale, status,
                     decided_by, decided_at, expires_at, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            )
            .bind(&new.task_id)
            .bind(&actor.name)
            .bind(&new.question)
            .bind(&new.decision)
            .bind(&new.rationale)
            .bind(status.as_str())
            .bind(decided_by)
            .bind(decided_at)
            .bind(new.expires_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let decision = decision_from_row(&row)?;
            let level = if new.settled {
                EventLevel::Daily
            } else {
                EventLevel::Attention
            };
            emit(
                &mut tx,
                now,
                level,
                if new.settled {
                    "decision.recorded"
                } else {
                    "decision.proposed"
                },
                new.task_id.as_deref(),
                actor,
                json!({ "decision_id": decision.id, "question": new.question }),
            )
            .await?;
            decision
        })
    }

    pub async fn decision(&self, id: i64) -> BbResult<Decision> {
        let row = sqlx::query("SELECT * FROM decision WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| BbError::NotFound {
                what: "decision",
                id: crate::ids::format_decision_id(id),
            })?;
        decision_from_row(&row)
    }

    pub async fn decisions(
        &self,
        status: Option<DecisionStatus>,
        limit: i64,
    ) -> BbResult<Vec<Decision>> {
        let rows = sqlx::query(
            "SELECT * FROM decision WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(status.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision_from_row).collect()
    }

    /// Approves or rejects a proposed decision (who may is the service's
    /// rule, `service::rules::require_privileged`).
    pub async fn decide(
        &self,
        id: i64,
        approve: bool,
        actor: &Actor,
        rationale: &str,
    ) -> BbResult<Decision> {
        write_tx!(self, |tx, now| {
            let row = sqlx::query("SELECT * FROM decision WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| BbError::NotFound {
                    what: "decision",
                    id: crate::ids::format_decision_id(id),
                })?;
            let d = decision_from_row(&row)?;
            if d.status != DecisionStatus::Proposed {
                return Err(BbError::Conflict(format!(
                    "decision D{id} is already {} by {}",
                    d.status,
                    d.decided_by.as_deref().unwrap_or("?")
                )));
            }
            let status = if approve {
                DecisionStatus::Approved
            } else {
                DecisionStatus::Rejected
            };
            let row = sqlx::query(
                "UPDATE decision SET status = ?, decided_by = ?, decided_at = ?,
                     rationale = CASE WHEN ? = '' THEN rationale ELSE ? END
                 WHERE id = ? RETURNING *",
            )
            .bind(status.as_str())
            .bind(&actor.name)
            .bind(now)
            .bind(rationale)
            .bind(rationale)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let decided = decision_from_row(&row)?;
            emit(
                &mut tx,
                now,
                EventLevel::Daily,
                &format!("decision.{status}"),
                d.task_id.as_deref(),
                actor,
                json!({ "decision_id": id }),
            )
            .await?;
            decided
        })
    }

    /// Rejects proposals past their expiry; returns how many expired.
    pub async fn expire_decisions(&self) -> BbResult<u64> {
        let now = self.now();
        // Cheap read first: the tick calls this every time, and a write
        // transaction with nothing to write still takes the lock.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM decision WHERE status = 'proposed' AND expires_at IS NOT NULL
             AND expires_at <= ? LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(0);
        }
        write_tx!(self, |tx, now| {
            let ids: Vec<(i64, Option<String>)> = sqlx::query_as(
                "UPDATE decision SET status = 'rejected', decided_by = 'daemon', decided_at = ?1,
                     rationale = 'expired without an answer'
                 WHERE status = 'proposed' AND expires_at IS NOT NULL AND expires_at <= ?1
                 RETURNING id, task_id",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for (id, task) in &ids {
                emit(
                    &mut tx,
                    now,
                    EventLevel::Attention,
                    "decision.expired",
                    task.as_deref(),
                    &Actor::daemon(),
                    json!({ "decision_id": id }),
                )
                .await?;
            }
            ids.len() as u64
        })
    }
}
