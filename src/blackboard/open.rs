//! Opening a blackboard file: permissions, pragmas, schema version, migrations.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{BbError, BbResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema version this binary writes (the highest migration number).
pub const LATEST_SCHEMA_VERSION: i64 = 2;

/// How to open a blackboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist (agent and admin commands on an existing project).
    Existing { max_connections: u32 },
    /// Create the file (mode 0600) if it is missing.
    Create { max_connections: u32 },
}

impl OpenMode {
    /// One connection: what a CLI invocation needs.
    pub const CLI: OpenMode = OpenMode::Existing { max_connections: 1 };
}

pub(super) async fn open_pool(path: &Path, mode: OpenMode) -> BbResult<SqlitePool> {
    let max_connections = match mode {
        OpenMode::Existing { max_connections } => {
            check_header(path)?;
            max_connections
        }
        OpenMode::Create { max_connections } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_header(path)?,
                Err(e) => return Err(e.into()),
            }
            max_connections
        }
    };
    // Keep the file private even if someone created it with a looser umask.
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| BbError::Invalid(format!("{}: path is not UTF-8", path.display())))?;
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path_str}"))?
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode: a committed transaction survives any process crash;
        // only an OS crash or power loss can lose the last few commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| classify_open_error(path, e))?;
    ensure_schema(&pool, path).await?;
    Ok(pool)
}

/// A blackboard file either is empty (fresh) or starts with SQLite's magic.
fn check_header(path: &Path) -> BbResult<()> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BbError::Missing {
            path: path.to_path_buf(),
            detail:
                "blackboard.db does not exist; `moziplus serve` recreates it, or restore a backup"
                    .into(),
        }),
        Err(e) => return Err(e.into()),
    };
    let mut magic = [0u8; 16];
    let n = f.read(&mut magic)?;
    if n == 0 {
        return Ok(());
    }
    if n < 16 || &magic != b"SQLite format 3\0" {
        return Err(BbError::Corrupt {
            path: path.to_path_buf(),
            detail: "not an SQLite database (bad header); restore it from backups/ with `moziplus restore`".into(),
        });
    }
    Ok(())
}

fn classify_open_error(path: &Path, e: sqlx::Error) -> BbError {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("malformed") {
        BbError::Corrupt {
            path: path.to_path_buf(),
            detail: text,
        }
    } else {
        BbError::Db(e)
    }
}

/// Brings the schema to [`LATEST_SCHEMA_VERSION`], refusing newer databases.
async fn ensure_schema(pool: &SqlitePool, path: &Path) -> BbResult<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await
        .map_err(|e| classify_open_error(path, e))?;
    if version == LATEST_SCHEMA_VERSION {
        return Ok(());
    }
    if version > LATEST_SCHEMA_VERSION {
        return Err(BbError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: LATEST_SCHEMA_VERSION,
        });
    }
    // Slow path: serialize migrators across processes with a lock file beside
    // the database (not on the database itself: closing another descriptor of
    // that file would drop SQLite's own POSIX locks).
    let lock_path = path.with_extension("db.migrate-lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)?;
    let lock = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))
    })
    .await
    .map_err(|e| BbError::Io(std::io::Error::other(e)))??;
    // Re-read under the lock: another process may have just migrated.
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    if version < LATEST_SCHEMA_VERSION {
        MIGRATOR.run(pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => BbError::SchemaTooNew {
                path: path.to_path_buf(),
                found: v,
                known: LATEST_SCHEMA_VERSION,
            },
            other => BbError::Migrate(other),
        })?;
        sqlx::query(&format!("PRAGMA user_version = {LATEST_SCHEMA_VERSION}"))
            .execute(pool)
            .await?;
    } else if version > LATEST_SCHEMA_VERSION {
        return Err(BbError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: LATEST_SCHEMA_VERSION,
        });
    }
    drop(lock);
    Ok(())
}
