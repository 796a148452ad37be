//! The store's one error type: what went wrong, typed by what the caller
//! can do about it.

use std::path::PathBuf;

use crate::model::TaskStatus;

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
    /// The store's server cannot be reached (PostgreSQL down or
    /// restarting): nothing was written; the same call may succeed later.
    #[error("{0}")]
    Unavailable(String),
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
