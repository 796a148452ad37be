//! The service's errors: what went wrong, typed by what the caller can do
//! about it.

use crate::blackboard::BbError;

/// Why a service call did not happen. Every refusal leaves the blackboard
/// untouched.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The task, decision, session or file named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Someone else got there first, or holds the task: retrying later may
    /// work (CLI exit code 3, HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The task lifecycle does not allow this change (HTTP 409, CLI exit 1).
    #[error("{0}")]
    IllegalTransition(String),
    /// The caller may not do this (wrong identity, not the holder, not
    /// privileged, not an allowed agent).
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong (bad id, empty body, bad name).
    #[error("{0}")]
    Invalid(String),
    /// Waited as long as asked and nothing happened.
    #[error("{0}")]
    Timeout(String),
    /// The store failed (database, file system, a blackboard that is gone):
    /// not the caller's fault.
    #[error(transparent)]
    Store(BbError),
    /// Local I/O outside the database (artifacts).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ServiceError {
    /// True for "someone else got there first"-style refusals.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ServiceError::Conflict(_))
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> ServiceError {
        ServiceError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<BbError> for ServiceError {
    fn from(e: BbError) -> Self {
        let message = e.to_string();
        match e {
            BbError::NotFound { .. } => ServiceError::NotFound(message),
            BbError::Conflict(_) => ServiceError::Conflict(message),
            BbError::IllegalTransition { .. } => ServiceError::IllegalTransition(message),
            BbError::Invalid(_) => ServiceError::Invalid(message),
            BbError::Forbidden(_) => ServiceError::Forbidden(message),
            e => ServiceError::Store(e),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
