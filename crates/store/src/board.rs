//! [`Blackboard`], the open handle on one project's database, and what it
//! does as a whole file: open, close, size, checks, snapshots and restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::db::{Backend, Pool, Tx};
use crate::error::{BbError, BbResult};
use crate::model::Millis;
use crate::open::{self, OpenMode};

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

/// An open project blackboard.
#[derive(Debug, Clone)]
pub struct Blackboard {
    pub(crate) pool: Pool,
    path: Arc<PathBuf>,
    project: Arc<str>,
    clock: Arc<dyn Clock>,
    /// See [`open::Opened::keeps_wal`].
    keeps_wal: bool,
    /// See [`open::FileIdentity`].
    identity: Option<Arc<open::FileIdentity>>,
    /// The leader's lease this handle's writes require (holder, epoch):
    /// see [`Blackboard::fenced`].
    fence: Option<Arc<(String, i64)>>,
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
            pool: Pool::Sqlite(pool),
            keeps_wal,
            identity: identity.map(Arc::new),
            fence: None,
            path: Arc::new(path.to_path_buf()),
            project: Arc::from(project),
            clock,
        })
    }

    /// Opens `project`'s blackboard in the PostgreSQL database at `url`
    /// (its schema made and migrated if needed; see [`crate::postgres`]).
    pub async fn open_postgres(
        url: &str,
        project: &str,
        max_connections: u32,
        clock: Arc<dyn Clock>,
    ) -> BbResult<Blackboard> {
        let (conns, schema, use_schema) =
            crate::postgres::open_pool(url, project, max_connections).await?;
        Ok(Blackboard {
            pool: Pool::Postgres {
                conns,
                schema,
                use_schema,
            },
            keeps_wal: false,
            identity: None,
            fence: None,
            path: Arc::new(PathBuf::from(format!(
                "{} schema {}",
                crate::postgres::redacted(url),
                crate::postgres::schema_of(project)
            ))),
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

    /// Starts a write transaction after [`Blackboard::check_file`]: SQLite's
    /// `BEGIN IMMEDIATE` takes the file's write lock up front; on
    /// PostgreSQL the same comes from a transaction-scoped advisory lock
    /// named after the project's schema, so a project's writers queue as
    /// they do on a file and other projects never wait.
    pub(crate) async fn begin_write(&self) -> BbResult<Tx> {
        self.check_file()?;
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => {
                "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(hashtext(current_schema()))) AS l"
            }
        };
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE", lock).await?;
        if let Some(fence) = &self.fence {
            // Held FOR SHARE until this transaction ends: a new leader's
            // takeover waits for it, and a deposed one finds no row.
            let held: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT epoch FROM moziplus.lease WHERE name = ? AND holder = ? AND epoch = ?
                   AND expires_at > {} FOR SHARE",
                crate::cluster::DB_NOW
            ))
            .bind(crate::cluster::LEADER)
            .bind(&fence.0)
            .bind(fence.1)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                return Err(BbError::Conflict(format!(
                    "daemon {} no longer leads (its lease of epoch {} is over): the leader's \
                     duty is refused",
                    fence.0, fence.1
                )));
            }
        }
        Ok(tx)
    }

    /// Commits a write transaction. On PostgreSQL it first queues a
    /// notification on channel [`crate::cluster::CHANNEL`] carrying the
    /// project's id, delivered to every daemon's listener when (and only
    /// if) the transaction commits: their ticker and event pump wake.
    pub(crate) async fn commit(&self, mut tx: Tx) -> BbResult<()> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT 1 FROM (SELECT pg_notify(?, ?)) AS n")
                .bind(crate::cluster::CHANNEL)
                .bind(self.project.as_ref())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// This blackboard for the leader's duties: every write transaction
    /// first checks, on PostgreSQL, that `holder` still holds the leader's
    /// lease at `epoch`, and is refused otherwise (a deposed leader writes
    /// nothing). On SQLite, with one daemon, there is no lease to check.
    pub fn fenced(&self, holder: &str, epoch: i64) -> Blackboard {
        let mut bb = self.clone();
        if bb.backend() == Backend::Postgres {
            bb.fence = Some(Arc::new((holder.to_string(), epoch)));
        }
        bb
    }

    /// The engine this blackboard is on.
    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// Refuses what only an SQLite file can do (`what`) on PostgreSQL.
    fn file_only(&self, what: &str) -> BbResult<()> {
        match self.backend() {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => Err(BbError::Invalid(format!(
                "{what} works on a blackboard file; project {} is on PostgreSQL, whose own tools \
                 (pg_dump, pg_restore, amcheck) do this",
                self.project
            ))),
        }
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
        if self.backend() == Backend::Postgres {
            return Ok(());
        }
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
        self.file_only("a snapshot")?;
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
        if self.backend() == Backend::Postgres {
            return Ok(());
        }
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
        self.file_only("a restore")?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("ATTACH DATABASE ? AS snap")
            .bind(source.to_string_lossy().to_string())
            .execute(&mut conn)
            .await?;
        let copied: BbResult<u64> = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut conn)
                .await?;
            for t in TABLES.iter().rev() {
                sqlx::query(&format!("DELETE FROM main.{t}"))
                    .execute(&mut conn)
                    .await?;
            }
            let mut rows = 0;
            for t in TABLES {
                rows += sqlx::query(&format!("INSERT INTO main.{t} SELECT * FROM snap.{t}"))
                    .execute(&mut conn)
                    .await?
                    .rows_affected();
            }
            // Event ids stay monotonic: AUTOINCREMENT's sqlite_sequence still
            // remembers the highest id ever used, so SSE resumption never
            // sees an old id reused.
            sqlx::query("COMMIT").execute(&mut conn).await?;
            Ok(rows)
        }
        .await;
        if copied.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
        }
        let _ = sqlx::query("DETACH DATABASE snap").execute(&mut conn).await;
        copied
    }
}
