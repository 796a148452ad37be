//! The append-only event log: every state change writes one row in the same
//! transaction as the change itself, so the log and the state never disagree.

use crate::db::Conn;
use serde_json::Value;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::model::{Event, EventLevel, Millis};

/// The levels that are alerts: someone must look, and acknowledges them.
pub const ALERT_LEVELS: [EventLevel; 2] = [EventLevel::Urgent, EventLevel::Attention];

/// An event as stored with its acknowledgement (only alerts have one).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub acked_at: Option<Millis>,
    pub acked_by: Option<String>,
}

/// One page of the event log, newest first.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Only these levels (empty: every level).
    pub levels: Vec<EventLevel>,
    /// Only alerts nobody has acknowledged yet.
    pub unacked_only: bool,
    /// Only events with an id below this one (the page before).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Unacknowledged alerts per alert level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub urgent: i64,
    pub attention: i64,
}

/// Appends one event inside the caller's transaction; returns its id.
pub(super) async fn emit(
    conn: &mut Conn,
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

fn stored_from_row(row: &sqlx::any::AnyRow) -> BbResult<StoredEvent> {
    use sqlx::Row;
    Ok(StoredEvent {
        event: event_from_row(row)?,
        acked_at: row.try_get("acked_at")?,
        acked_by: row.try_get("acked_by")?,
    })
}

pub(super) fn event_from_row(row: &sqlx::any::AnyRow) -> BbResult<Event> {
    crate::rows::read::<crate::rows::EventRow, Event>(row)
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

    /// Events with id greater than `after`, oldest first, with their
    /// acknowledgements (`bb events`).
    pub async fn stored_events_after(&self, after: i64, limit: i64) -> BbResult<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT e.id, e.created_at, e.level, e.kind, e.task_id, e.actor, e.payload,
                    a.acked_at, a.acked_by
             FROM event e LEFT JOIN event_ack a ON a.event_id = e.id
             WHERE e.id > ? ORDER BY e.id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// A page of the log, newest first: `limit` events with an id below
    /// `before`, of the given levels, only unacknowledged alerts when asked.
    pub async fn event_log(&self, q: &EventQuery) -> BbResult<Vec<StoredEvent>> {
        let mut sql = String::from(
            "SELECT e.id, e.created_at, e.level, e.kind, e.task_id, e.actor, e.payload,
                    a.acked_at, a.acked_by
             FROM event e LEFT JOIN event_ack a ON a.event_id = e.id WHERE e.id < ?",
        );
        let levels: Vec<EventLevel> = if q.unacked_only {
            let wanted = |l: &EventLevel| q.levels.is_empty() || q.levels.contains(l);
            ALERT_LEVELS.into_iter().filter(wanted).collect()
        } else {
            q.levels.clone()
        };
        if q.unacked_only && levels.is_empty() {
            return Ok(Vec::new());
        }
        if !levels.is_empty() {
            let marks = vec!["?"; levels.len()].join(", ");
            sql.push_str(&format!(" AND e.level IN ({marks})"));
        }
        if q.unacked_only {
            sql.push_str(" AND a.event_id IS NULL");
        }
        sql.push_str(" ORDER BY e.id DESC LIMIT ?");
        let mut query = sqlx::query(&sql).bind(q.before.unwrap_or(i64::MAX));
        for l in &levels {
            query = query.bind(l.as_str());
        }
        let rows = query.bind(q.limit.max(0)).fetch_all(&self.pool).await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// Unacknowledged alerts per level, over the whole log.
    pub async fn alert_counts(&self) -> BbResult<AlertCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT e.level, COUNT(*) FROM event e
             WHERE e.level IN ('urgent', 'attention')
               AND NOT EXISTS (SELECT 1 FROM event_ack a WHERE a.event_id = e.id)
             GROUP BY e.level",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = AlertCounts::default();
        for (level, n) in rows {
            match level.parse::<EventLevel>().map_err(BbError::Invalid)? {
                EventLevel::Urgent => counts.urgent = n,
                EventLevel::Attention => counts.attention = n,
                EventLevel::Daily | EventLevel::Optional => {}
            }
        }
        Ok(counts)
    }

    /// Acknowledges alert `id` as `actor` (an `event.acknowledged` event
    /// records it in the log). Acknowledging it again changes nothing and
    /// returns the first acknowledgement; an event that is not an alert is
    /// refused.
    pub async fn ack_event(&self, id: i64, actor: &Actor) -> BbResult<StoredEvent> {
        write_tx!(self, |tx, now| {
            let row = sqlx::query(
                "SELECT e.id, e.created_at, e.level, e.kind, e.task_id, e.actor, e.payload,
                        a.acked_at, a.acked_by
                 FROM event e LEFT JOIN event_ack a ON a.event_id = e.id WHERE e.id = ?",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| BbError::NotFound {
                what: "event",
                id: id.to_string(),
            })?;
            let stored = stored_from_row(&row)?;
            if !ALERT_LEVELS.contains(&stored.event.level) {
                return Err(BbError::Invalid(format!(
                    "event {id} is at level {}; only urgent and attention events (alerts) are acknowledged",
                    stored.event.level
                )));
            }
            if stored.acked_at.is_some() {
                stored
            } else {
                sqlx::query(
                    "INSERT INTO event_ack (event_id, acked_at, acked_by) VALUES (?, ?, ?)",
                )
                .bind(id)
                .bind(now)
                .bind(&actor.name)
                .execute(&mut *tx)
                .await?;
                emit(
                    &mut tx,
                    now,
                    EventLevel::Optional,
                    "event.acknowledged",
                    stored.event.task_id.as_deref(),
                    actor,
                    serde_json::json!({ "event": id, "level": stored.event.level.as_str(), "kind": stored.event.kind }),
                )
                .await?;
                StoredEvent {
                    acked_at: Some(now),
                    acked_by: Some(actor.name.clone()),
                    ..stored
                }
            }
        })
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
