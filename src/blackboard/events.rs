//! The append-only event log: every state change writes one row in the same
//! transaction as the change itself, so the log and the state never disagree.

use serde_json::Value;
use sqlx::SqliteConnection;

use super::{Actor, BbResult, Blackboard, Event, EventLevel, Millis};

/// Appends one event inside the caller's transaction; returns its id.
pub(super) async fn emit(
    conn: &mut SqliteConnection,
    now: Millis,
    level: EventLevel,
    kind: &str,
    task_id: Option<&str>,
    actor: &Actor,
    payload: Value,
) -> BbResult<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO event (created_at, level, kind, task_id, actor, payload)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(now)
    .bind(level.as_str())
    .bind(kind)
    .bind(task_id)
    .bind(&actor.name)
    .bind(payload.to_string())
    .fetch_one(conn)
    .await?;
    Ok(id)
}

pub(super) fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> BbResult<Event> {
    super::rows::read::<super::rows::EventRow, Event>(row)
}

impl Blackboard {
    /// Events with id greater than `after`, oldest first (SSE resume, audits).
    pub async fn events_after(&self, after: i64, limit: i64) -> BbResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, created_at, level, kind, task_id, actor, payload
             FROM event WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The newest event id (0 when the log is empty).
    pub async fn last_event_id(&self) -> BbResult<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM event")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Records an event that is not tied to a task change (daemon notices).
    pub async fn record_event(
        &self,
        level: EventLevel,
        kind: &str,
        task_id: Option<&str>,
        actor: &Actor,
        payload: Value,
    ) -> BbResult<i64> {
        write_tx!(self, |tx, now| {
            emit(&mut tx, now, level, kind, task_id, actor, payload).await?
        })
    }
}
