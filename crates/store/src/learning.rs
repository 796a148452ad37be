//! Experience bookkeeping for briefs and distillation: which
//! lessons a brief shows (and that it showed them), which tags have enough
//! active lessons to distill, the one open `distill` task per tag, and expiry.

use serde_json::json;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::BbResult;
use crate::events::emit;
use crate::model::{EventLevel, Experience, Millis, Task};
use crate::records::EXPERIENCE_COLUMNS;
use crate::tasks::{insert_task, NewTask};

/// What [`distill_tag`] puts before the experience tag.
pub const DISTILL_TAG_PREFIX: &str = "distill:";

/// The task tag that marks the distill task of experience tag `tag`.
pub fn distill_tag(tag: &str) -> String {
    format!("{DISTILL_TAG_PREFIX}{tag}")
}

impl Blackboard {
    /// Active experiences sharing a tag with `tags`: most referenced, then
    /// newest, at most `limit`.
    pub async fn experiences_for_tags(
        &self,
        tags: &[String],
        limit: i64,
    ) -> BbResult<Vec<Experience>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let tags_json = serde_json::to_string(tags).expect("strings serialize");
        let tags_of = self.backend().json_each("?1");
        let rows = sqlx::query(&format!(
            "SELECT {EXPERIENCE_COLUMNS} FROM experience e
             WHERE e.status = 'active'
               AND EXISTS (SELECT 1 FROM experience_tag x WHERE x.experience_id = e.id
                           AND x.tag IN (SELECT value FROM {tags_of}))
             ORDER BY e.times_referenced DESC, e.id DESC LIMIT ?2"
        ))
        .bind(tags_json)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(crate::records::experience_from_row)
            .collect()
    }

    /// Counts one reference of each experience (a brief showed it).
    pub async fn reference_experiences(&self, ids: &[i64]) -> BbResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let ids_json = serde_json::to_string(ids).expect("ints serialize");
        sqlx::query(&format!(
            "UPDATE experience SET times_referenced = times_referenced + 1, last_referenced_at = ?1
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM {})",
            self.backend().json_each("?2")
        ))
        .bind(now)
        .bind(ids_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Experience tags due for a distill task, by tag: at least `threshold`
    /// active experiences, no open distill task, and no give-up (failed or
    /// cancelled distill task) since the newest of them. A read, so the
    /// daemon's tick takes the write lock of [`Self::create_distill_task_once`]
    /// (which checks all this again) only for tags that are due.
    pub async fn distill_candidates(&self, threshold: u32) -> BbResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT x.tag FROM experience_tag x JOIN experience e ON e.id = x.experience_id
             WHERE e.status = 'active' GROUP BY x.tag
             HAVING COUNT(*) >= ?1
                AND NOT EXISTS (SELECT 1 FROM task t JOIN task_tag g ON g.task_id = t.id
                                WHERE g.tag = ?2 || x.tag AND t.kind = 'distill'
                                  AND t.status NOT IN ('done','failed','cancelled'))
                AND MAX(e.created_at) > COALESCE(
                    (SELECT MAX(t.finished_at) FROM task t JOIN task_tag g ON g.task_id = t.id
                     WHERE g.tag = ?2 || x.tag AND t.kind = 'distill'
                       AND t.status IN ('failed','cancelled')), -1)
             ORDER BY x.tag",
        )
        .bind(threshold as i64)
        .bind(DISTILL_TAG_PREFIX)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates the `distill` task for experience tag `tag`, unless one is
    /// already open, fewer than `threshold` active experiences carry the tag,
    /// or the last distill task of the tag failed (or was cancelled) and no
    /// experience was added since. The check and the insert share one
    /// `BEGIN IMMEDIATE` transaction, so concurrent ticks — in one daemon or
    /// across a restart — create at most one. `review_protocol` is the
    /// daemon's own skill check.
    pub async fn create_distill_task_once(
        &self,
        tag: &str,
        threshold: u32,
        review_protocol: &str,
    ) -> BbResult<Option<Task>> {
        let marker = distill_tag(tag);
        write_tx!(self, |tx, now| {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM task t JOIN task_tag g ON g.task_id = t.id
                 WHERE g.tag = ? AND t.kind = 'distill'
                   AND t.status NOT IN ('done','failed','cancelled')",
            )
            .bind(&marker)
            .fetch_one(&mut *tx)
            .await?;
            if open > 0 {
                return Ok(None);
            }
            let lessons: Vec<(i64, String, String, Millis)> = sqlx::query_as(
                "SELECT e.id, e.agent, e.lesson, e.created_at FROM experience e
                 JOIN experience_tag x ON x.experience_id = e.id
                 WHERE x.tag = ? AND e.status = 'active' ORDER BY e.id",
            )
            .bind(tag)
            .fetch_all(&mut *tx)
            .await?;
            if (lessons.len() as u32) < threshold || lessons.is_empty() {
                return Ok(None);
            }
            let last_given_up: Option<Millis> = sqlx::query_scalar(
                "SELECT MAX(t.finished_at) FROM task t JOIN task_tag g ON g.task_id = t.id
                 WHERE g.tag = ? AND t.kind = 'distill' AND t.status IN ('failed','cancelled')",
            )
            .bind(&marker)
            .fetch_one(&mut *tx)
            .await?;
            let newest = lessons.iter().map(|l| l.3).max().unwrap_or(0);
            if last_given_up.is_some_and(|t| newest <= t) {
                return Ok(None);
            }
            let title = format!(
                "Distill {} lessons tagged {tag} into a skill",
                lessons.len()
            );
            let mut description = format!(
                "Turn these active experiences tagged `{tag}` into one reusable skill.\n\n"
            );
            for (eid, agent, lesson, _) in &lessons {
                description.push_str(&format!("- experience {eid} ({agent}): {lesson}\n"));
            }
            let new = NewTask {
                title,
                description,
                kind: Some("distill".into()),
                tags: vec![marker.clone(), tag.to_string()],
                review_protocol: Some(review_protocol.to_string()),
                ..Default::default()
            };
            let ids: Vec<i64> = lessons.iter().map(|l| l.0).collect();
            let mut extra = serde_json::Map::new();
            extra.insert("distill_tag".into(), json!(tag));
            extra.insert("experiences".into(), json!(ids));
            let task = insert_task(&mut tx, now, &new, &Actor::daemon(), extra).await?;
            Some(task)
        })
    }

    /// Marks the active experiences tagged `tag` and created no later than
    /// `until` as `distilled` into `skill`. Returns their ids.
    pub async fn mark_distilled(
        &self,
        tag: &str,
        until: Millis,
        task: &str,
        skill: &str,
    ) -> BbResult<Vec<i64>> {
        write_tx!(self, |tx, now| {
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE experience SET status = 'distilled'
                 WHERE status = 'active' AND created_at <= ?
                   AND id IN (SELECT experience_id FROM experience_tag WHERE tag = ?)
                 RETURNING id",
            )
            .bind(until)
            .bind(tag)
            .fetch_all(&mut *tx)
            .await?;
            emit(
                &mut tx,
                now,
                EventLevel::Daily,
                "experience.distilled",
                Some(task),
                &Actor::daemon(),
                json!({ "tag": tag, "skill": skill, "experiences": ids }),
            )
            .await?;
            ids
        })
    }

    /// Active experiences not referenced (nor created) for `expire_days`
    /// become `deprecated`. Returns their ids.
    pub async fn expire_experiences(&self, expire_days: u32) -> BbResult<Vec<i64>> {
        let now = self.now();
        let cutoff = now - (expire_days as i64) * 86_400_000;
        // Read first: most ticks find nothing and should not take the write lock.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM experience
             WHERE status = 'active' AND COALESCE(last_referenced_at, created_at) <= ? LIMIT 1",
        )
        .bind(cutoff)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        write_tx!(self, |tx, now| {
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE experience SET status = 'deprecated'
                 WHERE status = 'active' AND COALESCE(last_referenced_at, created_at) <= ?
                 RETURNING id",
            )
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            if !ids.is_empty() {
                emit(
                    &mut tx,
                    now,
                    EventLevel::Optional,
                    "experience.deprecated",
                    None,
                    &Actor::daemon(),
                    json!({ "experiences": ids, "expire_days": expire_days }),
                )
                .await?;
            }
            ids
        })
    }
}
