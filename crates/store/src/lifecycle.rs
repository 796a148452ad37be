//! The task lifecycle as agents and operators drive it: creation and
//! dependencies, claims and leases, release, submit, fail, and the
//! operators' transitions. Each change is one [`change_task!`] or
//! [`write_tx!`]: under the write lock, check, write, emit, commit.

use serde_json::json;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::ids::is_valid_agent_id;
use crate::model::{EventLevel, Millis, ObservationLevel, Priority, Task, TaskStatus};
use crate::tasks::{
    check_task_id, fetch_task, insert_task, observe, system_comment, task_from_row,
    unfinished_dependencies, validate_new_task, would_cycle, write_status, NewTask, TASK_RETURNING,
};

impl Blackboard {
    /// Creates a task (status `pending`) with its tags and dependencies.
    pub async fn create_task(&self, new: NewTask, actor: &Actor) -> BbResult<Task> {
        self.create_task_inner(new, actor, None)
            .await
            .map(|t| t.expect("no key, always created"))
    }

    /// Creates a task exactly once for an inbox line: `key` is recorded in the
    /// same transaction, and a second call with the same key creates nothing
    /// and returns `None`.
    pub async fn create_task_once(
        &self,
        new: NewTask,
        actor: &Actor,
        key: &str,
    ) -> BbResult<Option<Task>> {
        self.create_task_inner(new, actor, Some(key)).await
    }

    async fn create_task_inner(
        &self,
        new: NewTask,
        actor: &Actor,
        key: Option<&str>,
    ) -> BbResult<Option<Task>> {
        // Refused before the transaction: a bad line records no inbox key.
        validate_new_task(&new)?;
        write_tx!(self, |tx, now| {
            if let Some(key) = key {
                let fresh = sqlx::query(
                    "INSERT INTO inbox_applied (key, applied_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if fresh == 0 {
                    return Ok(None);
                }
            }
            let task = insert_task(&mut tx, now, &new, actor, serde_json::Map::new()).await?;
            Some(task)
        })
    }

    /// Adds `task → depends_on`, refusing cycles.
    pub async fn add_dependency(
        &self,
        task: &str,
        depends_on: &str,
        actor: &Actor,
    ) -> BbResult<()> {
        check_task_id(task)?;
        check_task_id(depends_on)?;
        write_tx!(self, |tx, now| {
            let t = fetch_task(&mut tx, task).await?;
            fetch_task(&mut tx, depends_on).await?;
            if t.status.is_terminal() {
                return Err(BbError::Invalid(format!(
                    "task {task} is {}: dependencies can only be added to open tasks",
                    t.status
                )));
            }
            if would_cycle(&mut tx, task, depends_on).await? {
                return Err(BbError::Invalid(format!(
                    "refused: {task} depending on {depends_on} would create a dependency cycle"
                )));
            }
            let inserted = sqlx::query(
                "INSERT INTO dependency (task_id, depends_on, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(task)
            .bind(depends_on)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                emit(
                    &mut tx,
                    now,
                    EventLevel::Optional,
                    "task.dependency_added",
                    Some(task),
                    actor,
                    json!({ "depends_on": depends_on }),
                )
                .await?;
            }
        })
    }

    /// Reads one task.
    pub async fn task(&self, id: &str) -> BbResult<Task> {
        let mut conn = self.pool.acquire().await?;
        fetch_task(&mut conn, id).await
    }

    /// Atomically claims a ready task for `agent` with a lease of `lease_ms`.
    ///
    /// Of any number of concurrent claimers exactly one wins; the others get
    /// [`BbError::Conflict`] naming the holder.
    pub async fn claim_task(&self, id: &str, actor: &Actor, lease_ms: Millis) -> BbResult<Task> {
        check_task_id(id)?;
        write_tx!(self, |tx, now| {
            // The claimed task comes back from the UPDATE itself: one statement
            // (one round trip to the connection's thread) less per claim.
            let greatest = self.backend().greatest();
            let claimed = sqlx::query(&format!(
                "UPDATE task SET status = 'working', claimed_by = ?1,
                     claimed_at = {greatest}(?2, COALESCE(claimed_at, 0) + 1),
                     updated_at = ?2, lease_expires_at = ?3, not_before = NULL
                 WHERE id = ?4 AND status = 'pending'
                   AND (not_before IS NULL OR not_before <= ?2)
                   AND (assignee IS NULL OR assignee = ?1)
                   AND NOT EXISTS (SELECT 1 FROM dependency d JOIN task dt ON dt.id = d.depends_on
                                   WHERE d.task_id = ?4 AND dt.status <> 'done')
                 RETURNING {TASK_RETURNING}"
            ))
            .bind(&actor.name)
            .bind(now)
            .bind(now.saturating_add(lease_ms))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(claimed) = claimed else {
                // Explain the refusal; nothing was written.
                let t = fetch_task(&mut tx, id).await?;
                return Err(match t.status {
                    TaskStatus::Working | TaskStatus::Review => BbError::Conflict(format!(
                        "task {id} is already claimed by {} ({})",
                        t.claimed_by.as_deref().unwrap_or("?"),
                        t.status
                    )),
                    TaskStatus::Pending => {
                        if let Some(a) = t.assignee.as_deref().filter(|a| *a != actor.name) {
                            BbError::Conflict(format!("task {id} is assigned to {a}"))
                        } else if let Some(at) = t.not_before.filter(|at| *at > now) {
                            BbError::Conflict(format!(
                                "task {id} is not ready before {}",
                                crate::model::rfc3339(at)
                            ))
                        } else {
                            let waiting = unfinished_dependencies(&mut tx, id).await?;
                            BbError::Conflict(format!(
                                "task {id} is not ready: waiting on {}",
                                waiting
                                    .iter()
                                    .map(|(d, s)| format!("{d} ({s})"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }
                    }
                    from => BbError::IllegalTransition {
                        task: id.to_string(),
                        from,
                        to: TaskStatus::Working,
                    },
                });
            };
            let task = task_from_row(&claimed)?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "task.claimed",
                Some(id),
                actor,
                json!({ "from": "pending", "to": "working", "agent": actor.name, "round": task.round,
                        "lease_expires_at": task.lease_expires_at }),
            )
            .await?;
            task
        })
    }

    /// Renews the claim's lease (the holder's heartbeat).
    pub async fn heartbeat(&self, id: &str, actor: &Actor, lease_ms: Millis) -> BbResult<Task> {
        change_task!(self, id, |tx, now, task| {
            require_holder(&task, actor, "renew the lease of")?;
            sqlx::query("UPDATE task SET lease_expires_at = ?, updated_at = ? WHERE id = ?")
                .bind(now.saturating_add(lease_ms))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "task.heartbeat",
                Some(id),
                actor,
                json!({ "lease_expires_at": now.saturating_add(lease_ms) }),
            )
            .await?;
        })
    }

    /// Gives a claimed task back (`pending`, same round).
    pub async fn release_task(&self, id: &str, actor: &Actor, reason: &str) -> BbResult<Task> {
        change_task!(self, id, |tx, now, task| {
            require_holder(&task, actor, "release")?;
            write_status(
                &mut tx,
                now,
                &task,
                TaskStatus::Pending,
                actor,
                EventLevel::Optional,
                "task.released",
                json!({ "reason": reason }),
            )
            .await?;
            if !reason.is_empty() {
                system_comment(
                    &mut tx,
                    now,
                    id,
                    &actor.name,
                    &format!("released: {reason}"),
                )
                .await?;
            }
        })
    }

    /// The holder finishes its work: to `review` when the task has a review
    /// protocol, else straight to `done`.
    pub async fn submit_task(&self, id: &str, actor: &Actor) -> BbResult<Task> {
        change_task!(self, id, |tx, now, task| {
            require_holder(&task, actor, "submit")?;
            let (to, level, kind) = if task.review_protocol.is_some() {
                (TaskStatus::Review, EventLevel::Daily, "task.submitted")
            } else {
                (TaskStatus::Done, EventLevel::Daily, "task.done")
            };
            write_status(&mut tx, now, &task, to, actor, level, kind, json!({})).await?;
        })
    }

    /// Marks a task `failed` (the holder giving up, or an operator/daemon).
    pub async fn fail_task(&self, id: &str, actor: &Actor, reason: &str) -> BbResult<Task> {
        if reason.trim().is_empty() {
            return Err(BbError::Invalid(
                "a failure needs a reason (--reason)".into(),
            ));
        }
        change_task!(self, id, |tx, now, task| {
            if !actor.is_privileged() {
                require_holder(&task, actor, "fail")?;
            }
            write_status(
                &mut tx,
                now,
                &task,
                TaskStatus::Failed,
                actor,
                EventLevel::Urgent,
                "task.failed",
                json!({ "reason": reason }),
            )
            .await?;
            system_comment(&mut tx, now, id, &actor.name, &format!("failed: {reason}")).await?;
            observe(
                &mut tx,
                now,
                ObservationLevel::Alert,
                &actor.name,
                Some(id),
                &format!("{id} failed: {reason}"),
            )
            .await?;
        })
    }

    /// Administrative transitions: cancel, block, unblock, reopen (who may is
    /// the service's rule, `service::rules::require_privileged`).
    pub async fn set_status(
        &self,
        id: &str,
        to: TaskStatus,
        actor: &Actor,
        reason: &str,
    ) -> BbResult<Task> {
        if matches!(
            to,
            TaskStatus::Working | TaskStatus::Review | TaskStatus::Done
        ) {
            return Err(BbError::Invalid(format!(
                "use claim / submit / review to move a task to {to}"
            )));
        }
        change_task!(self, id, |tx, now, task| {
            let level = match to {
                TaskStatus::Failed => EventLevel::Urgent,
                TaskStatus::Blocked => EventLevel::Attention,
                _ => EventLevel::Daily,
            };
            write_status(
                &mut tx,
                now,
                &task,
                to,
                actor,
                level,
                &format!("task.{to}"),
                json!({ "reason": reason }),
            )
            .await?;
            if task.status == TaskStatus::Failed && to == TaskStatus::Pending {
                // Reopening a failed task grants it one more round.
                sqlx::query(&format!(
                    "UPDATE task SET round = round + 1, max_rounds = {}(max_rounds, round + 1),
                     finished_at = NULL WHERE id = ?",
                    self.backend().greatest()
                ))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            if !reason.is_empty() {
                system_comment(&mut tx, now, id, &actor.name, &format!("{to}: {reason}")).await?;
            }
        })
    }
}

impl Blackboard {
    /// An operator's edit of an open task: its priority and its designated
    /// assignee (`Some(None)` clears it, so any agent taking its kind may
    /// claim it). A running claim is not touched: the new assignee takes
    /// the task when it is next pending. A finished task is refused (reopen
    /// it first). One `task.updated` event names what changed.
    pub async fn update_task(
        &self,
        id: &str,
        priority: Option<Priority>,
        assignee: Option<Option<String>>,
        actor: &Actor,
    ) -> BbResult<Task> {
        if let Some(Some(a)) = &assignee {
            if !is_valid_agent_id(a) {
                return Err(BbError::Invalid(format!(
                    "invalid assignee agent id {a:?}: use an agent id of config/agents.yaml"
                )));
            }
        }
        change_task!(self, id, |tx, now, task| {
            if task.status.is_terminal() {
                return Err(BbError::Conflict(format!(
                    "task {id} is {}: reopen it before changing its priority or assignee",
                    task.status
                )));
            }
            let mut changed = serde_json::Map::new();
            if let Some(p) = priority.filter(|p| *p != task.priority) {
                sqlx::query("UPDATE task SET priority = ?, updated_at = ? WHERE id = ?")
                    .bind(p.rank())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                changed.insert(
                    "priority".into(),
                    json!({ "from": task.priority.as_str(), "to": p.as_str() }),
                );
            }
            if let Some(a) = assignee.as_ref().filter(|a| **a != task.assignee) {
                sqlx::query("UPDATE task SET assignee = ?, updated_at = ? WHERE id = ?")
                    .bind(a)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                changed.insert("assignee".into(), json!({ "from": task.assignee, "to": a }));
            }
            if !changed.is_empty() {
                emit(
                    &mut tx,
                    now,
                    EventLevel::Daily,
                    "task.updated",
                    Some(id),
                    actor,
                    serde_json::Value::Object(changed),
                )
                .await?;
            }
        })
    }
}

/// The holder rule, the one place it is written: only the holder of a
/// `working` task (or the daemon, acting for a run) may renew its lease,
/// post its output, release, submit or fail it. The store checks it under
/// the write lock; the service checks it first where a refusal must come
/// before work outside the database (an artifact written to disk).
pub fn require_holder(task: &Task, actor: &Actor, verb: &str) -> BbResult<()> {
    if task.status != TaskStatus::Working {
        return Err(BbError::Conflict(format!(
            "cannot {verb} task {}: it is {}, not working",
            task.id, task.status
        )));
    }
    match task.claimed_by.as_deref() {
        Some(holder) if holder == actor.name => Ok(()),
        Some(_) if actor.kind == crate::actor::ActorKind::Daemon => Ok(()),
        Some(holder) => Err(BbError::Forbidden(format!(
            "cannot {verb} task {}: it is claimed by {holder}, not {}",
            task.id, actor.name
        ))),
        None => Err(BbError::Forbidden(format!(
            "cannot {verb} task {}: nobody holds it",
            task.id
        ))),
    }
}
