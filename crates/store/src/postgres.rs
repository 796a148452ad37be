//! Opening a project's blackboard on PostgreSQL: one database for the
//! whole home, one schema per project (`p_<id>`).
//!
//! Why a schema per project and not a project column: a project's pool sets
//! its `search_path` to the project's schema when it connects, so every
//! statement of the store runs unchanged and no statement can name another
//! project's rows — the same isolation a file per project gives. The
//! migrations (`migrations-pg/`, mirroring `migrations/` number for number)
//! run inside each schema.

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

/// The project's pool, its schema created and migrated if needed.
pub(crate) async fn open_pool(url: &str, project: &str, max_connections: u32) -> BbResult<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| BbError::Invalid(format!("store URL {}: {e}", redacted(url))))?
        .application_name("moziplus");
    let schema = schema_of(project);
    let set_path = format!("SET search_path TO \"{schema}\"");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        // A server that is down is said so within seconds (the CLI, doctor,
        // readiness); a daemon's writes fail retryably and its next tick or
        // beat tries again.
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(60)))
        .after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                sqlx::query(&set_path).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(|e| unreachable(url, e))?;
    // The common case, one query: the schema exists at this version.
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .ok()
            .flatten();
    if version == Some(LATEST_SCHEMA_VERSION) {
        return Ok(pool);
    }
    {
        // Two daemons may open a new project at once: the schema is made
        // under a lock, so neither trips over the other's CREATE.
        let mut conn = options.connect().await.map_err(|e| unreachable(url, e))?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('moziplus:schemas'))::text")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        conn.close().await?;
    }
    MIGRATOR.run(&pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => BbError::SchemaTooNew {
            path: format!("{} schema {schema}", redacted(url)).into(),
            found: v,
            known: LATEST_SCHEMA_VERSION,
        },
        other => BbError::Migrate(other),
    })?;
    Ok(pool)
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
