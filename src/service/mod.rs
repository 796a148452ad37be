//! The project service: the one place that decides who may do what on a
//! project's blackboard, between the front doors (the `moziplus bb` CLI, the
//! HTTP API, the inbox consumer, the MCP server) and the store
//! ([`crate::blackboard::Blackboard`], which only persists).
//!
//! It owns:
//! * identities — sessions verified by token, operators, reserved names
//!   ([`identity`]);
//! * the project's allowed agents and the lease rule ([`rules`]);
//! * holder rules — only the holder of a `working` task posts its output,
//!   renews its lease, submits or gives it back (the store checks it under
//!   its write lock: [`crate::blackboard::require_holder`]);
//! * the one give-back: what a lease that ran out, a stuck claim or a run's
//!   setback costs ([`give_back`], [`Setback`]);
//! * reserved comment types — `system` comments are the daemon's only;
//! * the decision lifecycle as a caller sees it (waiting, expiry);
//! * artifact storage under `artifacts/<task>/outputs/` ([`artifacts`]);
//! * "commit, then notify": every successful write wakes the daemon
//!   ([`Notifier`]) after its transaction committed.
//!
//! Errors are [`ServiceError`]s, typed so each front door maps them to its
//! own vocabulary (CLI exit codes, HTTP 4xx, MCP tool errors).

mod artifacts;
mod distill;
mod error;
mod give_back;
pub mod identity;
mod records;
pub mod rules;
pub mod schedules;
mod tasks;
pub mod team;
mod waiting;

use std::sync::Arc;
use std::time::Duration;

pub use artifacts::{artifact_path, ArtifactSource, NewArtifact};
pub use error::{ServiceError, ServiceResult};
pub use give_back::{decide, Setback};
pub use identity::{RunIdentity, RESERVED_ACTORS};
pub use team::{NeverStarts, TeamView};
pub use waiting::{combine, DaemonSide, WaitingFor};

use crate::blackboard::{
    Actor, AlertCounts, Blackboard, BoardSummary, Event, EventQuery, OpenMode, StoredEvent, Task,
    TaskDetail, TaskFilter, TaskPage, TaskQuery,
};
use crate::home::Home;
use crate::registry::ProjectId;

/// Tells whoever schedules work that a project changed. Called after a write
/// committed, never before: a woken daemon must find the change.
#[derive(Clone)]
pub struct Notifier(Arc<dyn Fn() + Send + Sync>);

impl Notifier {
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Notifier {
        Notifier(Arc::new(wake))
    }
    /// Wakes a daemon running on `home` through its wake socket (the CLI's
    /// and the MCP server's way; without a daemon it does nothing).
    pub fn wake_socket(home: &Home, project: &ProjectId) -> Notifier {
        let (home, project) = (home.clone(), project.to_string());
        Notifier::new(move || crate::inbox::wake::send(&home, &project))
    }
    /// Nobody to tell (tests, tools).
    pub fn none() -> Notifier {
        Notifier::new(|| {})
    }
    fn notify(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

/// One project's blackboard with its rules. Cheap to clone.
///
/// Entry points, each taking the caller's [`crate::blackboard::Actor`]
/// (resolve it once with [`ProjectService::authenticate`] from a run's
/// [`RunIdentity`], or [`identity::api_operator`] for HTTP callers):
///
/// | verb | method |
/// |---|---|
/// | read board / task | [`summary`](Self::summary), [`task_detail`](Self::task_detail), [`task`](Self::task), [`list_tasks`](Self::list_tasks), [`task_page`](Self::task_page), [`events_after`](Self::events_after), [`event_log`](Self::event_log), [`alert_counts`](Self::alert_counts) |
/// | acknowledge an alert | [`ack_event`](Self::ack_event) |
/// | create, depend | [`create_task`](Self::create_task), [`add_dependency`](Self::add_dependency) |
/// | claim, heartbeat, release | [`claim`](Self::claim), [`heartbeat`](Self::heartbeat), [`release`](Self::release) |
/// | output (text or file) | [`post_output`](Self::post_output) |
/// | comment, review | [`comment`](Self::comment), [`review`](Self::review) |
/// | done/submit, fail | [`submit`](Self::submit), [`fail`](Self::fail) |
/// | cancel, block, reopen | [`set_status`](Self::set_status) |
/// | decide, decision wait | [`decide`](Self::decide), [`settle_decision`](Self::settle_decision), [`decision`](Self::decision), [`decisions`](Self::decisions), [`wait_decision`](Self::wait_decision) |
/// | observe, experience add | [`observe`](Self::observe), [`add_experience`](Self::add_experience), [`experiences`](Self::experiences), [`mark_distilled`](Self::mark_distilled) |
/// | review rounds (daemon) | [`conclude_review_round`](Self::conclude_review_round), [`conclude_round_as_read`](Self::conclude_round_as_read), [`apply_distill_check`](Self::apply_distill_check) |
/// | give a claim back (daemon) | [`give_back`](Self::give_back) with a [`Setback`], [`expire_leases`](Self::expire_leases) |
/// | approvals (gateway), expiry (daemon) | [`propose`](Self::propose), [`expire_decisions`](Self::expire_decisions) |
#[derive(Debug, Clone)]
pub struct ProjectService {
    bb: Blackboard,
    home: Home,
    project: ProjectId,
    notifier: Notifier,
}

impl ProjectService {
    pub fn new(bb: Blackboard, home: Home, project: ProjectId, notifier: Notifier) -> Self {
        ProjectService {
            bb,
            home,
            project,
            notifier,
        }
    }

    /// Opens `project`'s blackboard in `home` for a process outside the
    /// daemon (the CLI, the MCP server): its writes wake a running daemon
    /// through the wake socket.
    pub async fn open(home: &Home, project: &ProjectId, mode: OpenMode) -> ServiceResult<Self> {
        let bb = crate::registry::open_blackboard(home, project, mode).await?;
        let notifier = Notifier::wake_socket(home, project);
        Ok(ProjectService::new(
            bb,
            home.clone(),
            project.clone(),
            notifier,
        ))
    }

    /// Closes the blackboard (see [`Blackboard::close`]).
    pub async fn close(self) {
        self.bb.close().await
    }

    /// The store underneath, for reads the service adds no rule to.
    pub fn blackboard(&self) -> &Blackboard {
        &self.bb
    }
    pub fn project(&self) -> &ProjectId {
        &self.project
    }
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// This service for the cluster leader's duties: its writes require the
    /// leader's lease at `epoch` (see `Blackboard::fenced`).
    pub fn fenced(&self, holder: &str, epoch: i64) -> ProjectService {
        ProjectService {
            bb: self.bb.fenced(holder, epoch),
            ..self.clone()
        }
    }

    /// Hands the store back (to close it).
    pub fn into_blackboard(self) -> Blackboard {
        self.bb
    }

    /// "Commit, then notify": runs after a write's transaction committed.
    fn committed<T>(&self, value: T) -> ServiceResult<T> {
        self.notifier.notify();
        Ok(value)
    }

    /// The board at a glance.
    pub async fn summary(&self, limit: i64) -> ServiceResult<BoardSummary> {
        Ok(self.bb.board_summary(limit).await?)
    }
    /// One task with its dependencies, comments, outputs, reviews, sessions.
    pub async fn task_detail(&self, id: &str, comment_limit: i64) -> ServiceResult<TaskDetail> {
        Ok(self.bb.task_detail(id, comment_limit).await?)
    }
    pub async fn task(&self, id: &str) -> ServiceResult<Task> {
        Ok(self.bb.task(id).await?)
    }
    pub async fn list_tasks(&self, filter: &TaskFilter) -> ServiceResult<Vec<Task>> {
        Ok(self.bb.list_tasks(filter).await?)
    }
    pub async fn task_page(&self, query: &TaskQuery) -> ServiceResult<TaskPage> {
        Ok(self.bb.task_page(query).await?)
    }
    pub async fn events_after(&self, after: i64, limit: i64) -> ServiceResult<Vec<Event>> {
        Ok(self.bb.events_after(after, limit).await?)
    }
    /// Events with id greater than `after`, oldest first, with their
    /// acknowledgements.
    pub async fn stored_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> ServiceResult<Vec<StoredEvent>> {
        Ok(self.bb.stored_events_after(after, limit).await?)
    }
    /// A page of the event log, newest first (see [`EventQuery`]).
    pub async fn event_log(&self, query: &EventQuery) -> ServiceResult<Vec<StoredEvent>> {
        Ok(self.bb.event_log(query).await?)
    }
    /// Alerts nobody has acknowledged, per level.
    pub async fn alert_counts(&self) -> ServiceResult<AlertCounts> {
        Ok(self.bb.alert_counts().await?)
    }
    /// Acknowledges an alert: an operator's act (a person read it), refused
    /// to an agent's run.
    pub async fn ack_event(&self, id: i64, actor: &Actor) -> ServiceResult<StoredEvent> {
        rules::require_privileged(actor, || {
            format!(
                "agent {} may not acknowledge alerts; an operator does",
                actor.name
            )
        })?;
        let stored = self.bb.ack_event(id, actor).await?;
        self.committed(stored)
    }
}

/// How often [`ProjectService::wait_decision`] looks again.
const DECISION_POLL: Duration = Duration::from_millis(250);
