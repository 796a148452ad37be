//! [`Blackboard`], the open handle on one project's database, and what it
//! does as a whole file: open, close, size, checks, snapshots and restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::SqlitePool;

use crate::clock::{Clock, SystemClock};
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
    pub(crate) pool: SqlitePool,
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
