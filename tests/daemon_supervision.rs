//! Supervision of agent runs by a real `moziplus serve`: timeouts kill the
//! whole process group (grandchildren too), a kill -9 of the daemon is
//! recovered on restart without orphans or double runs, and broken agents or
//! projects are reported while everything else keeps working.

mod support;

use std::time::Duration;

use support::*;

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 3\n  kill_grace: 1\n  max_global_agents: 5\n  max_per_agent: 3\n";

/// An agent that starts a grandchild, records both pids, and never finishes.
const STUCK_AGENT: &str = r#"#!/bin/bash
sleep 1000 &
echo "$$ $!" >> "$MOZI_HOME/pids.txt"
sleep 1000
"#;

fn agents_yaml(script: &str) -> String {
    format!("agents:\n  - id: worker\n    runtime: command\n    command: [\"{script}\"]\n")
}

fn recorded_pids(home: &TestHome) -> Vec<i32> {
    std::fs::read_to_string(home.path().join("pids.txt"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_run_past_its_timeout_is_killed_with_its_grandchildren_and_the_task_returns_to_pending() {
    let home = TestHome::with_config(CONFIG, "");
    let script = home.script("stuck.sh", STUCK_AGENT);
    std::fs::write(
        home.path().join("config/agents.yaml"),
        agents_yaml(&script.display().to_string()),
    )
    .unwrap();
    home.create_project("p");
    let task = home.create_task("p", "never ends", &["--max-rounds", "5"]);
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_for(Duration::from_secs(60), "the first run to time out", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE outcome = 'timed_out'",
        ) >= 1
    });
    // The first run's leader and grandchild were both recorded before the timeout.
    let pids = recorded_pids(&home);
    assert!(pids.len() >= 2, "agent recorded its pids: {pids:?}");
    let (leader, grandchild) = (pids[0], pids[1]);
    wait_for(
        Duration::from_secs(10),
        "the timed-out group to be gone",
        || !alive(leader) && !alive(grandchild),
    );
    // The task went back to pending with the next round (one event says so).
    // The session ends (timed_out) before the task is given back: wait for
    // the event, then check there is exactly one.
    let requeues = format!(
        "SELECT COUNT(*) FROM event WHERE task_id = '{task}' AND kind = 'task.run_failed'
         AND json_extract(payload, '$.to') = 'pending' AND json_extract(payload, '$.next_round') = 2"
    );
    wait_for(Duration::from_secs(10), "the requeue event", || {
        query_i64(&db, &requeues) >= 1
    });
    assert_eq!(
        query_i64(&db, &requeues),
        1,
        "one requeue event for round 1 → 2"
    );
    // Positive control: the /proc scan finds this home's processes while
    // they run (the daemon's own), so the empty scan below means gone.
    assert!(
        processes_of_home(home.path()).contains(&daemon.pid()),
        "the scan sees the daemon"
    );
    let status = daemon.stop();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    assert!(
        processes_of_home(home.path()).is_empty(),
        "no agent process survives the daemon"
    );
    // After a graceful stop nothing is left working without a run.
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'working'"),
        0
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL"),
        0
    );
}

#[test]
fn kill_9_of_the_daemon_is_recovered_without_orphans_or_double_runs() {
    let home = TestHome::with_config(&CONFIG.replace("task_timeout: 3", "task_timeout: 600"), "");
    let script = home.script("stuck.sh", STUCK_AGENT);
    std::fs::write(
        home.path().join("config/agents.yaml"),
        agents_yaml(&script.display().to_string()),
    )
    .unwrap();
    home.create_project("p");
    for i in 0..3 {
        home.create_task("p", &format!("t{i}"), &[]);
    }
    let db = home.db("p");
    let daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(30), "three runs", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NULL AND pid IS NOT NULL",
        ) == 3
    });
    wait_for(Duration::from_secs(10), "agents to record pids", || {
        recorded_pids(&home).len() == 6
    });
    let first_gen = recorded_pids(&home);
    daemon.crash();
    // The runs outlive the crashed daemon (own process groups)…
    assert!(
        first_gen.iter().any(|p| alive(*p)),
        "agents survive a kill -9 of the daemon"
    );
    // …until the next start recovers them.
    let daemon = Daemon::start(&home);
    wait_for(
        Duration::from_secs(30),
        "recovery to end the old sessions",
        || {
            query_i64(&db, "SELECT COUNT(*) FROM session WHERE outcome = 'killed' AND detail LIKE '%recovered%'") == 3
        },
    );
    wait_for(Duration::from_secs(10), "old processes to be gone", || {
        first_gen.iter().all(|p| !alive(*p))
    });
    // The tasks were given back in the same round (a daemon crash is not
    // the agents' failure: issue 13, defect 14) and started again — once each.
    wait_for(
        Duration::from_secs(30),
        "the second generation of runs",
        || {
            query_i64(
                &db,
                "SELECT COUNT(*) FROM session WHERE ended_at IS NULL AND round = 1",
            ) == 3
        },
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session"),
        6,
        "three killed runs and three new ones"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM (SELECT task_id FROM session WHERE ended_at IS NULL GROUP BY task_id HAVING COUNT(*) > 1)"),
        0,
        "never two live runs of one task"
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM task WHERE status = 'working' AND round = 1"
        ),
        3,
        "no round spent on the crash"
    );
    // Positive control: the /proc scan finds the three runs' agents while
    // they work, so the empty scan below means they are gone.
    assert!(
        !agent_processes(home.path()).is_empty(),
        "the scan sees the working agents"
    );
    daemon.stop();
    assert!(
        processes_of_home(home.path()).is_empty(),
        "no agent process survives: {:?}",
        processes_of_home(home.path())
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'working'"),
        0,
        "nothing left working without a run"
    );
}

#[test]
fn broken_agents_and_projects_are_reported_and_the_rest_keeps_working() {
    // A long infrastructure backoff: the missing command is tried once.
    let home = TestHome::with_config(&format!("{CONFIG}  retry_backoff: [60]\n"), "");
    let good = home.script(
        "good.sh",
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    let bad_exit = home.script("bad.sh", "#!/bin/bash\necho boom >&2\nexit 7\n");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: good\n    runtime: command\n    kinds: [code]\n    command: [\"{}\"]\n  - id: crasher\n    runtime: command\n    kinds: [crash]\n    command: [\"{}\"]\n  - id: ghost\n    runtime: command\n    kinds: [ghost]\n    command: [\"/nonexistent/agent-binary\"]\n",
            good.display(),
            bad_exit.display()
        ),
    )
    .unwrap();
    for p in ["ok", "broken", "faults"] {
        home.create_project(p);
    }
    home.create_task(
        "faults",
        "exits non-zero",
        &["--kind", "crash", "--max-rounds", "1"],
    );
    home.create_task(
        "faults",
        "missing command",
        &["--kind", "ghost", "--max-rounds", "1"],
    );
    // Corrupt one project before the daemon starts.
    std::fs::write(
        home.db("broken"),
        b"this is not a database at all, just garbage bytes",
    )
    .unwrap();
    let daemon = Daemon::start(&home);
    // Garbage in the inbox.
    home.ok(&[
        "inbox",
        "push",
        r#"{"type":"nonsense","project":"ok"}"#,
        r#"{"type":"create_task","project":"nope","task":{"title":"x"}}"#,
    ]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(home.path().join("inbox/daemon.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{{{{ not json\n"))
        .unwrap();
    // Work on the healthy project still flows.
    let t = home.create_task("ok", "fine", &[]);
    let ok_db = home.db("ok");
    wait_for(
        Duration::from_secs(30),
        "the healthy task to be done",
        || {
            query_i64(
                &ok_db,
                &format!("SELECT COUNT(*) FROM task WHERE id = '{t}' AND status = 'done'"),
            ) == 1
        },
    );
    let fdb = home.db("faults");
    // A non-zero exit is the agent's failure: it costs the round (the last).
    wait_for(Duration::from_secs(30), "the crashing task to fail", || {
        query_i64(&fdb, "SELECT COUNT(*) FROM task WHERE status = 'failed'") == 1
    });
    // A missing command is the installation's: no round is counted, the task
    // stays pending and the project is reported degraded.
    wait_for(
        Duration::from_secs(30),
        "the missing command to be reported",
        || {
            query_strings(&fdb, "SELECT body FROM observation ORDER BY id")
                .iter()
                .any(|o| o.contains("/nonexistent/agent-binary"))
        },
    );
    let obs = query_strings(&fdb, "SELECT body FROM observation ORDER BY id").join("\n");
    assert!(
        obs.contains("exit code 7") && obs.contains("boom"),
        "non-zero exit reported with its stderr: {obs}"
    );
    assert_eq!(
        query_strings(
            &fdb,
            "SELECT status FROM task WHERE title = 'missing command'"
        ),
        ["pending"]
    );
    let sessions = query_strings(&fdb, "SELECT outcome FROM session ORDER BY started_at");
    assert_eq!(sessions, ["failed", "failed"]);
    let (code, ready) = daemon.get("/health/ready").unwrap();
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("/nonexistent/agent-binary"), "{ready}");
    // The inbox garbage is recorded, never fatal.
    wait_for(
        Duration::from_secs(10),
        "inbox garbage to be counted",
        || daemon.status()["inbox"]["malformed"].as_u64() == Some(3),
    );
    let ok_obs = query_strings(&ok_db, "SELECT body FROM observation").join("\n");
    assert!(
        ok_obs.contains("nonsense"),
        "malformed line naming project ok lands there: {ok_obs}"
    );
    // The corrupt project is reported in status and readiness.
    let status = daemon.status();
    let err = status["projects"]["broken"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("not an SQLite database"),
        "status names the problem: {status}"
    );
    let (code, body) = daemon.get("/health/ready").unwrap();
    assert_eq!(code, 503, "not ready with a broken project: {body}");
    assert!(body.contains("broken"));
    assert_eq!(daemon.get("/health").unwrap().0, 200, "still alive");
    daemon.stop();
}
