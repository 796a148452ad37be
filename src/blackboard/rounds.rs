//! How rounds end without the holder: expired leases, claims the daemon
//! gives back, requeues after a failed run, and review conclusions.

use serde_json::json;

use super::tasks::{
    fetch_task, requeue_or_fail, system_comment, unfinished_dependencies, write_status,
    ReviewConclusion,
};
use super::{Actor, BbError, BbResult, Blackboard, EventLevel, Millis, TaskStatus};

impl Blackboard {
    /// Returns every `working` task whose lease has expired to `pending` with
    /// the next round (or `failed` at the limit). Returns the affected ids.
    pub async fn expire_leases(&self) -> BbResult<Vec<(String, TaskStatus)>> {
        let now = self.now();
        let expired: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM task WHERE status = 'working' AND lease_expires_at IS NOT NULL
             AND lease_expires_at <= ? ORDER BY seq",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for id in expired {
            let requeued: BbResult<Option<TaskStatus>> = write_tx!(self, |tx, now| {
                let task = fetch_task(&mut tx, &id).await?;
                // Re-check under the write lock: a heartbeat may have just renewed it.
                if task.status != TaskStatus::Working
                    || task.lease_expires_at.is_none_or(|l| l > now)
                {
                    None
                } else {
                    let why = format!(
                        "lease of {} expired without a heartbeat",
                        task.claimed_by.as_deref().unwrap_or("?")
                    );
                    let actor = Actor::daemon();
                    let kind = "task.lease_expired";
                    Some(requeue_or_fail(&mut tx, now, &task, &actor, &why, kind).await?)
                }
            });
            if let Some(status) = requeued? {
                out.push((id, status));
            }
        }
        Ok(out)
    }

    /// Gives back a task the daemon claimed for a run — only if that very
    /// claim still stands: `working`, held by `holder`, claimed at
    /// `claimed_at`. Each claim of a task gets a later `claimed_at` than the
    /// one before (see [`Blackboard::claim_task`]), so a run whose agent
    /// released the task, which the same agent then claimed again for
    /// another run, cannot give back the new claim (issue 13, defect 7).
    ///
    /// `bump`: `pending` with round + 1 (or `failed` at the limit), event
    /// `kind`; else `pending` in the same round (`task.released`). Returns
    /// the new status, or `None` when the claim had already ended.
    pub async fn give_back_claim(
        &self,
        id: &str,
        holder: &str,
        claimed_at: Millis,
        why: &str,
        kind: &str,
        bump: bool,
    ) -> BbResult<Option<TaskStatus>> {
        write_tx!(self, |tx, now| {
            let task = fetch_task(&mut tx, id).await?;
            if task.status != TaskStatus::Working
                || task.claimed_by.as_deref() != Some(holder)
                || task.claimed_at != Some(claimed_at)
            {
                return Ok(None);
            }
            let status = if bump {
                requeue_or_fail(&mut tx, now, &task, &Actor::daemon(), why, kind).await?
            } else {
                let actor = Actor {
                    name: holder.to_string(),
                    kind: super::ActorKind::Daemon,
                };
                write_status(
                    &mut tx,
                    now,
                    &task,
                    TaskStatus::Pending,
                    &actor,
                    EventLevel::Optional,
                    "task.released",
                    json!({ "reason": why }),
                )
                .await?;
                system_comment(&mut tx, now, id, holder, &format!("released: {why}")).await?;
                TaskStatus::Pending
            };
            Some(status)
        })
    }

    /// Ends a round of work that the daemon judged failed (timeout, crash,
    /// non-zero exit): `pending` with round + 1, or `failed` at the limit.
    /// Keeps a `pending` task from being claimed before `until` (UTC ms):
    /// the backoff before the next round of a task whose run failed. Uses the
    /// lease column, which `ready_tasks` and `claim_task` already respect.
    /// Returns false when the task is not pending.
    pub async fn hold_pending_until(&self, id: &str, until: Millis) -> BbResult<bool> {
        let r = sqlx::query(
            "UPDATE task SET lease_expires_at = ?1, updated_at = ?2 WHERE id = ?3 AND status = 'pending'",
        )
        .bind(until)
        .bind(self.now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Concludes the current review round of a task in `review` with the
    /// task's own round limit (see [`Blackboard::conclude_review_round`]).
    pub async fn conclude_review(
        &self,
        id: &str,
        approved: bool,
        actor: &Actor,
        why: &str,
    ) -> BbResult<ReviewConclusion> {
        self.conclude_review_round(id, None, approved, None, actor, why)
            .await
    }

    /// Concludes a review round: approved → `done`; otherwise `pending` with
    /// round + 1, or `failed` (with an alert observation) at the limit.
    ///
    /// `round`, when given, must be the task's current round, so two ticks
    /// that judged the same round cannot conclude it twice (the second gets a
    /// conflict). `max_rounds`, when given (the review protocol's limit),
    /// replaces the task's own before the limit is checked. The one event of
    /// the change (`task.done` with `review`, or `task.review_rejected` /
    /// `task.failed` with `reason`) carries `why`.
    pub async fn conclude_review_round(
        &self,
        id: &str,
        round: Option<i64>,
        approved: bool,
        max_rounds: Option<i64>,
        actor: &Actor,
        why: &str,
    ) -> BbResult<ReviewConclusion> {
        write_tx!(self, |tx, now| {
            let mut task = fetch_task(&mut tx, id).await?;
            if task.status != TaskStatus::Review {
                return Err(BbError::Conflict(format!(
                    "task {id} is {}, not in review",
                    task.status
                )));
            }
            if let Some(r) = round {
                if r != task.round {
                    return Err(BbError::Conflict(format!(
                        "task {id} is in round {}, not {r}",
                        task.round
                    )));
                }
            }
            if let Some(m) = max_rounds {
                if m != task.max_rounds {
                    sqlx::query("UPDATE task SET max_rounds = ? WHERE id = ?")
                        .bind(m)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    task.max_rounds = m;
                }
            }
            let outcome = if approved {
                write_status(
                    &mut tx,
                    now,
                    &task,
                    TaskStatus::Done,
                    actor,
                    EventLevel::Daily,
                    "task.done",
                    json!({ "review": why }),
                )
                .await?;
                ReviewConclusion::Approved
            } else {
                // requeue_or_fail works from `working`; in review the same rule applies.
                match requeue_or_fail(&mut tx, now, &task, actor, why, "task.review_rejected")
                    .await?
                {
                    TaskStatus::Failed => ReviewConclusion::Failed,
                    _ => ReviewConclusion::Rework,
                }
            };
            outcome
        })
    }

    /// Unfinished dependencies of a task (id and status), for messages.
    pub async fn waiting_on(&self, id: &str) -> BbResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await?;
        unfinished_dependencies(&mut conn, id).await
    }
}
