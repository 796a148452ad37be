//! Admission by quota and the reserved urgent slot, in a real
//! `moziplus serve` with real agent processes.
//!
//! The limited provider here is never called: its address points at a
//! closed port, and the agents (shell scripts) make no LLM calls. What the
//! test sets is the arithmetic admission works with: the lane's rate (6 a
//! minute) and the demand assumed for an agent without history on a lane
//! that has seen no answer yet: `demand_prior` (4 a minute). So the first
//! two runs fit (0 < 6, then 4 < 6) and the third does not (8 committed, 12
//! would exceed 6 x 1.25).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Records that it started, waits until the test lets it finish, finishes.
const AGENT: &str = r#"#!/bin/bash
echo "$MOZI_TASK" >> "$MOZI_HOME/started.txt"
while [ ! -e "$MOZI_HOME/go-$MOZI_TASK" ]; do sleep 0.1; done
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

fn home(daemon_yaml: &str) -> TestHome {
    let config = format!(
        "daemon:\n  tick_interval: 1\n{daemon_yaml}gateway:\n  limiter: {{ rate_per_minute: 6 }}\n  providers:\n    - name: nvidia\n      base_url: http://127.0.0.1:9/v1\n      limited: true\n"
    );
    let home = TestHome::with_config(&config, "");
    let script = home.script("agent.sh", AGENT);
    home.command_worker(&script);
    home.create_project("p");
    home
}

fn started(home: &TestHome) -> BTreeSet<String> {
    std::fs::read_to_string(home.path().join("started.txt"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn release(home: &TestHome, task: &str) {
    std::fs::write(home.path().join(format!("go-{task}")), "").unwrap();
}

fn gateway_status(d: &Daemon) -> Value {
    let (code, body) = d.get("/api/gateway/status").expect("gateway status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn held(d: &Daemon) -> Vec<(String, String)> {
    gateway_status(d)["admission"]["held"]
        .as_array()
        .expect("admission.held")
        .iter()
        .map(|h| {
            (
                h["task"].as_str().unwrap().to_string(),
                h["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn admission_holds_runs_beyond_the_lane_and_releases_them_in_priority_order() {
    let home =
        home("  max_global_agents: 5\n  max_per_agent: 10\n  admission: { demand_prior: 4 }\n");
    let low = home.create_task("p", "low", &["--priority", "low"]);
    let normal1 = home.create_task("p", "normal one", &[]);
    let high = home.create_task("p", "high", &["--priority", "high"]);
    let normal2 = home.create_task("p", "normal two", &[]);
    let d = Daemon::start(&home);

    // High first, then the older normal: 4 + 4 = 8 committed of 6.
    wait_for(Duration::from_secs(20), "two runs started", || {
        started(&home).len() >= 2
    });
    wait_for(Duration::from_secs(10), "the held tasks listed", || {
        held(&d).len() == 2
    });
    let ticks = d.ticks();
    wait_for(Duration::from_secs(10), "three more ticks", || {
        d.ticks() >= ticks + 3
    });
    assert_eq!(started(&home), set(&[&high, &normal1]), "only two admitted");
    let held_now = held(&d);
    let held_ids: BTreeSet<String> = held_now.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(held_ids, set(&[&normal2, &low]));
    // Each held task says why where the operator looks (issue 26, item 1):
    // its waiting_for in the API and `bb read`'s "waiting for:" line.
    for task in [&normal2, &low] {
        let (code, body) = d.get(&format!("/api/projects/p/tasks/{task}")).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["waiting_for"][0]["reason"], "quota", "{task}: {v}");
        let read = home.bb_ok("p", &["read", task]);
        assert!(
            read.contains("waiting for: waiting for LLM quota: nvidia"),
            "{task}: {read}"
        );
    }
    for (task, reason) in &held_now {
        assert!(
            reason.contains("waiting for LLM quota: nvidia 8/6 per min committed"),
            "{task}: {reason}"
        );
    }
    let lanes = &gateway_status(&d)["admission"]["lanes"];
    assert_eq!(lanes[0]["lane"], "nvidia");
    assert_eq!(lanes[0]["capacity_per_minute"], 6.0);
    assert_eq!(lanes[0]["committed_per_minute"], 8.0);
    assert_eq!(lanes[0]["runs"], 2);
    let (_, metrics) = d.get("/metrics").expect("metrics");
    assert!(
        metrics.contains("moziplus_admission_held_tasks{provider=\"nvidia\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moziplus_admission_committed_per_minute{provider=\"nvidia\"} 8"),
        "{metrics}"
    );
    // Held tasks stay pending and their reason is on the board once.
    let show = home.bb_ok("p", &["read", &normal2]);
    assert!(show.contains("pending"), "{show}");
    let dump = home.dump("p");
    let held_events: Vec<&String> = dump
        .0
        .iter()
        .filter(|l| l.starts_with("event|") && l.contains("task.held"))
        .collect();
    assert_eq!(
        held_events.len(),
        2,
        "one event per held task: {held_events:?}"
    );

    // A run ends: the more urgent of the held tasks goes first.
    release(&home, &normal1);
    wait_for(
        Duration::from_secs(20),
        "the next normal task started",
        || started(&home).contains(&normal2),
    );
    let ticks = d.ticks();
    wait_for(Duration::from_secs(10), "three more ticks", || {
        d.ticks() >= ticks + 3
    });
    assert!(!started(&home).contains(&low), "low is still held");
    assert_eq!(held(&d).len(), 1);

    // Urgent work is never held for quota.
    let urgent = home.create_task("p", "urgent", &["--priority", "urgent"]);
    wait_for(Duration::from_secs(20), "the urgent task started", || {
        started(&home).contains(&urgent)
    });
    assert!(!started(&home).contains(&low), "low is still held");

    for t in [&high, &normal2, &urgent, &low] {
        release(&home, t);
    }
    wait_for(Duration::from_secs(30), "every task done", || {
        started(&home).contains(&low) && held(&d).is_empty()
    });
    d.stop();
}

#[test]
fn a_reserved_slot_starts_an_urgent_task_while_every_other_slot_is_busy() {
    let home = home(
        "  max_global_agents: 1\n  max_per_agent: 10\n  reserved_urgent_slots: 1\n  admission: { enabled: false }\n",
    );
    let first = home.create_task("p", "first", &[]);
    let second = home.create_task("p", "second", &[]);
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(20), "the first run", || {
        started(&home).contains(&first)
    });
    let urgent = home.create_task("p", "urgent", &["--priority", "urgent"]);
    wait_for(
        Duration::from_secs(20),
        "the urgent run in the reserved slot",
        || started(&home).contains(&urgent),
    );
    // The reserved slot is for urgent work only: the normal task still waits.
    let ticks = d.ticks();
    wait_for(Duration::from_secs(10), "three more ticks", || {
        d.ticks() >= ticks + 3
    });
    assert_eq!(started(&home), set(&[&first, &urgent]));
    assert!(!started(&home).contains(&second));
    release(&home, &first);
    release(&home, &urgent);
    wait_for(Duration::from_secs(20), "the second run", || {
        started(&home).contains(&second)
    });
    release(&home, &second);
    d.stop();
}

/// Two LLM calls through the gateway, then a failure: the first call takes
/// the lane's only token (its provider is a closed port), the second finds
/// none within `request_timeout` and gets the gateway's own 429.
const STARVED_AGENT: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.error, urllib.request
base = os.environ["OPENAI_BASE_URL"].rstrip("/")
for i in range(2):
    req = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps({"model": "nvidia/m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=60).read()
    except urllib.error.HTTPError as e:
        print(f"call {i}: HTTP {e.code} Retry-After {e.headers.get('Retry-After')}", file=sys.stderr)
sys.exit(1)
"#;

#[test]
fn a_run_whose_calls_the_gateway_refused_for_quota_is_not_charged_a_round() {
    let config = "daemon:\n  tick_interval: 1\n  retry_backoff: [1]\ngateway:\n  limiter: { rate_per_minute: 1, capacity: 1, floor_per_minute: 1 }\n  queue: { request_timeout: 1 }\n  retry: { max_retries: 1, base: 0.1, cap: 0.1 }\n  providers:\n    - name: nvidia\n      base_url: http://127.0.0.1:9/v1\n      limited: true\n";
    let home = TestHome::with_config(config, "");
    let script = home.script("agent.py", STARVED_AGENT);
    home.command_worker(&script);
    home.create_project("p");
    let task = home.create_task("p", "starved", &["--max-rounds", "3"]);
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(30), "the starved run to end", || {
        home.dump("p")
            .0
            .iter()
            .any(|l| l.starts_with("observation|") && l.contains("not charged"))
    });
    d.stop();
    let read = home.bb_ok("p", &["read", &task]);
    assert!(read.contains("round 1"), "still its first round: {read}");
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
