//! Opening a project's blackboard on PostgreSQL: one database for the
//! whole home, one schema per project (`p_<id>`).
//!
//! Why a schema per project and not a project column: every connection a
//! project's blackboard takes from the process's pool is first pointed at
//! the project's schema (`search_path`), so every statement of the store
//! runs unchanged and no statement can name another project's rows — the
//! same isolation a file per project gives. The migrations
//! (`migrations-pg/`, mirroring `migrations/` number for number) run inside
//! each schema.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool, Postgres};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::error::{BbError, BbResult};
use crate::open::LATEST_SCHEMA_VERSION;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-pg");

/// The schema of `project` (an id is 1–64 of `a-z 0-9 _ -`).
pub fn schema_of(project: &str) -> String {
    format!("p_{project}")
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => url.to_string(),
    }
}

pub(crate) fn unreachable(url: &str, e: impl std::fmt::Display) -> BbError {
    BbError::Unavailable(format!(
        "the store at {} is unreachable ({e}); check `store:` in config/default.yaml \
         (or MOZI_STORE__URL) and that PostgreSQL is running",
        redacted(url)
    ))
}

/// The process's connections to the store at `url` (see [`Connections`]),
/// made on first use with at least `max_connections` (and never fewer than
/// 8: a daemon ticks 8 projects at once).
async fn shared(url: &str, max_connections: u32) -> BbResult<Arc<Connections>> {
    static STORES: std::sync::Mutex<Vec<Arc<Connections>>> = std::sync::Mutex::new(Vec::new());
    if let Some(c) = STORES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|c| c.url == url && !c.pool.is_closed())
    {
        return Ok(c.clone());
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| BbError::Invalid(format!("store URL {}: {e}", redacted(url))))?
        .application_name("moziplus")
        // The store's statements are the same few on every connection: a
        // generic plan each, not a custom plan per execution.
        .options([("plan_cache_mode", "force_generic_plan")]);
    let size = max_connections.max(8);
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        // A server that is down is said so within seconds (the CLI, doctor,
        // readiness); a daemon's writes fail retryably and its next tick or
        // beat tries again.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(url, e))?;
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.retain(|c| c.url != url || !c.pool.is_closed());
    if let Some(c) = stores.iter().find(|c| c.url == url) {
        return Ok(c.clone());
    }
    let c = Arc::new(Connections {
        pool,
        permits: Arc::new(Semaphore::new(size as usize)),
        parked: Default::default(),
        returned: Notify::new(),
        url: url.to_string(),
    });
    stores.push(c.clone());
    Ok(c)
}

/// The process's connections to one store, shared by every project on it.
///
/// A connection is pointed at one project's schema at a time. When a
/// statement is done with it, it is **parked** under that schema instead of
/// going back to sqlx's pool: the project's next statement takes it back
/// as it is, with no `SET search_path`, no pool check and its plans still
/// cached. A project with no connection parked takes one from the pool, or,
/// when every connection is out, the one parked longest ago (pointed at its
/// schema first). So a tick's statements on one project cost one round trip
/// each, and the store never holds more than `size` connections.
///
/// Only a connection whose last statement finished cleanly is parked; one
/// left inside a transaction, cancelled mid-statement or failed on its
/// socket goes back to sqlx's pool, which checks it (and rolls back) or
/// closes it. A connection parked for over [`PING_AFTER`] is checked with a
/// ping before it is used (the server may have restarted meanwhile).
pub(crate) struct Connections {
    pool: PgPool,
    /// One per connection this process may hold: in use or parked.
    permits: Arc<Semaphore>,
    parked: std::sync::Mutex<VecDeque<Parked>>,
    /// A connection was parked (a waiter may steal it).
    returned: Notify,
    url: String,
}

struct Parked {
    conn: PoolConnection<Postgres>,
    permit: OwnedSemaphorePermit,
    schema: Arc<str>,
    since: Instant,
}

/// Checked with a ping before use when parked longer than this.
const PING_AFTER: Duration = Duration::from_secs(1);
/// Given back to sqlx's pool (whose idle timeout closes it) when parked
/// longer than this.
const PARKED_AT_MOST: Duration = Duration::from_secs(60);
/// How long a statement waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection of [`Connections`], pointed at `schema`.
pub(crate) struct PgConn {
    conn: Option<PoolConnection<Postgres>>,
    permit: Option<OwnedSemaphorePermit>,
    schema: Arc<str>,
    home: Arc<Connections>,
    /// Its last statement finished and no transaction is open: it may be
    /// parked.
    pub(crate) clean: bool,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("schema", &self.schema)
            .field("clean", &self.clean)
            .finish()
    }
}

impl std::ops::Deref for PgConn {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        self.conn
            .as_ref()
            .expect("a PgConn holds its connection until dropped")
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        self.conn
            .as_mut()
            .expect("a PgConn holds its connection until dropped")
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if !self.clean || self.home.pool.is_closed() {
            // Back to sqlx's pool: it pings (flushing a queued rollback) or
            // closes it; the permit goes with it.
            drop(conn);
            drop(permit);
            return;
        }
        self.home
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Parked {
                conn,
                permit,
                schema: self.schema.clone(),
                since: Instant::now(),
            });
        self.home.returned.notify_one();
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("url", &redacted(&self.url))
            .field("size", &self.pool.size())
            .finish()
    }
}

impl PgConn {
    /// Its work is done and it may be parked when dropped.
    pub(crate) fn set_clean(&mut self, clean: bool) {
        self.clean = clean;
    }
}

impl Connections {
    /// A connection pointed at `schema` (`use_schema` is its `SET`).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        schema: &Arc<str>,
        use_schema: &str,
    ) -> sqlx::Result<PgConn> {
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        loop {
            // 1. One parked on this schema: as it is.
            let mine = {
                let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
                while parked
                    .front()
                    .is_some_and(|p| p.since.elapsed() > PARKED_AT_MOST)
                {
                    parked.pop_front();
                }
                parked
                    .iter()
                    .rposition(|p| p.schema == *schema)
                    .and_then(|i| parked.remove(i))
            };
            if let Some(p) = mine {
                if let Some(c) = self.revive(p, schema, Some(use_schema)).await {
                    return Ok(c);
                }
                continue;
            }
            // 2. Room for one more: from the pool.
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.from_pool(permit, schema, use_schema).await;
            }
            // 3. Every connection is out: the one parked longest ago.
            let oldest = self
                .parked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(p) = oldest {
                if let Some(c) = self.revive(p, schema, Some(use_schema)).await {
                    return Ok(c);
                }
                continue;
            }
            // 4. Wait for a connection to come back, parked or to the pool.
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| sqlx::Error::PoolClosed)?;
                    return self.from_pool(permit, schema, use_schema).await;
                }
                _ = self.returned.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(sqlx::Error::PoolTimedOut),
            }
        }
    }

    async fn from_pool(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        schema: &Arc<str>,
        use_schema: &str,
    ) -> sqlx::Result<PgConn> {
        let conn = self.pool.acquire().await?;
        let mut c = PgConn {
            conn: Some(conn),
            permit: Some(permit),
            schema: schema.clone(),
            home: self.clone(),
            clean: false,
        };
        if !use_schema.is_empty() {
            c.execute(sqlx::raw_sql(use_schema)).await?;
        }
        c.clean = true;
        Ok(c)
    }

    /// A parked connection for `schema`: checked if it was parked long,
    /// pointed at `schema` by `use_schema` if given. `None` when it failed
    /// (it is closed; ask again).
    async fn revive(
        self: &Arc<Self>,
        p: Parked,
        schema: &Arc<str>,
        use_schema: Option<&str>,
    ) -> Option<PgConn> {
        let long = p.since.elapsed() > PING_AFTER;
        let mut c = PgConn {
            conn: Some(p.conn),
            permit: Some(p.permit),
            schema: schema.clone(),
            home: self.clone(),
            clean: false,
        };
        let ok = match use_schema {
            // The SET checks the connection as a ping would.
            Some(set) => c.execute(sqlx::raw_sql(set)).await.is_ok(),
            None if long => c.ping().await.is_ok(),
            None => true,
        };
        if !ok {
            if let Some(conn) = c.conn.as_mut() {
                conn.close_on_drop();
            }
            return None;
        }
        c.clean = true;
        Some(c)
    }
}

/// The store's connections and the statement that points a connection at
/// `project`'s schema; the schema made and migrated first if needed.
pub(crate) async fn open_pool(
    url: &str,
    project: &str,
    max_connections: u32,
) -> BbResult<(Arc<Connections>, Arc<str>, Arc<str>)> {
    let conns = shared(url, max_connections).await?;
    let schema = schema_of(project);
    let use_schema: Arc<str> = format!("SET search_path TO \"{schema}\"").into();
    let schema: Arc<str> = schema.into();
    let conn = conns
        .acquire(&schema, &use_schema)
        .await
        .map_err(|e| unreachable(url, e))?;
    prepare_schema(
        conn,
        schema.to_string(),
        use_schema.to_string(),
        redacted(url),
    )
    .await?;
    Ok((conns, schema, use_schema))
}

/// Points `conn` at `schema`, and makes and migrates the schema unless it
/// is at this binary's version (one query in the common case). Boxed: its
/// future is `Send` for every lifetime the daemon's tasks need.
fn prepare_schema(
    mut conn: PgConn,
    schema: String,
    use_schema: String,
    shown: String,
) -> futures_util::future::BoxFuture<'static, BbResult<()>> {
    Box::pin(async move {
        conn.clean = false;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *conn)
                .await
                .ok()
                .flatten();
        if version == Some(LATEST_SCHEMA_VERSION) {
            conn.set_clean(true);
            return Ok(());
        }
        {
            // Two daemons may open a new project at once: the schema is made
            // under a lock, so neither trips over the other's CREATE.
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('moziplus:schemas'))::text")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        sqlx::query(&use_schema)
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        MIGRATOR.run_direct(&mut *conn).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => BbError::SchemaTooNew {
                path: format!("{shown} schema {schema}").into(),
                found: v,
                known: LATEST_SCHEMA_VERSION,
            },
            other => BbError::Migrate(other),
        })?;
        conn.set_clean(true);
        Ok(())
    })
}

/// The projects whose blackboards are in the database at `url` (its
/// `p_<id>` schemas), sorted.
pub async fn projects(url: &str) -> BbResult<Vec<String>> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| BbError::Invalid(format!("store URL {}: {e}", redacted(url))))?;
    let mut conn = options.connect().await.map_err(|e| unreachable(url, e))?;
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name::text FROM information_schema.schemata
         WHERE schema_name LIKE 'p\\_%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(schemas
        .into_iter()
        .filter_map(|s| s.strip_prefix("p_").map(str::to_string))
        .collect())
}
