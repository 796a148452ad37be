//! Everything written *about* tasks: comments, outputs, reviews, decisions,
//! observations and experiences.

use serde_json::json;
use sqlx::Row;

use super::events::emit;
use super::ids::is_valid_tag;
use super::tasks::{check_task_id, fetch_task, observe};
use super::{
    Actor, BbError, BbResult, Blackboard, Comment, CommentType, Decision, DecisionStatus,
    EventLevel, Experience, ExperienceStatus, Millis, Observation, ObservationLevel, Output,
    Review, TaskStatus, Verdict,
};

/// A decision to record (`bb decide`, or a high-risk tool call).
#[derive(Debug, Clone, Default)]
pub struct NewDecision {
    pub task_id: Option<String>,
    pub question: String,
    pub decision: String,
    pub rationale: String,
    /// `true` records a settled decision (`approved` by its author); `false`
    /// proposes it for a human to approve or reject.
    pub settled: bool,
    /// Unanswered proposals become `rejected` at this time.
    pub expires_at: Option<Millis>,
}

/// A lesson to record.
#[derive(Debug, Clone, Default)]
pub struct NewExperience {
    pub task_id: Option<String>,
    pub tags: Vec<String>,
    pub lesson: String,
}

const MAX_BODY: usize = 1 << 20;

fn check_body(what: &str, body: &str) -> BbResult<()> {
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

fn comment_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Comment> {
    let t: String = r.try_get("comment_type")?;
    Ok(Comment {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        author: r.try_get("author")?,
        comment_type: t.parse().unwrap_or(CommentType::Comment),
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

fn output_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Output> {
    Ok(Output {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        agent: r.try_get("agent")?,
        round: r.try_get("round")?,
        summary: r.try_get("summary")?,
        artifact_path: r.try_get("artifact_path")?,
        inline_text: r.try_get("inline_text")?,
        created_at: r.try_get("created_at")?,
    })
}

fn review_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Review> {
    let v: String = r.try_get("verdict")?;
    Ok(Review {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        reviewer: r.try_get("reviewer")?,
        protocol: r.try_get("protocol")?,
        round: r.try_get("round")?,
        verdict: v.parse().map_err(BbError::Invalid)?,
        confidence: r.try_get("confidence")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn decision_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Decision> {
    let s: String = r.try_get("status")?;
    Ok(Decision {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        author: r.try_get("author")?,
        question: r.try_get("question")?,
        decision: r.try_get("decision")?,
        rationale: r.try_get("rationale")?,
        status: s.parse().map_err(BbError::Invalid)?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn observation_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Observation> {
    let l: String = r.try_get("level")?;
    Ok(Observation {
        id: r.try_get("id")?,
        level: l.parse().map_err(BbError::Invalid)?,
        source: r.try_get("source")?,
        task_id: r.try_get("task_id")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn experience_from_row(r: &sqlx::sqlite::SqliteRow) -> BbResult<Experience> {
    let s: String = r.try_get("status")?;
    let tags: Option<String> = r.try_get("tags")?;
    Ok(Experience {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        agent: r.try_get("agent")?,
        lesson: r.try_get("lesson")?,
        tags: tags
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        times_referenced: r.try_get("times_referenced")?,
        last_referenced_at: r.try_get("last_referenced_at")?,
        status: s.parse().map_err(BbError::Invalid)?,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) const EXPERIENCE_COLUMNS: &str = "e.id, e.task_id, e.agent, e.lesson, e.times_referenced,
    e.last_referenced_at, e.status, e.created_at,
    (SELECT group_concat(tag, ',') FROM (SELECT tag FROM experience_tag WHERE experience_id = e.id ORDER BY tag)) AS tags";

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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
            json!({ "comment_id": comment.id, "comment_type": comment_type }),
        )
        .await?;
        tx.commit().await?;
        Ok(comment)
    }

    pub async fn comments(&self, task: &str, limit: i64) -> BbResult<Vec<Comment>> {
        check_task_id(task)?;
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM comment WHERE task_id = ? ORDER BY id DESC LIMIT ?)
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let t = fetch_task(&mut tx, task).await?;
        if t.status != TaskStatus::Working {
            return Err(BbError::Conflict(format!(
                "cannot post an output to task {task}: it is {}, not working",
                t.status
            )));
        }
        if t.claimed_by.as_deref() != Some(actor.name.as_str())
            && actor.kind != super::ActorKind::Daemon
        {
            return Err(BbError::Forbidden(format!(
                "only the assignee of task {task} ({}) may post its output, not {}",
                t.claimed_by.as_deref().unwrap_or("nobody"),
                actor.name
            )));
        }
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
        tx.commit().await?;
        Ok(output)
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
            json!({ "review_id": review.id, "verdict": verdict, "confidence": confidence, "round": t.round }),
        )
        .await?;
        tx.commit().await?;
        Ok(review)
    }

    pub async fn reviews(&self, task: &str) -> BbResult<Vec<Review>> {
        check_task_id(task)?;
        let rows = sqlx::query("SELECT * FROM review WHERE task_id = ? ORDER BY round, id")
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(review_from_row).collect()
    }

    /// Records or proposes a decision.
    pub async fn add_decision(&self, new: NewDecision, actor: &Actor) -> BbResult<Decision> {
        check_body("decision question", &new.question)?;
        if let Some(t) = &new.task_id {
            check_task_id(t)?;
        }
        let now = self.now();
        let mut tx = self.begin_write().await?;
        if let Some(t) = &new.task_id {
            fetch_task(&mut tx, t).await?;
        }
        let (status, decided_by, decided_at) = if new.settled {
            (
                DecisionStatus::Approved,
                Some(actor.name.as_str()),
                Some(now),
            )
        } else {
            (DecisionStatus::Proposed, None, None)
        };
        let row = sqlx::query(
            "INSERT INTO decision (task_id, author, question, decision, rationale, status,
                 decided_by, decided_at, expires_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&new.task_id)
        .bind(&actor.name)
        .bind(&new.question)
        .bind(&new.decision)
        .bind(&new.rationale)
        .bind(status.as_str())
        .bind(decided_by)
        .bind(decided_at)
        .bind(new.expires_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let decision = decision_from_row(&row)?;
        let level = if new.settled {
            EventLevel::Daily
        } else {
            EventLevel::Attention
        };
        emit(
            &mut tx,
            now,
            level,
            if new.settled {
                "decision.recorded"
            } else {
                "decision.proposed"
            },
            new.task_id.as_deref(),
            actor,
            json!({ "decision_id": decision.id, "question": new.question }),
        )
        .await?;
        tx.commit().await?;
        Ok(decision)
    }

    pub async fn decision(&self, id: i64) -> BbResult<Decision> {
        let row = sqlx::query("SELECT * FROM decision WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| BbError::NotFound {
                what: "decision",
                id: id.to_string(),
            })?;
        decision_from_row(&row)
    }

    pub async fn decisions(
        &self,
        status: Option<DecisionStatus>,
        limit: i64,
    ) -> BbResult<Vec<Decision>> {
        let rows = sqlx::query(
            "SELECT * FROM decision WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(status.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decision_from_row).collect()
    }

    /// Approves or rejects a proposed decision (operators and the daemon only).
    pub async fn decide(
        &self,
        id: i64,
        approve: bool,
        actor: &Actor,
        rationale: &str,
    ) -> BbResult<Decision> {
        if !actor.is_privileged() {
            return Err(BbError::Forbidden(format!(
                "agent {} may not approve or reject decisions; a person must",
                actor.name
            )));
        }
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM decision WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| BbError::NotFound {
                what: "decision",
                id: id.to_string(),
            })?;
        let d = decision_from_row(&row)?;
        if d.status != DecisionStatus::Proposed {
            return Err(BbError::Conflict(format!(
                "decision {id} is already {} by {}",
                d.status,
                d.decided_by.as_deref().unwrap_or("?")
            )));
        }
        let status = if approve {
            DecisionStatus::Approved
        } else {
            DecisionStatus::Rejected
        };
        let row = sqlx::query(
            "UPDATE decision SET status = ?, decided_by = ?, decided_at = ?,
                 rationale = CASE WHEN ? = '' THEN rationale ELSE ? END
             WHERE id = ? RETURNING *",
        )
        .bind(status.as_str())
        .bind(&actor.name)
        .bind(now)
        .bind(rationale)
        .bind(rationale)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let decided = decision_from_row(&row)?;
        emit(
            &mut tx,
            now,
            EventLevel::Daily,
            &format!("decision.{status}"),
            d.task_id.as_deref(),
            actor,
            json!({ "decision_id": id }),
        )
        .await?;
        tx.commit().await?;
        Ok(decided)
    }

    /// Rejects proposals past their expiry; returns how many expired.
    pub async fn expire_decisions(&self) -> BbResult<u64> {
        let now = self.now();
        // Cheap read first: the tick calls this every time, and a write
        // transaction with nothing to write still takes the lock.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM decision WHERE status = 'proposed' AND expires_at IS NOT NULL
             AND expires_at <= ? LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let ids: Vec<(i64, Option<String>)> = sqlx::query_as(
            "UPDATE decision SET status = 'rejected', decided_by = 'daemon', decided_at = ?1,
                 rationale = 'expired without an answer'
             WHERE status = 'proposed' AND expires_at IS NOT NULL AND expires_at <= ?1
             RETURNING id, task_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, task) in &ids {
            emit(
                &mut tx,
                now,
                EventLevel::Attention,
                "decision.expired",
                task.as_deref(),
                &Actor::daemon(),
                json!({ "decision_id": id }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
            json!({ "observation_id": id, "level": level, "body": body }),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
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
        let now = self.now();
        let mut tx = self.begin_write().await?;
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
        let exp = experience_from_row(&row)?;
        tx.commit().await?;
        Ok(exp)
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
