//! The gateway's history: one sample per lane every 10 s, kept 24 h, so the
//! dashboard's gateway charts survive a reload and a restart.
//!
//! The gateway serves every project at once, so its history is home-wide:
//! one SQLite file of its own (`Home::gateway_history_file`), not a
//! project's blackboard. (The usage ledger's lines live in each project's
//! blackboard because each belongs to one project's run; a lane's sample
//! belongs to none.) The schema is one table created on open; the file is
//! a cache of the last day: deleting it loses only the charts' past.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::error::BbResult;
use crate::model::Millis;

/// One lane's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySample {
    pub provider: String,
    /// When it was taken (ms since the epoch).
    pub at: Millis,
    /// Requests, errors and retries since the previous sample.
    pub requests: i64,
    pub errors: i64,
    pub retries: i64,
    /// Share of answers that were 429 over the last minute (none yet: `None`).
    pub ratio_429: Option<f64>,
    pub in_flight: i64,
    /// The in-flight limit.
    pub concurrency: i64,
    /// Requests available in the bucket.
    pub tokens: f64,
    /// The limiter's rate now and as configured, per minute.
    pub effective_rate: f64,
    pub base_rate: f64,
    /// Recent answer time in seconds.
    pub answer_time: Option<f64>,
    /// Waiting requests per priority: urgent, high, normal, low.
    pub queue: [i64; 4],
}

/// The home-wide gateway history file.
#[derive(Debug, Clone)]
pub struct GatewayHistory {
    pool: SqlitePool,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS gateway_sample (
    provider       TEXT NOT NULL,
    at             INTEGER NOT NULL,   -- ms since the epoch
    requests       INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    retries        INTEGER NOT NULL,
    ratio_429      REAL,
    in_flight      INTEGER NOT NULL,
    concurrency    INTEGER NOT NULL,
    tokens         REAL NOT NULL,
    effective_rate REAL NOT NULL,
    base_rate      REAL NOT NULL,
    answer_time    REAL,
    queue_urgent   INTEGER NOT NULL,
    queue_high     INTEGER NOT NULL,
    queue_normal   INTEGER NOT NULL,
    queue_low      INTEGER NOT NULL,
    PRIMARY KEY (at, provider)
) WITHOUT ROWID";

impl GatewayHistory {
    /// Opens (or creates, private to the user) the history file.
    pub async fn open(path: &Path) -> BbResult<GatewayHistory> {
        // Private to the user, like the blackboards: its folder 0700, the
        // file 0600 (made here, before SQLite creates it with its default).
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(GatewayHistory { pool })
    }

    /// Stores one round of samples in one transaction.
    pub async fn record(&self, samples: &[GatewaySample]) -> BbResult<()> {
        let mut tx = self.pool.begin().await?;
        for s in samples {
            sqlx::query(
                "INSERT OR REPLACE INTO gateway_sample (provider, at, requests, errors, retries,
                     ratio_429, in_flight, concurrency, tokens, effective_rate, base_rate,
                     answer_time, queue_urgent, queue_high, queue_normal, queue_low)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&s.provider)
            .bind(s.at)
            .bind(s.requests)
            .bind(s.errors)
            .bind(s.retries)
            .bind(s.ratio_429)
            .bind(s.in_flight)
            .bind(s.concurrency)
            .bind(s.tokens)
            .bind(s.effective_rate)
            .bind(s.base_rate)
            .bind(s.answer_time)
            .bind(s.queue[0])
            .bind(s.queue[1])
            .bind(s.queue[2])
            .bind(s.queue[3])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the samples taken before `before`; returns how many.
    pub async fn prune(&self, before: Millis) -> BbResult<u64> {
        let done = sqlx::query("DELETE FROM gateway_sample WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Samples taken at or after `since`, oldest first, of one provider or
    /// all, at most `limit`.
    pub async fn samples(
        &self,
        since: Millis,
        provider: Option<&str>,
        limit: i64,
    ) -> BbResult<Vec<GatewaySample>> {
        let rows = sqlx::query(
            "SELECT * FROM gateway_sample WHERE at >= ? AND (? IS NULL OR provider = ?)
             ORDER BY at, provider LIMIT ?",
        )
        .bind(since)
        .bind(provider)
        .bind(provider)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GatewaySample {
                    provider: r.try_get("provider")?,
                    at: r.try_get("at")?,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    retries: r.try_get("retries")?,
                    ratio_429: r.try_get("ratio_429")?,
                    in_flight: r.try_get("in_flight")?,
                    concurrency: r.try_get("concurrency")?,
                    tokens: r.try_get("tokens")?,
                    effective_rate: r.try_get("effective_rate")?,
                    base_rate: r.try_get("base_rate")?,
                    answer_time: r.try_get("answer_time")?,
                    queue: [
                        r.try_get("queue_urgent")?,
                        r.try_get("queue_high")?,
                        r.try_get("queue_normal")?,
                        r.try_get("queue_low")?,
                    ],
                })
            })
            .collect()
    }

    /// Closes the pool (checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await
    }
}
