//! The transaction and row helpers of the task lifecycle: the task's columns
//! and row, validation, insertion, reads under the write lock, the one
//! status write ([`write_status`], checked against
//! [`TaskStatus::can_become`]), system comments, observations and
//! [`apply_give_back`]. The lifecycle itself is in `lifecycle.rs` (what
//! agents and operators do) and `rounds.rs` (how rounds end otherwise).

use crate::db::Conn;
use serde_json::json;
use sqlx::Row;

use crate::actor::Actor;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::ids::{format_task_id, is_valid_agent_id, is_valid_tag, is_valid_task_id};
use crate::model::{EventLevel, Millis, ObservationLevel, Priority, Task, TaskStatus};

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
            "not_before, ",
            $t,
            "created_at, ",
            $t,
            "updated_at, ",
            $t,
            "claimed_at, ",
            $t,
            "finished_at, ",
            "(SELECT string_agg(tag, ',' ORDER BY tag) FROM task_tag WHERE task_id = ",
            $t,
            "id) AS tags"
        )
    };
}
/// Columns selected for a [`Task`] from `task t`.
pub(super) const TASK_COLUMNS: &str = task_columns!("t.");
/// The same columns for `UPDATE task … RETURNING`, where SQLite accepts no
/// table alias.
pub(super) const TASK_RETURNING: &str = task_columns!("task.");

pub(super) fn task_from_row(row: &sqlx::any::AnyRow) -> BbResult<Task> {
    crate::rows::read::<crate::rows::TaskRow, Task>(row)
}

/// The kind of a task created without one.
pub const DEFAULT_TASK_KIND: &str = "code";

/// What `bb create` (or the inbox, or the API) asks for.
/// Its JSON form is `moziplus::wire::NewTask`.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub kind: Option<String>,
    pub priority: Option<Priority>,
    pub assignee: Option<String>,
    pub parent_id: Option<String>,
    pub review_protocol: Option<String>,
    pub max_rounds: Option<i64>,
    pub depends_on: Vec<String>,
    pub tags: Vec<String>,
}

/// How a review round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Checks a [`NewTask`] before anything is written (also what a schedule's
/// task template is checked with when the schedule is defined).
pub fn validate_new_task(new: &NewTask) -> BbResult<()> {
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
    conn: &mut Conn,
    now: Millis,
    new: &NewTask,
    actor: &Actor,
    extra: serde_json::Map<String, serde_json::Value>,
) -> BbResult<Task> {
    validate_new_task(new)?;
    let title = new.title.trim();
    let kind = new.kind.clone().unwrap_or_else(|| DEFAULT_TASK_KIND.into());
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
    payload.insert("priority".into(), json!(priority.as_str()));
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

pub(super) async fn fetch_task(conn: &mut Conn, id: &str) -> BbResult<Task> {
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
pub(super) async fn unfinished_dependencies(
    conn: &mut Conn,
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
pub(super) async fn would_cycle(conn: &mut Conn, task: &str, depends_on: &str) -> BbResult<bool> {
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
    conn: &mut Conn,
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
             not_before = NULL,
             claimed_by = CASE WHEN ?1 IN ('pending', 'cancelled') THEN NULL ELSE claimed_by END
         WHERE id = ?4",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(finished)
    .bind(&task.id)
    .execute(&mut *conn)
    .await?;
    let mut payload =
        json!({ "from": task.status.as_str(), "to": to.as_str(), "round": task.round });
    if let (Some(p), serde_json::Value::Object(e)) = (payload.as_object_mut(), extra) {
        p.extend(e);
    }
    emit(conn, now, level, kind, Some(&task.id), actor, payload).await?;
    Ok(())
}

pub(super) async fn system_comment(
    conn: &mut Conn,
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
    conn: &mut Conn,
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

/// Where a give-back sends a task, as [`GiveBack::to`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBackTo {
    /// `pending` in the next round: the round ended without the work.
    NextRound,
    /// `pending` in the same round: the round is not charged.
    SameRound,
    /// `failed`, with an alert observation: the last round ended without
    /// the work.
    Failed,
}

/// What a give-back writes, decided above the store
/// (`service::ProjectService::give_back`); the store only applies it, in the
/// transaction that re-checked the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveBack {
    pub to: GiveBackTo,
    /// The event (`task.lease_expired`, `task.run_failed`, … for a round
    /// that ended, `task.released` for the same round); `failed` records it
    /// as its `cause`.
    pub kind: &'static str,
    pub why: String,
    /// The task is not claimed before this (UTC ms).
    pub not_before: Option<Millis>,
}

/// Writes a give-back decided above: `actor` ends the round (or the task),
/// with one event, a system comment and, for `failed`, an alert
/// observation; a same-round give-back is written in `holder`'s name.
pub(super) async fn apply_give_back(
    conn: &mut Conn,
    now: Millis,
    task: &Task,
    actor: &Actor,
    give: &GiveBack,
) -> BbResult<TaskStatus> {
    let why = give.why.as_str();
    let status = match give.to {
        GiveBackTo::Failed => {
            write_status(
                conn,
                now,
                task,
                TaskStatus::Failed,
                actor,
                EventLevel::Urgent,
                "task.failed",
                json!({ "reason": why, "cause": give.kind }),
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
            TaskStatus::Failed
        }
        GiveBackTo::NextRound => {
            write_status(
                conn,
                now,
                task,
                TaskStatus::Pending,
                actor,
                EventLevel::Attention,
                give.kind,
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
            TaskStatus::Pending
        }
        GiveBackTo::SameRound => {
            let holder = task.claimed_by.as_deref().unwrap_or(actor.name.as_str());
            let releaser = Actor {
                name: holder.to_string(),
                kind: crate::actor::ActorKind::Daemon,
            };
            write_status(
                conn,
                now,
                task,
                TaskStatus::Pending,
                &releaser,
                EventLevel::Optional,
                give.kind,
                json!({ "reason": why }),
            )
            .await?;
            system_comment(conn, now, &task.id, holder, &format!("released: {why}")).await?;
            TaskStatus::Pending
        }
    };
    if let (TaskStatus::Pending, Some(at)) = (status, give.not_before) {
        sqlx::query("UPDATE task SET not_before = ? WHERE id = ?")
            .bind(at)
            .bind(&task.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(status)
}
