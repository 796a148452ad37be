//! Read models: the board summary and filtered task lists.

use std::collections::BTreeMap;

use sqlx::{FromRow, Row};

use crate::board::Blackboard;
use crate::db::Backend;
use crate::error::BbResult;
use crate::model::{BoardSummary, DependencyRef, Task, TaskDetail, TaskLine, TaskStatus};
use crate::tasks::{fetch_task, task_from_row, TASK_COLUMNS};

/// See [`Blackboard::working_activity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkActivity {
    pub task_id: String,
    pub agent: String,
    pub creator: String,
    pub round: i64,
    /// When this claim was made: a recovery gives back this claim only.
    pub claimed_at: crate::model::Millis,
    pub last_activity: crate::model::Millis,
    pub nudged_at: Option<crate::model::Millis>,
}

/// See [`Blackboard::long_dependency_waits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyWait {
    pub task_id: String,
    pub task_assignee: Option<String>,
    pub waiting_since: crate::model::Millis,
    pub dependency_id: String,
    pub dependency_agent: Option<String>,
}

/// What the board says about why some tasks wait ([`Blackboard::wait_facts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitFacts {
    /// Per task: its dependencies that are not done, `(id, status)`.
    pub open_dependencies: BTreeMap<String, Vec<(String, TaskStatus)>>,
    /// Per task: the reason of the change that last blocked it.
    pub blocked_reason: BTreeMap<String, String>,
    /// Per task: its decisions still proposed (their numbers).
    pub proposed_decisions: BTreeMap<String, Vec<i64>>,
}

/// See [`Blackboard::tick_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickProbe {
    pub leases_due: bool,
    pub decisions_due: bool,
    pub in_review: i64,
    pub open: i64,
    pub last_event_id: i64,
    pub working: i64,
    /// Some pending task with dependencies has waited at least an hour (the
    /// shortest dependency-wait threshold of any category).
    pub long_waits: bool,
    /// Schedules defined (enabled or not): none, and there is nothing to
    /// fire.
    pub schedules: i64,
    /// Lessons in force: none, and none can expire or be distilled.
    pub active_lessons: i64,
}

/// Filters for `bb list` and the task API.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these statuses (empty: every status).
    pub statuses: Vec<TaskStatus>,
    /// Matches the designated assignee or the current claimant.
    pub assignee: Option<String>,
    pub tag: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

fn line_from_row(r: &sqlx::any::AnyRow) -> BbResult<TaskLine> {
    Ok(TaskLine::from_row(r)?)
}

const LINE_COLUMNS: &str =
    "t.id, t.title, t.status, t.priority, t.kind, t.assignee, t.claimed_by, t.round";

/// SQL condition: a pending task whose dependencies are all done and whose
/// not-before time (if any) has passed. `?1` is now.
pub(super) const READY_CONDITION: &str = "t.status = 'pending'
    AND (t.not_before IS NULL OR t.not_before <= ?1)
    AND NOT EXISTS (SELECT 1 FROM dependency d JOIN task dt ON dt.id = d.depends_on
                    WHERE d.task_id = t.id AND dt.status <> 'done')";

impl Blackboard {
    /// Counts by status, the most urgent ready tasks, and the active ones.
    pub async fn board_summary(&self, limit: i64) -> BbResult<BoardSummary> {
        let counts = self.status_counts().await?;
        let total = counts.values().sum();
        let mut conn = self.pool.acquire().await?;
        let ready = sqlx::query(&format!(
            "SELECT {LINE_COLUMNS} FROM task t WHERE {READY_CONDITION}
             ORDER BY t.priority, t.seq LIMIT ?2"
        ))
        .bind(self.now())
        .bind(limit)
        .fetch_all(&mut conn)
        .await?
        .iter()
        .map(line_from_row)
        .collect::<BbResult<Vec<_>>>()?;
        let active = sqlx::query(&format!(
            "SELECT {LINE_COLUMNS} FROM task t WHERE t.status IN ('working', 'review')
             ORDER BY t.priority, t.seq LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&mut conn)
        .await?
        .iter()
        .map(line_from_row)
        .collect::<BbResult<Vec<_>>>()?;
        let (decisions_proposed, running_sessions, last_event_id): (i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM decision WHERE status = 'proposed'),
                        (SELECT COUNT(*) FROM session WHERE ended_at IS NULL),
                        (SELECT COALESCE(MAX(id), 0) FROM event)",
            )
            .fetch_one(&mut conn)
            .await?;
        Ok(BoardSummary {
            project: self.project().to_string(),
            counts,
            total,
            ready,
            active,
            decisions_proposed,
            running_sessions,
            last_event_id,
        })
    }

    /// Task counts by status only (cheap; used by the daemon status).
    pub async fn status_counts(&self) -> BbResult<BTreeMap<String, i64>> {
        let mut counts: BTreeMap<String, i64> =
            TaskStatus::ALL.iter().map(|s| (s.to_string(), 0)).collect();
        for r in sqlx::query("SELECT status, COUNT(*) FROM task GROUP BY status")
            .fetch_all(&self.pool)
            .await?
        {
            counts.insert(r.get(0), r.get(1));
        }
        Ok(counts)
    }

    /// What the ticker needs to know before doing any work on a project, in
    /// one indexed query: whether leases or proposals are due, how many tasks
    /// are in review and open, and the newest event id.
    pub async fn tick_probe(&self) -> BbResult<TickProbe> {
        #[allow(clippy::type_complexity)]
        let (
            leases_due,
            decisions_due,
            in_review,
            open,
            last_event_id,
            working,
            long_waits,
            schedules,
            active_lessons,
        ): (i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(match self.backend() {
            // The same statement, as a function of the project's schema
            // (migrations-pg/0010): its plan stays cached on a connection
            // that serves other projects in between.
            Backend::Postgres => "SELECT * FROM tick_probe(?1, ?2)",
            Backend::Sqlite => "SELECT
                   CASE WHEN EXISTS (SELECT 1 FROM task WHERE status = 'working' AND lease_expires_at <= ?1)
                        THEN 1 ELSE 0 END,
                   CASE WHEN EXISTS (SELECT 1 FROM decision WHERE status = 'proposed' AND expires_at <= ?1)
                        THEN 1 ELSE 0 END,
                   (SELECT COUNT(*) FROM task WHERE status = 'review'),
                   (SELECT COUNT(*) FROM task WHERE status IN ('pending', 'working', 'review')),
                   (SELECT COALESCE(MAX(id), 0) FROM event),
                   (SELECT COUNT(*) FROM task WHERE status = 'working'),
                   CASE WHEN EXISTS (SELECT 1 FROM task t JOIN dependency d ON d.task_id = t.id
                                     WHERE t.status = 'pending' AND t.updated_at <= ?2)
                        THEN 1 ELSE 0 END,
                   (SELECT COUNT(*) FROM schedule),
                   (SELECT COUNT(*) FROM experience WHERE status = 'active')",
        })
        .bind(self.now())
        .bind(self.now() - 3_600_000)
        .fetch_one(&self.pool)
        .await?;
        Ok(TickProbe {
            leases_due: leases_due != 0,
            decisions_due: decisions_due != 0,
            in_review,
            open,
            last_event_id,
            working,
            long_waits: long_waits != 0,
            schedules,
            active_lessons,
        })
    }

    /// Working tasks with the time of their holder's last activity (the newest
    /// event on the task not written by the daemon) and whether the daemon
    /// already nudged them since. For the heartbeat policy.
    pub async fn working_activity(&self) -> BbResult<Vec<WorkActivity>> {
        let rows = sqlx::query(
            "SELECT t.id, t.claimed_by, t.creator, t.round, t.claimed_at,
                    COALESCE((SELECT MAX(e.created_at) FROM event e WHERE e.task_id = t.id AND e.actor <> 'daemon'),
                             t.claimed_at, t.updated_at) AS last_activity,
                    (SELECT MAX(e.created_at) FROM event e WHERE e.task_id = t.id AND e.kind = 'task.suspect') AS nudged_at
             FROM task t WHERE t.status = 'working' AND t.claimed_by IS NOT NULL
                AND t.claimed_at IS NOT NULL ORDER BY t.seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkActivity {
                    task_id: r.try_get(0)?,
                    agent: r.try_get(1)?,
                    creator: r.try_get(2)?,
                    round: r.try_get(3)?,
                    claimed_at: r.try_get(4)?,
                    last_activity: r.try_get(5)?,
                    nudged_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The facts behind [`WaitFacts`] for the tasks `ids`, in three queries
    /// whatever their number.
    pub async fn wait_facts(&self, ids: &[String]) -> BbResult<WaitFacts> {
        let mut facts = WaitFacts::default();
        if ids.is_empty() {
            return Ok(facts);
        }
        let ids = serde_json::to_string(ids)
            .map_err(|e| crate::error::BbError::Invalid(e.to_string()))?;
        let mut conn = self.pool.acquire().await?;
        let of_ids = self.backend().json_each("?");
        let deps = sqlx::query(&format!(
            "SELECT d.task_id, dt.id, dt.status FROM dependency d JOIN task dt ON dt.id = d.depends_on
             WHERE d.task_id IN (SELECT value FROM {of_ids}) AND dt.status <> 'done'
             ORDER BY d.task_id, dt.seq"
        ))
        .bind(&ids)
        .fetch_all(&mut conn)
        .await?;
        for r in deps {
            let status: String = r.try_get(2)?;
            let status = status
                .parse::<TaskStatus>()
                .map_err(|e| crate::error::BbError::Invalid(format!("stored task status: {e}")))?;
            facts
                .open_dependencies
                .entry(r.try_get(0)?)
                .or_default()
                .push((r.try_get(1)?, status));
        }
        let blocked = sqlx::query(&format!(
            "SELECT e.task_id, COALESCE({}, '') FROM event e
             WHERE e.id IN (SELECT MAX(x.id) FROM event x
                            WHERE x.task_id IN (SELECT value FROM {of_ids}) AND x.kind = 'task.blocked'
                            GROUP BY x.task_id)",
            self.backend().json_text("e.payload", "reason")
        ))
        .bind(&ids)
        .fetch_all(&mut conn)
        .await?;
        for r in blocked {
            facts.blocked_reason.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let decisions = sqlx::query(&format!(
            "SELECT task_id, id FROM decision
             WHERE status = 'proposed' AND task_id IN (SELECT value FROM {of_ids}) ORDER BY id"
        ))
        .bind(&ids)
        .fetch_all(&mut conn)
        .await?;
        for r in decisions {
            facts
                .proposed_decisions
                .entry(r.try_get(0)?)
                .or_default()
                .push(r.try_get(1)?);
        }
        Ok(facts)
    }

    /// Pending tasks waiting on unfinished dependencies since before `before`,
    /// one row per (task, dependency) with the dependency's agent, skipping
    /// pairs already notified.
    pub async fn long_dependency_waits(
        &self,
        before: crate::model::Millis,
    ) -> BbResult<Vec<DependencyWait>> {
        let rows = sqlx::query(&format!(
            "SELECT t.id, t.assignee, t.updated_at, dt.id, COALESCE(dt.claimed_by, dt.assignee)
             FROM task t JOIN dependency d ON d.task_id = t.id JOIN task dt ON dt.id = d.depends_on
             WHERE t.status = 'pending' AND dt.status <> 'done' AND t.updated_at <= ?
               AND NOT EXISTS (SELECT 1 FROM event e WHERE e.task_id = dt.id AND e.kind = 'task.dependency_wait'
                               AND {} = t.id)
             ORDER BY t.seq",
            self.backend().json_text("e.payload", "waiting")
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DependencyWait {
                    task_id: r.try_get(0)?,
                    task_assignee: r.try_get(1)?,
                    waiting_since: r.try_get(2)?,
                    dependency_id: r.try_get(3)?,
                    dependency_agent: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Tasks matching a filter, most urgent first, then oldest.
    pub async fn list_tasks(&self, f: &TaskFilter) -> BbResult<Vec<Task>> {
        let limit = if f.limit <= 0 {
            100
        } else {
            f.limit.min(10_000)
        };
        // Only the filters given appear in the SQL, so SQLite can use the
        // status index (an `?1 IS NULL OR …` condition would defeat it).
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM task t WHERE 1 = 1");
        if !f.statuses.is_empty() {
            // The enum's own names, never a caller's text.
            let names: Vec<String> = f
                .statuses
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            sql.push_str(&format!(" AND t.status IN ({})", names.join(", ")));
        }
        if f.assignee.is_some() {
            sql.push_str(" AND (t.assignee = ?2 OR t.claimed_by = ?2)");
        }
        if f.tag.is_some() {
            sql.push_str(" AND t.id IN (SELECT g.task_id FROM task_tag g WHERE g.tag = ?3)");
        }
        if f.kind.is_some() {
            sql.push_str(" AND t.kind = ?4");
        }
        sql.push_str(" ORDER BY t.priority, t.seq LIMIT ?5 OFFSET ?6");
        let rows = sqlx::query(&sql)
            .bind(Option::<&str>::None)
            .bind(&f.assignee)
            .bind(&f.tag)
            .bind(&f.kind)
            .bind(limit)
            .bind(f.offset.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Ready tasks (pending, dependencies done, not-before passed), most
    /// urgent first then oldest — the scheduler's input: `limit` of them,
    /// after the first `skip` (a tick reads the next page when the first
    /// page's tasks could not start).
    pub async fn ready_tasks(&self, limit: i64, skip: i64) -> BbResult<Vec<Task>> {
        let sql = match self.backend() {
            // The same statement as a function of the project's schema
            // (migrations-pg/0010), as the probe.
            Backend::Postgres => "SELECT * FROM ready_tasks(?1, ?2, ?3)".to_string(),
            Backend::Sqlite => format!(
                "SELECT {TASK_COLUMNS} FROM task t WHERE {READY_CONDITION}
                 ORDER BY t.priority, t.seq LIMIT ?2 OFFSET ?3"
            ),
        };
        let rows = sqlx::query(&sql)
            .bind(self.now())
            .bind(limit)
            .bind(skip)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// A task with its dependencies, comments, outputs, reviews and sessions.
    pub async fn task_detail(&self, id: &str, comment_limit: i64) -> BbResult<TaskDetail> {
        let task = {
            let mut conn = self.pool.acquire().await?;
            fetch_task(&mut conn, id).await?
        };
        let dep = |sql: &'static str| {
            let pool = self.pool.clone();
            let id = id.to_string();
            async move {
                sqlx::query(sql)
                    .bind(id)
                    .fetch_all(&pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let s: String = r.get(2);
                        Ok(DependencyRef {
                            id: r.get(0),
                            title: r.get(1),
                            status: s.parse().map_err(crate::error::BbError::Invalid)?,
                        })
                    })
                    .collect::<BbResult<Vec<_>>>()
            }
        };
        let depends_on = dep("SELECT t.id, t.title, t.status FROM dependency d JOIN task t ON t.id = d.depends_on WHERE d.task_id = ? ORDER BY t.seq").await?;
        let dependents = dep("SELECT t.id, t.title, t.status FROM dependency d JOIN task t ON t.id = d.task_id WHERE d.depends_on = ? ORDER BY t.seq").await?;
        Ok(TaskDetail {
            comments: self.comments(id, comment_limit).await?,
            outputs: self.outputs(id).await?,
            reviews: self.reviews(id).await?,
            sessions: self.sessions_for_task(id).await?,
            depends_on,
            dependents,
            task,
        })
    }
}
