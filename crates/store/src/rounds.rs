//! How rounds end without the holder: a claim given back (its lease ran
//! out, its run failed or was lost — what to write is decided by
//! `service::ProjectService::give_back`, applied here under the lock that
//! re-checks the claim), holds before a next run, and review conclusions.

use serde_json::json;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::model::{Claim, EventLevel, Millis, Task, TaskStatus};
use crate::tasks::{
    apply_give_back, fetch_task, unfinished_dependencies, write_status, GiveBack, GiveBackTo,
    ReviewConclusion,
};

impl Blackboard {
    /// The claims of `working` tasks whose lease has run out, oldest task
    /// first: what `ProjectService::expire_leases` gives back.
    pub async fn expired_claims(&self) -> BbResult<Vec<(String, Claim)>> {
        let rows: Vec<(String, Option<String>, Option<Millis>)> = sqlx::query_as(
            "SELECT id, claimed_by, claimed_at FROM task WHERE status = 'working'
             AND lease_expires_at IS NOT NULL AND lease_expires_at <= ? ORDER BY seq",
        )
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, holder, claimed_at)| {
                let claim = Claim {
                    holder: holder?,
                    claimed_at: claimed_at?,
                };
                Some((id, claim))
            })
            .collect())
    }

    /// Gives a task back — only if `claim` still stands: `working`, held by
    /// its holder, claimed at its `claimed_at`. Each claim of a task gets a
    /// later `claimed_at` than the one before (see
    /// [`Blackboard::claim_task`]), so a run whose agent released the task,
    /// which the same agent then claimed again for another run, cannot give
    /// back the new claim (issue 13, defect 7).
    ///
    /// `decide` is called under the write lock with the task as it is now;
    /// it says what to write ([`GiveBack`]) or `None` to leave the task (a
    /// lease a heartbeat just renewed). The store decides nothing here:
    /// `service::ProjectService::give_back` is the one caller. Returns the
    /// new status, or `None` when the claim had ended or `decide` declined.
    pub async fn give_back(
        &self,
        id: &str,
        claim: &Claim,
        decide: impl FnOnce(&Task, Millis) -> Option<GiveBack>,
    ) -> BbResult<Option<TaskStatus>> {
        write_tx!(self, |tx, now| {
            let task = fetch_task(&mut tx, id).await?;
            if task.status != TaskStatus::Working || task.claim().as_ref() != Some(claim) {
                return Ok(None);
            }
            let Some(give) = decide(&task, now) else {
                return Ok(None);
            };
            Some(apply_give_back(&mut tx, now, &task, &Actor::daemon(), &give).await?)
        })
    }

    /// Keeps a `pending` task from being claimed before `until` (UTC ms):
    /// the backoff before the next run of a task its agent released without
    /// progress. Returns false when the task is not pending.
    pub async fn hold_pending_until(&self, id: &str, until: Millis) -> BbResult<bool> {
        let r = sqlx::query(
            "UPDATE task SET not_before = ?1, updated_at = ?2 WHERE id = ?3 AND status = 'pending'",
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
                // A rejected review ends the round as a give-back does.
                let give = GiveBack {
                    to: if task.at_round_limit() {
                        GiveBackTo::Failed
                    } else {
                        GiveBackTo::NextRound
                    },
                    kind: "task.review_rejected",
                    why: why.to_string(),
                    not_before: None,
                };
                match apply_give_back(&mut tx, now, &task, actor, &give).await? {
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
