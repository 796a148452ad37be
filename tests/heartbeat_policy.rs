//! The heartbeat policy on a controlled clock (`ManualClock`): nudges after
//! `suspect_after`, recovery after `recover_after` with the creator notified,
//! dependency-wait notices — each exactly once, per the agent's category.

use std::sync::Arc;

use moziplus::blackboard::{
    Actor, ActorKind, Blackboard, ManualClock, NewTask, OpenMode, TaskStatus,
};
use moziplus::config::agents::AgentsFile;
use moziplus::daemon::heartbeat::{self, HeartbeatReport};
use moziplus::daemon::runs::RunInfo;
use moziplus::home::{Home, ProjectId};
use moziplus::service::{Notifier, ProjectService};

const MIN: i64 = 60_000;

/// The policy as the ticker runs it: through the project's service, whose
/// writes wake nobody here.
async fn check(
    bb: &Blackboard,
    agents: &AgentsFile,
    runs: &[RunInfo],
) -> Result<HeartbeatReport, moziplus::daemon::ticker::TickError> {
    let home = Home::new(bb.path().parent().unwrap());
    let project = ProjectId::parse(bb.project()).unwrap();
    let service = ProjectService::new(bb.clone(), home, project, Notifier::none());
    heartbeat::check(&service, agents, runs).await
}

fn agents() -> AgentsFile {
    serde_yaml_ng::from_str(
        "agents:\n  - id: dev1\n    runtime: demo\n    category: dev\n  - id: hf1\n    runtime: demo\n    category: high-frequency\n",
    )
    .unwrap()
}

async fn board() -> (tempfile::TempDir, Blackboard, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let bb = Blackboard::open_with_clock(
        &dir.path().join("blackboard.db"),
        "p",
        OpenMode::Create { max_connections: 2 },
        clock.clone(),
    )
    .await
    .unwrap();
    (dir, bb, clock)
}

fn task(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        ..Default::default()
    }
}

async fn events(bb: &Blackboard, kind: &str) -> usize {
    bb.events_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

#[tokio::test]
async fn quiet_work_is_nudged_once_then_recovered_with_the_creator_notified() {
    let (_dir, bb, clock) = board().await;
    let creator = Actor::operator("alice");
    let t = bb.create_task(task("slow"), &creator).await.unwrap();
    let dev = Actor {
        name: "dev1".into(),
        kind: ActorKind::Daemon,
    };
    bb.claim_task(&t.id, &dev, 24 * 60 * MIN).await.unwrap();
    let agents = agents();

    clock.advance(29 * MIN);
    assert!(
        check(&bb, &agents, &[]).await.unwrap().nudged.is_empty(),
        "dev: not suspect before 30 min"
    );
    clock.advance(2 * MIN);
    assert_eq!(
        check(&bb, &agents, &[]).await.unwrap().nudged,
        vec![t.id.clone()]
    );
    clock.advance(5 * MIN);
    assert!(
        check(&bb, &agents, &[]).await.unwrap().nudged.is_empty(),
        "one nudge per quiet spell"
    );
    assert_eq!(events(&bb, "task.suspect").await, 1);

    // Progress (a heartbeat) resets the spell; a new quiet spell is nudged again.
    bb.heartbeat(&t.id, &Actor::operator("dev1"), 24 * 60 * MIN)
        .await
        .unwrap();
    clock.advance(31 * MIN);
    assert_eq!(check(&bb, &agents, &[]).await.unwrap().nudged.len(), 1);

    clock.advance(15 * MIN);
    let r = check(&bb, &agents, &[]).await.unwrap();
    assert_eq!(
        r.recovered,
        vec![t.id.clone()],
        "recovered after 45 min without progress"
    );
    let after = bb.task(&t.id).await.unwrap();
    assert_eq!(after.status, TaskStatus::Pending);
    assert_eq!(after.round, 2);
    assert_eq!(after.claimed_by, None);
    let recovered = bb
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "task.recovered")
        .unwrap();
    assert_eq!(
        recovered.payload["notify"], "alice",
        "the creator is notified"
    );
    let comments = bb.comments(&t.id, 50).await.unwrap();
    assert!(
        comments
            .iter()
            .any(|c| c.body.contains("@alice") && c.body.contains("recovered")),
        "{comments:?}"
    );
}

#[tokio::test]
async fn high_frequency_agents_have_shorter_limits() {
    let (_dir, bb, clock) = board().await;
    let t = bb
        .create_task(task("fast"), &Actor::operator("bob"))
        .await
        .unwrap();
    bb.claim_task(
        &t.id,
        &Actor {
            name: "hf1".into(),
            kind: ActorKind::Daemon,
        },
        24 * 60 * MIN,
    )
    .await
    .unwrap();
    clock.advance(21 * MIN);
    assert_eq!(
        check(&bb, &agents(), &[]).await.unwrap().nudged.len(),
        1,
        "high-frequency: suspect after 20 min"
    );
    clock.advance(10 * MIN);
    assert_eq!(
        check(&bb, &agents(), &[]).await.unwrap().recovered.len(),
        1,
        "high-frequency: recover after 30 min"
    );
}

#[tokio::test]
async fn a_long_dependency_wait_notifies_the_dependencys_agent_once() {
    let (_dir, bb, clock) = board().await;
    let creator = Actor::operator("carol");
    let dep = bb.create_task(task("upstream"), &creator).await.unwrap();
    let waiting = bb
        .create_task(
            NewTask {
                title: "downstream".into(),
                depends_on: vec![dep.id.clone()],
                ..Default::default()
            },
            &creator,
        )
        .await
        .unwrap();
    bb.claim_task(
        &dep.id,
        &Actor {
            name: "dev1".into(),
            kind: ActorKind::Daemon,
        },
        24 * 60 * MIN,
    )
    .await
    .unwrap();
    // Keep the upstream task alive with heartbeats so only the wait rule fires.
    for _ in 0..4 {
        clock.advance(25 * MIN);
        bb.heartbeat(&dep.id, &Actor::operator("dev1"), 24 * 60 * MIN)
            .await
            .unwrap();
        let r = check(&bb, &agents(), &[]).await.unwrap();
        assert!(r.dependency_notices.is_empty(), "not before 2 h");
        assert!(r.recovered.is_empty());
    }
    clock.advance(25 * MIN); // 125 min
    let r = check(&bb, &agents(), &[]).await.unwrap();
    assert_eq!(
        r.dependency_notices,
        vec![(waiting.id.clone(), dep.id.clone())]
    );
    bb.heartbeat(&dep.id, &Actor::operator("dev1"), 24 * 60 * MIN)
        .await
        .unwrap();
    clock.advance(10 * MIN);
    assert!(
        check(&bb, &agents(), &[])
            .await
            .unwrap()
            .dependency_notices
            .is_empty(),
        "notified once"
    );
    let notice = bb.comments(&dep.id, 50).await.unwrap();
    assert!(
        notice
            .iter()
            .any(|c| c.body.contains("@dev1") && c.body.contains(&waiting.id)),
        "{notice:?}"
    );
}
