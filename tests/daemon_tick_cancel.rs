//! Issue 13, defect 1: a tick cut short by its time limit never strands a
//! claimed task and never leaves an agent unsupervised.
//!
//! An in-process daemon (the library's `Daemon`, real SQLite, real agent
//! processes running the real `moziplus bb done`) is ticked under a time
//! limit swept from 0 in 1 ms steps, so the cancellation lands before, inside
//! and after the claim → brief → session row → spawn → supervision sequence.
//! After each cut the task must end up either untouched (`pending`, the cut
//! came before the claim) or worked by exactly one supervised run: never
//! `working` with no run, never a session nobody ends.

mod support;

use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, NewTask, TaskStatus};
use moziplus::daemon::{ticker, Daemon};
use moziplus::home::Home;
use support::{TestHome, BIN};

async fn count(bb: &moziplus::blackboard::Blackboard, sql: &str) -> i64 {
    let pool = raw_pool(bb.path()).await;
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
    pool.close().await;
    n
}

/// A read-only connection of the test's own to the blackboard's file: the
/// store offers no raw pool, and the test's SQL is no business of it.
async fn raw_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true),
        )
        .await
        .expect("a read-only connection to the blackboard file")
}

const CONFIG: &str =
    "daemon:\n  tick_interval: 3600\n  task_timeout: 60\n  kill_grace: 1\n  max_global_agents: 4\n  max_per_agent: 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_cancelled_at_any_point_never_strands_or_doubles_a_run() {
    let home = TestHome::new(CONFIG, "agents: []\n");
    let script = home.script("done.sh", &format!("#!/bin/sh\nexec '{BIN}' bb done\n"));
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: worker\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let d = Daemon::new(Home::new(home.path()), Vec::new()).expect("daemon");
    d.projects().refresh(&d).await.expect("projects");
    let bb = d.projects().get("p").and_then(|s| s.bb).expect("project p");
    let operator = Actor::operator("tester");

    const STEPS: u64 = 60;
    let mut untouched = 0;
    for i in 0..STEPS {
        let task = bb
            .create_task(
                NewTask {
                    title: format!("t{i}"),
                    ..Default::default()
                },
                &operator,
            )
            .await
            .unwrap();
        let limit = Duration::from_millis(i);
        let _ = tokio::time::timeout(limit, ticker::tick(&d)).await;
        // Whatever the tick began finishes on its own: wait until nothing
        // is in flight (no run, task not working, no open session) for a
        // while — a step the tick began may still be claiming or starting.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut quiet_since: Option<Instant> = None;
        loop {
            let t = bb.task(&task.id).await.unwrap();
            let running = d.runs().iter().any(|r| r.task_id == task.id);
            let open = count(&bb, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL").await;
            if !running && t.status != TaskStatus::Working && open == 0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(500) {
                    break;
                }
            } else {
                quiet_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "tick cut after {limit:?}: task {} is {} with {} run(s) in flight and {open} \
                 session(s) open 20 s later (stranded: claimed with no supervised run)",
                task.id,
                t.status,
                d.runs().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = bb.task(&task.id).await.unwrap();
        let sessions = count(
            &bb,
            &format!("SELECT COUNT(*) FROM session WHERE task_id = '{}'", task.id),
        )
        .await;
        let open_sessions = count(&bb, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL").await;
        assert_eq!(
            open_sessions, 0,
            "tick cut after {limit:?}: a session was left running with no supervisor"
        );
        match t.status {
            TaskStatus::Pending => {
                assert_eq!(sessions, 0, "an untouched task has no session");
                untouched += 1;
            }
            TaskStatus::Done => assert_eq!(
                sessions, 1,
                "tick cut after {limit:?}: task {} done by one run",
                task.id
            ),
            other => panic!("tick cut after {limit:?}: task {} ended {other}", task.id),
        }
    }
    // The untouched ones are worked by the next full ticks, once each.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&bb, "SELECT COUNT(*) FROM task WHERE status <> 'done'").await > 0 {
        assert!(Instant::now() < deadline, "every task done within 60 s");
        ticker::tick(&d).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(
            &bb,
            "SELECT COUNT(*) FROM task WHERE (SELECT COUNT(*) FROM session s WHERE s.task_id = task.id AND s.outcome = 'succeeded') <> 1"
        )
        .await,
        0,
        "every task done by exactly one successful session"
    );
    assert_eq!(
        count(&bb, "SELECT COUNT(*) FROM session").await,
        STEPS as i64,
        "no task was run twice"
    );
    eprintln!("{STEPS} cut ticks: {untouched} cut before the claim, the rest ran once");
    let problems = d.projects().problems();
    assert!(problems.is_empty(), "no project problem: {problems:?}");
}
