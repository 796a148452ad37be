//! A run that hits its task's budget mid-run, in a real `moziplus serve`
//! with a real agent process (a script making LLM calls through the
//! gateway with its run key). The provider is a fake OpenAI-compatible
//! upstream on loopback standing in for NVIDIA, which records every call it
//! gets.

#[path = "support/fake_upstream.rs"]
mod fake_upstream;
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

/// Waits until `task` is `blocked`, the provider got `hits` calls and no
/// agent process is left.
fn wait_blocked(home: &TestHome, fake: &fake_upstream::FakeUpstream, task: &str, hits: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let read: Value = home.bb("p", &["read", task, "--json"]).json();
        if read["status"] == "blocked"
            && fake.state.hits() == hits
            && agent_processes(home.path()).is_empty()
        {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
            panic!(
                "the task was not blocked after {hits} calls: {read}\nprovider calls: {}\n{log}",
                fake.state.hits()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn line<'a>(list: &'a Value, budget: &str) -> &'a Value {
    list["budgets"]
        .as_array()
        .and_then(|b| b.iter().find(|l| l["budget"] == budget))
        .unwrap_or_else(|| panic!("no line {budget} in {list}"))
}

/// Budgets changed at run time, through `moziplus budget` (which talks to
/// the running daemon's `/api/budgets`, or writes `<home>/budgets.json`
/// when none runs): raising a task's budget unblocks it in the same round
/// and its run goes on to the new cap; the change survives a restart;
/// clearing it goes back to the configuration's cap (still crossed: the
/// task stays blocked); "no cap" unblocks it again.
#[test]
fn raising_a_budget_at_run_time_unblocks_the_task_in_the_same_round_and_survives_a_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake_upstream::FakeUpstream::start());
    // 15 tokens reserved and used per call: 6 calls fit in 100, 13 in 200.
    let config = format!(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [1]\n\
         budgets:\n  tasks: {{'*': {{tokens: 100}}}}\n\
         gateway:\n  providers:\n    - name: fake\n      base_url: {}\n",
        fake.base_url
    );
    let home = TestHome::with_config(&config, "");
    let script = home.script("agent.py", &spending_agent(0.0));
    home.command_worker(&script);
    home.create_project("p");
    let task = home.create_task("p", "spends", &["--max-rounds", "3"]);
    let budget = format!("task:p/{task}");
    let d = Daemon::start(&home);
    let bind = format!("127.0.0.1:{}", d.port);
    let cli = |args: &[&str]| -> Value {
        let mut full = vec!["budget", "--json", "--bind", &bind];
        full.extend_from_slice(args);
        home.run(&full).json()
    };
    wait_blocked(&home, &fake, &task, 6);

    // The list (the daemon's, through the API) applies `task:*` to the
    // task, with what it spent.
    let list = cli(&["list"]);
    let l = line(&list, &budget);
    assert_eq!(l["source"], "task:*", "{l}");
    assert_eq!(
        (l["limit_tokens"].as_u64(), l["used_tokens"].as_u64()),
        (Some(100), Some(90)),
        "{l}"
    );
    let (code, body) = d.get("/api/budgets").unwrap();
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(line(&api, &budget), l, "the CLI prints the API's figures");

    // Raised to 200: unblocked at once, same round, and it spends to the
    // new cap (7 more calls) before it is blocked again.
    let changed = cli(&["set", &budget, "--tokens", "200"]);
    assert_eq!(
        changed["unblocked"],
        serde_json::json!([format!("p/{task}")]),
        "{changed}"
    );
    assert_eq!(changed["budget"]["source"], "override", "{changed}");
    assert_eq!(changed["budget"]["limit_tokens"], 200, "{changed}");
    wait_blocked(&home, &fake, &task, 13);
    let read: Value = home.bb("p", &["read", &task, "--json"]).json();
    assert_eq!(read["round"], 1, "no round spent: {read}");
    let runs = home
        .dump("p")
        .0
        .iter()
        .filter(|l| l.starts_with("session|"))
        .count();
    assert_eq!(runs, 2, "a second run after the raise");
    d.stop();

    // Stored: without a daemon the CLI reads it back from the file, and
    // the ledger's spend with it.
    let stored = std::fs::read_to_string(home.path().join("budgets.json")).unwrap();
    assert!(stored.contains(&budget), "{stored}");
    let offline = cli(&["list"]);
    let l = line(&offline, &budget);
    assert_eq!(l["source"], "override", "{l}");
    assert_eq!(
        (l["limit_tokens"].as_u64(), l["used_tokens"].as_u64()),
        (Some(200), Some(195)),
        "{l}"
    );

    // A restarted daemon keeps it; clearing it goes back to `task:*` (100,
    // crossed: still blocked); no cap at all unblocks the task.
    let d = Daemon::start_env(&home, &[]);
    let bind2 = format!("127.0.0.1:{}", d.port);
    let cli = |args: &[&str]| -> Value {
        let mut full = vec!["budget", "--json", "--bind", &bind2];
        full.extend_from_slice(args);
        home.run(&full).json()
    };
    assert_eq!(line(&cli(&["list"]), &budget)["source"], "override");
    let cleared = cli(&["clear", &budget]);
    assert_eq!(cleared["unblocked"], serde_json::json!([]), "{cleared}");
    assert_eq!(cleared["budget"]["limit_tokens"], 100, "{cleared}");
    let read: Value = home.bb("p", &["read", &task, "--json"]).json();
    assert_eq!(read["status"], "blocked", "{read}");
    let free = cli(&["set", &budget, "--no-cap"]);
    assert_eq!(
        free["unblocked"],
        serde_json::json!([format!("p/{task}")]),
        "{free}"
    );
    assert_eq!(free["budget"]["limit_tokens"], Value::Null, "{free}");
    let bad = home.run(&["budget", "--bind", &bind2, "set", "task:p", "--tokens", "5"]);
    assert!(!bad.success());
    assert!(bad.stderr.contains("task:<project>/<task>"), "{bad}");
    d.stop();
    drop(rt);
}

/// A webhook receiver on loopback: every event POSTed to `/hook`, in order.
async fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let l = l.clone();
            async move {
                l.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, log)
}

#[test]
fn a_run_refused_for_budget_ends_and_its_task_is_blocked_without_spending_a_round() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake_upstream::FakeUpstream::start());
    let (hook_port, hooks) = rt.block_on(receiver());
    // Each call uses 15 tokens (10 prompt, 5 completion) and reserves 15
    // (5 prompt tokens counted, 10 max output): six fit in 100.
    let config = format!(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [1]\n\
         budgets:\n  tasks: {{'*': {{tokens: 100}}}}\n\
         notifications:\n  webhooks:\n    - url: http://127.0.0.1:{hook_port}/hook\n      levels: [attention]\n\
         gateway:\n  providers:\n    - name: fake\n      base_url: {}\n",
        fake.base_url
    );
    let home = TestHome::with_config(&config, "");
    let script = home.script("agent.py", &spending_agent(0.0));
    home.command_worker(&script);
    home.create_project("p");
    let task = home.create_task("p", "spends", &["--max-rounds", "3"]);
    let d = Daemon::start(&home);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let read: Value = home.bb("p", &["read", &task, "--json"]).json();
        if read["status"] == "blocked" {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
            panic!(
                "the task was not blocked: {read}\nprovider calls: {}\n{log}",
                fake.state.hits()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The run ended although the agent would have slept on: no run is left.
    wait_for(Duration::from_secs(20), "the run to end", || {
        agent_processes(home.path()).is_empty()
    });
    let read = home.bb_ok("p", &["read", &task]);
    // It says why it waits (issue 26, item 1): the budget, in `bb read` and
    // the API's waiting_for.
    assert!(
        read.contains("waiting for: blocked: budget: budget exceeded: task"),
        "{read}"
    );
    let (_, body) = d.get(&format!("/api/projects/p/tasks/{task}")).unwrap();
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["waiting_for"][0]["reason"], "budget", "{detail}");
    // The webhook got the soft threshold exactly once: the task's block,
    // a later event, arrived after it, and nothing repeated it.
    wait_for(Duration::from_secs(20), "the task.blocked webhook", || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task.blocked")
    });
    let soft_hooks: Vec<Value> = hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "budget.soft_threshold")
        .cloned()
        .collect();
    assert_eq!(soft_hooks.len(), 1, "{soft_hooks:?}");
    assert_eq!(soft_hooks[0]["task_id"], task.as_str(), "{soft_hooks:?}");
    assert_eq!(soft_hooks[0]["payload"]["spent"], 90.0, "{soft_hooks:?}");
    assert_eq!(soft_hooks[0]["payload"]["limit"], 100.0, "{soft_hooks:?}");
    d.stop();
    assert_eq!(
        fake.state.hits(),
        6,
        "nothing beyond the cap reached the provider"
    );
    assert!(read.contains("round 1"), "still its first round: {read}");
    let dump = home.dump("p");
    let blocked = dump
        .0
        .iter()
        .find(|l| l.starts_with("event|") && l.contains("task.blocked"))
        .unwrap_or_else(|| panic!("a task.blocked event: {:?}", dump.0));
    assert!(
        blocked.contains("budget: budget exceeded: task"),
        "{blocked}"
    );
    assert!(
        blocked.contains("used 90 tokens of its limit of 100 tokens"),
        "{blocked}"
    );
    assert!(
        dump.0
            .iter()
            .any(|l| l.starts_with("observation|") && l.contains("ended: budget")),
        "{:?}",
        dump.0
    );
    // The soft threshold (80 of 100) was reported once: event and observation.
    let soft: Vec<_> = dump
        .0
        .iter()
        .filter(|l| l.starts_with("event|") && l.contains("budget.soft_threshold"))
        .collect();
    assert_eq!(soft.len(), 1, "{soft:?}");
    assert!(
        dump.0
            .iter()
            .any(|l| l.starts_with("observation|") && l.contains("passed 80% of its limit")),
        "{:?}",
        dump.0
    );
    drop(rt);
}
