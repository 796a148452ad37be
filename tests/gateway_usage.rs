//! Issue 14: token usage the gateway reports goes through one batching
//! writer, and a graceful shutdown books every report before the
//! blackboards close.
//!
//! An in-process daemon (the library's `Daemon`, real SQLite blackboards of
//! two projects) with the gateway mounted on the daemon's hooks. Many tasks
//! report usage at once through the hooks the gateway calls on its request
//! path; then the daemon shuts down as `moziplus serve` does. Every token
//! must be in the sessions' rows afterwards.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use moziplus::blackboard::{Actor, NewSession, NewTask};
use moziplus::daemon::gateway_hooks::DaemonHooks;
use moziplus::daemon::Daemon;
use moziplus::gateway::{Gateway, GatewayConfig, GatewayHooks, RunAttribution, TokenUsage};
use moziplus::home::Home;
use support::{query_i64, TestHome};

const CONFIG: &str = "daemon:\n  tick_interval: 3600\n";
const PROJECTS: [&str; 2] = ["alpha", "beta"];
const SESSIONS_PER_PROJECT: usize = 4;
const REPORTERS: usize = 16;
const REPORTS_EACH: u64 = 1_000;

#[test]
fn every_usage_reported_concurrently_is_booked_after_a_graceful_shutdown() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    for p in PROJECTS {
        home.create_project(p);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (attributions, dropped) = runtime.block_on(async {
        let daemon = Daemon::new(Home::new(home.path()), Vec::new()).expect("daemon");
        daemon.projects().refresh(&daemon).await.expect("projects");
        let mut attributions = Vec::new();
        for p in PROJECTS {
            let bb = daemon.projects().get(p).and_then(|s| s.bb).expect(p);
            for i in 0..SESSIONS_PER_PROJECT {
                let task = bb
                    .create_task(
                        NewTask {
                            title: format!("t{i}"),
                            ..Default::default()
                        },
                        &Actor::operator("tester"),
                    )
                    .await
                    .unwrap();
                let session = format!("{p}-s{i}");
                bb.create_session(&NewSession {
                    id: session.clone(),
                    task_id: task.id.clone(),
                    agent: "worker".into(),
                    token: format!("token-{session}"),
                    command: "true".into(),
                    log_path: None,
                })
                .await
                .unwrap();
                attributions.push(RunAttribution {
                    session_id: session,
                    project: p.to_string(),
                    task: Some(task.id.to_string()),
                    agent: "worker".into(),
                    task_priority: None,
                    model: None,
                });
            }
        }
        let hooks = DaemonHooks::new(daemon.clone());
        let gateway = Gateway::new(GatewayConfig::default(), hooks.clone()).expect("gateway");
        daemon.set_gateway(gateway);

        // Report i of reporter r books (1 prompt, r + 1 completion) tokens
        // to session (r + i) mod n: every session gets reports from every
        // reporter, interleaved.
        let attributions = Arc::new(attributions);
        let reporters: Vec<_> = (0..REPORTERS)
            .map(|r| {
                let (hooks, attributions) = (hooks.clone(), attributions.clone());
                tokio::spawn(async move {
                    for i in 0..REPORTS_EACH {
                        let a = &attributions[(r + i as usize) % attributions.len()];
                        let usage = TokenUsage {
                            prompt_tokens: 1,
                            completion_tokens: r as u64 + 1,
                            total_tokens: r as u64 + 2,
                            model: "m".into(),
                            provider: "p".into(),
                        };
                        hooks.record_usage(a, &usage);
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for r in reporters {
            r.await.unwrap();
        }
        // Straight into shutdown: whatever the writer has not booked yet
        // must be booked by the shutdown, before the blackboards close.
        daemon.shutdown(Vec::new()).await;
        let late = &attributions[0];
        hooks.record_usage(
            late,
            &TokenUsage {
                prompt_tokens: 1_000_000,
                ..Default::default()
            },
        );
        let stats = hooks.usage().stats();
        assert_eq!(
            stats.queued.load(Ordering::Relaxed) + stats.spilled.load(Ordering::Relaxed),
            REPORTERS as u64 * REPORTS_EACH,
            "every report before the shutdown was queued or spilled"
        );
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        (attributions, stats.dropped.load(Ordering::Relaxed))
    });
    drop(runtime);
    assert_eq!(
        dropped, 1,
        "the report after the shutdown is counted as dropped"
    );

    let reports = REPORTERS as u64 * REPORTS_EACH;
    let completion: u64 = (0..REPORTERS as u64).map(|r| (r + 1) * REPORTS_EACH).sum();
    let mut booked = (0, 0);
    for p in PROJECTS {
        let db = home.db(p);
        booked.0 += query_i64(&db, "SELECT SUM(prompt_tokens) FROM session") as u64;
        booked.1 += query_i64(&db, "SELECT SUM(completion_tokens) FROM session") as u64;
    }
    assert_eq!(
        booked,
        (reports, completion),
        "every reported token is in the ledger, none twice, none after shutdown"
    );
    // And each session got exactly its own share.
    let n = attributions.len();
    for (k, a) in attributions.iter().enumerate() {
        let mut want = (0u64, 0u64);
        for r in 0..REPORTERS {
            for i in 0..REPORTS_EACH as usize {
                if (r + i) % n == k {
                    want.0 += 1;
                    want.1 += r as u64 + 1;
                }
            }
        }
        let db = home.db(&a.project);
        let got = (
            query_i64(
                &db,
                &format!(
                    "SELECT prompt_tokens FROM session WHERE id = '{}'",
                    a.session_id
                ),
            ) as u64,
            query_i64(
                &db,
                &format!(
                    "SELECT completion_tokens FROM session WHERE id = '{}'",
                    a.session_id
                ),
            ) as u64,
        );
        assert_eq!(got, want, "session {}", a.session_id);
    }
}
