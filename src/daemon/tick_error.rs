//! [`TickError`]: why one project's tick stopped short — the error of the
//! ticker and of the steps it runs (reviews, the heartbeat policy, the
//! schedules), kept apart from all of them so each imports it from here.

use crate::blackboard::BbError;
use crate::service::ServiceError;

/// Why one project's tick stopped short. The ticker logs it and counts it
/// on the slot (readiness); a store error saying the file is broken also
/// closes the project ([`TickError::file_is_broken`]). The next tick tries
/// again.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// The blackboard failed or refused.
    #[error(transparent)]
    Store(#[from] BbError),
    /// A service call was refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A step the tick runs as a task of its own (claim and start, a
    /// reviewer's start) panicked or was cancelled.
    #[error("a step of the tick did not finish: {0}")]
    Step(#[from] tokio::task::JoinError),
    /// Local file work outside the blackboard (a distill task's check).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TickError {
    /// The store error underneath, whether the store or the service met it.
    pub fn store(&self) -> Option<&BbError> {
        match self {
            TickError::Store(e) | TickError::Service(ServiceError::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// The blackboard file itself is broken (corrupt, missing, not a
    /// database): the project is closed and reported until it is repaired.
    pub fn file_is_broken(&self) -> bool {
        self.store().is_some_and(|e| {
            matches!(e, BbError::Corrupt { .. } | BbError::Missing { .. })
                || e.to_string().contains("malformed")
                || e.to_string().contains("not a database")
        })
    }
}
