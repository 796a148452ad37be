//! The one give-back: how a claim that ended without its work sends the task
//! back. Every caller names its [`Setback`]; [`decide`] alone says what that
//! costs — another round or the same one, `failed` at the round limit, and
//! how long the task waits before it may be claimed again — and
//! [`ProjectService::give_back`] has the store apply it in the transaction
//! that re-checks the claim.
//!
//! The callers: the tick's lease expiry ([`ProjectService::expire_leases`]),
//! the heartbeat policy (`daemon::heartbeat`, [`Setback::Stuck`]), the runs'
//! setbacks (`daemon::runs::setbacks`) and restart recovery
//! (`daemon::recovery`, [`Setback::RunLost`]).

use crate::blackboard::{Claim, GiveBack, GiveBackTo, Millis, Task, TaskStatus};
use crate::runtime::health;

use super::{ProjectService, ServiceResult};

/// Why a claim ended without its work, as far as it decides what the task
/// owes: a round or not, and a wait before its next claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setback<'a> {
    /// The holder's lease ran out without a heartbeat: a round. A lease
    /// renewed since it was read is left alone.
    LeaseExpired,
    /// The heartbeat policy judged the claim stuck (no progress for its
    /// category's limit): a round.
    Stuck,
    /// The run failed, timed out or could not start for a reason of its own:
    /// a round, and the next one waits `retry_backoff` (`daemon.retry_backoff`,
    /// seconds by the number of rounds used).
    RunFailed { retry_backoff: &'a [u64] },
    /// The run ended otherwise (exit 0, lost) still holding its unfinished
    /// task: a round, no wait.
    RunEnded,
    /// The run failed after the gateway refused its LLM calls for quota: the
    /// same round (not the agent's failure), but it waits `retry_backoff`.
    QuotaRefused { retry_backoff: &'a [u64] },
    /// The daemon stopped the run (shutdown), or a restarted daemon found it
    /// gone or never started: the same round, no wait.
    RunLost,
    /// The run could not start for a reason that is the machine's (runtime
    /// missing, the session row refused): the same round, no wait — the
    /// agent is held instead (`runtime::health`).
    Infrastructure,
}

impl Setback<'_> {
    /// The event of the give-back: the round's end when it costs one,
    /// `task.released` when it does not.
    fn kind(&self) -> &'static str {
        match self {
            Setback::LeaseExpired => "task.lease_expired",
            Setback::Stuck => "task.recovered_requeue",
            Setback::RunFailed { .. } | Setback::RunEnded => "task.run_failed",
            Setback::QuotaRefused { .. } | Setback::RunLost | Setback::Infrastructure => {
                "task.released"
            }
        }
    }
}

/// What `setback` does to `task` (as read under the write lock) at `now`:
/// the one rule for requeue or fail, the round and the not-before time.
/// `None` leaves the task: a lease that has not run out.
pub fn decide(setback: Setback<'_>, task: &Task, now: Millis, why: &str) -> Option<GiveBack> {
    if setback == Setback::LeaseExpired && task.lease_expires_at.is_none_or(|l| l > now) {
        return None;
    }
    let costs_round = matches!(
        setback,
        Setback::LeaseExpired | Setback::Stuck | Setback::RunFailed { .. } | Setback::RunEnded
    );
    let to = match (costs_round, task.at_round_limit()) {
        (false, _) => GiveBackTo::SameRound,
        (true, false) => GiveBackTo::NextRound,
        (true, true) => GiveBackTo::Failed,
    };
    // The wait grows with the rounds used: after round n failed, the n-th
    // step of the schedule; a round not charged waits as the one before.
    let (schedule, rounds_used) = match setback {
        Setback::RunFailed { retry_backoff } => (retry_backoff, task.round),
        Setback::QuotaRefused { retry_backoff } => (retry_backoff, task.round - 1),
        _ => (&[][..], 0),
    };
    let failures = u32::try_from(rounds_used).unwrap_or(0);
    let wait = health::backoff(schedule, failures);
    let not_before = (to != GiveBackTo::Failed && !wait.is_zero())
        .then(|| now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)));
    Some(GiveBack {
        to,
        kind: setback.kind(),
        why: why.to_string(),
        not_before,
    })
}

impl ProjectService {
    /// Gives `task` back after `setback` — only if `claim` still stands (an
    /// agent that released the task, or a newer claim, is left alone). What
    /// it costs is [`decide`]'s. Returns the new status, or `None` when the
    /// claim had ended (or its lease was renewed).
    pub async fn give_back(
        &self,
        task: &str,
        claim: &Claim,
        setback: Setback<'_>,
        why: &str,
    ) -> ServiceResult<Option<TaskStatus>> {
        let status = self
            .bb
            .give_back(task, claim, |t, now| decide(setback, t, now, why))
            .await?;
        self.committed(status)
    }

    /// Gives back every claim whose lease has run out (the tick's first
    /// step). Returns the tasks given back with their new status.
    pub async fn expire_leases(&self) -> ServiceResult<Vec<(String, TaskStatus)>> {
        let mut out = Vec::new();
        for (id, claim) in self.bb.expired_claims().await? {
            let why = format!("lease of {} expired without a heartbeat", claim.holder);
            if let Some(status) = self
                .give_back(&id, &claim, Setback::LeaseExpired, &why)
                .await?
            {
                out.push((id, status));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blackboard::{
        Actor, Blackboard, Event, ManualClock, NewTask, ObservationLevel, OpenMode,
    };
    use crate::home::Home;
    use crate::registry::ProjectId;
    use crate::service::Notifier;

    const T0: Millis = 1_700_000_000_000;
    const SECOND: Millis = 1_000;
    /// `daemon.retry_backoff`'s default.
    const BACKOFF: &[u64] = &[10, 60, 300];

    struct Fixture {
        svc: ProjectService,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    /// A service on a new blackboard with a manual clock, and a task of
    /// `max_rounds` claimed by `dev1` (in round `round`).
    async fn claimed(round: i64, max_rounds: i64) -> (Fixture, Task, Claim) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let bb = Blackboard::open_with_clock(
            &dir.path().join("blackboard.db"),
            "demo",
            OpenMode::Create { max_connections: 2 },
            clock.clone(),
        )
        .await
        .unwrap();
        let project = ProjectId::parse("demo").unwrap();
        let svc = ProjectService::new(bb, Home::new(dir.path()), project, Notifier::none());
        let agent = Actor::operator("dev1");
        let new = NewTask {
            title: "work".into(),
            max_rounds: Some(max_rounds),
            ..Default::default()
        };
        let t = svc.create_task(new, &agent, false).await.unwrap();
        let mut claim = None;
        for r in 1..=round {
            let held = svc.claim(&t.id, &agent, 60, None).await.unwrap();
            claim = held.claim();
            if r < round {
                let c = claim.clone().unwrap();
                svc.give_back(&t.id, &c, Setback::Stuck, "again")
                    .await
                    .unwrap();
            }
        }
        let task = svc.task(&t.id).await.unwrap();
        assert_eq!((task.status, task.round), (TaskStatus::Working, round));
        let fx = Fixture {
            svc,
            clock,
            _dir: dir,
        };
        (fx, task, claim.unwrap())
    }

    /// The last event written on `task`.
    async fn last_event(svc: &ProjectService, task: &str) -> Event {
        let events = svc.events_after(0, 1000).await.unwrap();
        events
            .into_iter()
            .rev()
            .find(|e| e.task_id.as_deref() == Some(task))
            .unwrap()
    }

    /// Gives the claim back after `setback`; returns the task as it is then.
    async fn give(fx: &Fixture, t: &Task, claim: &Claim, setback: Setback<'_>) -> Task {
        let status = fx
            .svc
            .give_back(&t.id, claim, setback, "why")
            .await
            .unwrap();
        let now = fx.svc.task(&t.id).await.unwrap();
        assert_eq!(status, Some(now.status));
        now
    }

    #[tokio::test]
    async fn lease_expired_costs_a_round_only_once_the_lease_ran_out() {
        let (fx, t, claim) = claimed(1, 3).await;
        // Not yet: the lease (60 s) still runs; nothing is written.
        let early = fx.svc.give_back(&t.id, &claim, Setback::LeaseExpired, "x");
        assert_eq!(early.await.unwrap(), None);
        assert_eq!(
            fx.svc.task(&t.id).await.unwrap().status,
            TaskStatus::Working
        );
        assert!(fx.svc.expire_leases().await.unwrap().is_empty());

        fx.clock.advance(61 * SECOND);
        let expired = fx.svc.expire_leases().await.unwrap();
        assert_eq!(expired, vec![(t.id.clone(), TaskStatus::Pending)]);
        let now = fx.svc.task(&t.id).await.unwrap();
        assert_eq!(
            (now.round, now.not_before, now.lease_expires_at),
            (2, None, None)
        );
        assert_eq!(last_event(&fx.svc, &t.id).await.kind, "task.lease_expired");
    }

    #[tokio::test]
    async fn stuck_costs_a_round_and_fails_at_the_limit() {
        let (fx, t, claim) = claimed(1, 2).await;
        let now = give(&fx, &t, &claim, Setback::Stuck).await;
        assert_eq!(
            (now.status, now.round, now.not_before),
            (TaskStatus::Pending, 2, None)
        );
        assert_eq!(
            last_event(&fx.svc, &t.id).await.kind,
            "task.recovered_requeue"
        );

        // Round 2 of 2: the same setback fails the task, with an alert.
        let again = fx
            .svc
            .claim(&t.id, &Actor::operator("dev1"), 60, None)
            .await;
        let claim = again.unwrap().claim().unwrap();
        let now = give(&fx, &t, &claim, Setback::Stuck).await;
        assert_eq!((now.status, now.round), (TaskStatus::Failed, 2));
        let ev = last_event(&fx.svc, &t.id).await;
        assert_eq!(ev.kind, "task.failed");
        assert_eq!(ev.payload["cause"], "task.recovered_requeue");
        let alerts = fx.svc.bb.observations(50).await.unwrap();
        assert!(alerts
            .iter()
            .any(|o| o.level == ObservationLevel::Alert && o.body.contains("failed after 2 of 2")));
    }

    #[tokio::test]
    async fn run_failed_costs_a_round_and_waits_the_backoff_of_the_rounds_used() {
        let (fx, t, claim) = claimed(2, 3).await;
        let setback = Setback::RunFailed {
            retry_backoff: BACKOFF,
        };
        let now = give(&fx, &t, &claim, setback).await;
        // Round 2 failed: the second step of the schedule, 60 s.
        assert_eq!((now.status, now.round), (TaskStatus::Pending, 3));
        assert_eq!(now.not_before, Some(fx.svc.bb.now() + 60 * SECOND));
        assert_eq!(last_event(&fx.svc, &t.id).await.kind, "task.run_failed");
        // Nobody claims it before then; at that time it is claimable.
        let dev = Actor::operator("dev1");
        let refused = fx.svc.claim(&t.id, &dev, 60, None).await.unwrap_err();
        assert!(
            refused.to_string().contains("not ready before"),
            "{refused}"
        );
        fx.clock.advance(60 * SECOND);
        fx.svc.claim(&t.id, &dev, 60, None).await.unwrap();
    }

    #[tokio::test]
    async fn run_ended_costs_a_round_without_a_wait() {
        let (fx, t, claim) = claimed(1, 3).await;
        let now = give(&fx, &t, &claim, Setback::RunEnded).await;
        assert_eq!(
            (now.status, now.round, now.not_before),
            (TaskStatus::Pending, 2, None)
        );
        assert_eq!(last_event(&fx.svc, &t.id).await.kind, "task.run_failed");
    }

    #[tokio::test]
    async fn quota_refused_keeps_the_round_but_waits() {
        let (fx, t, claim) = claimed(1, 3).await;
        let setback = Setback::QuotaRefused {
            retry_backoff: BACKOFF,
        };
        let now = give(&fx, &t, &claim, setback).await;
        assert_eq!((now.status, now.round), (TaskStatus::Pending, 1));
        assert_eq!(now.not_before, Some(fx.svc.bb.now() + 10 * SECOND));
        assert_eq!(last_event(&fx.svc, &t.id).await.kind, "task.released");
    }

    #[tokio::test]
    async fn run_lost_keeps_the_round_even_in_the_last_one() {
        let (fx, t, claim) = claimed(2, 2).await;
        let now = give(&fx, &t, &claim, Setback::RunLost).await;
        assert_eq!(
            (now.status, now.round, now.not_before),
            (TaskStatus::Pending, 2, None)
        );
        let ev = last_event(&fx.svc, &t.id).await;
        assert_eq!(
            (ev.kind.as_str(), ev.actor.as_str()),
            ("task.released", "dev1")
        );
    }

    #[tokio::test]
    async fn infrastructure_keeps_the_round_without_a_wait() {
        let (fx, t, claim) = claimed(1, 1).await;
        let now = give(&fx, &t, &claim, Setback::Infrastructure).await;
        assert_eq!(
            (now.status, now.round, now.not_before),
            (TaskStatus::Pending, 1, None)
        );
        assert_eq!(last_event(&fx.svc, &t.id).await.kind, "task.released");
    }

    /// The policy's recovery gives back only the claim it judged: after the
    /// agent released and claimed the task again, the old claim's give-back
    /// changes nothing (a stale decision never requeues a newer claim).
    #[tokio::test]
    async fn a_give_back_of_a_claim_that_ended_leaves_the_new_claim() {
        let (fx, t, judged) = claimed(1, 3).await;
        let agent = Actor::operator("dev1");
        fx.svc.release(&t.id, &agent, "back soon").await.unwrap();
        let second = fx.svc.claim(&t.id, &agent, 60, None).await.unwrap();
        assert!(second.claimed_at.unwrap() > judged.claimed_at);

        let stale = fx.svc.give_back(&t.id, &judged, Setback::Stuck, "quiet");
        assert_eq!(stale.await.unwrap(), None);
        let now = fx.svc.task(&t.id).await.unwrap();
        assert_eq!((now.status, now.round), (TaskStatus::Working, second.round));

        // Control: the standing claim is given back by the same call.
        let current = second.claim().unwrap();
        let live = fx.svc.give_back(&t.id, &current, Setback::Stuck, "quiet");
        assert_eq!(live.await.unwrap(), Some(TaskStatus::Pending));
        let now = fx.svc.task(&t.id).await.unwrap();
        assert_eq!(
            (now.status, now.round),
            (TaskStatus::Pending, second.round + 1)
        );
    }
}
