//! The LLM usage ledger: what the gateway saw of each run's calls, per
//! provider, model and quarter hour (`llm_usage`), plus the run's totals on
//! its session row. The gateway prices each response (`gateway.prices`);
//! `session.cost` stays the CLI's own report, kept beside `gateway_cost`.

use sqlx::Row;

use crate::board::Blackboard;
use crate::error::BbResult;
use crate::model::Millis;

/// Width of a usage bucket: a quarter hour, so every time zone's day and
/// month boundaries fall on a bucket edge.
pub const USAGE_BUCKET_MS: Millis = 15 * 60 * 1000;

/// The bucket `at` falls in (its start).
pub fn usage_bucket(at: Millis) -> Millis {
    at.div_euclid(USAGE_BUCKET_MS) * USAGE_BUCKET_MS
}

/// Usage added to one run's line for one provider, model and bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageBooking {
    pub session_id: String,
    pub provider: String,
    pub model: String,
    /// Start of the bucket ([`usage_bucket`]).
    pub bucket_start: Millis,
    pub responses: i64,
    /// Responses no price matched.
    pub unpriced: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    /// USD.
    pub cost: f64,
}

/// One stored usage line with the run's task and agent.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLine {
    pub booking: UsageBooking,
    pub task_id: String,
    pub agent: String,
}

impl Blackboard {
    /// Adds many bookings in one write transaction: each to its run's
    /// session row and to its `llm_usage` line. A booking of an unknown
    /// session changes nothing.
    pub async fn add_usage(&self, rows: &[UsageBooking]) -> BbResult<()> {
        write_tx!(self, |tx, _now| {
            for b in rows {
                let known = sqlx::query(
                    "UPDATE session SET prompt_tokens = prompt_tokens + ?,
                         completion_tokens = completion_tokens + ?,
                         cached_tokens = cached_tokens + ?, gateway_cost = gateway_cost + ?
                     WHERE id = ?",
                )
                .bind(b.prompt_tokens)
                .bind(b.completion_tokens)
                .bind(b.cached_tokens)
                .bind(b.cost)
                .bind(&b.session_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !known {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO llm_usage (session_id, provider, model, bucket_start, responses,
                         unpriced, prompt_tokens, completion_tokens, cached_tokens, cost)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (session_id, provider, model, bucket_start) DO UPDATE SET
                         responses = llm_usage.responses + excluded.responses,
                         unpriced = llm_usage.unpriced + excluded.unpriced,
                         prompt_tokens = llm_usage.prompt_tokens + excluded.prompt_tokens,
                         completion_tokens = llm_usage.completion_tokens + excluded.completion_tokens,
                         cached_tokens = llm_usage.cached_tokens + excluded.cached_tokens,
                         cost = llm_usage.cost + excluded.cost",
                )
                .bind(&b.session_id)
                .bind(&b.provider)
                .bind(&b.model)
                .bind(b.bucket_start)
                .bind(b.responses)
                .bind(b.unpriced)
                .bind(b.prompt_tokens)
                .bind(b.completion_tokens)
                .bind(b.cached_tokens)
                .bind(b.cost)
                .execute(&mut *tx)
                .await?;
            }
        })
    }

    /// Every task's LLM spend as the gateway booked it, all its runs:
    /// `(task, prompt + completion tokens, USD)`.
    pub async fn task_spend(&self) -> BbResult<Vec<(String, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT task_id, CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT), SUM(gateway_cost)
             FROM session GROUP BY task_id HAVING SUM(prompt_tokens + completion_tokens) > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Tasks `blocked` whose last block was the daemon's for budget (its
    /// `task.blocked` reason starts with `budget:`), with the agent of
    /// their latest run: `(task, agent)`.
    pub async fn budget_blocked_tasks(&self) -> BbResult<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(&format!(
            "SELECT t.id,
                    (SELECT s.agent FROM session s WHERE s.task_id = t.id
                     ORDER BY s.started_at DESC, s.id DESC LIMIT 1)
             FROM task t
             WHERE t.status = 'blocked'
               AND (SELECT {} FROM event e
                    WHERE e.task_id = t.id AND e.kind = 'task.blocked'
                    ORDER BY e.id DESC LIMIT 1) LIKE 'budget:%'
             ORDER BY t.id",
            self.backend().json_text("e.payload", "reason")
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The usage lines of buckets starting in `[since, until)`, oldest
    /// first.
    pub async fn usage_lines(&self, since: Millis, until: Millis) -> BbResult<Vec<UsageLine>> {
        let rows = sqlx::query(
            "SELECT u.session_id, u.provider, u.model, u.bucket_start, u.responses, u.unpriced,
                    u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cost,
                    s.task_id, s.agent
             FROM llm_usage u JOIN session s ON s.id = u.session_id
             WHERE u.bucket_start >= ? AND u.bucket_start < ?
             ORDER BY u.bucket_start, u.session_id, u.provider, u.model",
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| UsageLine {
                booking: UsageBooking {
                    session_id: r.get(0),
                    provider: r.get(1),
                    model: r.get(2),
                    bucket_start: r.get(3),
                    responses: r.get(4),
                    unpriced: r.get(5),
                    prompt_tokens: r.get(6),
                    completion_tokens: r.get(7),
                    cached_tokens: r.get(8),
                    cost: r.get(9),
                },
                task_id: r.get(10),
                agent: r.get(11),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_quarter_hours_also_before_the_epoch() {
        assert_eq!(usage_bucket(0), 0);
        assert_eq!(usage_bucket(USAGE_BUCKET_MS - 1), 0);
        assert_eq!(usage_bucket(USAGE_BUCKET_MS), USAGE_BUCKET_MS);
        assert_eq!(usage_bucket(-1), -USAGE_BUCKET_MS);
    }
}
