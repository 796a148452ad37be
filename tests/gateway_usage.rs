//! Issue 14: token usage the gateway reports goes through one batching
//! writer, and a graceful shutdown books every report before the
//! blackboards close.
//!
//! An in-process daemon (the library's `Daemon`, real SQLite blackboards of
//! two projects) with the gateway mounted on the daemon's hooks. Many tasks
//! report usage at once through the hooks the gateway calls on its request
//! path; then the daemon shuts down as `moziplus serve` does. Every token
//! must be in the sessions' rows afterwards.
//!
//! And each response is priced (`gateway.prices`) from the usage the
//! gateway saw, booked per run, provider, model and quarter hour, with the
//! CLI's own cost kept beside it. The providers are a fake OpenAI-compatible
//! upstream on loopback standing in for the paid APIs and NVIDIA.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use moziplus::blackboard::usage::USAGE_BUCKET_MS;
use moziplus::blackboard::{Actor, ManualClock, NewSession, NewTask, Priority as TaskPriority};
use moziplus::daemon::gateway_hooks::{DaemonHooks, RunKey};
use moziplus::daemon::Daemon;
use moziplus::gateway::{
    Gateway, GatewayConfig, GatewayHooks, PriceConfig, RunAttribution, TokenUsage,
};
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
                    sandbox: None,
                    daemon: None,
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
        let gateway = Gateway::new(
            GatewayConfig::default(),
            hooks.clone(),
            moziplus::secrets::env_var,
        )
        .expect("gateway");
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
                            ..Default::default()
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

fn price(model: &str, input: f64, output: f64, cached_input: Option<f64>) -> PriceConfig {
    PriceConfig {
        model: model.into(),
        input,
        output,
        cached_input,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn each_response_is_priced_from_the_usage_the_gateway_saw_and_the_cli_cost_stays_beside_it() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    home.create_project("alpha");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let daemon = Daemon::new(Home::new(home.path()), Vec::new()).expect("daemon");
        daemon.projects().refresh(&daemon).await.expect("projects");
        let bb = daemon.projects().get("alpha").and_then(|s| s.bb).unwrap();
        let task = bb
            .create_task(
                NewTask {
                    title: "priced".into(),
                    ..Default::default()
                },
                &Actor::operator("tester"),
            )
            .await
            .unwrap();
        bb.create_session(&NewSession {
            id: "S-1".into(),
            task_id: task.id.to_string(),
            agent: "worker".into(),
            token: "t".into(),
            command: "true".into(),
            log_path: None,
            sandbox: None,
            daemon: None,
        })
        .await
        .unwrap();
        daemon.add_run_key(
            "mozi-run-1".into(),
            RunKey {
                session_id: "S-1".into(),
                project: "alpha".into(),
                task: task.id.to_string(),
                agent: "worker".into(),
                priority: TaskPriority::Normal,
            },
        );
        // 2026-12-06 10:07 UTC: the first quarter hour starts at 10:00.
        let t0 = 1_796_551_620_000;
        let clock = Arc::new(ManualClock::new(t0));
        let hooks = DaemonHooks::with_clock(daemon.clone(), clock.clone());
        let fake = fake_upstream::FakeUpstream::start().await;
        let mut cfg = harness::config(vec![
            harness::provider("paid", &fake.base_url, false),
            harness::provider("nvidia", &fake.base_url, false),
            harness::provider("other", &fake.base_url, false),
        ]);
        cfg.prices = vec![
            price("paid/cached*", 2.0, 8.0, Some(0.5)),
            price("paid/*", 1.0, 4.0, None),
            price("nvidia/*", 0.0, 0.0, None),
        ];
        let gateway =
            Gateway::new(cfg, hooks.clone(), moziplus::secrets::env_var).expect("gateway");
        let url = harness::serve(&gateway).await;
        daemon.set_gateway(gateway.clone());

        let call = |model: &str, stream: bool| {
            let mut body = harness::chat(model, "hi");
            if stream {
                body["stream"] = true.into();
                body["stream_options"] = serde_json::json!({"include_usage": true});
            }
            let url = harness::chat_url(&url);
            let model = model.to_string();
            async move {
                let resp =
                    support::post_json(&url, &body, &[("authorization", "Bearer mozi-run-1")])
                        .await;
                assert_eq!(resp.status(), 200, "{model}");
                resp.text().await.unwrap()
            }
        };
        // 1,000 prompt tokens (600 cached) and 200 completion tokens at
        // $2 / $0.50 cached / $8 per million.
        call("paid/cached-a", false).await;
        // A stream's usage chunk: 7 prompt, 5 completion at $1 / $4.
        call("paid/echo", true).await;
        // NVIDIA's free tier: $0, tokens counted.
        call("nvidia/echo", false).await;
        // No price matches: tokens counted, the response counted unpriced.
        call("other/echo", false).await;
        // A quarter hour later: a line of its own.
        clock.advance(USAGE_BUCKET_MS);
        call("paid/cached-a", false).await;

        let cached_call = (400.0 * 2.0 + 600.0 * 0.5 + 200.0 * 8.0) / 1e6;
        let stream_call = (7.0 * 1.0 + 5.0 * 4.0) / 1e6;
        let want = 2.0 * cached_call + stream_call;
        let live = gateway.status().usage;
        let run = &live.by_session["S-1"];
        assert!(close(run.cost_usd, want), "{} vs {want}", run.cost_usd);
        assert_eq!(
            (run.responses, run.unpriced_responses, run.cached_tokens),
            (5, 1, 1200)
        );
        assert_eq!(run.prompt_tokens, 1000 + 7 + 10 + 10 + 1000);
        let nvidia = &live.by_model["nvidia/echo"];
        assert_eq!((nvidia.prompt_tokens, nvidia.cost_usd), (10, 0.0));
        assert_eq!(nvidia.unpriced_responses, 0, "NVIDIA is priced, at $0");

        // The run's CLI reports its own cost as the run ends (as
        // `supervise` books it): kept in `cost`, never added to the
        // gateway's figure.
        bb.add_session_usage("S-1", 0, 0, 0.25).await.unwrap();
        hooks.shutdown().await;

        let session = bb.session("S-1").await.unwrap();
        assert!(
            close(session.gateway_cost, want),
            "{}",
            session.gateway_cost
        );
        assert!(close(session.cost, 0.25), "{}", session.cost);
        assert_eq!(
            (
                session.prompt_tokens,
                session.completion_tokens,
                session.cached_tokens
            ),
            (2027, 200 + 5 + 5 + 5 + 200, 1200)
        );
        let lines = bb.usage_lines(0, i64::MAX).await.unwrap();
        let shape: Vec<_> = lines
            .iter()
            .map(|l| {
                let b = &l.booking;
                (
                    b.provider.as_str(),
                    b.model.as_str(),
                    (b.bucket_start - t0 + 7 * 60_000) / USAGE_BUCKET_MS,
                    b.responses,
                    b.unpriced,
                    b.prompt_tokens,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("nvidia", "echo", 0, 1, 0, 10),
                ("other", "echo", 0, 1, 1, 10),
                ("paid", "cached-a", 0, 1, 0, 1000),
                ("paid", "echo", 0, 1, 0, 7),
                ("paid", "cached-a", 1, 1, 0, 1000),
            ]
        );
        assert!(lines
            .iter()
            .all(|l| task.id == l.task_id.as_str() && l.agent == "worker"));
        assert!(close(
            lines.iter().map(|l| l.booking.cost).sum::<f64>(),
            want
        ));
        daemon.shutdown(Vec::new()).await;
    });
}
