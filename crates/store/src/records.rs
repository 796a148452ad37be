//! Records written *about* tasks: comments, outputs, reviews, observations
//! and experiences (decisions: `decisions.rs`).

use serde_json::json;
use sqlx::FromRow;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::ids::is_valid_tag;
use crate::model::{
    Comment, CommentType, EventLevel, Experience, ExperienceStatus, Observation, ObservationLevel,
    Output, Review, TaskStatus, Verdict,
};
use crate::tasks::{check_task_id, fetch_task, observe};

/// A lesson to record.
#[derive(Debug, Clone, Default)]
pub struct NewExperience {
    pub task_id: Option<String>,
    pub tags: Vec<String>,
    pub lesson: String,
}

pub(super) const MAX_BODY: usize = 1 << 20;

pub(super) fn check_body(what: &str, body: &str) -> BbResult<()> {
    if body.trim().is_empty() {
        return Err(BbError::Invalid(format!("{what} must not be empty")));
    }
    if body.len() > MAX_BODY {
        return Err(BbError::Invalid(format!(
            "{what} is {} bytes; the limit is {MAX_BODY} (write large content as an artifact)",
            body.len()
        )));
    }
    Ok(())
}

fn comment_from_row(r: &sqlx::any::AnyRow) -> BbResult<Comment> {
    Ok(Comment::from_row(r)?)
}

fn output_from_row(r: &sqlx::any::AnyRow) -> BbResult<Output> {
    Ok(Output::from_row(r)?)
}

fn review_from_row(r: &sqlx::any::AnyRow) -> BbResult<Review> {
    Ok(Review::from_row(r)?)
}

pub(super) fn observation_from_row(r: &sqlx::any::AnyRow) -> BbResult<Observation> {
    Ok(Observation::from_row(r)?)
}

pub(super) fn experience_from_row(r: &sqlx::any::AnyRow) -> BbResult<Experience> {
    crate::rows::read::<crate::rows::ExperienceRow, Experience>(r)
}

pub(super) const EXPERIENCE_COLUMNS: &str = "e.id, e.task_id, e.agent, e.lesson, e.times_referenced,
    e.last_referenced_at, e.status, e.created_at,
    (SELECT string_agg(tag, ',' ORDER BY tag) FROM experience_tag WHERE experience_id = e.id) AS tags";

impl Blackboard {
    /// Adds a comment to a task (any actor, any task state).
    pub async fn add_comment(
        &self,
        task: &str,
        actor: &Actor,
        comment_type: CommentType,
        body: &str,
    ) -> BbResult<Comment> {
        check_body("comment body", body)?;
        write_tx!(self, |tx, now| {
            fetch_task(&mut tx, task).await?;
            let row = sqlx::query(
                "INSERT INTO comment (task_id, author, comment_type, body, created_at)
                 VALUES (?, ?, ?, ?, ?) RETURNING *",
            )
            .bind(task)
            .bind(&actor.name)
            .bind(comment_type.as_str())
            .bind(body)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let comment = comment_from_row(&row)?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "comment.added",
                Some(task),
                actor,
                json!({ "comment_id": comment.id, "comment_type": comment_type.as_str() }),
            )
            .await?;
            comment
        })
    }

    pub async fn comments(&self, task: &str, limit: i64) -> BbResult<Vec<Comment>> {
        check_task_id(task)?;
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM comment WHERE task_id = ? ORDER BY id DESC LIMIT ?) AS c
             ORDER BY id",
        )
        .bind(task)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(comment_from_row).collect()
    }

    /// Records an output of the current round. Only the holder of a `working`
    /// task may post one. `artifact_path` is relative to the task's `outputs/`
    /// and must already have been validated and written by the caller.
    pub async fn add_output(
        &self,
        task: &str,
        actor: &Actor,
        summary: &str,
        artifact_path: Option<&str>,
        inline_text: Option<&str>,
    ) -> BbResult<Output> {
        check_body("output summary", summary)?;
        if let Some(t) = inline_text {
            if t.len() > MAX_BODY {
                return Err(BbError::Invalid(format!(
                    "inline output is {} bytes; the limit is {MAX_BODY} (use --file)",
                    t.len()
                )));
            }
        }
        write_tx!(self, |tx, now| {
            let t = fetch_task(&mut tx, task).await?;
            crate::lifecycle::require_holder(&t, actor, "post an output to")?;
            let row = sqlx::query(
                "INSERT INTO output (task_id, agent, round, summary, artifact_path, inline_text, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
            )
            .bind(task)
            .bind(&actor.name)
            .bind(t.round)
            .bind(summary)
            .bind(artifact_path)
            .bind(inline_text)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let output = output_from_row(&row)?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "output.added",
                Some(task),
                actor,
                json!({ "output_id": output.id, "artifact_path": artifact_path, "summary": summary }),
            )
            .await?;
            output
        })
    }

    pub async fn outputs(&self, task: &str) -> BbResult<Vec<Output>> {
        check_task_id(task)?;
        let rows = sqlx::query("SELECT * FROM output WHERE task_id = ? ORDER BY id")
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(output_from_row).collect()
    }

    /// Records a review of the current round. The task must be in `review`;
    /// authors cannot review their own work; one review per reviewer per round.
    pub async fn add_review(
        &self,
        task: &str,
        actor: &Actor,
        verdict: Verdict,
        confidence: f64,
        body: &str,
    ) -> BbResult<Review> {
        if !(0.0..=1.0).contains(&confidence) || confidence.is_nan() {
            return Err(BbError::Invalid(format!(
                "confidence must be between 0 and 1, got {confidence}"
            )));
        }
        if verdict != Verdict::Approve {
            check_body("a revise/reject review's body (what must change)", body)?;
        }
        write_tx!(self, |tx, now| {
            let t = fetch_task(&mut tx, task).await?;
            if t.status != TaskStatus::Review {
                return Err(BbError::Conflict(format!(
                    "cannot review task {task}: it is {}, not in review",
                    t.status
                )));
            }
            if t.claimed_by.as_deref() == Some(actor.name.as_str()) {
                return Err(BbError::Forbidden(format!(
                    "{} wrote task {task} and cannot review it",
                    actor.name
                )));
            }
            let dup: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM review WHERE task_id = ? AND round = ? AND reviewer = ?",
            )
            .bind(task)
            .bind(t.round)
            .bind(&actor.name)
            .fetch_optional(&mut *tx)
            .await?;
            if dup.is_some() {
                return Err(BbError::Conflict(format!(
                    "{} already reviewed round {} of task {task}",
                    actor.name, t.round
                )));
            }
            let row = sqlx::query(
                "INSERT INTO review (task_id, reviewer, protocol, round, verdict, confidence, body, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            )
            .bind(task)
            .bind(&actor.name)
            .bind(&t.review_protocol)
            .bind(t.round)
            .bind(verdict.as_str())
            .bind(confidence)
            .bind(body)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let review = review_from_row(&row)?;
            let level = if verdict == Verdict::Approve {
                EventLevel::Optional
            } else {
                EventLevel::Attention
            };
            emit(
                &mut tx,
                now,
                level,
                "review.added",
                Some(task),
                actor,
                json!({ "review_id": review.id, "verdict": verdict.as_str(), "confidence": confidence, "round": t.round }),
            )
            .await?;
            review
        })
    }

    pub async fn reviews(&self, task: &str) -> BbResult<Vec<Review>> {
        check_task_id(task)?;
        let rows = sqlx::query("SELECT * FROM review WHERE task_id = ? ORDER BY round, id")
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(review_from_row).collect()
    }

    /// Records an observation (agents' notes, the daemon's alerts).
    pub async fn add_observation(
        &self,
        level: ObservationLevel,
        actor: &Actor,
        task: Option<&str>,
        body: &str,
    ) -> BbResult<i64> {
        check_body("observation body", body)?;
        write_tx!(self, |tx, now| {
            if let Some(t) = task {
                fetch_task(&mut tx, t).await?;
            }
            let id = observe(&mut tx, now, level, &actor.name, task, body).await?;
            let event_level = match level {
                ObservationLevel::Alert => EventLevel::Urgent,
                ObservationLevel::Warn => EventLevel::Attention,
                ObservationLevel::Info => EventLevel::Optional,
            };
            emit(
                &mut tx,
                now,
                event_level,
                "observation.added",
                task,
                actor,
                json!({ "observation_id": id, "level": level.as_str(), "body": body }),
            )
            .await?;
            id
        })
    }

    pub async fn observations(&self, limit: i64) -> BbResult<Vec<Observation>> {
        let rows = sqlx::query("SELECT * FROM observation ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(observation_from_row).collect()
    }

    /// Records a lesson learned.
    pub async fn add_experience(&self, new: NewExperience, actor: &Actor) -> BbResult<Experience> {
        check_body("lesson", &new.lesson)?;
        if new.tags.is_empty() {
            return Err(BbError::Invalid(
                "an experience needs at least one tag (--tags)".into(),
            ));
        }
        for tag in &new.tags {
            if !is_valid_tag(tag) {
                return Err(BbError::Invalid(format!(
                    "invalid tag {tag:?}: use lowercase letters, digits, - _ . :"
                )));
            }
        }
        if let Some(t) = &new.task_id {
            check_task_id(t)?;
        }
        write_tx!(self, |tx, now| {
            if let Some(t) = &new.task_id {
                fetch_task(&mut tx, t).await?;
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO experience (task_id, agent, lesson, created_at) VALUES (?, ?, ?, ?)
                 RETURNING id",
            )
            .bind(&new.task_id)
            .bind(&actor.name)
            .bind(&new.lesson)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let mut tags = new.tags.clone();
            tags.sort();
            tags.dedup();
            for tag in &tags {
                sqlx::query("INSERT INTO experience_tag (experience_id, tag) VALUES (?, ?)")
                    .bind(id)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
            }
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "experience.added",
                new.task_id.as_deref(),
                actor,
                json!({ "experience_id": id, "tags": tags }),
            )
            .await?;
            let row = sqlx::query(&format!(
                "SELECT {EXPERIENCE_COLUMNS} FROM experience e WHERE e.id = ?"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            experience_from_row(&row)?
        })
    }

    pub async fn experiences(
        &self,
        status: Option<ExperienceStatus>,
        tag: Option<&str>,
        limit: i64,
    ) -> BbResult<Vec<Experience>> {
        let rows = sqlx::query(&format!(
            "SELECT {EXPERIENCE_COLUMNS} FROM experience e
             WHERE (?1 IS NULL OR e.status = ?1)
               AND (?2 IS NULL OR EXISTS (SELECT 1 FROM experience_tag x WHERE x.experience_id = e.id AND x.tag = ?2))
             ORDER BY e.id DESC LIMIT ?3"
        ))
        .bind(status.map(|s| s.as_str()))
        .bind(tag)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(experience_from_row).collect()
    }
}
