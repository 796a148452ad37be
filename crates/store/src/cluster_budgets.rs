//! Budgets shared by the cluster's daemons (tables `budget_spend`,
//! `budget_hold` and `budget_seeded` of schema `moziplus`): each daemon
//! reserves a call's worst case here, against the spend and the holds of
//! every alive daemon, so a cap holds over all hosts together.
//!
//! The store knows budgets only as named windows with limits; which
//! windows a call falls under, and what they are called, is the daemon's
//! business (`daemon::budget_book`).

use std::time::Duration;

use sqlx::Row;

use crate::cluster::{Cluster, DB_NOW};
use crate::error::BbResult;
use crate::model::Millis;

/// One budget window a call falls under, with its limits.
#[derive(Debug, Clone)]
pub struct BudgetWindow<'a> {
    /// The budget's name (`project-day:alpha`, …).
    pub scope: &'a str,
    /// Its window's start (ms; 0 for a budget with no window).
    pub start: Millis,
    pub max_tokens: Option<i64>,
    pub max_usd: Option<f64>,
}

/// The answer of [`Cluster::reserve_budget`].
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetAnswer {
    /// The worst case is held in every window.
    Held,
    /// The limits asked with are not the cluster's: the budgets changed
    /// at run time are at `version` now (read them, ask again).
    Stale { version: i64 },
    /// The call would take window `index` (of those asked) past its
    /// limit in `unit` (`tokens` or `USD`): `used` is its spend plus what
    /// calls in flight hold.
    Over {
        index: usize,
        unit: &'static str,
        used: f64,
        limit: f64,
    },
}

/// One window's spend and holds, as every daemon sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetUse {
    pub scope: String,
    pub start: Millis,
    pub spent_tokens: i64,
    pub spent_usd: f64,
    /// Held by the alive daemons' calls in flight.
    pub held_tokens: i64,
    pub held_usd: f64,
}

impl Cluster {
    /// Reserves `tokens` and `usd` in every window of `windows` for this
    /// daemon's call `hold`, if none of them would pass its limit counting
    /// the spend and the holds of every alive daemon (seen within
    /// `alive`). One transaction under one lock of the cluster's budgets,
    /// so two daemons racing for the last of a budget are counted one
    /// after the other.
    ///
    /// `limits` is the version of the run-time budgets
    /// ([`Cluster::budget_limits`]) the windows' limits were taken from.
    pub async fn reserve_budget(
        &self,
        hold: i64,
        windows: &[BudgetWindow<'_>],
        tokens: i64,
        usd: f64,
        alive: Duration,
        limits: i64,
    ) -> BbResult<BudgetAnswer> {
        let scopes: Vec<&str> = windows.iter().map(|w| w.scope).collect();
        let starts: Vec<i64> = windows.iter().map(|w| w.start).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('moziplus:budget'))::text")
            .execute(&mut *tx)
            .await?;
        // A later statement than the lock: it sees every hold and spend
        // committed before the lock was granted.
        let rows = sqlx::query(&format!(
            "SELECT COALESCE(s.tokens, 0), COALESCE(s.usd, 0),
                    COALESCE(h.tokens, 0)::BIGINT, COALESCE(h.usd, 0),
                    (SELECT COALESCE(MAX(version), 0) FROM budget_limits)
             FROM unnest($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS w(scope, start, i)
             LEFT JOIN budget_spend s ON s.scope = w.scope AND s.start = w.start
             LEFT JOIN LATERAL (
                 SELECT SUM(h.tokens) AS tokens, SUM(h.usd) AS usd
                 FROM budget_hold h JOIN daemon d ON d.id = h.daemon
                 WHERE h.scope = w.scope AND h.start = w.start
                   AND (h.daemon = $3 OR (d.stopped_at IS NULL
                                          AND d.last_seen > {DB_NOW} - $4))
             ) h ON TRUE
             ORDER BY w.i"
        ))
        .bind(&scopes)
        .bind(&starts)
        .bind(&self.id)
        .bind(alive.as_millis() as i64)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(version) = rows.first().map(|r| r.get::<i64, _>(4)) {
            if version != limits {
                return Ok(BudgetAnswer::Stale { version });
            }
        }
        for (index, (w, row)) in windows.iter().zip(&rows).enumerate() {
            let (spent_tokens, spent_usd): (i64, f64) = (row.get(0), row.get(1));
            let (held_tokens, held_usd): (i64, f64) = (row.get(2), row.get(3));
            if let Some(max) = w.max_tokens {
                let used = spent_tokens.saturating_add(held_tokens);
                if used.saturating_add(tokens) > max {
                    return Ok(BudgetAnswer::Over {
                        index,
                        unit: "tokens",
                        used: used as f64,
                        limit: max as f64,
                    });
                }
            }
            if let Some(max) = w.max_usd {
                let used = spent_usd + held_usd;
                if used + usd > max + 1e-12 {
                    return Ok(BudgetAnswer::Over {
                        index,
                        unit: "USD",
                        used,
                        limit: max,
                    });
                }
            }
        }
        sqlx::query(&format!(
            "INSERT INTO budget_hold (daemon, id, scope, start, tokens, usd, since)
             SELECT $1, $2, w.scope, w.start, $5, $6, {DB_NOW}
             FROM unnest($3::TEXT[], $4::BIGINT[]) AS w(scope, start)
             ON CONFLICT DO NOTHING"
        ))
        .bind(&self.id)
        .bind(hold)
        .bind(&scopes)
        .bind(&starts)
        .bind(tokens)
        .bind(usd)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetAnswer::Held)
    }

    /// Ends this daemon's reservation `hold` (its call ended).
    pub async fn release_budget(&self, hold: i64) -> BbResult<()> {
        sqlx::query("DELETE FROM budget_hold WHERE daemon = $1 AND id = $2")
            .bind(&self.id)
            .bind(hold)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds what a call used to every window of `windows` (name, start);
    /// returns each window's spend after it, in the same order. One
    /// statement.
    pub async fn spend_budget(
        &self,
        windows: &[(String, Millis)],
        tokens: i64,
        usd: f64,
    ) -> BbResult<Vec<(i64, f64)>> {
        let scopes: Vec<&str> = windows.iter().map(|(s, _)| s.as_str()).collect();
        let starts: Vec<i64> = windows.iter().map(|(_, s)| *s).collect();
        let rows = sqlx::query(
            "INSERT INTO budget_spend AS b (scope, start, tokens, usd)
             SELECT w.scope, w.start, $3, $4 FROM unnest($1::TEXT[], $2::BIGINT[]) AS w(scope, start)
             ON CONFLICT (scope, start) DO UPDATE
                 SET tokens = b.tokens + excluded.tokens, usd = b.usd + excluded.usd
             RETURNING scope, start, tokens, usd",
        )
        .bind(&scopes)
        .bind(&starts)
        .bind(tokens)
        .bind(usd)
        .fetch_all(&self.pool)
        .await?;
        Ok(windows
            .iter()
            .map(|(scope, start)| {
                rows.iter()
                    .find(|r| r.get::<String, _>(0) == *scope && r.get::<i64, _>(1) == *start)
                    .map_or((0, 0.0), |r| (r.get(2), r.get(3)))
            })
            .collect())
    }

    /// Marks window (`scope`, `start`) as past its soft threshold: `true`
    /// for the one daemon that marks it first (it reports it).
    pub async fn warn_budget(&self, scope: &str, start: Millis) -> BbResult<bool> {
        let row = sqlx::query(
            "UPDATE budget_spend SET warned = TRUE
             WHERE scope = $1 AND start = $2 AND NOT warned RETURNING 1",
        )
        .bind(scope)
        .bind(start)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Whether project `project`'s stored ledger is in the shared spend.
    pub async fn budget_seeded(&self, project: &str) -> BbResult<bool> {
        let row = sqlx::query("SELECT 1 FROM budget_seeded WHERE project = $1")
            .bind(project)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Adds a project's stored spend (`rows`: name, window start, tokens,
    /// USD, read from its ledger) to the shared spend, once for the whole
    /// cluster: `false` when a daemon did it already (nothing is added).
    pub async fn seed_budget(
        &self,
        project: &str,
        rows: &[(String, Millis, i64, f64)],
    ) -> BbResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Two daemons seeding at once: the second waits on the first's row,
        // then finds it.
        let first = sqlx::query(&format!(
            "INSERT INTO budget_seeded (project, at) VALUES ($1, {DB_NOW})
             ON CONFLICT DO NOTHING RETURNING 1"
        ))
        .bind(project)
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_none() {
            return Ok(false);
        }
        let scopes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let starts: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let tokens: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let usd: Vec<f64> = rows.iter().map(|r| r.3).collect();
        sqlx::query(
            "INSERT INTO budget_spend AS b (scope, start, tokens, usd)
             SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::DOUBLE PRECISION[])
             ON CONFLICT (scope, start) DO UPDATE
                 SET tokens = b.tokens + excluded.tokens, usd = b.usd + excluded.usd",
        )
        .bind(&scopes)
        .bind(&starts)
        .bind(&tokens)
        .bind(&usd)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every window's spend and holds (of the alive daemons, seen within
    /// `alive`) whose window started at or after `since`, and every
    /// budget with no window (tasks).
    pub async fn budget_use(&self, since: Millis, alive: Duration) -> BbResult<Vec<BudgetUse>> {
        let rows = sqlx::query(&format!(
            "WITH held AS (
                 SELECT h.scope, h.start, SUM(h.tokens)::BIGINT AS tokens, SUM(h.usd) AS usd
                 FROM budget_hold h JOIN daemon d ON d.id = h.daemon
                 WHERE h.daemon = $2 OR (d.stopped_at IS NULL AND d.last_seen > {DB_NOW} - $3)
                 GROUP BY h.scope, h.start)
             SELECT COALESCE(s.scope, h.scope), COALESCE(s.start, h.start),
                    COALESCE(s.tokens, 0), COALESCE(s.usd, 0),
                    COALESCE(h.tokens, 0), COALESCE(h.usd, 0)
             FROM budget_spend s FULL JOIN held h ON h.scope = s.scope AND h.start = s.start
             WHERE COALESCE(s.start, h.start) >= $1 OR COALESCE(s.start, h.start) = 0"
        ))
        .bind(since)
        .bind(&self.id)
        .bind(alive.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| BudgetUse {
                scope: r.get(0),
                start: r.get(1),
                spent_tokens: r.get(2),
                spent_usd: r.get(3),
                held_tokens: r.get(4),
                held_usd: r.get(5),
            })
            .collect())
    }

    /// Drops this daemon's holds older than `grace` (their release was
    /// lost) and the holds of daemons gone for a day.
    pub async fn tidy_budget_holds(&self, grace: Duration) -> BbResult<()> {
        sqlx::query(&format!(
            "DELETE FROM budget_hold h WHERE (h.daemon = $1 AND h.since < {DB_NOW} - $2)
                 OR NOT EXISTS (SELECT 1 FROM daemon d WHERE d.id = h.daemon
                                AND d.last_seen > {DB_NOW} - 86400000)"
        ))
        .bind(&self.id)
        .bind(grace.as_millis() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The budgets changed at run time, for every daemon: (version, the
    /// list as JSON); `None` before any daemon published them.
    pub async fn budget_limits(&self) -> BbResult<Option<(i64, String)>> {
        let row = sqlx::query("SELECT version, value FROM budget_limits")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Changes the budgets of every daemon: `change` gets the list in force
    /// (`None` before any was published) and returns the next one, under
    /// a lock of the row, so two changes at once are made one after the
    /// other. Returns the new version.
    pub async fn change_budget_limits<F>(&self, change: F) -> BbResult<i64>
    where
        F: FnOnce(Option<&str>) -> String,
    {
        let mut tx = self.pool.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT value FROM budget_limits FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?;
        let next = change(current.as_deref());
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO budget_limits AS l (one, version, value) VALUES (TRUE, 1, $1)
             ON CONFLICT (one) DO UPDATE SET version = l.version + 1, value = excluded.value
             RETURNING version",
        )
        .bind(&next)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }
}
