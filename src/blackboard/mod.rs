//! One SQLite blackboard per project.
//!
//! [`Blackboard`] owns a small sqlx pool over `projects/<id>/blackboard.db`
//! (WAL, `busy_timeout` 5 s, foreign keys on, file mode 0600). Every state change
//! runs inside a `BEGIN IMMEDIATE` transaction — the write lock is taken up front,
//! so read-check-write sequences cannot be interleaved by another process — and
//! writes an `event` row in the same transaction.
//!
//! The schema lives in `migrations/` and is embedded in the binary. Opening checks
//! `PRAGMA user_version` (one cheap read) and runs the migrator only when the
//! database is behind; a database from a newer moziplus is refused.

/// The shape of every write: `BEGIN IMMEDIATE` (after the file check), then
/// the body — which reads what it checks under the write lock, checks,
/// writes and emits its event; a `?` or `return Err` in it drops the
/// transaction, which rolls back —, then commit. Evaluates to `Ok(body)`.
macro_rules! write_tx {
    ($bb:expr, |$tx:ident, $now:ident| $body:expr) => {{
        let $now = $bb.now();
        let mut $tx = $bb.begin_write().await?;
        let value = $body;
        $tx.commit().await?;
        Ok(value)
    }};
}

/// A task change: [`write_tx!`] around reading task `$id` under the lock,
/// the body (check, write, emit), and reading the task back, which is the
/// value.
macro_rules! change_task {
    ($bb:expr, $id:expr, |$tx:ident, $now:ident, $task:ident| $body:block) => {
        write_tx!($bb, |$tx, $now| {
            let $task = fetch_task(&mut $tx, $id).await?;
            $body;
            fetch_task(&mut $tx, $id).await?
        })
    };
}

mod decisions;
mod events;
mod gateway_history;
pub mod ids;
mod learning;
mod lifecycle;
pub mod model;
mod open;
mod pages;
mod records;
mod rounds;
mod rows;
mod schedules;
pub mod sessions;
mod summary;
mod tasks;
pub mod usage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use decisions::NewDecision;
pub use events::{AlertCounts, EventQuery, StoredEvent, ALERT_LEVELS};
pub use gateway_history::{GatewayHistory, GatewaySample};
pub use learning::{distill_tag, DISTILL_TAG_PREFIX};
pub use lifecycle::require_holder;
pub use model::*;
pub use open::{OpenMode, AGENT_WAL_LIMIT_BYTES, LATEST_SCHEMA_VERSION};
pub use pages::{ProjectStats, TaskPage, TaskQuery};
pub use records::NewExperience;
pub use schedules::{
    Firing, FiringRequest, FiringResult, OverlapDecision, PutOutcome, Recurrence, Schedule,
    ScheduleDef,
};
pub use sessions::{AgentDay, NewSession};
pub use summary::{DependencyWait, TaskFilter, TickProbe, WaitFacts, WorkActivity};
pub use tasks::{
    validate_new_task, GiveBack, GiveBackTo, NewTask, ReviewConclusion, DEFAULT_TASK_KIND,
};

use sqlx::SqlitePool;

/// Every table of the schema, parents before children (restore order).
pub const TABLES: &[&str] = &[
    "task",
    "task_tag",
    "dependency",
    "comment",
    "output",
    "review",
    "decision",
    "observation",
    "experience",
    "experience_tag",
    "session",
    "llm_usage",
    "event",
    "event_ack",
    "inbox_applied",
    "schedule",
    "schedule_firing",
];

/// Errors of the blackboard layer. [`BbError::is_conflict`] separates "someone
/// else got there first" (CLI exit code 3) from real errors.
#[derive(Debug, thiserror::Error)]
pub enum BbError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// Lost a race or the task is held by someone else: retrying later may work.
    #[error("{0}")]
    Conflict(String),
    #[error("task {task}: illegal transition from {from} to {to}")]
    IllegalTransition {
        task: String,
        from: TaskStatus,
        to: TaskStatus,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{path}: schema version {found} is newer than this moziplus supports ({known}); upgrade moziplus before opening it")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: no blackboard here ({detail})")]
    Missing { path: PathBuf, detail: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl BbError {
    /// True for "claimed by someone else"-style refusals (exit code 3).
    pub fn is_conflict(&self) -> bool {
        matches!(self, BbError::Conflict(_))
    }
}

impl From<std::convert::Infallible> for BbError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

pub type BbResult<T> = Result<T, BbError>;

/// The source of "now" for everything the blackboard stamps or compares.
/// Injected so leases, expiry and scheduling can be tested on a controlled clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// Wall-clock UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to (tests, time travel).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: Millis) -> Self {
        ManualClock(AtomicI64::new(start_ms))
    }
    pub fn set(&self, ms: Millis) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Who is writing. Agents running under a daemon session are verified by their
/// session token and may only touch their own work; operators (a person at the
/// CLI) and the daemon may also cancel, block, reopen and decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub kind: ActorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// An agent run verified by `MOZI_SESSION` + `MOZI_SESSION_TOKEN`.
    Session,
    /// A person or script at the CLI (no session).
    Operator,
    /// The daemon itself.
    Daemon,
}

impl Actor {
    pub fn operator(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            kind: ActorKind::Operator,
        }
    }
    pub fn session(agent: impl Into<String>) -> Actor {
        Actor {
            name: agent.into(),
            kind: ActorKind::Session,
        }
    }
    pub fn daemon() -> Actor {
        Actor {
            name: "daemon".into(),
            kind: ActorKind::Daemon,
        }
    }
    /// May perform administrative changes (cancel, block, reopen, decide).
    pub fn is_privileged(&self) -> bool {
        !matches!(self.kind, ActorKind::Session)
    }
}

/// An open project blackboard.
#[derive(Debug, Clone)]
pub struct Blackboard {
    pool: SqlitePool,
    path: Arc<PathBuf>,
    project: Arc<str>,
    clock: Arc<dyn Clock>,
    /// See [`open::Opened::keeps_wal`].
    keeps_wal: bool,
    /// See [`open::FileIdentity`].
    identity: Option<Arc<open::FileIdentity>>,
}

impl Blackboard {
    /// Opens (and, with [`OpenMode::Create`], creates) the blackboard at `path`.
    pub async fn open(path: &Path, project: &str, mode: OpenMode) -> BbResult<Blackboard> {
        Self::open_with_clock(path, project, mode, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(
        path: &Path,
        project: &str,
        mode: OpenMode,
        clock: Arc<dyn Clock>,
    ) -> BbResult<Blackboard> {
        let open::Opened {
            pool,
            keeps_wal,
            identity,
        } = open::open_pool(path, mode).await?;
        Ok(Blackboard {
            pool,
            keeps_wal,
            identity: identity.map(Arc::new),
            path: Arc::new(path.to_path_buf()),
            project: Arc::from(project),
            clock,
        })
    }

    /// Why the file this blackboard opened can no longer be used (removed,
    /// or replaced by another file), if so, as the error writes get. One
    /// `stat`.
    pub fn file_problem(&self) -> Option<BbError> {
        let detail = self.identity.as_ref().and_then(|id| id.problem())?;
        Some(BbError::Missing {
            path: self.path.to_path_buf(),
            detail,
        })
    }

    /// Refuses a write into a file that is no longer at its path.
    pub(crate) fn check_file(&self) -> BbResult<()> {
        match self.file_problem() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`) after
    /// [`Blackboard::check_file`].
    pub(crate) async fn begin_write(&self) -> BbResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.check_file()?;
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub fn project(&self) -> &str {
        &self.project
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Closes the pool. The last connection to close checkpoints the WAL,
    /// except in [`OpenMode::Agent`], which folds it in only once it has grown
    /// past [`open::AGENT_WAL_LIMIT_BYTES`].
    pub async fn close(self) {
        if self.keeps_wal {
            let wal = std::fs::metadata(self.path.with_extension("db-wal")).map_or(0, |m| m.len());
            if wal > open::AGENT_WAL_LIMIT_BYTES {
                // Best effort: if another process holds the database now, its
                // connections checkpoint the WAL instead.
                let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await;
            }
        }
        self.pool.close().await;
    }

    /// Size of the database file plus its WAL, in bytes.
    pub fn size_bytes(&self) -> u64 {
        let wal = self.path.with_extension("db-wal");
        std::fs::metadata(&*self.path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    /// Rows in every table (what a restore reports).
    pub async fn total_rows(&self) -> BbResult<u64> {
        let mut n = 0u64;
        for t in TABLES {
            let c: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&self.pool)
                .await?;
            n += c as u64;
        }
        Ok(n)
    }

    /// `PRAGMA quick_check` — `Ok(())` when the file is sound.
    pub async fn quick_check(&self) -> BbResult<()> {
        let res: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&self.pool)
            .await?;
        if res == "ok" {
            Ok(())
        } else {
            Err(BbError::Corrupt {
                path: self.path.to_path_buf(),
                detail: format!("quick_check: {res}"),
            })
        }
    }

    /// Writes a consistent snapshot of the live database to `dest` with
    /// `VACUUM INTO` (a read transaction: writers keep going).
    pub async fn snapshot_to(&self, dest: &Path) -> BbResult<()> {
        let dest_str = dest
            .to_str()
            .ok_or_else(|| BbError::Invalid(format!("{}: path is not UTF-8", dest.display())))?;
        sqlx::query("VACUUM INTO ?")
            .bind(dest_str)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Folds the WAL into the main file (`wal_checkpoint(TRUNCATE)`), so the
    /// file alone holds everything (before it is archived or copied).
    pub async fn checkpoint(&self) -> BbResult<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces every row of this blackboard with those of the database file
    /// `source` (a restore), in one transaction: readers see the old
    /// contents or the new, never a mix. Returns the rows copied.
    pub async fn replace_contents_from(&self, source: &Path) -> BbResult<u64> {
        self.check_file()?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("ATTACH DATABASE ? AS snap")
            .bind(source.to_string_lossy().to_string())
            .execute(&mut *conn)
            .await?;
        let copied: BbResult<u64> = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *conn)
                .await?;
            for t in TABLES.iter().rev() {
                sqlx::query(&format!("DELETE FROM main.{t}"))
                    .execute(&mut *conn)
                    .await?;
            }
            let mut rows = 0;
            for t in TABLES {
                rows += sqlx::query(&format!("INSERT INTO main.{t} SELECT * FROM snap.{t}"))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
            // Event ids stay monotonic: AUTOINCREMENT's sqlite_sequence still
            // remembers the highest id ever used, so SSE resumption never
            // sees an old id reused.
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(rows)
        }
        .await;
        if copied.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        let _ = sqlx::query("DETACH DATABASE snap")
            .execute(&mut *conn)
            .await;
        copied
    }
}
