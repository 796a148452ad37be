//! Opening a blackboard file: permissions, pragmas, schema version, migrations.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::{BbError, BbResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema version this binary writes (the highest migration number).
pub const LATEST_SCHEMA_VERSION: i64 = 10;

/// How to open a blackboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist (agent and admin commands on an existing project).
    Existing { max_connections: u32 },
    /// Create the file (mode 0600) if it is missing.
    Create { max_connections: u32 },
    /// One connection to an existing file that leaves the write-ahead log in
    /// place when it closes instead of checkpointing it into the database and
    /// deleting it: what `moziplus bb`, called many times per agent run, uses.
    ///
    /// When the CLI is the only connection (no daemon running), closing the
    /// last connection otherwise checkpoints the WAL (an `fsync` of the
    /// database file) and deletes it, and the next call creates it again —
    /// the largest part of a claim's wall time. Left in place, the WAL is
    /// checkpointed by SQLite's automatic checkpoint (every 1,000 pages) and by
    /// the daemon, and is read back by the next connection like any WAL; it is
    /// as durable as a committed transaction in `synchronous=NORMAL` already is.
    ///
    /// Only for a process with no other connection to this database: the
    /// probe for other processes opens and closes the `-shm` file, which would
    /// drop this process's own locks on it.
    Agent,
}

impl OpenMode {
    /// One connection: what an admin CLI invocation needs.
    pub const CLI: OpenMode = OpenMode::Existing { max_connections: 1 };
}

/// An open pool and whether it leaves the WAL in place when it closes.
pub(super) struct Opened {
    pub pool: SqlitePool,
    /// Set in [`OpenMode::Agent`] when no other process had the database
    /// open: the connection will not checkpoint on close, so
    /// [`crate::board::Blackboard::close`] bounds the WAL itself.
    pub keeps_wal: bool,
    /// The file opened, for [`FileIdentity::problem`] (long-lived pools only).
    pub identity: Option<FileIdentity>,
}

/// The device and inode of the database file a pool opened. SQLite keeps
/// writing into an unlinked or renamed-over file without complaint, so a
/// long-lived blackboard compares this with what the path names now (one
/// `stat`): before every write transaction, on every tick and readiness
/// check, and when the API opens the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path, meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// What is wrong with the file, if the path no longer names it (one
    /// `stat`).
    pub fn problem(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => None,
            Ok(_) => Some(
                "the file was replaced by another one while open: writes are refused so they \
                 cannot vanish; restart the daemon (or restore the project) to use the new file"
                    .to_string(),
            ),
            Err(e) => Some(format!(
                "the file was removed while open ({e}): writes are refused so they cannot \
                 vanish; restore it (moziplus restore) and restart the daemon"
            )),
        }
    }
}

/// In [`OpenMode::Agent`] with no other process on the database, the WAL is
/// folded into the database (`wal_checkpoint(TRUNCATE)`) once it grows past
/// this size: each process that opens the database alone rebuilds the WAL
/// index by reading the whole WAL, so it must stay small.
pub const AGENT_WAL_LIMIT_BYTES: u64 = 256 * 1024;

pub(super) async fn open_pool(path: &Path, mode: OpenMode) -> BbResult<Opened> {
    let mut keeps_wal = false;
    let max_connections = match mode {
        OpenMode::Existing { max_connections } => {
            check_header(path)?;
            max_connections
        }
        OpenMode::Agent => {
            check_header(path)?;
            // With another process on the database (the daemon), closing is
            // not the last close and checkpoints nothing anyway; that
            // process's connections keep the WAL short.
            keeps_wal = !wal_index_in_use(path);
            1
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
                // A WAL left beside a database that was deleted by hand is
                // not replayed into this new, empty file: SQLite deletes a WAL
                // it finds beside a zero-length database (tests/bb_wal.rs).
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
    if path.to_str().is_none() {
        return Err(BbError::Invalid(format!(
            "{}: path is not UTF-8",
            path.display()
        )));
    }
    // The path as it is (not a `sqlite://` URL, whose parsing would treat a
    // `?` or `%` in a folder name as URL syntax).
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode: a committed transaction survives any process crash;
        // only an OS crash or power loss can lose the last few commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("temp_store", "memory");
    // No ping before handing out an idle connection: an SQLite connection is
    // a handle in this process, not a socket that can go stale, and the ping
    // is one more round trip to the connection's worker thread per query.
    let mut pool_options = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .after_release(|conn, _meta| Box::pin(release_check(conn)));
    // A one-command pool lives milliseconds; a long-lived one (the daemon's)
    // must notice its file being removed or replaced under it.
    let identity = (!matches!(mode, OpenMode::Agent)).then(|| FileIdentity::of(path, &meta));
    if keeps_wal {
        pool_options = pool_options.after_connect(|conn, _meta| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                keep_wal_on_close(handle.as_raw_handle().as_ptr());
                Ok(())
            })
        });
    }
    if matches!(mode, OpenMode::Agent) {
        // A pool that lives for one command: no reaper task for idle or old
        // connections (it would only be spawned and cancelled again).
        pool_options = pool_options.idle_timeout(None).max_lifetime(None);
    }
    let pool = pool_options
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| classify_open_error(path, e))?;
    ensure_schema(&pool, path).await?;
    Ok(Opened {
        pool,
        keeps_wal,
        identity,
    })
}

/// Keeps a transaction from ever going back into the pool (issue 13,
/// defect 1): a connection is only reused if it is outside any transaction.
///
/// A `Transaction` dropped uncommitted (an error path, or a future cancelled
/// by a timeout at any `.await`) queues its `ROLLBACK` on the connection's
/// worker before the connection is released; waiting for the handle lock
/// orders this check after it. What the drop cannot cover is sqlx's `begin`
/// itself: cancelled after SQLite ran `BEGIN IMMEDIATE` but before the
/// `Transaction` value existed, it returns a connection that still holds the
/// write lock (every other writer then gets "database is locked", and the
/// next `begin_with` on it "attempted to call begin_with at non-zero
/// transaction depth"). Such a connection is closed, which rolls it back.
///
/// The common case costs one atomic load: the depth is zero.
async fn release_check(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::sqlite::SqliteTransactionManager;
    use sqlx::TransactionManager;
    if SqliteTransactionManager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    let in_transaction = {
        let mut handle = conn.lock_handle().await?;
        // SAFETY: the live handle of a connection whose lock we hold.
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) == 0 }
    };
    let depth = SqliteTransactionManager::get_transaction_depth(conn);
    if in_transaction || depth != 0 {
        tracing::warn!(
            depth,
            in_transaction,
            "a connection came back inside a transaction (a cancelled begin); closing it"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Whether another process has the database's WAL index open: every
/// connection holds a shared POSIX lock on byte 128 of `<db>-shm` (SQLite's
/// "DMS" lock) while it is open. `F_GETLK` only reports other processes'
/// locks, and this process has not opened the file yet.
fn wal_index_in_use(db: &Path) -> bool {
    use nix::fcntl::{fcntl, FcntlArg};
    let Ok(shm) = std::fs::File::open(db.with_extension("db-shm")) else {
        return false;
    };
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut probe: nix::libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = nix::libc::F_WRLCK as _;
    probe.l_whence = nix::libc::SEEK_SET as _;
    probe.l_start = 128;
    probe.l_len = 1;
    match fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&shm),
        FcntlArg::F_GETLK(&mut probe),
    ) {
        Ok(_) => i32::from(probe.l_type) != nix::libc::F_UNLCK,
        // Cannot tell: behave as before (checkpoint on close).
        Err(_) => true,
    }
}

/// Tells SQLite not to checkpoint (and so not to delete) the WAL when this
/// connection closes (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`, see [`OpenMode::Agent`]).
fn keep_wal_on_close(db: *mut libsqlite3_sys::sqlite3) {
    // SAFETY: `db` is the live handle of a connection we hold the lock of;
    // this db_config verb takes an int and an optional int* to report into.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    // Only an unknown verb fails, and then SQLite behaves as before.
    debug_assert_eq!(rc, libsqlite3_sys::SQLITE_OK);
}

/// The blackboard file must exist (an empty file is a fresh database).
///
/// Only `stat`: this must never open and close a descriptor of the database
/// file, because closing any descriptor of a file drops every POSIX lock this
/// process holds on it — including the locks of the daemon's own open SQLite
/// connections, after which another process may checkpoint and delete the WAL
/// under them. A file that is not a database is reported by SQLite itself when
/// the connection opens it (see [`classify_open_error`]).
fn check_header(path: &Path) -> BbResult<()> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BbError::Missing {
            path: path.to_path_buf(),
            detail:
                "blackboard.db does not exist; `moziplus serve` recreates it, or restore a backup"
                    .into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn classify_open_error(path: &Path, e: sqlx::Error) -> BbError {
    let text = e.to_string();
    if text.contains("not a database") {
        BbError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "not an SQLite database ({text}); restore it from backups/ with `moziplus restore`"
            ),
        }
    } else if text.contains("malformed") {
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
