//! Every waiting task says why (issue 26, item 1), with the daemon's own
//! reasons: a real `moziplus serve`, real agent processes (`command`
//! runtime), the API over loopback and the real `bb` CLI.
//!
//! One home shows each reason: an agent held back after an infrastructure
//! failure (its program does not exist), a task whose dependency waits, a
//! kind no agent takes, an agent busy with its one run, the paused daemon,
//! and the daemon not running at all.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{wait_for, Daemon, TestHome};

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 120\n  kill_grace: 1\n  max_global_agents: 5\n  max_per_agent: 1\n  retry_backoff: [600]\n";

const STUCK_AGENT: &str = "#!/bin/bash\necho 'reading the spec'\nexec sleep 1000\n";

fn api_task(d: &Daemon, id: &str) -> Value {
    let (code, body) = d
        .get(&format!("/api/projects/p/tasks/{id}"))
        .expect("task detail");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("task JSON")
}

/// `waiting_for` of a task as (reason, text) pairs.
fn reasons(v: &Value) -> Vec<(String, String)> {
    v["waiting_for"]
        .as_array()
        .unwrap_or_else(|| panic!("no waiting_for in {v}"))
        .iter()
        .map(|w| {
            (
                w["reason"].as_str().unwrap_or_default().to_string(),
                w["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn has(v: &[(String, String)], reason: &str) -> Option<String> {
    v.iter().find(|(r, _)| r == reason).map(|(_, t)| t.clone())
}

/// The "waiting for:" line of `bb read T-n`.
fn read_line(h: &TestHome, id: &str) -> String {
    h.bb_ok("p", &["read", id])
        .lines()
        .find(|l| l.trim_start().starts_with("waiting for:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// The "waiting for:" line under task `id` in `bb read`'s summary.
fn summary_reason(summary: &str, id: &str) -> String {
    let mut lines = summary.lines();
    lines
        .find(|l| l.starts_with(&format!("  {id} ")))
        .unwrap_or_else(|| panic!("{id} in {summary}"));
    lines
        .next()
        .filter(|l| l.trim_start().starts_with("waiting for:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn every_waiting_task_says_why_in_the_api_and_the_cli() {
    let h = TestHome::with_config(CONFIG, "");
    let stuck = h.script("stuck.sh", STUCK_AGENT);
    // Proposes a decision for its task, then waits.
    let asker = h.script(
        "asker.sh",
        "#!/bin/bash\n\"$MOZI_BIN\" bb decide --question 'which db?' --task \"$MOZI_TASK\" --propose\nexec sleep 1000\n",
    );
    std::fs::write(
        h.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: ghost\n    runtime: command\n    kinds: [ghost]\n    command: [\"/nonexistent/agent-binary\"]\n  - id: slow\n    runtime: command\n    kinds: [slow]\n    command: [\"{}\"]\n  - id: asker\n    runtime: command\n    kinds: [ask]\n    command: [\"{}\"]\n",
            stuck.display(),
            asker.display()
        ),
    )
    .unwrap();
    h.create_project("p");
    let held = h.create_task("p", "needs the ghost", &["--kind", "ghost"]);
    let after = h.create_task("p", "after it", &["--kind", "ghost", "--depends-on", &held]);
    let design = h.create_task("p", "a design", &["--kind", "design", "--force"]);
    let slow1 = h.create_task("p", "slow one", &["--kind", "slow"]);
    let slow2 = h.create_task("p", "slow two", &["--kind", "slow"]);

    // Without a daemon, a ready task says so.
    assert_eq!(
        read_line(&h, &slow1),
        "waiting for: the daemon: none is running on this home (`moziplus serve`)"
    );

    let d = Daemon::start(&h);
    // The ghost's program does not exist: an infrastructure failure holds
    // the agent back for the backoff, and the task says until when.
    wait_for(Duration::from_secs(30), "the held-back reason", || {
        has(&reasons(&api_task(&d, &held)), "agent_held").is_some()
    });
    let v = api_task(&d, &held);
    let text = has(&reasons(&v), "agent_held").unwrap();
    assert!(
        text.starts_with("agent ghost, held back until ") && text.contains(" after 1 failure: "),
        "{text}"
    );
    let until = v["waiting_for"][0]["until"].as_str().expect("until");
    assert!(text.contains(until), "{text} names {until}");
    // The dashboard's poll: the same reasons by task id.
    let (_, body) = d.get("/api/projects/p/waiting").unwrap();
    let waiting: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        waiting["waiting"][&held][0]["reason"], "agent_held",
        "{waiting}"
    );

    // The list carries the same field: a dependency (named), a kind no
    // agent takes, an agent busy with its one run.
    wait_for(Duration::from_secs(30), "one slow task to run", || {
        let (_, body) = d.get("/api/projects/p/tasks").unwrap();
        let list: Value = serde_json::from_str(&body).unwrap();
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "working")
    });
    let (_, body) = d.get("/api/projects/p/tasks").unwrap();
    let list: Value = serde_json::from_str(&body).unwrap();
    let by_id = |id: &str| {
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in the list"))
    };
    assert_eq!(
        has(&reasons(&by_id(&after)), "dependencies").as_deref(),
        Some(format!("dependencies {held} (pending)").as_str())
    );
    let no_agent = has(&reasons(&by_id(&design)), "no_agent").unwrap_or_default();
    assert!(
        no_agent.starts_with("no agent takes kind \"design\" (kinds taken: ask, ghost, slow)"),
        "{no_agent}"
    );
    let (running, waiting) = if by_id(&slow1)["status"] == "working" {
        (slow1.clone(), slow2.clone())
    } else {
        (slow2.clone(), slow1.clone())
    };
    assert!(
        reasons(&by_id(&running)).is_empty(),
        "a working task waits for nothing"
    );
    // The busy reason comes with the tick after the start.
    wait_for(Duration::from_secs(30), "the busy reason", || {
        has(&reasons(&api_task(&d, &waiting)), "agent_busy").is_some()
    });
    assert_eq!(
        has(&reasons(&api_task(&d, &waiting)), "agent_busy").as_deref(),
        Some("a free agent: slow busy (1 run each, daemon.max_per_agent)")
    );

    // The Agents view (issue 26, item 5): the ghost held back with its last
    // error, the slow agent running its task with its "doing now" line.
    wait_for(Duration::from_secs(30), "the slow agent's activity", || {
        let (_, body) = d.get("/api/agents").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["agents"][1]["activity"] == "reading the spec"
    });
    let (_, body) = d.get("/api/agents").unwrap();
    let agents: Value = serde_json::from_str(&body).unwrap();
    let ghost = &agents["agents"][0];
    assert_eq!(ghost["id"], "ghost", "{agents}");
    assert_eq!(ghost["runtime"], "command");
    assert_eq!(ghost["permissions"], "workspace");
    assert_eq!(ghost["state"], "held", "{ghost}");
    let state = ghost["state_text"].as_str().unwrap();
    assert!(state.starts_with("held back on p until "), "{state}");
    assert_eq!(ghost["held"][0]["until"].as_str(), Some(until), "{ghost}");
    assert_eq!(ghost["runs_today"], 1, "{ghost}");
    assert_eq!(ghost["last_error"]["task"], held.as_str(), "{ghost}");
    assert_eq!(ghost["last_error"]["outcome"], "failed", "{ghost}");
    assert!(
        ghost["last_error"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("infrastructure failure: no round counted"),
        "{ghost}"
    );
    let slow = &agents["agents"][1];
    assert_eq!(slow["state"], "running", "{slow}");
    assert_eq!(slow["state_text"], format!("running {running} (p)"));
    assert_eq!(slow["running"][0]["task"], running.as_str());
    assert_eq!(slow["runs_today"], 1, "{slow}");
    assert!(slow["last_error"].is_null(), "{slow}");

    // Active sessions (issue 26, item 6): each with its task's title; the
    // run whose agent waits on its decision says so instead of "working".
    let asked = h.create_task("p", "needs a decision", &["--kind", "ask"]);
    let session_of = |task: &str| -> Option<Value> {
        let (_, body) = d.get("/api/daemon/sessions").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["active"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_id"] == task)
            .cloned()
    };
    wait_for(
        Duration::from_secs(30),
        "the asker waiting on its decision",
        || session_of(&asked).is_some_and(|r| r["state"] == "waiting"),
    );
    let n = support::query_i64(&h.db("p"), "SELECT MAX(id) FROM decision");
    let r = session_of(&asked).unwrap();
    assert_eq!(r["state_text"], format!("waiting on decision D{n}"), "{r}");
    assert_eq!(r["task_title"], "needs a decision", "{r}");
    let r = session_of(&running).unwrap();
    assert_eq!(r["state"], "working", "{r}");
    assert!(
        r["task_title"].as_str().unwrap().starts_with("slow "),
        "{r}"
    );
    assert_eq!(r["activity"], "reading the spec", "{r}");
    // The task says the same (its run waits on the decision).
    assert_eq!(
        has(&reasons(&api_task(&d, &asked)), "decision").as_deref(),
        Some(format!("decision D{n} (`bb decision approve|reject`)").as_str())
    );

    // The CLI reads the daemon's reasons too.
    assert!(
        read_line(&h, &held).starts_with("waiting for: agent ghost, held back until "),
        "{}",
        read_line(&h, &held)
    );
    let table = h.bb_ok("p", &["list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.ends_with("WAITING FOR"), "{table}");
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row(&held).contains("agent ghost, held back until"),
        "{table}"
    );
    assert!(
        row(&after).ends_with(&format!("dependencies {held} (pending)")),
        "{table}"
    );
    assert!(row(&running).trim_end().ends_with(" -"), "{table}");
    let json: Value = serde_json::from_str(&h.bb_ok("p", &["list", "--json"])).unwrap();
    let listed = json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == design.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["waiting_for"][0]["reason"], "no_agent");

    // `bb read`'s summary: a task ready by the board that still waits is
    // listed apart from the ready ones, with why (it listed both as ready).
    let summary = h.bb_ok("p", &["read"]);
    let held_from = summary
        .find("waiting (dependencies done, but held):")
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        summary.find(&format!("  {design} ")).unwrap() > held_from,
        "{summary}"
    );
    assert!(
        summary_reason(&summary, &design)
            .starts_with("waiting for: no agent takes kind \"design\""),
        "{summary}"
    );
    assert_eq!(
        summary_reason(&summary, &waiting),
        "waiting for: a free agent: slow busy (1 run each, daemon.max_per_agent)",
        "{summary}"
    );
    let json: Value = serde_json::from_str(&h.bb_ok("p", &["read", "--json"])).unwrap();
    assert_eq!(json["waiting"][&design][0]["reason"], "no_agent", "{json}");
    assert_eq!(
        json["waiting"][&waiting][0]["reason"], "agent_busy",
        "{json}"
    );

    // Paused: every pending task says so, in the API and the CLI; the
    // daemon's older reasons are not shown as current.
    assert_eq!(d.post("/api/daemon/stop").unwrap().0, 200);
    let r = reasons(&api_task(&d, &held));
    assert!(
        has(&r, "paused").is_some() && has(&r, "agent_held").is_none(),
        "{r:?}"
    );
    assert_eq!(
        read_line(&h, &held),
        "waiting for: the daemon is paused (`moziplus resume`)"
    );
    assert!(read_line(&h, &after).ends_with("; the daemon is paused (`moziplus resume`)"));
    let summary = h.bb_ok("p", &["read"]);
    assert!(
        summary_reason(&summary, &waiting).ends_with("the daemon is paused (`moziplus resume`)"),
        "{summary}"
    );
    assert_eq!(d.post("/api/daemon/start").unwrap().0, 200);
    wait_for(
        Duration::from_secs(30),
        "the held reason after resume",
        || read_line(&h, &held).starts_with("waiting for: agent ghost, held back until "),
    );
    assert!(has(&reasons(&api_task(&d, &held)), "paused").is_none());

    // Stopped: the CLI says no daemon runs (the file it left is not read).
    d.stop();
    assert_eq!(
        read_line(&h, &held),
        "waiting for: the daemon: none is running on this home (`moziplus serve`)"
    );
    assert!(
        h.path().join("run/waits/p.json").exists(),
        "the stopped daemon's file is there"
    );
}

/// Issue 26, item 7: the retry backoff is honoured to the second. A run
/// that fails holds its task for `retry_backoff` (3 s here); the ticker
/// wakes when that ends instead of at its next tick (30 s here: the old
/// wait, measured at 32 s for a 10 s backoff).
#[test]
fn the_retry_backoff_ends_when_it_says() {
    let h = TestHome::with_config(
        "daemon:\n  tick_interval: 30\n  task_timeout: 60\n  kill_grace: 1\n  retry_backoff: [3]\n",
        "",
    );
    // Fails its first run, finishes the second.
    let agent = h.script(
        "flaky.sh",
        "#!/bin/bash\nif [ ! -e \"$MOZI_HOME/failed-once\" ]; then touch \"$MOZI_HOME/failed-once\"; exit 1; fi\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    h.command_worker(&agent);
    h.create_project("p");
    let d = Daemon::start(&h);
    let task = h.create_task("p", "flaky", &[]);
    let db = h.db("p");
    wait_for(
        Duration::from_secs(40),
        "the task done after a retry",
        || {
            support::query_i64(
                &db,
                &format!("SELECT COUNT(*) FROM task WHERE id = '{task}' AND status = 'done'"),
            ) == 1
        },
    );
    let first_end = support::query_i64(
        &db,
        "SELECT ended_at FROM session ORDER BY started_at LIMIT 1",
    );
    let second_start = support::query_i64(
        &db,
        "SELECT started_at FROM session ORDER BY started_at LIMIT 1 OFFSET 1",
    );
    let delay = second_start - first_end;
    println!("restart delay after a 3 s backoff: {delay} ms");
    assert!(
        (3000..=5000).contains(&delay),
        "the second run started {delay} ms after the first ended; the backoff is 3 s"
    );
    d.stop();
    // Issue 26, item 7: the failed run is logged at WARN (it was INFO),
    // naming its task and how it ended.
    let log = std::fs::read_to_string(h.path().join("daemon.log")).unwrap();
    let ended: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "run ended without success")
        .collect();
    assert_eq!(ended.len(), 1, "one failed run:\n{log}");
    assert_eq!(ended[0]["level"], "WARN", "{}", ended[0]);
    assert_eq!(ended[0]["fields"]["task"], task.as_str(), "{}", ended[0]);
    assert_eq!(ended[0]["fields"]["outcome"], "failed", "{}", ended[0]);
}

/// A tick reads ready tasks in pages (four per run slot and 16 more, here
/// 24), and while run slots stay free up to four pages (96). Those behind
/// them still say why they wait, in the API, `bb list` and `bb read`:
/// before, the daemon published nothing for them and they read as ready.
#[test]
fn ready_tasks_beyond_the_ticks_window_still_say_why() {
    let h = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  task_timeout: 120\n  kill_grace: 1\n  max_global_agents: 2\n  max_per_agent: 1\n",
        "",
    );
    let stuck = h.script("stuck.sh", STUCK_AGENT);
    std::fs::write(
        h.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: slow\n    runtime: command\n    kinds: [slow]\n    command: [\"{}\"]\n",
            stuck.display()
        ),
    )
    .unwrap();
    h.create_project("p");
    // One runs; 96 fill the four pages (the busy agent); the last is behind.
    let ids: Vec<String> = (0..98)
        .map(|n| h.create_task("p", &format!("slow {n}"), &["--kind", "slow"]))
        .collect();
    let last = ids.last().unwrap().clone();
    let d = Daemon::start(&h);
    // Once one runs, the pages hold the next 96: the 97th waits for the
    // busy agent, the 98th behind them (before: nothing at all).
    let in_window = ids[ids.len() - 2].clone();
    wait_for(
        Duration::from_secs(30),
        "the window after the start",
        || {
            has(&reasons(&api_task(&d, &in_window)), "agent_busy").is_some()
                && has(&reasons(&api_task(&d, &last)), "queue").is_some()
        },
    );
    assert_eq!(
        has(&reasons(&api_task(&d, &last)), "queue").as_deref(),
        Some("its turn: the daemon looks at the 96 most urgent ready tasks each tick, and this one is behind them")
    );
    let table = h.bb_ok("p", &["list", "--status", "pending", "--limit", "200"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(last.as_str()))
        .unwrap_or_else(|| panic!("{last} in {table}"));
    assert!(
        row.contains("its turn: the daemon looks at the 96"),
        "{table}"
    );
    let summary = h.bb_ok("p", &["read", "--limit", "100"]);
    assert!(
        summary_reason(&summary, &last).starts_with("waiting for: its turn: "),
        "{summary}"
    );
    d.stop();
}

/// A task behind a full page of ready tasks that cannot start (their one
/// agent busy) starts when a slot and its own agent are free: the tick
/// reads the next page. Before, the tick read only the first page, and the
/// task waited as long as the page's tasks did — here for ever.
#[test]
fn a_task_behind_a_page_of_tasks_that_cannot_start_still_runs() {
    let h = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  task_timeout: 120\n  kill_grace: 1\n  max_global_agents: 2\n  max_per_agent: 1\n",
        "",
    );
    let stuck = h.script("stuck.sh", STUCK_AGENT);
    let quick = h.script(
        "quick.sh",
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    std::fs::write(
        h.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: slow\n    runtime: command\n    kinds: [slow]\n    command: [\"{}\"]\n  - id: quick\n    runtime: command\n    kinds: [quick]\n    command: [\"{}\"]\n",
            stuck.display(),
            quick.display()
        ),
    )
    .unwrap();
    h.create_project("p");
    // One slow task runs; the next 24 fill the first page and wait for it.
    for n in 0..26 {
        h.create_task("p", &format!("slow {n}"), &["--kind", "slow"]);
    }
    let behind = h.create_task("p", "quick one", &["--kind", "quick"]);
    let d = Daemon::start(&h);
    wait_for(
        Duration::from_secs(30),
        "the task behind the page done",
        || api_task(&d, &behind)["status"] == "done",
    );
    d.stop();
}

/// Issue 26, item 1: the only signal of a task that could never start was
/// a zombie alert naming no task and no reason. It now names the most
/// urgent waiting tasks with why, in its text and its event.
#[test]
fn the_zombie_alert_names_the_waiting_tasks_and_why() {
    let h = TestHome::with_config("daemon:\n  tick_interval: 1\n  zombie_threshold: 2\n", "");
    std::fs::write(
        h.path().join("config/agents.yaml"),
        "agents:\n  - { id: coder, runtime: command, command: [\"true\"], kinds: [code] }\n",
    )
    .unwrap();
    h.create_project("p");
    let design = h.create_task("p", "a design", &["--kind", "design", "--force"]);
    let d = Daemon::start(&h);
    let alert = || -> Option<String> {
        let (_, body) = d.get("/api/projects/p/observations?level=alert").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["observations"]
            .as_array()?
            .iter()
            .filter_map(|o| o["body"].as_str())
            .find(|b| b.starts_with("zombie:"))
            .map(String::from)
    };
    wait_for(Duration::from_secs(30), "a zombie alert", || {
        alert().is_some()
    });
    let text = alert().unwrap();
    assert!(
        text.starts_with("zombie: 1 open task(s) and no state change for 2 ticks; ")
            && text.contains(&format!(
                "{design} waits for: no agent takes kind \"design\""
            )),
        "{text}"
    );
    let events = h.bb_ok("p", &["events", "--json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let zombie = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "daemon.zombie")
        .cloned()
        .unwrap_or_else(|| panic!("a daemon.zombie event in {events}"));
    assert_eq!(
        zombie["payload"]["waiting"][&design][0]["reason"], "no_agent",
        "{zombie}"
    );
    d.stop();
}
