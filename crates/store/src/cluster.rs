//! The daemons sharing one PostgreSQL store: who is there, which one leads,
//! and the rate lanes they share — the schema `moziplus` of the store's
//! database (`migrations-cluster/`), never a project's.
//!
//! Every time here is the database's clock (ms since the epoch), so the
//! hosts' clocks never have to agree:
//! - a daemon **beats** every few seconds (`daemon.last_seen`); one not seen
//!   for the liveness window is gone, and its runs are given back;
//! - the **leader lease** is one row (`lease`, name `leader`): taken when
//!   free or expired, renewed by its holder, each change of holder raising
//!   its `epoch`. The leader's writes are fenced by it
//!   ([`crate::Blackboard::fenced`]): a deposed leader's transaction finds
//!   the row no longer its own and is refused.
//! - a **rate lane** is one GCRA row (`rate_lane`): each grant is one
//!   `UPDATE … RETURNING`, whichever daemon asks;
//! - a **slot** is a place counted across the alive daemons (`slot`): a run
//!   of an agent takes one before its claim, so the per-agent and cluster
//!   run limits hold at the moment of the start;
//! - a **budget** window's spend and the worst cases held by calls in
//!   flight (`budget_spend`, `budget_hold`): a call's reservation is
//!   checked against every daemon's spend and holds in one transaction
//!   ([`Cluster::reserve_budget`], in `cluster_budgets`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::error::{BbError, BbResult};
use crate::model::Millis;
use crate::postgres::{redacted, unreachable};

pub use crate::cluster_budgets::{BudgetAnswer, BudgetUse, BudgetWindow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-cluster");

/// The database's clock, in ms since the epoch.
pub(crate) const DB_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The channel every committed write of a project notifies (its id as
/// the payload).
pub const CHANNEL: &str = "moziplus";

/// The name of the leader's lease.
pub const LEADER: &str = "leader";

/// One daemon as the cluster sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSeen {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub bind: String,
    pub agents: Vec<String>,
    pub runs: i64,
    /// Of its runs, how many each agent has.
    pub agent_runs: Vec<(String, i64)>,
    pub started_at: Millis,
    pub last_seen: Millis,
    /// Seen within the liveness window asked for, and not stopped.
    pub alive: bool,
    /// Holds the leader's lease now.
    pub leader: bool,
}

/// What a daemon says of itself at each beat.
#[derive(Debug, Clone, Default)]
pub struct Beat<'a> {
    pub host: &'a str,
    pub pid: i64,
    pub bind: &'a str,
    pub agents: &'a [String],
    pub runs: i64,
    /// Runs in flight per agent.
    pub agent_runs: &'a [(String, i64)],
}

/// The leader's lease as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    pub expires_at: Millis,
    /// `expires_at` is still ahead by the database's clock.
    pub valid: bool,
}

/// A place asked of [`Cluster::take_slot`].
#[derive(Debug, Clone)]
pub struct SlotAsk<'a> {
    /// What is counted (`run`).
    pub kind: &'a str,
    /// What it is for; this daemon asking again for a key it holds keeps
    /// its place (another daemon's place for the same key counts).
    pub key: &'a str,
    /// Counted under (a run: its agent).
    pub group: &'a str,
    /// At most this many of `kind` in `group`.
    pub group_max: Option<i64>,
    /// At most this many of `kind` in all.
    pub kind_max: Option<i64>,
}

/// The answer of [`Cluster::take_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAnswer {
    Taken,
    /// `held` of the group's places are taken by alive daemons.
    GroupFull {
        held: i64,
    },
    /// `held` of the kind's places are taken.
    KindFull {
        held: i64,
    },
}

/// A daemon's handle on the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) pool: PgPool,
    pub(crate) id: String,
    url: String,
}

/// Notifications of the store's committed writes ([`CHANNEL`]), on a
/// connection of their own.
pub struct Wakeups(sqlx::postgres::PgListener);

impl Wakeups {
    /// The next write's project id; an error when the connection failed
    /// (listen again).
    pub async fn next(&mut self) -> BbResult<String> {
        Ok(self.0.recv().await?.payload().to_string())
    }
}

impl Cluster {
    /// Joins the cluster of the store at `url` as daemon `id` (the schema
    /// and its tables are made on first use).
    pub async fn join(url: &str, id: &str) -> BbResult<Cluster> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| BbError::Invalid(format!("store URL {}: {e}", redacted(url))))?
            .application_name("moziplus-cluster");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("CREATE SCHEMA IF NOT EXISTS moziplus")
                        .execute(&mut *conn)
                        .await
                        .or_else(|e| match &e {
                            // Two daemons creating it at once: one wins.
                            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                                Ok(Default::default())
                            }
                            _ => Err(e),
                        })?;
                    sqlx::query("SET search_path TO moziplus")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| unreachable(url, e))?;
        MIGRATOR.run(&pool).await?;
        Ok(Cluster {
            pool,
            id: id.to_string(),
            url: url.to_string(),
        })
    }

    /// Listens for every committed write of the store.
    pub async fn wakeups(&self) -> BbResult<Wakeups> {
        let mut listener = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(|e| unreachable(&self.url, e))?;
        listener.listen(CHANNEL).await?;
        Ok(Wakeups(listener))
    }

    /// This daemon's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records this daemon as alive now, with what it says of itself.
    pub async fn beat(&self, b: &Beat<'_>) -> BbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO daemon (id, host, pid, bind, agents, runs, agent_runs, started_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, {DB_NOW}, {DB_NOW})
             ON CONFLICT (id) DO UPDATE SET bind = excluded.bind, agents = excluded.agents,
                 runs = excluded.runs, agent_runs = excluded.agent_runs,
                 last_seen = excluded.last_seen, stopped_at = NULL"
        ))
        .bind(&self.id)
        .bind(b.host)
        .bind(b.pid)
        .bind(b.bind)
        .bind(b.agents.join(","))
        .bind(b.runs)
        .bind(
            b.agent_runs
                .iter()
                .map(|(a, n)| format!("{a}={n}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the leader's lease if it is free or expired, or renews it if
    /// this daemon holds it, for `ttl`; one statement. The epoch when this
    /// daemon leads, `None` when another does.
    pub async fn lead(&self, ttl: Duration) -> BbResult<Option<i64>> {
        let ttl_ms = ttl.as_millis() as i64;
        let epoch: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO lease (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {DB_NOW} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 epoch = CASE WHEN lease.holder = excluded.holder THEN lease.epoch
                              ELSE lease.epoch + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE lease.holder = excluded.holder OR lease.expires_at <= {DB_NOW}
             RETURNING epoch"
        ))
        .bind(LEADER)
        .bind(&self.id)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch)
    }

    /// The leader's lease, if anyone ever held it.
    pub async fn lease(&self) -> BbResult<Option<LeaseRow>> {
        let row = sqlx::query(&format!(
            "SELECT holder, epoch, expires_at, expires_at > {DB_NOW} FROM lease WHERE name = $1"
        ))
        .bind(LEADER)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| LeaseRow {
            holder: r.get(0),
            epoch: r.get(1),
            expires_at: r.get(2),
            valid: r.get(3),
        }))
    }

    /// Every daemon of the last day, alive ones first; alive means seen in
    /// the last `window` and not stopped.
    pub async fn daemons(&self, window: Duration) -> BbResult<Vec<DaemonSeen>> {
        let rows = sqlx::query(&format!(
            "SELECT d.id, d.host, d.pid, d.bind, d.agents, d.runs, d.started_at, d.last_seen,
                    d.stopped_at IS NULL AND d.last_seen > {DB_NOW} - $1,
                    COALESCE(l.holder = d.id AND l.expires_at > {DB_NOW}, false),
                    d.agent_runs
             FROM daemon d LEFT JOIN lease l ON l.name = $2
             WHERE d.last_seen > {DB_NOW} - 86400000
             ORDER BY 9 DESC, d.host, d.id"
        ))
        .bind(window.as_millis() as i64)
        .bind(LEADER)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DaemonSeen {
                id: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                bind: r.get(3),
                agents: r
                    .get::<String, _>(4)
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
                runs: r.get(5),
                agent_runs: r
                    .get::<String, _>(10)
                    .split(',')
                    .filter_map(|p| {
                        let (a, n) = p.split_once('=')?;
                        Some((a.to_string(), n.parse().ok()?))
                    })
                    .collect(),
                started_at: r.get(6),
                last_seen: r.get(7),
                alive: r.get(8),
                leader: r.get(9),
            })
            .collect())
    }

    /// Takes a place of `ask.kind` for `ask.key` if the alive daemons'
    /// places leave room under both limits: one transaction, under a lock
    /// of the kind, so two daemons asking at once are counted one after
    /// the other.
    pub async fn take_slot(&self, ask: &SlotAsk<'_>, alive: Duration) -> BbResult<SlotAnswer> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('moziplus:slot:' || $1))::text")
            .bind(ask.kind)
            .execute(&mut *tx)
            .await?;
        // A later statement than the lock: it sees every place taken
        // before the lock was granted.
        let (in_group, in_all): (i64, i64) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FILTER (WHERE s.grp = $2), COUNT(*)
             FROM slot s JOIN daemon d ON d.id = s.daemon
             WHERE s.kind = $1 AND NOT (s.key = $3 AND s.daemon = $5)
               AND d.stopped_at IS NULL AND d.last_seen > {DB_NOW} - $4"
        ))
        .bind(ask.kind)
        .bind(ask.group)
        .bind(ask.key)
        .bind(alive.as_millis() as i64)
        .bind(&self.id)
        .fetch_one(&mut *tx)
        .await?;
        if ask.group_max.is_some_and(|max| in_group >= max) {
            return Ok(SlotAnswer::GroupFull { held: in_group });
        }
        if ask.kind_max.is_some_and(|max| in_all >= max) {
            return Ok(SlotAnswer::KindFull { held: in_all });
        }
        sqlx::query(&format!(
            "INSERT INTO slot (kind, key, grp, daemon, since) VALUES ($1, $2, $3, $4, {DB_NOW})
             ON CONFLICT (kind, key, daemon) DO UPDATE SET grp = excluded.grp,
                 since = excluded.since"
        ))
        .bind(ask.kind)
        .bind(ask.key)
        .bind(ask.group)
        .bind(&self.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SlotAnswer::Taken)
    }

    /// Gives back this daemon's place `key` of `kind`.
    pub async fn free_slot(&self, kind: &str, key: &str) -> BbResult<()> {
        sqlx::query("DELETE FROM slot WHERE kind = $1 AND key = $2 AND daemon = $3")
            .bind(kind)
            .bind(key)
            .bind(&self.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps of this daemon's places of `kind` only those in `keys` (and
    /// any taken in the last `grace`: a start still under way); the places
    /// of daemons gone for a day go too.
    pub async fn keep_slots(&self, kind: &str, keys: &[String], grace: Duration) -> BbResult<()> {
        sqlx::query(&format!(
            "DELETE FROM slot s WHERE s.kind = $1 AND (
                 (s.daemon = $2 AND s.since < {DB_NOW} - $3 AND NOT (s.key = ANY($4)))
                 OR NOT EXISTS (SELECT 1 FROM daemon d WHERE d.id = s.daemon
                                AND d.last_seen > {DB_NOW} - 86400000))"
        ))
        .bind(kind)
        .bind(&self.id)
        .bind(grace.as_millis() as i64)
        .bind(keys)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A clean stop: this daemon is marked stopped, and its lease (if it
    /// holds it) ends now, so another daemon leads at its next beat.
    pub async fn leave(&self) -> BbResult<()> {
        sqlx::query(&format!(
            "UPDATE daemon SET stopped_at = {DB_NOW} WHERE id = $1"
        ))
        .bind(&self.id)
        .execute(&self.pool)
        .await?;
        for table in ["slot", "budget_hold"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE daemon = $1"))
                .bind(&self.id)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query(&format!(
            "UPDATE lease SET expires_at = {DB_NOW} WHERE name = $1 AND holder = $2"
        ))
        .bind(LEADER)
        .bind(&self.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One request on the shared rate lane `lane` (GCRA, `interval` between
    /// requests, a burst of `burst` requests): `Ok(0)` when granted now,
    /// else the ms to wait before asking again. One statement, whichever
    /// daemon asks.
    pub async fn grant(&self, lane: &str, interval: Duration, burst: u32) -> BbResult<i64> {
        let t = interval.as_millis().max(1) as i64;
        let tolerance = t * i64::from(burst.max(1) - 1);
        // tat' = max(tat, now) + T, granted when tat' - now <= tolerance + T.
        let row = sqlx::query(&format!(
            "INSERT INTO rate_lane AS r (lane, tat) VALUES ($1, {DB_NOW} + $2)
             ON CONFLICT (lane) DO UPDATE SET tat = greatest(r.tat, {DB_NOW}) + $2
             WHERE greatest(r.tat, {DB_NOW}) + $2 - {DB_NOW} <= $3 + $2
             RETURNING tat"
        ))
        .bind(lane)
        .bind(t)
        .bind(tolerance)
        .fetch_optional(&self.pool)
        .await?;
        if row.is_some() {
            return Ok(0);
        }
        let wait: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT greatest(tat - {DB_NOW} - $2, 1) FROM rate_lane WHERE lane = $1"
        ))
        .bind(lane)
        .bind(tolerance)
        .fetch_optional(&self.pool)
        .await?;
        Ok(wait.unwrap_or(1))
    }
}
