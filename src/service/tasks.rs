//! Task verbs: create, depend, claim, heartbeat, release, submit, fail, the
//! operators' transitions, and the daemon's review-round conclusions.

use super::team::{NeverStarts, TeamView};
use super::{rules, ProjectService, ServiceError, ServiceResult};
use crate::blackboard::{Actor, NewTask, ReviewConclusion, Task, TaskFilter, TaskStatus};

impl ProjectService {
    /// Creates a `pending` task with its tags and dependencies. Unless
    /// `force`, a task that can never start (unknown assignee, a kind no
    /// agent takes, unknown review protocol: [`TeamView::never_starts`]) is
    /// refused with every reason and the way to create it anyway.
    pub async fn create_task(
        &self,
        new: NewTask,
        actor: &Actor,
        force: bool,
    ) -> ServiceResult<Task> {
        let new = self.prepare_new(new, force)?;
        let task = self.bb.create_task(new, actor).await?;
        self.committed(task)
    }

    /// Creates a task exactly once for an inbox line keyed `key`: `None`
    /// when that line was already applied. Refuses as [`Self::create_task`].
    pub async fn create_task_once(
        &self,
        new: NewTask,
        actor: &Actor,
        key: &str,
        force: bool,
    ) -> ServiceResult<Option<Task>> {
        let new = self.prepare_new(new, force)?;
        let task = self.bb.create_task_once(new, actor, key).await?;
        self.committed(task)
    }

    /// A task about to be created, with the team read once: its review
    /// protocol ([`TeamView::protocol_for`]: the one named, none for
    /// `none`, else the one whose `applies_to` covers its kind), then the
    /// creation check.
    fn prepare_new(&self, mut new: NewTask, force: bool) -> ServiceResult<NewTask> {
        let team = TeamView::load(&self.home, &self.project);
        let kind = new
            .kind
            .clone()
            .unwrap_or_else(|| crate::blackboard::DEFAULT_TASK_KIND.to_string());
        new.review_protocol = team.protocol_for(new.review_protocol.as_deref(), &kind);
        refuse_with(&team, &new, force)?;
        Ok(new)
    }

    /// The one creation check every front door shares.
    pub(super) fn refuse_never_starting(&self, new: &NewTask, force: bool) -> ServiceResult<()> {
        refuse_with(&TeamView::load(&self.home, &self.project), new, force)
    }

    /// The pending tasks that can never start as the team stands, each
    /// with its reasons (doctor's warning).
    pub async fn pending_never_starting(&self) -> ServiceResult<Vec<(Task, Vec<NeverStarts>)>> {
        let team = TeamView::load(&self.home, &self.project);
        let filter = TaskFilter {
            statuses: vec![TaskStatus::Pending],
            limit: 10_000,
            ..TaskFilter::default()
        };
        let tasks = self.bb.list_tasks(&filter).await?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let why = team.task_never_starts(&t);
                (!why.is_empty()).then_some((t, why))
            })
            .collect())
    }

    /// Makes `task` wait for `depends_on` (cycles are refused).
    pub async fn add_dependency(
        &self,
        task: &str,
        depends_on: &str,
        actor: &Actor,
    ) -> ServiceResult<()> {
        self.bb.add_dependency(task, depends_on, actor).await?;
        self.committed(())
    }

    /// Claims a ready task for `actor` with a lease of `lease_secs`, if the
    /// project admits the agent (`allowed`: the project's `agents:` list).
    pub async fn claim(
        &self,
        id: &str,
        actor: &Actor,
        lease_secs: u64,
        allowed: Option<&[String]>,
    ) -> ServiceResult<Task> {
        rules::require_allowed(allowed, &actor.name, self.project.as_str())?;
        let lease = rules::lease_ms(lease_secs)?;
        let task = self.bb.claim_task(id, actor, lease).await?;
        self.committed(task)
    }

    /// Renews the lease of a task `actor` holds, to `lease_secs` from now.
    pub async fn heartbeat(&self, id: &str, actor: &Actor, lease_secs: u64) -> ServiceResult<Task> {
        let lease = rules::lease_ms(lease_secs)?;
        let task = self.bb.heartbeat(id, actor, lease).await?;
        self.committed(task)
    }

    /// Gives a held task back (`pending`, same round).
    pub async fn release(&self, id: &str, actor: &Actor, reason: &str) -> ServiceResult<Task> {
        let task = self.bb.release_task(id, actor, reason).await?;
        self.committed(task)
    }

    /// Finishes the holder's work: to `review` when the task has a review
    /// protocol, else `done`.
    pub async fn submit(&self, id: &str, actor: &Actor) -> ServiceResult<Task> {
        let task = self.bb.submit_task(id, actor).await?;
        self.committed(task)
    }

    /// Marks a task `failed` (its holder giving up, or an operator).
    pub async fn fail(&self, id: &str, actor: &Actor, reason: &str) -> ServiceResult<Task> {
        let task = self.bb.fail_task(id, actor, reason).await?;
        self.committed(task)
    }

    /// Cancel, block, unblock, reopen: operators and the daemon only.
    pub async fn set_status(
        &self,
        id: &str,
        to: TaskStatus,
        actor: &Actor,
        reason: &str,
    ) -> ServiceResult<Task> {
        rules::require_privileged(actor, || {
            format!(
                "agent {} may not set task {id} to {to}; only operators and the daemon may",
                actor.name
            )
        })?;
        let task = self.bb.set_status(id, to, actor, reason).await?;
        self.committed(task)
    }

    /// An operator's change of an open task's priority or designated
    /// assignee (`Some(None)` clears it): operators and the daemon only.
    /// Unless `force`, an assignee the task could never start with (unknown,
    /// or not on the project's team) is refused as creation refuses it.
    pub async fn update_task(
        &self,
        id: &str,
        priority: Option<crate::blackboard::Priority>,
        assignee: Option<Option<String>>,
        actor: &Actor,
        force: bool,
    ) -> ServiceResult<Task> {
        rules::require_privileged(actor, || {
            format!(
                "agent {} may not change task {id}; only operators and the daemon may",
                actor.name
            )
        })?;
        if let (Some(Some(name)), false) = (&assignee, force) {
            let task = self.bb.task(id).await?;
            let why: Vec<String> = TeamView::load(&self.home, &self.project)
                .never_starts(Some(name), &task.kind, None)
                .iter()
                .map(ToString::to_string)
                .collect();
            if !why.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "task {id} could never start with assignee {name:?}: {}; fix config/agents.yaml, or assign it anyway with \"force\": true",
                    why.join("; ")
                )));
            }
        }
        let task = self.bb.update_task(id, priority, assignee, actor).await?;
        self.committed(task)
    }

    /// Ends a review round (the daemon's verdict, see `crate::review`):
    /// approved → `done`, else the next round or `failed` at the limit.
    /// `round` must be the task's current round, so one round is concluded
    /// once; `max_rounds` (the protocol's limit) replaces the task's own.
    pub async fn conclude_review_round(
        &self,
        id: &str,
        round: Option<i64>,
        approved: bool,
        max_rounds: Option<i64>,
        actor: &Actor,
        why: &str,
    ) -> ServiceResult<ReviewConclusion> {
        let outcome = self
            .bb
            .conclude_review_round(id, round, approved, max_rounds, actor, why)
            .await?;
        self.committed(outcome)
    }

    /// The daemon's verdict on the round of `task` it read (the ticker's
    /// protocols, the distill check): concludes that round as
    /// [`conclude_review_round`](Self::conclude_review_round) does, or
    /// returns `None` when the task moved on meanwhile (another round, out of
    /// review). A verdict on a round that is over is dropped, not an error.
    pub async fn conclude_round_as_read(
        &self,
        task: &Task,
        approved: bool,
        max_rounds: Option<i64>,
        why: &str,
    ) -> ServiceResult<Option<ReviewConclusion>> {
        match self
            .conclude_review_round(
                &task.id,
                Some(task.round),
                approved,
                max_rounds,
                &Actor::daemon(),
                why,
            )
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// [`ProjectService::refuse_never_starting`] against a team already read.
fn refuse_with(team: &TeamView, new: &NewTask, force: bool) -> ServiceResult<()> {
    if force {
        return Ok(());
    }
    let why = team.new_task_never_starts(new);
    if why.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = why.iter().map(ToString::to_string).collect();
    Err(ServiceError::Invalid(format!(
        "task {:?} could never start: {}; fix config/agents.yaml or config/review_protocols/, or create it anyway with --force (API and inbox: \"force\": true)",
        new.title.trim(),
        reasons.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blackboard::{ActorKind, Blackboard, OpenMode};
    use crate::home::Home;
    use crate::registry::ProjectId;
    use crate::service::Notifier;

    /// A service on a new blackboard in a temporary home.
    async fn service() -> (tempfile::TempDir, ProjectService) {
        let dir = tempfile::tempdir().unwrap();
        let project = ProjectId::parse("demo").unwrap();
        let bb = Blackboard::open(
            &dir.path().join("blackboard.db"),
            project.as_str(),
            OpenMode::Create { max_connections: 2 },
        )
        .await
        .unwrap();
        let svc = ProjectService::new(bb, Home::new(dir.path()), project, Notifier::none());
        (dir, svc)
    }

    /// The fold of the ticker's and the distill check's "conclude the round,
    /// ignore a conflict": the first verdict concludes the round it read; a
    /// second verdict on that same read (a round that is over) is dropped
    /// and changes nothing; any other error still comes back.
    #[tokio::test]
    async fn a_verdict_on_a_round_that_is_over_is_dropped() {
        let (_dir, svc) = service().await;
        // Held the way the ticker claims for an agent.
        let writer = Actor {
            name: "writer".into(),
            kind: ActorKind::Daemon,
        };
        let new = NewTask {
            title: "reviewed work".into(),
            review_protocol: Some("pair".into()),
            max_rounds: Some(3),
            ..Default::default()
        };
        let t = svc
            .create_task(new, &Actor::operator("op"), false)
            .await
            .unwrap();
        svc.claim(&t.id, &writer, 60, None).await.unwrap();
        let read = svc.submit(&t.id, &writer).await.unwrap();
        assert_eq!(read.status, TaskStatus::Review);

        let first = svc
            .conclude_round_as_read(&read, false, None, "revise")
            .await;
        assert_eq!(first.unwrap(), Some(ReviewConclusion::Rework));
        let stale = svc
            .conclude_round_as_read(&read, true, None, "late approval")
            .await;
        assert_eq!(stale.unwrap(), None);
        let now = svc.task(&t.id).await.unwrap();
        assert_eq!(
            (now.status, now.round),
            (TaskStatus::Pending, read.round + 1)
        );

        let mut ghost = read.clone();
        ghost.id = "T-999999".into();
        let missing = svc
            .conclude_round_as_read(&ghost, true, None, "no such task")
            .await;
        assert!(!missing.unwrap_err().is_conflict());
    }
}
