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
//!
//! Issue 14: manual ticks (`POST /api/daemon/tick`) go through the ticker
//! loop, so they never overlap the loop's own ticks.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, NewTask, TaskStatus};
use moziplus::daemon::{ticker, Daemon};
use moziplus::home::Home;
use support::{TestHome, BIN};

async fn count(bb: &moziplus::blackboard::Blackboard, sql: &str) -> i64 {
    let pool = support::raw_pool(bb.path()).await;
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
    pool.close().await;
    n
}

const CONFIG: &str =
    "daemon:\n  tick_interval: 3600\n  task_timeout: 60\n  kill_grace: 1\n  max_global_agents: 4\n  max_per_agent: 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_cancelled_at_any_point_never_strands_or_doubles_a_run() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    let script = home.script("done.sh", &format!("#!/bin/sh\nexec '{BIN}' bb done\n"));
    // `workspace`: this in-process daemon serves no sandbox socket (`serve`
    // binds it), so the default `auto` would refuse every run here.
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: worker\n    runtime: command\n    permissions: workspace\n    command: [\"{}\"]\n",
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

/// Counts ticks and the ticks that began while another was still running.
/// At the start of a tick (the daemon's tick hook), the ticks begun before
/// it and the ticks ended (`TickStats::ticks`, recorded as a tick's last
/// step) must be equal; otherwise this tick overlaps one still running.
#[derive(Default)]
struct OverlapProbe {
    begun: AtomicUsize,
    overlaps: AtomicUsize,
}

impl OverlapProbe {
    /// The hook: count, compare, then hold the tick for `slow`.
    fn hook(self: &Arc<Self>, d: &Daemon, slow: Duration) -> moziplus::daemon::TickHook {
        let (probe, d) = (self.clone(), d.clone());
        Arc::new(move || {
            let before = probe.begun.fetch_add(1, Ordering::SeqCst) as u64;
            if before > d.tick_stats().ticks {
                probe.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(tokio::time::sleep(slow))
        })
    }
    fn begun(&self) -> usize {
        self.begun.load(Ordering::SeqCst)
    }
    fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }
}

/// Issue 14: `POST /api/daemon/tick` ran `ticker::tick` beside the loop's
/// own tick, with no lock. Now a manual tick is a request to the loop. Every
/// tick is made slow (300 ms, the tick hook); while the loop's first tick
/// runs, manual ticks are fired over real HTTP (the daemon's own router and
/// accept loop on loopback) and through `Daemon::tick_now`: none may start
/// while another tick runs, each is answered only after a tick that began
/// after it, and they share ticks rather than queueing one each. Positive
/// control, same test: two direct `ticker::tick` calls at once (what the
/// route used to do) are seen overlapping by the same probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_ticks_during_a_slow_tick_never_overlap() {
    const SLOW: Duration = Duration::from_millis(300);
    const HTTP_TICKS: usize = 4;
    const API_TICKS: usize = 4;
    let home = TestHome::with_config("daemon:\n  tick_interval: 3600\n", "agents: []\n");
    home.create_project("p");
    let d = Daemon::new(Home::new(home.path()), Vec::new()).expect("daemon");
    let probe = Arc::new(OverlapProbe::default());
    d.set_tick_hook(probe.hook(&d, SLOW));
    let handles = d.start().await.expect("daemon start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = moziplus::http::serve::Limits::new(&d.config().server, 1024);
    let mut stop = d.shutdown_signal();
    let server = tokio::spawn(moziplus::http::serve::serve(
        listener,
        moziplus::http::router(d.clone()),
        limits,
        async move {
            let _ = stop.changed().await;
        },
    ));

    // The loop ticks once at start; fire while that tick is in its slow part.
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe.begun() == 0 {
        assert!(Instant::now() < deadline, "the loop's first tick began");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fired_during = d.tick_stats().ticks;
    let mut http = Vec::new();
    for _ in 0..HTTP_TICKS {
        http.push(tokio::task::spawn_blocking(move || {
            support::http(port, "POST", "/api/daemon/tick")
        }));
    }
    let mut api = Vec::new();
    for _ in 0..API_TICKS {
        let (d, probe) = (d.clone(), probe.clone());
        api.push(tokio::spawn(async move {
            let begun_before = probe.begun();
            d.tick_now().await.expect("the ticker answers");
            // Answered after a tick that began after the request ended.
            (begun_before, d.tick_stats().ticks as usize)
        }));
    }
    for h in http {
        let (code, body) = h.await.unwrap().expect("POST /api/daemon/tick answered");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ticked"], true, "{body}");
    }
    for h in api {
        let (begun_before, ended_by_reply) = h.await.unwrap();
        assert!(
            ended_by_reply > begun_before,
            "a manual tick is answered by a tick that began after it: {begun_before} begun \
             before the request, {ended_by_reply} ended at the reply"
        );
    }
    let ticks = d.tick_stats().ticks;
    assert_eq!(
        probe.overlaps(),
        0,
        "a tick began while another ran ({} ticks begun)",
        probe.begun()
    );
    assert!(
        ticks > fired_during,
        "the manual ticks ran ({ticks} ticks, {fired_during} before them)"
    );
    // Requests that arrive during one tick share the next: far fewer ticks
    // than requests (each would need its own if they queued one by one).
    assert!(
        (ticks as usize) < 1 + HTTP_TICKS + API_TICKS,
        "{} manual ticks took {ticks} ticks: they were not coalesced",
        HTTP_TICKS + API_TICKS
    );

    // Paused, a manual tick still ticks (the control route always did).
    d.pause_ticker();
    let before = d.tick_stats().ticks;
    d.tick_now().await.expect("tick while paused");
    assert_eq!(d.tick_stats().ticks, before + 1, "one tick while paused");

    d.shutdown(handles).await;
    server.await.unwrap();
    // With the loop gone a manual tick fails at once instead of hanging.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), d.tick_now())
            .await
            .expect("tick_now returns after shutdown")
            .is_err(),
        "no ticker, no tick"
    );

    // Positive control: two ticks around the loop do overlap, and the
    // probe sees it.
    tokio::join!(ticker::tick(&d), ticker::tick(&d));
    assert!(
        probe.overlaps() >= 1,
        "the probe detects two ticks run at once"
    );
}
