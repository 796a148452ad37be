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

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

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

/// The process's pool for the store at `url`: one for every project (see
/// `db::Pool::Postgres`), made on first use with at least `max_connections`
/// (and never fewer than 8: a daemon ticks 8 projects at once).
async fn shared_pool(url: &str, max_connections: u32) -> BbResult<PgPool> {
    static POOLS: std::sync::Mutex<Vec<(String, PgPool)>> = std::sync::Mutex::new(Vec::new());
    if let Some(p) = POOLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(u, p)| u == url && !p.is_closed())
        .map(|(_, p)| p.clone())
    {
        return Ok(p);
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| BbError::Invalid(format!("store URL {}: {e}", redacted(url))))?
        .application_name("moziplus")
        // The store's statements are the same few on every connection: a
        // generic plan each, not a custom plan per execution.
        .options([("plan_cache_mode", "force_generic_plan")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(8))
        .min_connections(0)
        // A server that is down is said so within seconds (the CLI, doctor,
        // readiness); a daemon's writes fail retryably and its next tick or
        // beat tries again.
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(url, e))?;
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(u, p)| u != url || !p.is_closed());
    if let Some((_, p)) = pools.iter().find(|(u, _)| u == url) {
        return Ok(p.clone());
    }
    pools.push((url.to_string(), pool.clone()));
    Ok(pool)
}

/// The store's pool and the statement that points a connection at
/// `project`'s schema; the schema made and migrated first if needed.
pub(crate) async fn open_pool(
    url: &str,
    project: &str,
    max_connections: u32,
) -> BbResult<(PgPool, String)> {
    let pool = shared_pool(url, max_connections).await?;
    let schema = schema_of(project);
    let use_schema = format!("SET search_path TO \"{schema}\"");
    let conn = pool.acquire().await.map_err(|e| unreachable(url, e))?;
    prepare_schema(conn, schema, use_schema.clone(), redacted(url)).await?;
    Ok((pool, use_schema))
}

/// Points `conn` at `schema`, and makes and migrates the schema unless it
/// is at this binary's version (one query in the common case). Boxed: its
/// future is `Send` for every lifetime the daemon's tasks need.
fn prepare_schema(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    schema: String,
    use_schema: String,
    shown: String,
) -> futures_util::future::BoxFuture<'static, BbResult<()>> {
    Box::pin(async move {
        sqlx::query(&use_schema)
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *conn)
                .await
                .ok()
                .flatten();
        if version == Some(LATEST_SCHEMA_VERSION) {
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
