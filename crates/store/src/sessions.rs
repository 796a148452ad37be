//! Agent runs (sessions): who ran, with which process group, how it ended, and
//! the per-session secret that lets an agent's CLI calls prove who they are.

use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::actor::Actor;
use crate::board::Blackboard;
use crate::db::Backend;
use crate::error::{BbError, BbResult};
use crate::events::emit;
use crate::model::{EventLevel, Millis, Outcome, Session};
use crate::tasks::fetch_task;

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub task_id: String,
    pub agent: String,
    /// The plain token handed to the agent in `MOZI_SESSION_TOKEN`; only its
    /// hash is stored.
    pub token: String,
    pub command: String,
    pub log_path: Option<String>,
    /// What the run may touch and reach (JSON, the daemon's description).
    pub sandbox: Option<serde_json::Value>,
    /// The cluster id of the daemon that runs it (`None`: a daemon alone
    /// on its files).
    pub daemon: Option<String>,
}

/// Hex SHA-256 of a session token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random session token (256 bits, hex).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn session_from_row(r: &sqlx::any::AnyRow) -> BbResult<Session> {
    crate::rows::read::<crate::rows::SessionRow, Session>(r)
}

const SESSION_COLUMNS: &str = "id, task_id, agent, pid, pgid, command, round, started_at, ended_at,
    exit_code, outcome, log_path, prompt_tokens, completion_tokens, cost, detail, cached_tokens,
    gateway_cost, sandbox";

impl Blackboard {
    /// Records a run that is starting (before its process is spawned).
    pub async fn create_session(&self, new: &NewSession) -> BbResult<Session> {
        write_tx!(self, |tx, now| {
            let task = fetch_task(&mut tx, &new.task_id).await?;
            let row = sqlx::query(&format!(
                "INSERT INTO session (id, task_id, agent, token_hash, command, round, started_at, log_path,
                     sandbox, daemon)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {SESSION_COLUMNS}"
            ))
            .bind(&new.id)
            .bind(&new.task_id)
            .bind(&new.agent)
            .bind(hash_token(&new.token))
            .bind(&new.command)
            .bind(task.round)
            .bind(now)
            .bind(&new.log_path)
            .bind(new.sandbox.as_ref().map(|v| v.to_string()))
            .bind(&new.daemon)
            .fetch_one(&mut *tx)
            .await?;
            let session = session_from_row(&row)?;
            emit(
                &mut tx,
                now,
                EventLevel::Optional,
                "session.started",
                Some(&new.task_id),
                &Actor::daemon(),
                json!({ "session_id": new.id, "agent": new.agent, "round": task.round }),
            )
            .await?;
            session
        })
    }

    /// Stores the spawned process's pid and process group.
    pub async fn set_session_process(&self, id: &str, pid: i64, pgid: i64) -> BbResult<()> {
        self.check_file()?;
        sqlx::query("UPDATE session SET pid = ?, pgid = ? WHERE id = ?")
            .bind(pid)
            .bind(pgid)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records which file the daemon created as the session's log (its
    /// device and inode, as `detail.log_file`), so the log API serves that
    /// file only (issue 23, finding 5: an agent hard-linked its log to an
    /// outside file).
    pub async fn set_session_log_file(&self, id: &str, dev: u64, ino: u64) -> BbResult<()> {
        self.check_file()?;
        let detail = match self.backend() {
            Backend::Sqlite => {
                "json_set(COALESCE(detail, '{}'), '$.log_file', json_object('dev', ?1, 'ino', ?2))"
            }
            Backend::Postgres => {
                "CAST(jsonb_set(CAST(COALESCE(detail, '{}') AS jsonb), '{log_file}',
                                jsonb_build_object('dev', ?1, 'ino', ?2)) AS TEXT)"
            }
        };
        sqlx::query(&format!(
            "UPDATE session SET detail = {detail} WHERE id = ?3"
        ))
        .bind(dev as i64)
        .bind(ino as i64)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a run ended (idempotent: a second call changes nothing).
    pub async fn end_session(
        &self,
        id: &str,
        outcome: Outcome,
        exit_code: Option<i64>,
        detail: Option<serde_json::Value>,
    ) -> BbResult<bool> {
        write_tx!(self, |tx, now| {
            // The run's detail, keeping the log file the start recorded.
            let merged = match self.backend() {
                Backend::Sqlite => {
                    "CASE WHEN ?4 IS NULL THEN detail
                          WHEN detail -> '$.log_file' IS NULL THEN ?4
                          ELSE json_set(?4, '$.log_file', json(detail -> '$.log_file')) END"
                }
                Backend::Postgres => {
                    "CASE WHEN CAST(?4 AS TEXT) IS NULL THEN detail
                          WHEN CAST(detail AS jsonb) -> 'log_file' IS NULL THEN ?4
                          ELSE CAST(jsonb_set(CAST(?4 AS jsonb), '{log_file}',
                                              CAST(detail AS jsonb) -> 'log_file') AS TEXT) END"
                }
            };
            let row = sqlx::query(&format!(
                // Numbered throughout: sqlx counts a bare `?` on its own, so a
                // bare one after `?4` would take the fourth value again.
                "UPDATE session SET ended_at = ?1, outcome = ?2, exit_code = ?3, detail = {merged}
                 WHERE id = ?5 AND ended_at IS NULL RETURNING task_id, agent"
            ))
            .bind(now)
            .bind(outcome.as_str())
            .bind(exit_code)
            .bind(detail.as_ref().map(|d| d.to_string()))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            let task: String = row.get(0);
            let agent: String = row.get(1);
            let level = match outcome {
                Outcome::Succeeded => EventLevel::Optional,
                Outcome::Failed | Outcome::TimedOut | Outcome::Killed => EventLevel::Attention,
                Outcome::Lost => EventLevel::Urgent,
            };
            emit(
                &mut tx,
                now,
                level,
                "session.ended",
                Some(&task),
                &Actor::daemon(),
                json!({ "session_id": id, "agent": agent, "outcome": outcome.as_str(), "exit_code": exit_code }),
            )
            .await?;
            true
        })
    }

    /// Adds token usage reported by the gateway to a session.
    pub async fn add_session_usage(
        &self,
        id: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
        cost: f64,
    ) -> BbResult<()> {
        sqlx::query(
            "UPDATE session SET prompt_tokens = prompt_tokens + ?,
                 completion_tokens = completion_tokens + ?, cost = cost + ? WHERE id = ?",
        )
        .bind(prompt_tokens)
        .bind(completion_tokens)
        .bind(cost)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Books the LLM calls a run made through the gateway and the time they
    /// waited for a rate lane (added to what the session has).
    pub async fn add_session_calls(&self, id: &str, calls: u64, wait_ms: u64) -> BbResult<()> {
        let (calls, wait_ms) = (
            calls.min(i64::MAX as u64) as i64,
            wait_ms.min(i64::MAX as u64) as i64,
        );
        write_tx!(self, |tx, _now| {
            sqlx::query(
                "UPDATE session SET llm_calls = llm_calls + ?, llm_wait_ms = llm_wait_ms + ?
                 WHERE id = ?",
            )
            .bind(calls)
            .bind(wait_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// An agent's LLM demand in calls per minute of un-queued run time over
    /// its last `last` ended sessions that made calls, with how many
    /// sessions it rests on. An agent whose last three or more sessions made
    /// no call at all asks nothing of the gateway: 0. `None` without
    /// enough history.
    pub async fn agent_demand(&self, agent: &str, last: i64) -> BbResult<Option<(f64, usize)>> {
        let rows = sqlx::query(
            "SELECT llm_calls, llm_wait_ms, ended_at - started_at FROM session
             WHERE agent = ? AND ended_at IS NOT NULL
             ORDER BY ended_at DESC LIMIT ?",
        )
        .bind(agent)
        .bind(last)
        .fetch_all(&self.pool)
        .await?;
        let (mut calls, mut active_ms, mut counted) = (0i64, 0i64, 0usize);
        for r in &rows {
            let n: i64 = r.get(0);
            if n == 0 {
                continue;
            }
            calls += n;
            counted += 1;
            // A run's time less its queue waits, at least a second per call.
            let wait: i64 = r.get(1);
            let span: i64 = r.get(2);
            active_ms += (span - wait).max(1000 * n);
        }
        if counted == 0 {
            return Ok((rows.len() >= 3).then_some((0.0, rows.len())));
        }
        Ok(Some((
            calls as f64 * 60_000.0 / active_ms.max(1) as f64,
            counted,
        )))
    }

    pub async fn session(&self, id: &str) -> BbResult<Session> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| BbError::NotFound {
            what: "session",
            id: id.to_string(),
        })?;
        session_from_row(&row)
    }

    /// Sessions not yet ended (what crash recovery inspects).
    pub async fn running_sessions(&self) -> BbResult<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE ended_at IS NULL ORDER BY started_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Running sessions of no daemon in `alive` (cluster ids): the runs of
    /// daemons that are gone, and those no daemon recorded.
    pub async fn running_sessions_not_of(&self, alive: &[String]) -> BbResult<Vec<Session>> {
        let alive = serde_json::to_string(alive).expect("strings serialize");
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE ended_at IS NULL
               AND (daemon IS NULL OR daemon NOT IN (SELECT value FROM {}))
             ORDER BY started_at",
            self.backend().json_each("?")
        ))
        .bind(alive)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    pub async fn sessions_for_task(&self, task: &str) -> BbResult<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session WHERE task_id = ? ORDER BY started_at"
        ))
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    pub async fn recent_sessions(&self, limit: i64) -> BbResult<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM session ORDER BY started_at DESC LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Checks an agent's claimed identity: the session must exist, be running,
    /// belong to `agent`, and `token` must hash to the stored value.
    pub async fn verify_session(&self, id: &str, agent: &str, token: &str) -> BbResult<Session> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS}, token_hash FROM session WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(BbError::Forbidden(format!(
                "session {id} is not known on project {}",
                self.project()
            )));
        };
        let stored: String = row.try_get("token_hash")?;
        let session = session_from_row(&row)?;
        // Compare hashes (fixed length) rather than secrets.
        if stored != hash_token(token) {
            return Err(BbError::Forbidden(format!(
                "MOZI_SESSION_TOKEN does not match session {id}"
            )));
        }
        if session.agent != agent {
            return Err(BbError::Forbidden(format!(
                "session {id} belongs to agent {}, not {agent}: an agent may only write as itself",
                session.agent
            )));
        }
        if session.ended_at.is_some() {
            return Err(BbError::Forbidden(format!(
                "session {id} has already ended"
            )));
        }
        Ok(session)
    }
}

/// One agent's runs on a project since a time ([`Blackboard::agent_days`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentDay {
    pub agent: String,
    /// Runs started since.
    pub runs: i64,
    /// Prompt plus completion tokens of those runs.
    pub tokens: i64,
    /// The agent's last run that did not succeed (any time): when it
    /// ended, its task, outcome and error text.
    pub last_error: Option<(Millis, String, Outcome, String)>,
}

impl Blackboard {
    /// Per agent with a session here: runs and tokens since `since`, and
    /// its last run that did not succeed.
    pub async fn agent_days(&self, since: Millis) -> BbResult<Vec<AgentDay>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT agent, COUNT(*), CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT)
             FROM session WHERE started_at >= ? GROUP BY agent ORDER BY agent",
        )
        .bind(since)
        .fetch_all(&mut conn)
        .await?;
        let mut days: Vec<AgentDay> = Vec::new();
        for r in rows {
            days.push(AgentDay {
                agent: r.try_get(0)?,
                runs: r.try_get(1)?,
                tokens: r.try_get(2)?,
                last_error: None,
            });
        }
        let errors = sqlx::query(&format!(
            "SELECT s.agent, s.ended_at, s.task_id, s.outcome,
                    COALESCE({}, '')
             FROM (SELECT DISTINCT agent FROM session) a
             JOIN session s ON s.id = (SELECT x.id FROM session x
                            WHERE x.agent = a.agent AND x.outcome IS NOT NULL AND x.outcome <> 'succeeded'
                            ORDER BY x.ended_at DESC LIMIT 1)
             ORDER BY s.agent",
            self.backend().json_text("s.detail", "error")
        ))
        .fetch_all(&mut conn)
        .await?;
        for r in errors {
            let agent: String = r.try_get(0)?;
            let outcome: String = r.try_get(3)?;
            let outcome = outcome
                .parse::<Outcome>()
                .map_err(|e| BbError::Invalid(format!("stored session outcome: {e}")))?;
            let error: String = match r.try_get::<Option<String>, _>(4) {
                Ok(v) => v.unwrap_or_default(),
                // A non-text error (an object): its JSON.
                Err(_) => String::new(),
            };
            let last = Some((
                r.try_get::<Option<Millis>, _>(1)?.unwrap_or_default(),
                r.try_get(2)?,
                outcome,
                error,
            ));
            match days.iter_mut().find(|d| d.agent == agent) {
                Some(d) => d.last_error = last,
                None => days.push(AgentDay {
                    agent,
                    last_error: last,
                    ..AgentDay::default()
                }),
            }
        }
        Ok(days)
    }
}
