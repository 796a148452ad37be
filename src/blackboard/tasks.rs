//! The task lifecycle: creation, dependencies, claims and leases, transitions.
//!
//! Every function that changes a task opens a `BEGIN IMMEDIATE` transaction,
//! re-reads the task under the write lock, checks the transition against
//! [`TaskStatus::can_become`] and the actor's rights, writes, emits an event,
//! and commits. A refused change leaves the database untouched.

use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::events::emit;
use super::ids::{format_task_id, is_valid_agent_id, is_valid_tag, is_valid_task_id};
use super::{
    Actor, BbError, BbResult, Blackboard, EventLevel, Millis, ObservationLevel, Priority, Task,
    TaskStatus,
};

/// The columns [`task_from_row`] reads, each qualified with `$t` (the table
/// or its alias and a dot), tags folded into one string.
macro_rules! task_columns {
    ($t:literal) => {
        concat!(
            $t,
            "id, ",
            $t,
            "title, ",
            $t,
            "description, ",
            $t,
            "kind, ",
            $t,
            "status, ",
            $t,
            "priority, ",
            $t,
            "assignee, ",
            $t,
            "claimed_by, ",
            $t,
            "creator, ",
            $t,
            "parent_id, ",
            $t,
            "review_protocol, ",
            $t,
            "round, ",
            $t,
            "max_rounds, ",
            $t,
            "lease_expires_at, ",
            $t,
            "created_at, ",
            $t,
            "updated_at, ",
            $t,
            "claimed_at, ",
            $t,
            "finished_at, ",
            "(SELECT group_concat(tag, ',') FROM (SELECT tag FROM task_tag WHERE task_id = ",
            $t,
            "id ORDER BY tag)) AS tags"
        )
    };
}
/// Columns selected for a [`Task`] from `task t`.
pub(super) const TASK_COLUMNS: &str = task_columns!("t.");
/// The same columns for `UPDATE task … RETURNING`, where SQLite accepts no
/// table alias.
const TASK_RETURNING: &str = task_columns!("task.");

pub(super) fn task_from_row(row: &sqlx::sqlite::SqliteRow) -> BbResult<Task> {
    let status: String = row.try_get("status")?;
    let tags: Option<String> = row.try_get("tags")?;
    Ok(Task {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        kind: row.try_get("kind")?,
        status: status.parse().map_err(BbError::Invalid)?,
        priority: Priority::from_rank(row.try_get("priority")?),
        assignee: row.try_get("assignee")?,
        claimed_by: row.try_get("claimed_by")?,
        creator: row.try_get("creator")?,
        parent_id: row.try_get("parent_id")?,
        review_protocol: row.try_get("review_protocol")?,
        round: row.try_get("round")?,
        max_rounds: row.try_get("max_rounds")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        claimed_at: row.try_get("claimed_at")?,
        finished_at: row.try_get("finished_at")?,
        tags: tags
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// What `bb create` (or the inbox, or the API) asks for.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub review_protocol: Option<String>,
    #[serde(default)]
    pub max_rounds: Option<i64>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// How a review round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewConclusion {
    Approved,
    /// Back to `pending` with the next round.
    Rework,
    /// Rejected at the round limit.
    Failed,
}

fn is_valid_kind(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

pub(super) fn check_task_id(id: &str) -> BbResult<()> {
    if is_valid_task_id(id) {
        Ok(())
    } else {
        Err(BbError::Invalid(format!(
            "malformed task id {id:?}: expected T- followed by at least four digits, e.g. T-0042"
        )))
    }
}

/// Reads one task inside a transaction (or on a pooled connection).
/// Checks a [`NewTask`] before anything is written.
fn validate_new_task(new: &NewTask) -> BbResult<()> {
    let title = new.title.trim();
    if title.is_empty() {
        return Err(BbError::Invalid("task title must not be empty".into()));
    }
    if title.len() > 500 {
        return Err(BbError::Invalid(
            "task title is longer than 500 bytes".into(),
        ));
    }
    if let Some(kind) = &new.kind {
        if !is_valid_kind(kind) {
            return Err(BbError::Invalid(format!(
                "invalid task kind {kind:?}: use lowercase letters, digits, - or _"
            )));
        }
    }
    if let Some(a) = &new.assignee {
        if !is_valid_agent_id(a) {
            return Err(BbError::Invalid(format!("invalid assignee agent id {a:?}")));
        }
    }
    for tag in &new.tags {
        if !is_valid_tag(tag) {
            return Err(BbError::Invalid(format!(
                "invalid tag {tag:?}: use lowercase letters, digits, - _ . :"
            )));
        }
    }
    let max_rounds = new.max_rounds.unwrap_or(3);
    if !(1..=1000).contains(&max_rounds) {
        return Err(BbError::Invalid(format!(
            "max_rounds must be between 1 and 1000, got {max_rounds}"
        )));
    }
    for d in new.depends_on.iter().chain(new.parent_id.iter()) {
        check_task_id(d)?;
    }
    Ok(())
}

/// Inserts a new `pending` task with its tags and dependencies and its
/// `task.created` event (`extra` is added to the event's payload), inside the
/// caller's `BEGIN IMMEDIATE` transaction. Every way a task is created goes
/// through here.
pub(super) async fn insert_task(
    conn: &mut SqliteConnection,
    now: Millis,
    new: &NewTask,
    actor: &Actor,
    extra: serde_json::Map<String, serde_json::Value>,
) -> BbResult<Task> {
    validate_new_task(new)?;
    let title = new.title.trim();
    let kind = new.kind.clone().unwrap_or_else(|| "code".into());
    let max_rounds = new.max_rounds.unwrap_or(3);
    for d in &new.depends_on {
        fetch_task(conn, d).await.map_err(|e| match e {
            BbError::NotFound { id, .. } => BbError::NotFound {
                what: "dependency task",
                id,
            },
            e => e,
        })?;
    }
    if let Some(p) = &new.parent_id {
        fetch_task(conn, p).await.map_err(|e| match e {
            BbError::NotFound { id, .. } => BbError::NotFound {
                what: "parent task",
                id,
            },
            e => e,
        })?;
    }
    let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM task")
        .fetch_one(&mut *conn)
        .await?;
    let id = format_task_id(seq);
    let priority = new.priority.unwrap_or(Priority::Normal);
    sqlx::query(
        "INSERT INTO task (id, seq, title, description, kind, status, priority, assignee,
             creator, parent_id, review_protocol, round, max_rounds, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, 1, ?, ?, ?)",
    )
    .bind(&id)
    .bind(seq)
    .bind(title)
    .bind(&new.description)
    .bind(&kind)
    .bind(priority.rank())
    .bind(&new.assignee)
    .bind(&actor.name)
    .bind(&new.parent_id)
    .bind(&new.review_protocol)
    .bind(max_rounds)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut tags = new.tags.clone();
    tags.sort();
    tags.dedup();
    for tag in &tags {
        sqlx::query("INSERT INTO task_tag (task_id, tag) VALUES (?, ?)")
            .bind(&id)
            .bind(tag)
            .execute(&mut *conn)
            .await?;
    }
    let mut deps = new.depends_on.clone();
    deps.sort();
    deps.dedup();
    for d in &deps {
        // A brand-new task has no dependents, so no cycle can pass through it.
        sqlx::query("INSERT INTO dependency (task_id, depends_on, created_at) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(d)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    let mut payload = serde_json::Map::new();
    payload.insert("title".into(), json!(title));
    payload.insert("kind".into(), json!(kind));
    payload.insert("priority".into(), json!(priority));
    payload.insert("depends_on".into(), json!(deps));
    payload.extend(extra);
    emit(
        conn,
        now,
        EventLevel::Daily,
        "task.created",
        Some(&id),
        actor,
        serde_json::Value::Object(payload),
    )
    .await?;
    fetch_task(conn, &id).await
}

pub(super) async fn fetch_task(conn: &mut SqliteConnection, id: &str) -> BbResult<Task> {
    check_task_id(id)?;
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM task t WHERE t.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => task_from_row(&row),
        None => Err(BbError::NotFound {
            what: "task",
            id: id.to_string(),
        }),
    }
}

/// Ids of `task`'s dependencies that are not `done`, with their statuses.
async fn unfinished_dependencies(
    conn: &mut SqliteConnection,
    task: &str,
) -> BbResult<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT d.depends_on, t.status FROM dependency d JOIN task t ON t.id = d.depends_on
         WHERE d.task_id = ? AND t.status <> 'done' ORDER BY d.depends_on",
    )
    .bind(task)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect())
}

/// Whether adding `task → depends_on` would close a cycle: true when `task` is
/// already reachable from `depends_on` along dependency edges.
async fn would_cycle(conn: &mut SqliteConnection, task: &str, depends_on: &str) -> BbResult<bool> {
    if task == depends_on {
        return Ok(true);
    }
    let hit: Option<i64> = sqlx::query_scalar(
        "WITH RECURSIVE reach(id) AS (
             SELECT ?1
             UNION
             SELECT d.depends_on FROM dependency d JOIN reach r ON d.task_id = r.id
         )
         SELECT 1 FROM reach WHERE id = ?2 LIMIT 1",
    )
    .bind(depends_on)
    .bind(task)
    .fetch_optional(conn)
    .await?;
    Ok(hit.is_some())
}

/// Writes a transition and its event; the caller has checked legality.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_status(
    conn: &mut SqliteConnection,
    now: Millis,
    task: &Task,
    to: TaskStatus,
    actor: &Actor,
    level: EventLevel,
    kind: &str,
    extra: serde_json::Value,
) -> BbResult<()> {
    if !task.status.can_become(to) {
        return Err(BbError::IllegalTransition {
            task: task.id.clone(),
            from: task.status,
            to,
        });
    }
    let finished = to.is_terminal().then_some(now);
    // Leaving `working` always ends the lease; going back to `pending` (or
    // being cancelled) also ends the claim. The author stays recorded in
    // `claimed_by` through review, done and failed.
    sqlx::query(
        "UPDATE task SET status = ?1, updated_at = ?2, finished_at = COALESCE(?3, finished_at),
             lease_expires_at = CASE WHEN ?1 = 'working' THEN lease_expires_at ELSE NULL END,
             claimed_by = CASE WHEN ?1 IN ('pending', 'cancelled') THEN NULL ELSE claimed_by END
         WHERE id = ?4",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(finished)
    .bind(&task.id)
    .execute(&mut *conn)
    .await?;
    let mut payload = json!({ "from": task.status, "to": to, "round": task.round });
    if let (Some(p), serde_json::Value::Object(e)) = (payload.as_object_mut(), extra) {
        p.extend(e);
    }
    emit(conn, now, level, kind, Some(&task.id), actor, payload).await?;
    Ok(())
}

pub(super) async fn system_comment(
    conn: &mut SqliteConnection,
    now: Millis,
    task: &str,
    author: &str,
    body: &str,
) -> BbResult<()> {
    sqlx::query(
        "INSERT INTO comment (task_id, author, comment_type, body, created_at)
         VALUES (?, ?, 'system', ?, ?)",
    )
    .bind(task)
    .bind(author)
    .bind(body)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn observe(
    conn: &mut SqliteConnection,
    now: Millis,
    level: ObservationLevel,
    source: &str,
    task: Option<&str>,
    body: &str,
) -> BbResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO observation (level, source, task_id, body, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(level.as_str())
    .bind(source)
    .bind(task)
    .bind(body)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// Sends a task back for another attempt (`pending`, round + 1), or marks it
/// `failed` with an alert observation when the round limit is reached.
/// Returns the new status.
pub(super) async fn requeue_or_fail(
    conn: &mut SqliteConnection,
    now: Millis,
    task: &Task,
    actor: &Actor,
    why: &str,
    kind: &str,
) -> BbResult<TaskStatus> {
    if task.round >= task.max_rounds {
        write_status(
            conn,
            now,
            task,
            TaskStatus::Failed,
            actor,
            EventLevel::Urgent,
            "task.failed",
            json!({ "reason": why, "cause": kind }),
        )
        .await?;
        let body = format!(
            "{} failed after {} of {} rounds: {why}",
            task.id, task.round, task.max_rounds
        );
        system_comment(conn, now, &task.id, &actor.name, &body).await?;
        observe(
            conn,
            now,
            ObservationLevel::Alert,
            &actor.name,
            Some(&task.id),
            &body,
        )
        .await?;
        Ok(TaskStatus::Failed)
    } else {
        write_status(
            conn,
            now,
            task,
            TaskStatus::Pending,
            actor,
            EventLevel::Attention,
            kind,
            json!({ "reason": why, "next_round": task.round + 1 }),
        )
        .await?;
        sqlx::query("UPDATE task SET round = round + 1 WHERE id = ?")
            .bind(&task.id)
            .execute(&mut *conn)
            .await?;
        system_comment(
            conn,
            now,
            &task.id,
            &actor.name,
            &format!(
                "round {} ended: {why}; round {} is next",
                task.round,
                task.round + 1
            ),
        )
        .await?;
        Ok(TaskStatus::Pending)
    }
}

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
        let now = self.now();
        let mut tx = self.begin_write().await?;
        if let Some(key) = key {
            let fresh =
                sqlx::query("INSERT OR IGNORE INTO inbox_applied (key, applied_at) VALUES (?, ?)")
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
        tx.commit().await?;
        Ok(Some(task))
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
            "INSERT OR IGNORE INTO dependency (task_id, depends_on, created_at) VALUES (?, ?, ?)",
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
        tx.commit().await?;
        Ok(())
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
        // The claimed task comes back from the UPDATE itself: one statement
        // (one round trip to the connection's thread) less per claim.
        let claimed = sqlx::query(&format!(
            "UPDATE task SET status = 'working', claimed_by = ?1,
                 claimed_at = MAX(?2, COALESCE(claimed_at, 0) + 1),
                 updated_at = ?2, lease_expires_at = ?3
             WHERE id = ?4 AND status = 'pending'
               AND (lease_expires_at IS NULL OR lease_expires_at <= ?2)
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
                    } else if t.lease_expires_at.is_some_and(|l| l > now) {
                        BbError::Conflict(format!(
                            "task {id} is not ready before {}",
                            super::rfc3339(t.lease_expires_at.unwrap_or_default())
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
        tx.commit().await?;
        Ok(task)
    }

    /// Checks that `actor` holds the claim on a `working` task.
    fn require_holder(task: &Task, actor: &Actor, verb: &str) -> BbResult<()> {
        if task.status != TaskStatus::Working {
            return Err(BbError::Conflict(format!(
                "cannot {verb} task {}: it is {}, not working",
                task.id, task.status
            )));
        }
        match task.claimed_by.as_deref() {
            Some(holder) if holder == actor.name => Ok(()),
            Some(_) if actor.kind == super::ActorKind::Daemon => Ok(()),
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

    /// Renews the claim's lease (the holder's heartbeat).
    pub async fn heartbeat(&self, id: &str, actor: &Actor, lease_ms: Millis) -> BbResult<Task> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
        Self::require_holder(&task, actor, "renew the lease of")?;
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
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task)
    }

    /// Gives a claimed task back (`pending`, same round).
    pub async fn release_task(&self, id: &str, actor: &Actor, reason: &str) -> BbResult<Task> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
        Self::require_holder(&task, actor, "release")?;
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
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task)
    }

    /// The holder finishes its work: to `review` when the task has a review
    /// protocol, else straight to `done`.
    pub async fn submit_task(&self, id: &str, actor: &Actor) -> BbResult<Task> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
        Self::require_holder(&task, actor, "submit")?;
        let (to, level, kind) = if task.review_protocol.is_some() {
            (TaskStatus::Review, EventLevel::Daily, "task.submitted")
        } else {
            (TaskStatus::Done, EventLevel::Daily, "task.done")
        };
        write_status(&mut tx, now, &task, to, actor, level, kind, json!({})).await?;
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task)
    }

    /// Marks a task `failed` (the holder giving up, or an operator/daemon).
    pub async fn fail_task(&self, id: &str, actor: &Actor, reason: &str) -> BbResult<Task> {
        if reason.trim().is_empty() {
            return Err(BbError::Invalid(
                "a failure needs a reason (--reason)".into(),
            ));
        }
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
        if !actor.is_privileged() {
            Self::require_holder(&task, actor, "fail")?;
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
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task)
    }

    /// Administrative transitions: cancel, block, unblock, reopen. Refused for
    /// agents running under a session.
    pub async fn set_status(
        &self,
        id: &str,
        to: TaskStatus,
        actor: &Actor,
        reason: &str,
    ) -> BbResult<Task> {
        if !actor.is_privileged() {
            return Err(BbError::Forbidden(format!(
                "agent {} may not set task {id} to {to}; only operators and the daemon may",
                actor.name
            )));
        }
        if matches!(
            to,
            TaskStatus::Working | TaskStatus::Review | TaskStatus::Done
        ) {
            return Err(BbError::Invalid(format!(
                "use claim / submit / review to move a task to {to}"
            )));
        }
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
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
            sqlx::query(
                "UPDATE task SET round = round + 1, max_rounds = MAX(max_rounds, round + 1),
                 finished_at = NULL WHERE id = ?",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if !reason.is_empty() {
            system_comment(&mut tx, now, id, &actor.name, &format!("{to}: {reason}")).await?;
        }
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task)
    }

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
            let mut tx = self.begin_write().await?;
            let task = fetch_task(&mut tx, &id).await?;
            // Re-check under the write lock: a heartbeat may have just renewed it.
            if task.status != TaskStatus::Working || task.lease_expires_at.is_none_or(|l| l > now) {
                continue;
            }
            let why = format!(
                "lease of {} expired without a heartbeat",
                task.claimed_by.as_deref().unwrap_or("?")
            );
            let status = requeue_or_fail(
                &mut tx,
                now,
                &task,
                &Actor::daemon(),
                &why,
                "task.lease_expired",
            )
            .await?;
            tx.commit().await?;
            out.push((id, status));
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
        let now = self.now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        tx.commit().await?;
        Ok(Some(status))
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

    pub async fn requeue_task(&self, id: &str, why: &str, kind: &str) -> BbResult<TaskStatus> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let task = fetch_task(&mut tx, id).await?;
        if task.status != TaskStatus::Working {
            return Ok(task.status);
        }
        let status = requeue_or_fail(&mut tx, now, &task, &Actor::daemon(), why, kind).await?;
        tx.commit().await?;
        Ok(status)
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
            match requeue_or_fail(&mut tx, now, &task, actor, why, "task.review_rejected").await? {
                TaskStatus::Failed => ReviewConclusion::Failed,
                _ => ReviewConclusion::Rework,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Unfinished dependencies of a task (id and status), for messages.
    pub async fn waiting_on(&self, id: &str) -> BbResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await?;
        unfinished_dependencies(&mut conn, id).await
    }
}
