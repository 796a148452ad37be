//! One SQLite blackboard per project: the store, a crate of its own.
//!
//! It depends on no other part of moziplus (the main crate re-exports it
//! as `moziplus::blackboard`), so nothing here can reach the service, the
//! daemon or the front doors above it: Cargo refuses the import.
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
        $bb.commit($tx).await?;
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

mod actor;
mod board;
mod clock;
pub mod cluster;
mod cluster_budgets;
mod copy;
mod db;
mod decisions;
mod error;
mod events;
mod gateway_history;
pub mod ids;
mod learning;
mod lifecycle;
pub mod model;
mod open;
mod pages;
pub mod postgres;
mod records;
mod rounds;
mod rows;
mod schedules;
pub mod sessions;
mod summary;
mod tasks;
pub mod usage;
#[cfg(feature = "wire")]
mod vocabulary;

pub use actor::{Actor, ActorKind};
pub use board::{Blackboard, TABLES};
pub use clock::{Clock, ManualClock, SystemClock};
pub use copy::RowCounts;
pub use db::Backend;
pub use decisions::NewDecision;
pub use error::{BbError, BbResult};
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
