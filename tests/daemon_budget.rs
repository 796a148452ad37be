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

/// Calls the gateway until refused, then keeps running (as an agent busy
/// with other work would): the daemon must end it.
const AGENT: &str = r#"#!/usr/bin/env python3
import json, os, sys, time, urllib.error, urllib.request
base = os.environ["OPENAI_BASE_URL"].rstrip("/")
for i in range(50):
    req = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps({"model": "fake/echo", "max_tokens": 10,
                         "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=30).read()
        print(f"call {i}: ok", flush=True)
    except urllib.error.HTTPError as e:
        print(f"call {i}: HTTP {e.code} {e.read().decode()}", file=sys.stderr, flush=True)
        break
time.sleep(120)
"#;

#[test]
fn a_run_refused_for_budget_ends_and_its_task_is_blocked_without_spending_a_round() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(fake_upstream::FakeUpstream::start());
    // Each call uses 15 tokens (10 prompt, 5 completion) and reserves 15
    // (5 prompt tokens counted, 10 max output): six fit in 100.
    let config = format!(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [1]\n\
         budgets:\n  tasks: {{'*': {{tokens: 100}}}}\n\
         gateway:\n  providers:\n    - name: fake\n      base_url: {}\n",
        fake.base_url
    );
    let home = TestHome::with_config(&config, "");
    let script = home.script("agent.py", AGENT);
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
