//! Budgets the gateway enforces on every call, before the call is sent.
//!
//! An in-process daemon (the library's `Daemon`, a real SQLite blackboard)
//! with the gateway mounted on the daemon's hooks and served on loopback;
//! the provider is a fake OpenAI-compatible upstream (standing in for
//! NVIDIA and the paid APIs, which the tests cannot reach) that records
//! every call it gets, so "nothing beyond the cap reaches the provider" is
//! checked where the provider would see it. Budget windows run on an
//! injected clock.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
#[path = "support/gateway_harness.rs"]
mod harness;
mod support;

use std::sync::Arc;
use std::time::Duration;

use moziplus::blackboard::{Actor, ManualClock, NewSession, NewTask, Priority as TaskPriority};
use moziplus::daemon::budget_book::Scope;
use moziplus::daemon::gateway_hooks::{DaemonHooks, RunKey};
use moziplus::daemon::Daemon;
use moziplus::gateway::Gateway;
use moziplus::home::Home;
use serde_json::{json, Value};
use support::TestHome;

/// 2026-12-06 10:07 UTC.
const T0: i64 = 1_796_551_620_000;
/// `{"role": "user", "content": "hi"}` counts 5 prompt tokens (3 of
/// framing, `user`, `hi`); with `max_tokens: 10` a call's worst case is 15.
const WORST: u64 = 15;

struct Rig {
    _home: TestHome,
    daemon: Daemon,
    hooks: Arc<DaemonHooks>,
    fake: fake_upstream::FakeUpstream,
    url: String,
    task: String,
}

/// A daemon whose config sets `budgets`, one project `alpha` with one task
/// and a run of agent `worker` on it holding the key `harness::RUN_KEY`.
async fn rig(home: TestHome, budgets: &str) -> Rig {
    let daemon = Daemon::new(Home::new(home.path()), Vec::new()).expect("daemon");
    daemon.projects().refresh(&daemon).await.expect("projects");
    let bb = daemon.projects().get("alpha").and_then(|s| s.bb).unwrap();
    let task = bb
        .create_task(
            NewTask {
                title: "budgeted".into(),
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
        harness::RUN_KEY.into(),
        RunKey {
            session_id: "S-1".into(),
            project: "alpha".into(),
            task: task.id.to_string(),
            agent: "worker".into(),
            priority: TaskPriority::Normal,
        },
    );
    assert!(daemon.config().budgets.has_limits(), "config: {budgets}");
    let hooks = DaemonHooks::with_clock(daemon.clone(), Arc::new(ManualClock::new(T0)));
    let fake = fake_upstream::FakeUpstream::start().await;
    let mut cfg = harness::config(vec![harness::provider("fake", &fake.base_url, false)]);
    cfg.prices = vec![moziplus::gateway::PriceConfig {
        model: "fake/*".into(),
        input: 1.0,
        output: 2.0,
        cached_input: None,
    }];
    let gateway = Gateway::new(cfg, hooks.clone(), moziplus::secrets::env_var).expect("gateway");
    let url = harness::serve(&gateway).await;
    daemon.set_gateway(gateway);
    Rig {
        _home: home,
        daemon,
        hooks,
        fake,
        url,
        task: task.id.to_string(),
    }
}

fn home_with(budgets: &str) -> TestHome {
    let home = TestHome::with_config(
        &format!("daemon:\n  tick_interval: 3600\nbudgets:\n{budgets}"),
        "agents: []\n",
    );
    home.create_project("alpha");
    home
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One chat call of the run; (status, body text).
async fn call(url: &str, model: &str, stream: bool) -> (u16, String) {
    let mut body = json!({"model": model, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    if stream {
        body["stream"] = true.into();
    }
    let resp = support::post_json(
        &harness::chat_url(url),
        &body,
        &[("authorization", &format!("Bearer {}", harness::RUN_KEY))],
    )
    .await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn task_spend(rig: &Rig) -> (u64, u64) {
    let (spent, held) = rig
        .hooks
        .budgets()
        .book
        .spent(&Scope::Task("alpha".into(), rig.task.clone()));
    (spent.tokens, held.tokens)
}

#[test]
fn non_streamed_calls_stop_at_the_task_cap_and_the_refusal_names_it() {
    let rt = runtime();
    rt.block_on(async {
        let rig = rig(home_with("  tasks: {'*': {tokens: 100}}\n"), "").await;
        let mut passed = 0;
        let refusal = loop {
            let (status, body) = call(&rig.url, "fake/echo", false).await;
            if status != 200 {
                break (status, body);
            }
            passed += 1;
            assert!(passed < 50, "the cap never refused");
        };
        // Each echo uses 15 tokens (10 prompt, 5 completion), reserving 15:
        // six fit (90 + 15 > 100 for the seventh).
        assert_eq!(passed, 6);
        assert_eq!(
            rig.fake.state.hits(),
            6,
            "the refused call never reached the provider"
        );
        assert_eq!(task_spend(&rig), (90, 0), "spent, nothing still held");
        assert_eq!(refusal.0, 402, "{}", refusal.1);
        let body: Value = serde_json::from_str(&refusal.1).unwrap();
        assert_eq!(body["error"]["type"], "budget_exceeded");
        assert_eq!(body["error"]["code"], "budget_exceeded");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "task {} of project alpha has used 90 tokens of its limit of 100 tokens",
                rig.task
            )),
            "{message}"
        );
        assert!(message.contains("up to 15 tokens more"), "{message}");
        rig.daemon.shutdown(Vec::new()).await;
    });
}

#[test]
fn a_stream_holds_its_reservation_until_it_ends() {
    let rt = runtime();
    rt.block_on(async {
        let rig = rig(home_with("  projects: {alpha: {day: {tokens: 25}}}\n"), "").await;
        // A stream of 3 chunks 400 ms apart holds its worst case (15) while
        // it runs: a second call (15 more) would pass 25 and is refused.
        let url = rig.url.clone();
        let stream = tokio::spawn(async move { call(&url, "fake/gap-400", true).await });
        let held = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if task_spend(&rig).1 == WORST {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(held.is_ok(), "the stream's reservation is held");
        let (status, body) = call(&rig.url, "fake/echo", false).await;
        assert_eq!(status, 402, "{body}");
        assert!(
            body.contains("project alpha per day has used 15 tokens of its limit of 25 tokens"),
            "{body}"
        );
        let (status, text) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(text.contains("[DONE]"), "{text}");
        // The stream's usage (7 prompt, 3 completion) is booked, then its
        // hold released: 10 + 15 fits 25 exactly.
        assert_eq!(task_spend(&rig), (10, 0));
        let (status, body) = call(&rig.url, "fake/echo", false).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(task_spend(&rig), (25, 0));
        let (status, body) = call(&rig.url, "fake/echo", true).await;
        assert_eq!(
            status, 402,
            "a refused stream is refused before it starts: {body}"
        );
        assert_eq!(rig.fake.state.hits(), 2);
        rig.daemon.shutdown(Vec::new()).await;
    });
}

#[test]
fn fifteen_concurrent_callers_overshoot_the_cap_by_at_most_one_worst_case() {
    const CAP: u64 = 1_000;
    let rt = runtime();
    rt.block_on(async {
        let rig = rig(
            home_with(&format!("  tasks: {{'*': {{tokens: {CAP}}}}}\n")),
            "",
        )
        .await;
        let callers: Vec<_> = (0..15)
            .map(|_| {
                let url = rig.url.clone();
                tokio::spawn(async move {
                    let mut ok = 0u64;
                    loop {
                        // 20 ms answers: the callers' calls overlap.
                        let (status, body) = call(&url, "fake/slow-20", false).await;
                        match status {
                            200 => ok += 1,
                            402 => return ok,
                            other => panic!("unexpected {other}: {body}"),
                        }
                    }
                })
            })
            .collect();
        let mut answered = 0;
        for c in callers {
            answered += c.await.unwrap();
        }
        let (spent, held) = task_spend(&rig);
        assert_eq!(held, 0);
        assert_eq!(spent, answered * 15, "every answered call booked once");
        assert_eq!(rig.fake.state.hits() as u64, answered);
        assert!(spent <= CAP + WORST, "spent {spent} of {CAP}");
        // And the cap was used, not refused early: another worst case
        // would not have fit.
        assert!(spent + WORST > CAP, "spent {spent} of {CAP}");
        rig.daemon.shutdown(Vec::new()).await;
    });
}

/// The official SDKs get the refusal as their own error type (an
/// `APIStatusError` with status 402), with the budget named in the parsed
/// body, on OpenAI chat, OpenAI Responses and Anthropic Messages.
#[test]
fn each_sdk_raises_its_own_error_on_a_budget_refusal() {
    let Some(py) = support::test_tool("MOZI_TEST_PYTHON") else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        // 10 tokens: no call's worst case (15 or more) fits.
        let rig = rig(home_with("  tasks: {'*': {tokens: 10}}\n"), "").await;
        let out = tokio::process::Command::new(&py)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/drive.py"))
            .arg("budget")
            .env("MOZI_GW_URL", &rig.url)
            .env("MOZI_GW_KEY", harness::RUN_KEY)
            .env("MOZI_GW_MODEL", "fake/echo")
            .output()
            .await
            .expect("run the SDK driver");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
        for (name, module) in [
            ("chat", "openai"),
            ("responses", "openai"),
            ("messages", "anthropic"),
        ] {
            let e = &r["budget"][name];
            assert_eq!(e["status"], 402, "{name}: {e}");
            assert_eq!(e["sdk_status_error"], true, "{name}: {e}");
            assert_eq!(e["module"], module, "{name}: {e}");
            let message = if name == "messages" {
                assert_eq!(e["body"]["type"], "error", "{e}");
                assert_eq!(e["body"]["error"]["type"], "billing_error", "{e}");
                e["body"]["error"]["message"].as_str()
            } else {
                assert_eq!(e["body"]["type"], "budget_exceeded", "{e}");
                e["body"]["message"].as_str()
            };
            let message = message.unwrap_or_default();
            assert!(
                message.contains("budget exceeded: task"),
                "{name}: {message}"
            );
            assert!(message.contains("limit of 10 tokens"), "{name}: {message}");
        }
        assert_eq!(rig.fake.state.hits(), 0, "nothing reached the provider");
        rig.daemon.shutdown(Vec::new()).await;
    });
}
