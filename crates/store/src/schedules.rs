//! Schedules (recurring tasks) and their firings: the rows, and the one
//! transaction that records a firing with its task.
//!
//! A firing is keyed by (schedule, scheduled time). [`Blackboard::record_firing`]
//! inserts that key with `INSERT OR IGNORE` under `BEGIN IMMEDIATE` and creates
//! the task in the same transaction, so whoever records a slot second — a
//! restarted daemon, a manual tick, another daemon on the same file — finds
//! the key and creates nothing. When each slot is due and what to do with it
//! is the service's rule (`service::schedules`); the store only asks it, under
//! the lock, about the last instance's state (the overlap policy).

use crate::db::Conn;
use serde_json::json;
use sqlx::Row;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::model::{
    EventLevel, FiringReason, Millis, MissedPolicy, OverlapPolicy, Priority, ScheduleSource, Task,
    TaskStatus,
};
use crate::tasks::{fetch_task, insert_task, NewTask};

/// When a schedule's slots fall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recurrence {
    /// A cron expression (5 fields, or 6 with seconds first), read in the
    /// schedule's time zone.
    Cron(String),
    /// Every so many milliseconds from the schedule's anchor.
    Interval(Millis),
}

/// Everything a person defines about a schedule (checked by the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDef {
    pub id: String,
    pub recurrence: Recurrence,
    /// An IANA time zone name (`Europe/Berlin`), or `UTC`.
    pub timezone: String,
    /// A minijinja template (`{{ date }}` …, see `service::schedules`).
    pub title: String,
    pub description: String,
    pub kind: Option<String>,
    pub assignee: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub review_protocol: Option<String>,
    /// Each instance depends on every open task carrying one of these tags.
    pub depends_on_tags: Vec<String>,
    pub overlap: OverlapPolicy,
    pub missed: MissedPolicy,
    /// Each slot fires up to this long after its time (a fixed offset per
    /// slot, so every daemon computes the same one).
    pub jitter_ms: Millis,
    pub enabled: bool,
}

impl ScheduleDef {
    /// Whether `other` puts its slots at other times (then the anchor moves).
    fn timing_differs(&self, other: &ScheduleDef) -> bool {
        self.recurrence != other.recurrence
            || self.timezone != other.timezone
            || self.jitter_ms != other.jitter_ms
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub def: ScheduleDef,
    pub source: ScheduleSource,
    /// Slots at or before this time never fire (creation, a timing change,
    /// resume).
    pub anchor_at: Millis,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One recorded slot, with its task's state when it created one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub schedule_id: String,
    pub scheduled_at: Millis,
    pub recorded_at: Millis,
    pub reason: FiringReason,
    /// How many slots this row stands for (a run of skipped slots is one row).
    pub slots: i64,
    pub task_id: Option<String>,
    pub task_status: Option<TaskStatus>,
}

/// What to do with one slot ([`Blackboard::record_firing`]).
#[derive(Debug, Clone)]
pub enum FiringRequest {
    /// Record the slot as skipped (`slots` slots up to this one).
    Skip { reason: FiringReason, slots: i64 },
    /// Create the task, unless `decide` — asked under the write lock with
    /// the state of the last task this schedule created — says otherwise.
    Fire {
        reason: FiringReason,
        task: Box<NewTask>,
    },
}

/// The overlap rule's answer for one slot, given the last instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapDecision {
    Fire,
    /// Fire, with the new task depending on the last instance.
    FireAfterLast,
    /// Skip the slot: the last instance is still open.
    Skip,
}

/// What [`Blackboard::record_firing`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum FiringResult {
    /// The key was already recorded: nothing was written.
    AlreadyRecorded,
    Fired(Box<Task>),
    Skipped(FiringReason),
}

const SCHEDULE_COLUMNS: &str = "id, cron, interval_ms, timezone, title, description, kind, \
     assignee, priority, tags, review_protocol, depends_on_tags, overlap, missed, jitter_ms, \
     enabled, source, anchor_at, created_at, updated_at";

fn split(list: String) -> Vec<String> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn schedule_from_row(row: &sqlx::any::AnyRow) -> BbResult<Schedule> {
    let bad = |what: &str, e: String| BbError::Invalid(format!("stored schedule {what}: {e}"));
    let cron: Option<String> = row.try_get("cron")?;
    let interval: Option<i64> = row.try_get("interval_ms")?;
    let recurrence = match (cron, interval) {
        (Some(c), None) => Recurrence::Cron(c),
        (None, Some(ms)) => Recurrence::Interval(ms),
        _ => {
            return Err(bad(
                "recurrence",
                "neither or both of cron and interval".into(),
            ))
        }
    };
    let priority: i64 = row.try_get("priority")?;
    let overlap: String = row.try_get("overlap")?;
    let missed: String = row.try_get("missed")?;
    let source: String = row.try_get("source")?;
    Ok(Schedule {
        def: ScheduleDef {
            id: row.try_get("id")?,
            recurrence,
            timezone: row.try_get("timezone")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            kind: row.try_get("kind")?,
            assignee: row.try_get("assignee")?,
            priority: Priority::try_from(priority).map_err(|e| bad("priority", e))?,
            tags: split(row.try_get("tags")?),
            review_protocol: row.try_get("review_protocol")?,
            depends_on_tags: split(row.try_get("depends_on_tags")?),
            overlap: overlap.parse().map_err(|e| bad("overlap", e))?,
            missed: missed.parse().map_err(|e| bad("missed", e))?,
            jitter_ms: row.try_get("jitter_ms")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
        },
        source: source.parse().map_err(|e| bad("source", e))?,
        anchor_at: row.try_get("anchor_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const FIRING_SELECT: &str = "SELECT f.schedule_id, f.scheduled_at, f.recorded_at, f.reason, \
     f.slots, f.task_id, t.status AS task_status \
     FROM schedule_firing f LEFT JOIN task t ON t.id = f.task_id";

fn firing_from_row(row: &sqlx::any::AnyRow) -> BbResult<Firing> {
    let reason: String = row.try_get("reason")?;
    let status: Option<String> = row.try_get("task_status")?;
    Ok(Firing {
        schedule_id: row.try_get("schedule_id")?,
        scheduled_at: row.try_get("scheduled_at")?,
        recorded_at: row.try_get("recorded_at")?,
        reason: reason.parse().map_err(BbError::Invalid)?,
        slots: row.try_get("slots")?,
        task_id: row.try_get("task_id")?,
        task_status: status
            .map(|s| s.parse())
            .transpose()
            .map_err(BbError::Invalid)?,
    })
}

async fn fetch_schedule(conn: &mut Conn, id: &str) -> BbResult<Schedule> {
    let row = sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| BbError::NotFound {
        what: "schedule",
        id: id.to_string(),
    })?;
    schedule_from_row(&row)
}

/// The last slot of `id` that created a task, with that task.
async fn last_instance(conn: &mut Conn, id: &str) -> BbResult<Option<Task>> {
    let task_id: Option<String> = sqlx::query_scalar(
        "SELECT task_id FROM schedule_firing WHERE schedule_id = ? AND task_id IS NOT NULL
         ORDER BY recorded_at DESC, scheduled_at DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    match task_id {
        Some(t) => Ok(Some(fetch_task(conn, &t).await?)),
        None => Ok(None),
    }
}

async fn write_schedule(
    conn: &mut Conn,
    def: &ScheduleDef,
    source: ScheduleSource,
    anchor_at: Millis,
    created_at: Millis,
    now: Millis,
) -> BbResult<()> {
    let (cron, interval) = match &def.recurrence {
        Recurrence::Cron(c) => (Some(c.as_str()), None),
        Recurrence::Interval(ms) => (None, Some(*ms)),
    };
    // SQLite's `INSERT OR REPLACE`, spelled for both engines: the old row
    // goes (and its firings with it, by the foreign key), the new one comes.
    sqlx::query("DELETE FROM schedule WHERE id = ?")
        .bind(&def.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO schedule ({SCHEDULE_COLUMNS})
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&def.id)
    .bind(cron)
    .bind(interval)
    .bind(&def.timezone)
    .bind(&def.title)
    .bind(&def.description)
    .bind(&def.kind)
    .bind(&def.assignee)
    .bind(def.priority.rank())
    .bind(def.tags.join(","))
    .bind(&def.review_protocol)
    .bind(def.depends_on_tags.join(","))
    .bind(def.overlap.as_str())
    .bind(def.missed.as_str())
    .bind(def.jitter_ms)
    .bind(def.enabled as i64)
    .bind(source.as_str())
    .bind(anchor_at)
    .bind(created_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What [`Blackboard::put_schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
    Unchanged,
}

impl Blackboard {
    /// Stores a schedule. A new one is anchored now (no slot before this
    /// moment fires). An existing one is refused unless `replace`; replaced,
    /// it keeps its anchor unless its timing changed, and a config
    /// schedule replaces whatever had its id.
    pub async fn put_schedule(
        &self,
        def: &ScheduleDef,
        source: ScheduleSource,
        replace: bool,
        actor: &Actor,
    ) -> BbResult<(Schedule, PutOutcome)> {
        write_tx!(self, |tx, now| {
            let outcome = match fetch_schedule(&mut tx, &def.id).await {
                Ok(old) => {
                    if !replace {
                        return Err(BbError::Conflict(format!(
                            "schedule {} already exists (from {}); remove it first, or change it in project.yaml if it comes from there",
                            def.id, old.source
                        )));
                    }
                    if old.def == *def && old.source == source {
                        PutOutcome::Unchanged
                    } else {
                        let anchor =
                            if old.def.timing_differs(def) || (!old.def.enabled && def.enabled) {
                                now
                            } else {
                                old.anchor_at
                            };
                        write_schedule(&mut tx, def, source, anchor, old.created_at, now).await?;
                        PutOutcome::Updated
                    }
                }
                Err(BbError::NotFound { .. }) => {
                    write_schedule(&mut tx, def, source, now, now, now).await?;
                    PutOutcome::Created
                }
                Err(e) => return Err(e),
            };
            if outcome != PutOutcome::Unchanged {
                let kind = if outcome == PutOutcome::Created {
                    "schedule.created"
                } else {
                    "schedule.updated"
                };
                emit(
                    &mut tx,
                    now,
                    EventLevel::Optional,
                    kind,
                    None,
                    actor,
                    json!({ "schedule": def.id, "source": source.as_str() }),
                )
                .await?;
            }
            (fetch_schedule(&mut tx, &def.id).await?, outcome)
        })
    }

    /// Removes a schedule and its firing history (its tasks stay).
    pub async fn remove_schedule(&self, id: &str, actor: &Actor) -> BbResult<()> {
        write_tx!(self, |tx, now| {
            fetch_schedule(&mut tx, id).await?;
            sqlx::query("DELETE FROM schedule WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "schedule.removed",
                None,
                actor,
                json!({ "schedule": id }),
            )
            .await?;
        })
    }

    /// Pauses or resumes a schedule. Resuming anchors it now: slots that
    /// passed while it was paused do not fire.
    pub async fn set_schedule_enabled(
        &self,
        id: &str,
        enabled: bool,
        actor: &Actor,
    ) -> BbResult<Schedule> {
        write_tx!(self, |tx, now| {
            let old = fetch_schedule(&mut tx, id).await?;
            if old.def.enabled != enabled {
                sqlx::query(
                    "UPDATE schedule SET enabled = ?, updated_at = ?,
                         anchor_at = CASE WHEN ? THEN ? ELSE anchor_at END
                     WHERE id = ?",
                )
                .bind(enabled as i64)
                .bind(now)
                .bind(enabled)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let kind = if enabled {
                    "schedule.resumed"
                } else {
                    "schedule.paused"
                };
                emit(
                    &mut tx,
                    now,
                    EventLevel::Optional,
                    kind,
                    None,
                    actor,
                    json!({ "schedule": id }),
                )
                .await?;
            }
            fetch_schedule(&mut tx, id).await?
        })
    }

    /// Removes the `project.yaml` schedules whose ids are not in `keep`.
    pub async fn remove_config_schedules_except(
        &self,
        keep: &[String],
        actor: &Actor,
    ) -> BbResult<Vec<String>> {
        let gone: Vec<String> = self
            .schedules()
            .await?
            .into_iter()
            .filter(|s| s.source == ScheduleSource::Config && !keep.contains(&s.def.id))
            .map(|s| s.def.id)
            .collect();
        for id in &gone {
            match self.remove_schedule(id, actor).await {
                Ok(()) | Err(BbError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(gone)
    }

    pub async fn schedule(&self, id: &str) -> BbResult<Schedule> {
        let mut conn = self.pool.acquire().await?;
        fetch_schedule(&mut conn, id).await
    }

    /// Every schedule, by id.
    pub async fn schedules(&self) -> BbResult<Vec<Schedule>> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedule ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    /// The newest recorded slots of a schedule, newest first.
    pub async fn firings(&self, id: &str, limit: i64) -> BbResult<Vec<Firing>> {
        let rows = sqlx::query(&format!(
            "{FIRING_SELECT} WHERE f.schedule_id = ? ORDER BY f.scheduled_at DESC, f.manual DESC LIMIT ?"
        ))
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(firing_from_row).collect()
    }

    /// The newest slot recorded for `id` (the cursor the next tick starts
    /// after), run-now firings aside: they are keyed apart (`manual`), by
    /// the moment they were asked for, never by a slot.
    pub async fn last_slot(&self, id: &str) -> BbResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(scheduled_at) FROM schedule_firing WHERE schedule_id = ? AND manual = 0",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records slot `scheduled_at` of schedule `id`, once. With
    /// [`FiringRequest::Fire`], `decide` is asked under the write lock with
    /// the last instance (the overlap policy); the task, the firing row and
    /// the `schedule.fired` or `schedule.skipped` event commit together.
    /// A schedule that is paused (or removed) by then records nothing
    /// unless the request is a manual one.
    pub async fn record_firing(
        &self,
        id: &str,
        scheduled_at: Millis,
        request: FiringRequest,
        decide: impl FnOnce(Option<&Task>) -> OverlapDecision,
        actor: &Actor,
    ) -> BbResult<FiringResult> {
        write_tx!(self, |tx, now| {
            let schedule = fetch_schedule(&mut tx, id).await?;
            let manual = matches!(
                request,
                FiringRequest::Fire {
                    reason: FiringReason::Manual,
                    ..
                }
            );
            let paused_skip = matches!(
                request,
                FiringRequest::Skip {
                    reason: FiringReason::Paused,
                    ..
                }
            );
            if !schedule.def.enabled && !manual && !paused_skip {
                return Ok(FiringResult::AlreadyRecorded);
            }
            let fresh = sqlx::query(
                "INSERT INTO schedule_firing (schedule_id, scheduled_at, manual, recorded_at, reason)
                 VALUES (?, ?, ?, ?, 'missed') ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(scheduled_at)
            .bind(manual as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                return Ok(FiringResult::AlreadyRecorded);
            }
            let (reason, slots, task) = match request {
                FiringRequest::Skip { reason, slots } => (reason, slots.max(1), None),
                FiringRequest::Fire { reason, mut task } => {
                    let last = last_instance(&mut tx, id).await?;
                    match decide(last.as_ref()) {
                        OverlapDecision::Skip => (FiringReason::Overlap, 1, None),
                        decision => {
                            if decision == OverlapDecision::FireAfterLast {
                                if let Some(last) = last.filter(|t| !t.status.is_terminal()) {
                                    task.depends_on.push(last.id);
                                }
                            }
                            for tag in &schedule.def.depends_on_tags {
                                let open: Vec<String> = sqlx::query_scalar(
                                    "SELECT t.id FROM task t JOIN task_tag g ON g.task_id = t.id
                                     WHERE g.tag = ? AND t.status NOT IN ('done','failed','cancelled')
                                     ORDER BY t.seq",
                                )
                                .bind(tag)
                                .fetch_all(&mut *tx)
                                .await?;
                                task.depends_on.extend(open);
                            }
                            let mut extra = serde_json::Map::new();
                            extra.insert("schedule".into(), json!(id));
                            extra.insert("scheduled_at".into(), json!(scheduled_at));
                            let created = insert_task(&mut tx, now, &task, actor, extra).await?;
                            (reason, 1, Some(created))
                        }
                    }
                }
            };
            sqlx::query(
                "UPDATE schedule_firing SET reason = ?, slots = ?, task_id = ?
                 WHERE schedule_id = ? AND scheduled_at = ? AND manual = ?",
            )
            .bind(reason.as_str())
            .bind(slots)
            .bind(task.as_ref().map(|t| t.id.as_str()))
            .bind(id)
            .bind(scheduled_at)
            .bind(manual as i64)
            .execute(&mut *tx)
            .await?;
            let payload = json!({
                "schedule": id,
                "scheduled_at": crate::model::rfc3339(scheduled_at),
                "reason": reason.as_str(),
                "slots": slots,
            });
            match task {
                Some(task) => {
                    emit(
                        &mut tx,
                        now,
                        EventLevel::Optional,
                        "schedule.fired",
                        Some(&task.id),
                        actor,
                        payload,
                    )
                    .await?;
                    FiringResult::Fired(Box::new(task))
                }
                None => {
                    emit(
                        &mut tx,
                        now,
                        EventLevel::Optional,
                        "schedule.skipped",
                        None,
                        actor,
                        payload,
                    )
                    .await?;
                    FiringResult::Skipped(reason)
                }
            }
        })
    }
}
