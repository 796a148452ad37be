//! The task lifecycle at library level, on a [`ManualClock`] so every time
//! comparison is deterministic: leases and their expiry, rounds and the
//! round limit, heartbeats, dependency gating and scheduling order, cycle
//! refusal, decision expiry, and "every change writes exactly one event".

mod support;

use std::sync::Arc;

use moziplus::blackboard::{
    sessions, Actor, BbError, Blackboard, CommentType, DecisionStatus, Event, EventLevel,
    ManualClock, Millis, NewDecision, NewExperience, NewSession, NewTask, ObservationLevel,
    OpenMode, Outcome, Priority, ReviewConclusion, TaskStatus, Verdict,
};
use moziplus::home::{Home, ProjectId};
use moziplus::service::{Notifier, ProjectService, ServiceError, Setback};

/// 2023-11-14T22:13:20Z — any fixed instant will do.
const T0: Millis = 1_700_000_000_000;
const MINUTE: Millis = 60_000;

struct Board {
    bb: Blackboard,
    clock: Arc<ManualClock>,
    /// Last event id already checked by [`Board::expect_events`].
    seen: i64,
    _dir: tempfile::TempDir,
}

impl Board {
    async fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let bb = Blackboard::open_with_clock(
            &dir.path().join("blackboard.db"),
            "p",
            OpenMode::Create { max_connections: 2 },
            clock.clone(),
        )
        .await
        .unwrap();
        Board {
            bb,
            clock,
            seen: 0,
            _dir: dir,
        }
    }

    /// The project service on this blackboard (whose writes wake nobody).
    fn service(&self) -> ProjectService {
        ProjectService::new(
            self.bb.clone(),
            Home::new(self._dir.path()),
            ProjectId::parse("p").unwrap(),
            Notifier::none(),
        )
    }

    async fn create(&mut self, new: NewTask) -> String {
        let id = self
            .bb
            .create_task(new, &Actor::operator("op"))
            .await
            .unwrap()
            .id;
        self.expect_events(&["task.created"]).await;
        id
    }

    /// Asserts the events written since the last check, by kind, and returns them.
    #[track_caller]
    fn expect_events<'a>(
        &'a mut self,
        kinds: &'a [&'a str],
    ) -> impl std::future::Future<Output = Vec<Event>> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let events = self.bb.events_after(self.seen, 1000).await.unwrap();
            let got: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(got, kinds, "events written (checked at {caller})");
            if let Some(last) = events.last() {
                self.seen = last.id;
            }
            // Stamped by the injected clock, in order.
            let now = self.clock_now();
            assert!(events.iter().all(|e| (T0..=now).contains(&e.created_at)));
            assert!(events
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at));
            events
        }
    }

    fn clock_now(&self) -> Millis {
        self.bb.now()
    }
}

fn task(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        ..Default::default()
    }
}

fn agent(name: &str) -> Actor {
    Actor::operator(name)
}

#[tokio::test]
async fn an_expired_lease_returns_the_task_to_pending_with_the_next_round() {
    let mut b = Board::new().await;
    let id = b.create(task("lease me")).await;
    let t =
        b.bb.claim_task(&id, &agent("a"), 10 * MINUTE)
            .await
            .unwrap();
    assert_eq!(
        (t.status, t.claimed_by.as_deref(), t.round),
        (TaskStatus::Working, Some("a"), 1)
    );
    assert_eq!(
        (t.claimed_at, t.lease_expires_at),
        (Some(T0), Some(T0 + 10 * MINUTE))
    );
    b.expect_events(&["task.claimed"]).await;

    b.clock.advance(10 * MINUTE - 1);
    assert!(
        b.service().expire_leases().await.unwrap().is_empty(),
        "expired a millisecond early"
    );
    assert_eq!(b.bb.task(&id).await.unwrap().status, TaskStatus::Working);
    b.expect_events(&[]).await;

    b.clock.advance(1);
    assert_eq!(
        b.service().expire_leases().await.unwrap(),
        vec![(id.clone(), TaskStatus::Pending)]
    );
    let t = b.bb.task(&id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.round, 2);
    assert_eq!((t.claimed_by, t.lease_expires_at), (None, None));
    assert_eq!(t.updated_at, T0 + 10 * MINUTE);
    let ev = b.expect_events(&["task.lease_expired"]).await;
    assert_eq!(ev[0].level, EventLevel::Attention);
    assert_eq!(ev[0].actor, "daemon");
    assert_eq!(ev[0].payload["next_round"], 2);
    let comments = b.bb.comments(&id, 10).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].comment_type, CommentType::System);
    assert!(
        comments[0].body.contains("lease of a expired"),
        "{}",
        comments[0].body
    );

    // Nothing left to expire; the task is ready again for anyone.
    assert!(b.service().expire_leases().await.unwrap().is_empty());
    let ready: Vec<String> =
        b.bb.ready_tasks(10, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
    assert_eq!(ready, vec![id.clone()]);
    let t = b.bb.claim_task(&id, &agent("b"), MINUTE).await.unwrap();
    assert_eq!((t.claimed_by.as_deref(), t.round), (Some("b"), 2));
}

#[tokio::test]
async fn reaching_max_rounds_fails_the_task_and_raises_an_alert() {
    let mut b = Board::new().await;
    let id = b
        .create(NewTask {
            max_rounds: Some(2),
            ..task("fragile")
        })
        .await;
    for round in 1..=2 {
        b.bb.claim_task(&id, &agent("a"), MINUTE).await.unwrap();
        b.clock.advance(MINUTE);
        let expired = b.service().expire_leases().await.unwrap();
        let want = if round == 1 {
            TaskStatus::Pending
        } else {
            TaskStatus::Failed
        };
        assert_eq!(expired, vec![(id.clone(), want)], "round {round}");
    }
    let t = b.bb.task(&id).await.unwrap();
    assert_eq!(
        (t.status, t.round, t.lease_expires_at),
        (TaskStatus::Failed, 2, None)
    );
    assert_eq!(t.finished_at, Some(b.clock_now()));
    let ev = b
        .expect_events(&[
            "task.claimed",
            "task.lease_expired",
            "task.claimed",
            "task.failed",
        ])
        .await;
    assert_eq!(ev[3].level, EventLevel::Urgent);
    let alerts = b.bb.observations(10).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].level, ObservationLevel::Alert);
    assert_eq!(alerts[0].task_id.as_deref(), Some(id.as_str()));
    assert!(
        alerts[0].body.contains("failed after 2 of 2 rounds"),
        "{}",
        alerts[0].body
    );
    // A failed task is not claimable, and nothing more expires.
    assert!(matches!(
        b.bb.claim_task(&id, &agent("a"), MINUTE).await,
        Err(BbError::IllegalTransition {
            from: TaskStatus::Failed,
            to: TaskStatus::Working,
            ..
        })
    ));
    assert!(b.service().expire_leases().await.unwrap().is_empty());

    // An operator may reopen it: one more round is granted.
    let t =
        b.bb.set_status(&id, TaskStatus::Pending, &agent("op"), "try again")
            .await
            .unwrap();
    assert_eq!(
        (t.status, t.round, t.max_rounds, t.finished_at),
        (TaskStatus::Pending, 3, 3, None)
    );
    b.expect_events(&["task.pending"]).await;
}

#[tokio::test]
async fn rejected_reviews_send_the_task_back_until_the_round_limit() {
    let mut b = Board::new().await;
    let id = b
        .create(NewTask {
            review_protocol: Some("output".into()),
            max_rounds: Some(2),
            ..task("reviewed")
        })
        .await;
    for round in 1..=2 {
        b.bb.claim_task(&id, &agent("author"), MINUTE)
            .await
            .unwrap();
        let t = b.bb.submit_task(&id, &agent("author")).await.unwrap();
        assert_eq!(t.status, TaskStatus::Review);
        b.bb.add_review(&id, &agent("critic"), Verdict::Reject, 0.9, "not yet")
            .await
            .unwrap();
        let outcome =
            b.bb.conclude_review(&id, false, &agent("daemon"), "rejected")
                .await
                .unwrap();
        let t = b.bb.task(&id).await.unwrap();
        if round == 1 {
            assert_eq!(outcome, ReviewConclusion::Rework);
            assert_eq!(
                (t.status, t.round, t.claimed_by),
                (TaskStatus::Pending, 2, None)
            );
        } else {
            assert_eq!(outcome, ReviewConclusion::Failed);
            assert_eq!((t.status, t.round), (TaskStatus::Failed, 2));
        }
    }
    b.expect_events(&[
        "task.claimed",
        "task.submitted",
        "review.added",
        "task.review_rejected",
        "task.claimed",
        "task.submitted",
        "review.added",
        "task.failed",
    ])
    .await;
    let reviews = b.bb.reviews(&id).await.unwrap();
    assert_eq!(reviews.iter().map(|r| r.round).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        b.bb.observations(10).await.unwrap()[0].level,
        ObservationLevel::Alert
    );
}

#[tokio::test]
async fn a_heartbeat_extends_the_lease() {
    let mut b = Board::new().await;
    let id = b.create(task("long job")).await;
    b.bb.claim_task(&id, &agent("a"), 10 * MINUTE)
        .await
        .unwrap();
    b.clock.advance(8 * MINUTE);
    let t = b.bb.heartbeat(&id, &agent("a"), 10 * MINUTE).await.unwrap();
    assert_eq!(t.lease_expires_at, Some(T0 + 18 * MINUTE));
    assert_eq!(t.updated_at, T0 + 8 * MINUTE);
    let ev = b.expect_events(&["task.claimed", "task.heartbeat"]).await;
    assert_eq!(ev[1].actor, "a");

    // Past the original lease: still held.
    b.clock.advance(8 * MINUTE);
    assert!(b.service().expire_leases().await.unwrap().is_empty());
    assert_eq!(
        b.bb.task(&id).await.unwrap().claimed_by.as_deref(),
        Some("a")
    );

    // Only the holder may renew.
    let err =
        b.bb.heartbeat(&id, &agent("b"), 10 * MINUTE)
            .await
            .unwrap_err();
    assert!(matches!(err, BbError::Forbidden(_)), "{err}");
    assert_eq!(
        b.bb.task(&id).await.unwrap().lease_expires_at,
        Some(T0 + 18 * MINUTE)
    );
    b.expect_events(&[]).await;

    // At the renewed expiry it goes; a late heartbeat is then a conflict.
    b.clock.advance(2 * MINUTE);
    assert_eq!(b.service().expire_leases().await.unwrap().len(), 1);
    let err =
        b.bb.heartbeat(&id, &agent("a"), 10 * MINUTE)
            .await
            .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    b.expect_events(&["task.lease_expired"]).await;
}

async fn ready_ids(bb: &Blackboard, limit: i64) -> Vec<String> {
    bb.ready_tasks(limit, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

#[tokio::test]
async fn ready_tasks_wait_for_dependencies_and_come_by_priority_then_age() {
    let mut b = Board::new().await;
    let make = |title: &'static str, priority: Priority, deps: &[&str]| NewTask {
        priority: Some(priority),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..task(title)
    };
    let specs = [
        make("low", Priority::Low, &[]),                       // T-0001
        make("normal 1", Priority::Normal, &[]),               // T-0002
        make("urgent 1", Priority::Urgent, &[]),               // T-0003
        make("high", Priority::High, &[]),                     // T-0004
        make("urgent 2", Priority::Urgent, &[]),               // T-0005
        make("needs normal 1", Priority::Normal, &["T-0002"]), // T-0006
        make("normal 3", Priority::Normal, &[]),               // T-0007
        make("needs low", Priority::Urgent, &["T-0001"]),      // T-0008
    ];
    for spec in specs {
        b.clock.advance(1000); // each task a second younger than the last
        b.create(spec).await;
    }
    assert_eq!(
        ready_ids(&b.bb, 100).await,
        ["T-0003", "T-0005", "T-0004", "T-0002", "T-0007", "T-0001"]
    );
    assert_eq!(ready_ids(&b.bb, 2).await, ["T-0003", "T-0005"]);

    // A waiting task cannot be claimed; the refusal names what it waits on.
    let err =
        b.bb.claim_task("T-0006", &agent("a"), MINUTE)
            .await
            .unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("waiting on T-0002 (pending)"),
        "{err}"
    );
    assert_eq!(
        b.bb.waiting_on("T-0006").await.unwrap(),
        [("T-0002".to_string(), "pending".to_string())]
    );

    // Working tasks leave the list; finishing the dependency releases T-0006,
    // which then sorts by its own age among the normal tasks.
    b.bb.claim_task("T-0002", &agent("a"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        ready_ids(&b.bb, 100).await,
        ["T-0003", "T-0005", "T-0004", "T-0007", "T-0001"]
    );
    b.bb.submit_task("T-0002", &agent("a")).await.unwrap();
    assert_eq!(b.bb.task("T-0002").await.unwrap().status, TaskStatus::Done);
    assert_eq!(
        ready_ids(&b.bb, 100).await,
        ["T-0003", "T-0005", "T-0004", "T-0006", "T-0007", "T-0001"]
    );

    // Only `done` releases a dependant: a cancelled dependency does not.
    b.bb.set_status("T-0001", TaskStatus::Cancelled, &agent("op"), "")
        .await
        .unwrap();
    assert!(!ready_ids(&b.bb, 100).await.contains(&"T-0008".to_string()));
    let err =
        b.bb.claim_task("T-0008", &agent("a"), MINUTE)
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("waiting on T-0001 (cancelled)"),
        "{err}"
    );
}

#[tokio::test]
async fn dependency_cycles_are_refused_through_add_dependency() {
    let mut b = Board::new().await;
    for i in 0..50 {
        b.create(task(&format!("link {i}"))).await;
    }
    // A chain T-0002 → T-0001, T-0003 → T-0002, … T-0050 → T-0049.
    for i in 2..=50 {
        let (t, d) = (format!("T-{i:04}"), format!("T-{:04}", i - 1));
        b.bb.add_dependency(&t, &d, &agent("op")).await.unwrap();
    }
    let added = b.bb.events_after(b.seen, 1000).await.unwrap();
    assert_eq!(added.len(), 49);
    assert!(added.iter().all(|e| e.kind == "task.dependency_added"));
    b.seen = added.last().unwrap().id;

    let raw = support::raw_pool(b.bb.path()).await;
    let edges = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dependency")
            .fetch_one(&raw)
            .await
            .unwrap();
        n
    };
    for (t, d) in [
        ("T-0001", "T-0050"),
        ("T-0001", "T-0002"),
        ("T-0025", "T-0040"),
        ("T-0007", "T-0007"),
    ] {
        match b.bb.add_dependency(t, d, &agent("op")).await {
            Err(BbError::Invalid(msg)) => assert!(
                msg.contains(&format!(
                    "{t} depending on {d} would create a dependency cycle"
                )),
                "{msg}"
            ),
            other => panic!("{t} → {d}: expected a cycle refusal, got {other:?}"),
        }
    }
    assert_eq!(edges().await, 49, "a refused edge was stored");

    // Not cycles: a diamond, a shortcut, and a repeat (a no-op without event).
    b.bb.add_dependency("T-0050", "T-0001", &agent("op"))
        .await
        .unwrap();
    b.bb.add_dependency("T-0040", "T-0025", &agent("op"))
        .await
        .unwrap();
    b.bb.add_dependency("T-0002", "T-0001", &agent("op"))
        .await
        .unwrap();
    assert_eq!(edges().await, 51);
    b.expect_events(&["task.dependency_added", "task.dependency_added"])
        .await;

    assert!(matches!(
        b.bb.add_dependency("T-0001", "T-0099", &agent("op")).await,
        Err(BbError::NotFound { .. })
    ));
}

#[tokio::test]
async fn unanswered_decisions_expire_as_rejected() {
    let mut b = Board::new().await;
    let op = agent("op");
    let propose = |q: &str, expires_at: Option<Millis>| NewDecision {
        question: q.into(),
        settled: false,
        expires_at,
        ..Default::default()
    };
    let expiring =
        b.bb.add_decision(propose("restart prod?", Some(T0 + 5 * MINUTE)), &op)
            .await
            .unwrap();
    let open =
        b.bb.add_decision(propose("rename the repo?", None), &op)
            .await
            .unwrap();
    let settled =
        b.bb.add_decision(
            NewDecision {
                settled: true,
                expires_at: Some(T0 + MINUTE),
                ..propose("use sqlite?", None)
            },
            &op,
        )
        .await
        .unwrap();
    assert_eq!(expiring.status, DecisionStatus::Proposed);
    assert_eq!(settled.status, DecisionStatus::Approved);
    b.expect_events(&[
        "decision.proposed",
        "decision.proposed",
        "decision.recorded",
    ])
    .await;

    b.clock.advance(5 * MINUTE - 1);
    assert_eq!(b.bb.expire_decisions().await.unwrap(), 0);
    b.expect_events(&[]).await;

    b.clock.advance(1);
    assert_eq!(b.bb.expire_decisions().await.unwrap(), 1);
    let d = b.bb.decision(expiring.id).await.unwrap();
    assert_eq!(d.status, DecisionStatus::Rejected);
    assert_eq!(d.decided_by.as_deref(), Some("daemon"));
    assert_eq!(d.decided_at, Some(T0 + 5 * MINUTE));
    assert_eq!(d.rationale, "expired without an answer");
    let ev = b.expect_events(&["decision.expired"]).await;
    assert_eq!(ev[0].level, EventLevel::Attention);
    assert_eq!(ev[0].payload["decision_id"], expiring.id);

    assert_eq!(
        b.bb.decision(open.id).await.unwrap().status,
        DecisionStatus::Proposed
    );
    assert_eq!(
        b.bb.decision(settled.id).await.unwrap().status,
        DecisionStatus::Approved
    );
    assert_eq!(b.bb.expire_decisions().await.unwrap(), 0);

    // Too late to approve it; agents may never decide.
    let err = b.bb.decide(expiring.id, true, &op, "").await.unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("already rejected by daemon"),
        "{err}"
    );
    // Who may decide is the service's rule, checked before the store.
    let err = b
        .service()
        .settle_decision(open.id, true, &Actor::session("agent"), "")
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err}");
    assert!(
        err.to_string()
            .contains("agent agent may not approve or reject decisions"),
        "{err}"
    );
    b.expect_events(&[]).await;
    b.bb.decide(open.id, true, &op, "fine").await.unwrap();
    b.expect_events(&["decision.approved"]).await;
}

/// Every state change writes exactly one event, stamped with the clock's time,
/// naming the actor and the task; refused changes write none.
#[tokio::test]
async fn every_change_writes_exactly_one_event() {
    let mut b = Board::new().await;
    let (a, op) = (agent("a"), agent("op"));
    let id = b
        .create(NewTask {
            review_protocol: Some("output".into()),
            ..task("tour")
        })
        .await;
    let other = b.create(task("prerequisite")).await;

    macro_rules! step {
        ($kind:expr, $op:expr) => {{
            b.clock.advance(1000);
            let r = $op.await.unwrap();
            let ev = b.expect_events(&[$kind]).await;
            assert_eq!(ev[0].created_at, b.clock_now(), "{} time", $kind);
            assert_updated_at_matches(&b.bb, &ev[0]).await;
            r
        }};
    }
    async fn assert_updated_at_matches(bb: &Blackboard, e: &Event) {
        // A change to a task bumps its updated_at to the event's time.
        if let Some(t) = &e.task_id {
            if e.kind.starts_with("task.") && e.kind != "task.dependency_added" {
                assert_eq!(
                    bb.task(t).await.unwrap().updated_at,
                    e.created_at,
                    "{}",
                    e.kind
                );
            }
        }
    }

    step!(
        "task.dependency_added",
        b.bb.add_dependency(&other, &id, &op)
    );
    step!("task.claimed", b.bb.claim_task(&id, &a, MINUTE));
    step!("task.heartbeat", b.bb.heartbeat(&id, &a, MINUTE));
    step!(
        "comment.added",
        b.bb.add_comment(&id, &a, CommentType::Question, "why?")
    );
    step!(
        "output.added",
        b.bb.add_output(&id, &a, "first try", None, Some("42"))
    );
    step!("task.submitted", b.bb.submit_task(&id, &a));
    step!(
        "review.added",
        b.bb.add_review(&id, &agent("r"), Verdict::Revise, 0.8, "more tests")
    );
    step!(
        "task.review_rejected",
        b.bb.conclude_review(&id, false, &Actor::daemon(), "revise")
    );
    step!("task.claimed", b.bb.claim_task(&id, &a, MINUTE));
    step!("task.released", b.bb.release_task(&id, &a, "lunch"));
    step!("task.claimed", b.bb.claim_task(&id, &a, MINUTE));
    step!("task.submitted", b.bb.submit_task(&id, &a));
    step!(
        "review.added",
        b.bb.add_review(&id, &agent("r"), Verdict::Approve, 0.95, "")
    );
    step!(
        "task.done",
        b.bb.conclude_review(&id, true, &Actor::daemon(), "approved")
    );
    step!(
        "observation.added",
        b.bb.add_observation(ObservationLevel::Warn, &a, Some(&id), "slow disk")
    );
    step!(
        "experience.added",
        b.bb.add_experience(
            NewExperience {
                task_id: Some(id.clone()),
                tags: vec!["sqlite".into()],
                lesson: "use WAL".into()
            },
            &a
        )
    );
    let d = step!(
        "decision.proposed",
        b.bb.add_decision(
            NewDecision {
                question: "ship?".into(),
                ..Default::default()
            },
            &a
        )
    );
    step!(
        "decision.rejected",
        b.bb.decide(d.id, false, &op, "not yet")
    );
    step!(
        "task.blocked",
        b.bb.set_status(&other, TaskStatus::Blocked, &op, "waiting")
    );
    step!(
        "task.pending",
        b.bb.set_status(&other, TaskStatus::Pending, &op, "")
    );
    step!("task.claimed", b.bb.claim_task(&other, &a, MINUTE));
    let token = sessions::new_token();
    let session = NewSession {
        id: "S-1".into(),
        task_id: other.clone(),
        agent: "a".into(),
        token,
        command: "x".into(),
        log_path: None,
        sandbox: None,
        daemon: None,
    };
    step!("session.started", b.bb.create_session(&session));
    step!(
        "session.ended",
        b.bb.end_session("S-1", Outcome::Failed, Some(1), None)
    );
    let claim = b.bb.task(&other).await.unwrap().claim().unwrap();
    let svc = b.service();
    step!(
        "task.run_failed",
        svc.give_back(&other, &claim, Setback::RunEnded, "run took too long")
    );
    step!("task.claimed", b.bb.claim_task(&other, &a, MINUTE));
    step!("task.failed", b.bb.fail_task(&other, &a, "gave up"));
    step!(
        "task.pending",
        b.bb.set_status(&other, TaskStatus::Pending, &op, "retry")
    );
    step!(
        "task.cancelled",
        b.bb.set_status(&other, TaskStatus::Cancelled, &op, "obsolete")
    );
    step!(
        "custom.note",
        b.bb.record_event(
            EventLevel::Daily,
            "custom.note",
            None,
            &op,
            serde_json::json!({"x": 1})
        )
    );

    // The events carry who did it and on which task.
    let all = b.bb.events_after(0, 1000).await.unwrap();
    let claimed = all.iter().find(|e| e.kind == "task.claimed").unwrap();
    assert_eq!(
        (claimed.actor.as_str(), claimed.task_id.as_deref()),
        ("a", Some(id.as_str()))
    );
    assert_eq!(b.bb.last_event_id().await.unwrap(), all.last().unwrap().id);
    // Ids only grow.
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));

    // Refused changes write nothing.
    assert!(b.bb.claim_task(&id, &a, MINUTE).await.is_err());
    assert!(b.bb.submit_task(&other, &a).await.is_err());
    assert!(b
        .bb
        .add_output(&other, &a, "late", None, None)
        .await
        .is_err());
    assert!(b
        .bb
        .add_review(&id, &agent("r"), Verdict::Approve, 2.0, "")
        .await
        .is_err());
    assert!(b
        .bb
        .add_comment("T-9999", &a, CommentType::Comment, "x")
        .await
        .is_err());
    // An agent may not use an operator's power (the service's rule).
    let err = b
        .service()
        .set_status(&id, TaskStatus::Blocked, &Actor::session("a"), "")
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err}");
    assert!(b
        .bb
        .conclude_review(&id, true, &Actor::daemon(), "")
        .await
        .is_err());
    b.expect_events(&[]).await;
}
