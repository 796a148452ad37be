//! Rows as read from the database, derived with sqlx's `FromRow`, for the
//! records whose stored shape differs from the model: tags folded into one
//! column, an optional outcome, a JSON detail. Records stored as they are
//! modelled derive `FromRow` themselves (see `model.rs`).
//!
//! A stored value that does not parse (an unknown status, priority rank or
//! outcome, JSON that is not JSON) is an error, never a default.

use sqlx::FromRow;

use crate::error::{BbError, BbResult};
use crate::model::{
    Event, EventLevel, Experience, ExperienceStatus, Millis, Outcome, Priority, Session, Task,
    TaskStatus,
};

/// `group_concat(tag, ',')` back to a list (tags never contain a comma).
fn split_tags(tags: Option<String>) -> Vec<String> {
    tags.map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// A task row with its tags folded into one column (see `TASK_COLUMNS`).
#[derive(FromRow)]
pub(super) struct TaskRow {
    id: String,
    title: String,
    description: String,
    kind: String,
    #[sqlx(try_from = "String")]
    status: TaskStatus,
    #[sqlx(try_from = "i64")]
    priority: Priority,
    assignee: Option<String>,
    claimed_by: Option<String>,
    creator: String,
    parent_id: Option<String>,
    review_protocol: Option<String>,
    round: i64,
    max_rounds: i64,
    lease_expires_at: Option<Millis>,
    not_before: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
    claimed_at: Option<Millis>,
    finished_at: Option<Millis>,
    tags: Option<String>,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Task {
        Task {
            id: r.id,
            title: r.title,
            description: r.description,
            kind: r.kind,
            status: r.status,
            priority: r.priority,
            assignee: r.assignee,
            claimed_by: r.claimed_by,
            creator: r.creator,
            parent_id: r.parent_id,
            review_protocol: r.review_protocol,
            round: r.round,
            max_rounds: r.max_rounds,
            lease_expires_at: r.lease_expires_at,
            not_before: r.not_before,
            created_at: r.created_at,
            updated_at: r.updated_at,
            claimed_at: r.claimed_at,
            finished_at: r.finished_at,
            tags: split_tags(r.tags),
        }
    }
}

/// An experience row with its tags folded into one column.
#[derive(FromRow)]
pub(super) struct ExperienceRow {
    id: i64,
    task_id: Option<String>,
    agent: String,
    lesson: String,
    tags: Option<String>,
    times_referenced: i64,
    last_referenced_at: Option<Millis>,
    #[sqlx(try_from = "String")]
    status: ExperienceStatus,
    created_at: Millis,
}

impl From<ExperienceRow> for Experience {
    fn from(r: ExperienceRow) -> Experience {
        Experience {
            id: r.id,
            task_id: r.task_id,
            agent: r.agent,
            lesson: r.lesson,
            tags: split_tags(r.tags),
            times_referenced: r.times_referenced,
            last_referenced_at: r.last_referenced_at,
            status: r.status,
            created_at: r.created_at,
        }
    }
}

/// A session row: the outcome and the JSON detail are optional text.
#[derive(FromRow)]
pub(super) struct SessionRow {
    id: String,
    task_id: String,
    agent: String,
    pid: Option<i64>,
    pgid: Option<i64>,
    command: String,
    round: i64,
    started_at: Millis,
    ended_at: Option<Millis>,
    exit_code: Option<i64>,
    outcome: Option<String>,
    log_path: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: f64,
    detail: Option<String>,
    cached_tokens: i64,
    gateway_cost: f64,
    sandbox: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = BbError;
    fn try_from(r: SessionRow) -> BbResult<Session> {
        let outcome = r
            .outcome
            .map(|o| o.parse::<Outcome>())
            .transpose()
            .map_err(|e| BbError::Invalid(format!("session {}: {e}", r.id)))?;
        let detail = r
            .detail
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| BbError::Invalid(format!("session {}: detail is not JSON: {e}", r.id)))?;
        let sandbox = r
            .sandbox
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| BbError::Invalid(format!("session {}: sandbox is not JSON: {e}", r.id)))?;
        Ok(Session {
            id: r.id,
            task_id: r.task_id,
            agent: r.agent,
            pid: r.pid,
            pgid: r.pgid,
            command: r.command,
            round: r.round,
            started_at: r.started_at,
            ended_at: r.ended_at,
            exit_code: r.exit_code,
            outcome,
            log_path: r.log_path,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost: r.cost,
            detail,
            cached_tokens: r.cached_tokens,
            gateway_cost: r.gateway_cost,
            sandbox,
        })
    }
}

/// An event row: the payload is JSON text.
#[derive(FromRow)]
pub(super) struct EventRow {
    id: i64,
    created_at: Millis,
    #[sqlx(try_from = "String")]
    level: EventLevel,
    kind: String,
    task_id: Option<String>,
    actor: String,
    payload: String,
}

impl TryFrom<EventRow> for Event {
    type Error = BbError;
    fn try_from(r: EventRow) -> BbResult<Event> {
        let payload = serde_json::from_str(&r.payload)
            .map_err(|e| BbError::Invalid(format!("event {}: payload is not JSON: {e}", r.id)))?;
        Ok(Event {
            id: r.id,
            created_at: r.created_at,
            level: r.level,
            kind: r.kind,
            task_id: r.task_id,
            actor: r.actor,
            payload,
        })
    }
}

/// Reads a `T` from a row with its derived `FromRow`, then converts it.
pub(super) fn read<R, T>(row: &sqlx::any::AnyRow) -> BbResult<T>
where
    R: for<'r> FromRow<'r, sqlx::any::AnyRow>,
    T: TryFrom<R>,
    BbError: From<<T as TryFrom<R>>::Error>,
{
    Ok(T::try_from(R::from_row(row)?)?)
}
