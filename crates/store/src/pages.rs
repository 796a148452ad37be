//! Read models for the HTTP API: keyset-paginated task lists, per-project
//! figures, filtered observations.
//!
//! Task pages are ordered by `(priority, seq)` — priority, then creation, then
//! id, since `seq` is the id's number and grows with creation — and continue
//! after the last row of the previous page, so a page costs the same at row
//! 10 as at row 10,000. The rows of a page are chosen first on the narrow
//! columns (from the `task_open` index when no other filter narrows them);
//! the wide columns (with the per-row tag subquery) are read only for those
//! rows.

use std::collections::BTreeMap;

use crate::board::Blackboard;
use crate::db::Backend;
use crate::error::BbResult;
use crate::model::{Observation, ObservationLevel, Priority, Task, TaskStatus};
use crate::records::observation_from_row;
use crate::tasks::{task_from_row, TASK_COLUMNS};

/// Filters and position of one page of tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Any of these statuses (empty = all).
    pub statuses: Vec<TaskStatus>,
    /// The designated assignee or the current claimant.
    pub assignee: Option<String>,
    pub tag: Option<String>,
    pub kind: Option<String>,
    pub priority: Option<Priority>,
    /// Substring of the title or description, or an exact task id.
    pub q: Option<String>,
    /// Rows per page (the caller bounds it).
    pub limit: i64,
    /// Continue after this `(priority rank, seq)`.
    pub after: Option<(i64, i64)>,
}

/// One page of tasks.
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// `(priority rank, seq)` of the last row when more rows follow.
    pub next: Option<(i64, i64)>,
    /// Rows matching the filters (all pages).
    pub total: i64,
}

/// What the project listing shows of one blackboard.
#[derive(Debug, Clone, Default)]
pub struct ProjectStats {
    pub tasks_summary: BTreeMap<String, i64>,
    pub decisions_proposed: i64,
    pub last_event_id: i64,
}

/// SQL `WHERE` conditions for the filters, with their binds in order.
fn task_conditions(q: &TaskQuery) -> (String, Vec<String>) {
    let mut sql = String::from("1 = 1");
    let mut binds = Vec::new();
    // Without a narrower filter, "any status" is spelled as every status: the
    // page is then read from the covering `task_open (status, priority, seq)`
    // index (one ordered range per status, keyset included) instead of
    // scanning the wide task rows.
    let statuses: &[TaskStatus] = match (&q.statuses[..], &q.tag, &q.assignee, &q.q) {
        ([], None, None, None) => TaskStatus::ALL,
        (given, ..) => given,
    };
    if !statuses.is_empty() {
        sql.push_str(" AND t.status IN (");
        for (i, s) in statuses.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            binds.push(s.as_str().to_string());
        }
        sql.push(')');
    }
    if let Some(a) = &q.assignee {
        sql.push_str(" AND (t.assignee = ? OR t.claimed_by = ?)");
        binds.push(a.clone());
        binds.push(a.clone());
    }
    if let Some(tag) = &q.tag {
        sql.push_str(" AND t.id IN (SELECT g.task_id FROM task_tag g WHERE g.tag = ?)");
        binds.push(tag.clone());
    }
    if let Some(k) = &q.kind {
        sql.push_str(" AND t.kind = ?");
        binds.push(k.clone());
    }
    if let Some(p) = q.priority {
        sql.push_str(" AND t.priority = ?");
        binds.push(p.rank().to_string());
    }
    if let Some(text) = &q.q {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        sql.push_str(
            " AND (t.id = ? OR t.title LIKE ? ESCAPE '\\' OR t.description LIKE ? ESCAPE '\\')",
        );
        binds.push(text.clone());
        binds.push(pattern.clone());
        binds.push(pattern);
    }
    (sql, binds)
}

impl Blackboard {
    /// One page of tasks matching `q`, most urgent first, then oldest.
    pub async fn task_page(&self, q: &TaskQuery) -> BbResult<TaskPage> {
        let (cond, binds) = task_conditions(q);
        let mut conn = self.pool.acquire().await?;
        let total_sql = format!("SELECT COUNT(*) FROM task t WHERE {cond}");
        let mut total = sqlx::query_scalar::<_, i64>(&total_sql);
        for b in &binds {
            total = total.bind(b);
        }
        let total = total.fetch_one(&mut conn).await?;

        let keyset = if q.after.is_some() {
            " AND (t.priority, t.seq) > (?, ?)"
        } else {
            ""
        };
        // SQLite's rowid is the table's own key; PostgreSQL has the unique seq.
        let key = match self.backend() {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "seq",
        };
        let sql = format!(
            "SELECT {TASK_COLUMNS}, t.seq FROM task t WHERE t.{key} IN (
                 SELECT t.{key} FROM task t WHERE {cond}{keyset}
                 ORDER BY t.priority, t.seq LIMIT ?)
             ORDER BY t.priority, t.seq"
        );
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b);
        }
        if let Some((p, s)) = q.after {
            query = query.bind(p).bind(s);
        }
        let rows = query.bind(q.limit + 1).fetch_all(&mut conn).await?;
        let more = rows.len() as i64 > q.limit;
        let mut tasks = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(q.limit as usize) {
            let t = task_from_row(row)?;
            last = Some((t.priority.rank(), sqlx::Row::try_get::<i64, _>(row, "seq")?));
            tasks.push(t);
        }
        Ok(TaskPage {
            tasks,
            next: if more { last } else { None },
            total,
        })
    }

    /// The current rows of the tasks with these ids, in one query (the event
    /// pump attaches them to `task.*` events); ids without a row are left
    /// out.
    pub async fn tasks_by_ids(&self, ids: &[&str]) -> BbResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(ids)
            .map_err(|e| crate::error::BbError::Invalid(e.to_string()))?;
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM task t WHERE t.id IN (SELECT value FROM {})",
            self.backend().json_each("?")
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Task counts, open decisions and the newest event id, in one read.
    pub async fn project_stats(&self) -> BbResult<ProjectStats> {
        let tasks_summary = self.status_counts().await?;
        let (decisions_proposed, last_event_id): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM decision WHERE status = 'proposed'),
                    (SELECT COALESCE(MAX(id), 0) FROM event)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ProjectStats {
            tasks_summary,
            decisions_proposed,
            last_event_id,
        })
    }

    /// The newest observations, optionally of one level only.
    pub async fn observations_at(
        &self,
        level: Option<ObservationLevel>,
        limit: i64,
    ) -> BbResult<Vec<Observation>> {
        let rows = sqlx::query(
            "SELECT * FROM observation WHERE (?1 IS NULL OR level = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(level.map(|l| l.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(observation_from_row).collect()
    }
}
