//! The daemon's HTTP surface so far: status shape, ticker control,
//! sessions, health/readiness, metrics, and JSON errors for unknown routes.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn status_control_sessions_metrics_and_errors() {
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    let script = home.script(
        "ok.sh",
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: w\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let d = Daemon::start(&home);

    let s = d.status();
    // The document's keys, exactly as the untyped `json!` status wrote them
    // before it became `DaemonStatus` (the typed structs must not change them),
    // plus `cluster` (issue 30: `null` on files).
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .unwrap_or_else(|| panic!("an object: {v}"))
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&s),
        [
            "active_sessions",
            "cluster",
            "degraded",
            "gateway",
            "inbox",
            "inbox_pending",
            "last_tick",
            "last_tick_ms",
            "limits",
            "projects",
            "runs_started",
            "tick_interval_seconds",
            "ticker_running",
            "ticks",
            "unusable_review_protocols",
        ],
        "{s}"
    );
    assert_eq!(
        keys(&s["projects"]["p"]),
        ["active_agents", "db_size_bytes", "tasks_summary"],
        "{s}"
    );
    assert_eq!(
        keys(&s["inbox"]),
        [
            "applied",
            "compactions",
            "last_error",
            "malformed",
            "pending_bytes"
        ],
        "{s}"
    );
    assert_eq!(keys(&s["limits"]), ["max_global_agents", "max_per_agent"]);
    // `serve` always mounts the gateway: its status is embedded, never null.
    assert_eq!(
        keys(&s["gateway"]),
        [
            "admission",
            "default_provider",
            "providers",
            "settings",
            "uptime_seconds",
            "usage"
        ],
        "{s}"
    );
    assert!(s["degraded"].is_array() && s["unusable_review_protocols"].is_array());
    assert_eq!(s["tick_interval_seconds"], 1);
    let summary = &s["projects"]["p"]["tasks_summary"];
    for st in ["pending", "working", "review", "done"] {
        assert_eq!(summary[st], 0, "{summary}");
    }
    assert!(s["projects"]["p"]["db_size_bytes"].as_u64().unwrap() > 0);

    // Pausing the ticker stops scheduling; a CLI write does not start work.
    let (code, body) = d.post("/api/daemon/stop").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.status()["ticker_running"], false);
    let t = home.create_task("p", "waits for the ticker", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM session"),
        0,
        "paused ticker starts nothing"
    );
    // A manual tick works while paused…
    let (code, body) = d.post("/api/daemon/tick").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ticked\":true"), "{body}");
    // …and is answered after a tick that began after it: that tick started
    // the run the paused ticker held back (the positive control of the
    // absence above: the task was startable all along).
    assert!(
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM session") >= 1,
        "the manual tick started the waiting task's run"
    );
    // …and resuming lets the task finish.
    assert_eq!(d.post("/api/daemon/start").unwrap().0, 200);
    wait_for(Duration::from_secs(30), "the task to be done", || {
        query_i64(
            &home.db("p"),
            &format!("SELECT COUNT(*) FROM task WHERE id = '{t}' AND status = 'done'"),
        ) == 1
    });
    let (code, body) = d.get("/api/daemon/sessions").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["recent"].as_array().is_some_and(|r| !r.is_empty()), "{v}");

    assert_eq!(d.get("/health").unwrap().0, 200);
    let (code, body) = d.get("/health/ready").unwrap();
    assert_eq!(code, 200, "{body}");
    // The run is counted after its process exits, which is after `bb done`
    // marked the task done: wait for the count, not just the task.
    wait_for(Duration::from_secs(30), "the run to be counted", || {
        d.get("/metrics")
            .is_some_and(|(_, m)| m.contains("moziplus_runs_total"))
    });
    let (code, metrics) = d.get("/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "moziplus_tick_duration_seconds",
        "moziplus_runs_total",
        "moziplus_active_agents",
        "moziplus_inbox_lag_bytes",
    ] {
        assert!(metrics.contains(name), "metrics has {name}");
    }
    // The gateway is mounted in the same server and reported in the status.
    let (code, body) = d.get("/api/gateway/status").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        d.status()["gateway"].is_object(),
        "status includes the gateway"
    );
    let (code, body) = d.get("/v1/nope").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"error\""), "OpenAI-shaped error: {body}");
    let (code, body) = d.get("/api/nope").unwrap();
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/nope"),
        "{v}"
    );
    assert!(v["error"]["type"].is_string());
    d.stop();
}

#[test]
fn a_non_loopback_bind_without_a_token_is_refused() {
    let home = TestHome::with_config("", "");
    let out = home.run(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(out.code, 1, "{out}");
    let err = out.stderr.as_str();
    assert!(err.contains("api_token"), "{err}");
}

/// `moziplus pause` and `resume` switch the running daemon's ticker through
/// its routes, found from the home's configuration (here
/// `MOZI_SERVER__BIND`) or `--bind`; without a daemon they say so.
#[test]
fn pause_and_resume_reach_the_running_daemon() {
    let h = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    let d = Daemon::start(&h);
    let bind = format!("127.0.0.1:{}", d.port);
    assert_eq!(d.status()["ticker_running"], true);

    let paused = h.run_env(&["pause"], &[("MOZI_SERVER__BIND", &bind)]).ok();
    assert!(paused.starts_with("paused: no new run starts"), "{paused}");
    assert_eq!(d.status()["ticker_running"], false);
    // A pause holds: with a tick a second, none runs while paused.
    let ticks = d.ticks();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.ticks(), ticks, "a tick ran while paused");

    let resumed = h.ok(&["resume", "--bind", &bind]);
    assert_eq!(resumed, "resumed: the ticker runs");
    assert_eq!(d.status()["ticker_running"], true);
    wait_for(Duration::from_secs(10), "a tick after resume", || {
        d.ticks() > ticks
    });

    assert!(d.stop().success());
    let out = h.run(&["pause", "--bind", &bind]);
    out.fails(
        1,
        &[
            &format!("no daemon answers at {bind}"),
            "moziplus serve",
            "--bind",
        ],
    );
}

/// `moziplus logs T-n --follow` prints what the run has written, keeps
/// printing what it writes next, and exits by itself (0) when the run ends.
#[test]
fn logs_follow_prints_the_run_as_it_writes_and_ends_with_it() {
    use std::io::BufRead;
    let h = TestHome::with_config("daemon:\n  tick_interval: 1\n", "");
    let script = h.script(
        "talk.sh",
        "#!/bin/bash\necho 'first line'\nwhile [ ! -e \"$MOZI_HOME/go-on\" ]; do sleep 0.1; done\necho 'second line'\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    std::fs::write(
        h.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: w\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    h.create_project("p");
    let task = h.create_task("p", "talk", &[]);
    let d = Daemon::start(&h);
    wait_for(Duration::from_secs(30), "the run", || {
        h.bb_ok("p", &["read", &task]).contains("working")
    });
    let mut follow = h
        .command()
        .args(["logs", &task, "-p", "p", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(want) => return,
                Ok(_) => {}
                Err(e) => panic!("no {want:?} from logs --follow: {e}"),
            }
        }
    };
    until("first line");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs --follow ended while the run goes on"
    );
    std::fs::write(h.path().join("go-on"), "").unwrap();
    until("second line");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = follow.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs --follow did not end with the run"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(h.bb_ok("p", &["read", &task]).contains("done"));
    assert!(d.stop().success());
}
