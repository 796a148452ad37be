//! Review protocols end to end: a real `moziplus serve`, real agent processes
//! (Python scripts using the blackboard CLI) and a 2-reviewer protocol with a
//! senior reviewer. Reviewers take their verdicts from files the test writes
//! (`verdicts/<task>/<agent>.r<round>`: "verdict confidence body"), so each
//! scenario is exact; every run's brief is kept by the writer agent under
//! `briefs/` so the test can read what the agent was told.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 30\n  kill_grace: 1\n  max_global_agents: 6\n  max_per_agent: 2\n";

/// Works on any task: keeps its brief, posts an output naming the round, finishes.
const WRITER: &str = r#"#!/usr/bin/env python3
import json, os, shutil, subprocess, sys
home, task = os.environ["MOZI_HOME"], os.environ["MOZI_TASK"]
def bb(*a):
    return subprocess.run(["moziplus", "bb", *a], check=True, capture_output=True, text=True).stdout
t = json.loads(bb("read", task, "--json"))
os.makedirs(f"{home}/briefs", exist_ok=True)
shutil.copy(os.environ["MOZI_BRIEF"], f"{home}/briefs/{task}-r{t['round']}-{os.environ['MOZI_AGENT']}.md")
bb("output", task, "--summary", f"work of round {t['round']}", "--text", f"result {t['round']}")
bb("done", task)
"#;

/// Reviews with the verdict the test planned (default: approve 0.9).
const REVIEWER: &str = r#"#!/usr/bin/env python3
import json, os, shutil, subprocess
home, task, me = os.environ["MOZI_HOME"], os.environ["MOZI_TASK"], os.environ["MOZI_AGENT"]
def bb(*a):
    return subprocess.run(["moziplus", "bb", *a], check=True, capture_output=True, text=True).stdout
t = json.loads(bb("read", task, "--json"))
os.makedirs(f"{home}/briefs", exist_ok=True)
shutil.copy(os.environ["MOZI_BRIEF"], f"{home}/briefs/{task}-r{t['round']}-{me}.md")
plan = f"{home}/verdicts/{task}/{me}.r{t['round']}"
verdict, confidence, body = "approve", "0.9", "checked the output"
if os.path.exists(plan):
    verdict, confidence, body = open(plan).read().strip().split(" ", 2)
bb("review", task, "--verdict", verdict, "--confidence", confidence, "--body", body)
"#;

const PROTOCOL: &str = "name: pair
applies_to: [code]
reviewers:
  - role: reviewer
  - role: reviewer
pass_rule: all_approve
max_rounds: 2
confidence_threshold: 0.7
senior_reviewer: { role: senior-reviewer }
";

fn setup() -> TestHome {
    let home = TestHome::with_config(CONFIG, "");
    let w = home.script("writer.py", WRITER).display().to_string();
    let r = home.script("reviewer.py", REVIEWER).display().to_string();
    let agents = format!(
        "agents:
  - id: writer
    runtime: command
    command: [\"{w}\"]
    kinds: [code]
  - id: r1
    runtime: command
    command: [\"{r}\"]
    kinds: [review]
    roles: [reviewer]
  - id: r2
    runtime: command
    command: [\"{r}\"]
    kinds: [review]
    roles: [reviewer]
  - id: boss
    runtime: command
    command: [\"{r}\"]
    kinds: [review]
    roles: [senior-reviewer]
"
    );
    std::fs::write(home.path().join("config/agents.yaml"), agents).unwrap();
    std::fs::create_dir_all(home.path().join("config/review_protocols")).unwrap();
    std::fs::write(
        home.path().join("config/review_protocols/pair.yaml"),
        PROTOCOL,
    )
    .unwrap();
    home.create_project("p");
    home
}

fn plan(home: &TestHome, task: &str, agent: &str, round: i64, verdict: &str) {
    let dir = home.path().join("verdicts").join(task);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{agent}.r{round}")), verdict).unwrap();
}

fn status(db: &Path, task: &str) -> String {
    query_strings(db, &format!("SELECT status FROM task WHERE id = '{task}'"))
        .pop()
        .unwrap_or_default()
}

fn wait_status(db: &Path, task: &str, want: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{task} to be {want}"),
        || status(db, task) == want,
    );
}

/// The events that ended review rounds of `task` (the daemon is their actor).
fn concluded(db: &Path, task: &str) -> Vec<String> {
    query_strings(
        db,
        &format!(
            "SELECT kind FROM event WHERE task_id = '{task}' AND actor = 'daemon'
             AND kind IN ('task.done', 'task.review_rejected', 'task.failed') ORDER BY id"
        ),
    )
}

fn new_task(home: &TestHome) -> String {
    home.create_task("p", "write it", &["--kind", "code", "--protocol", "pair"])
}

#[test]
fn two_approvals_finish_the_task_in_one_round() {
    let home = setup();
    let task = new_task(&home);
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_status(&db, &task, "done");
    // Both seats reviewed round 1, by two different reviewers; nobody else.
    let reviewers = query_strings(
        &db,
        &format!(
            "SELECT reviewer FROM review WHERE task_id = '{task}' AND round = 1 ORDER BY reviewer"
        ),
    );
    assert_eq!(reviewers, ["r1", "r2"]);
    assert_eq!(concluded(&db, &task), ["task.done"]);
    assert_eq!(
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{task}'")),
        1
    );
    // The reviewers' briefs were the review template, naming the protocol.
    let brief =
        std::fs::read_to_string(home.path().join(format!("briefs/{task}-r1-r1.md"))).unwrap();
    assert!(brief.starts_with("# Review brief: write it"), "{brief}");
    assert!(
        brief.contains("Protocol `pair`: 2 reviewer(s), pass rule all_approve"),
        "{brief}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_low_confidence_approval_is_escalated_and_the_senior_decides() {
    let home = setup();
    let task = new_task(&home);
    plan(&home, &task, "r2", 1, "approve 0.4 probably fine, not sure");
    plan(
        &home,
        &task,
        "boss",
        1,
        "revise 0.95 the error path is untested",
    );
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_for(Duration::from_secs(60), "round 2", || {
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{task}'")) == 2
    });
    let escalated = query_i64(
        &db,
        &format!("SELECT COUNT(*) FROM event WHERE task_id = '{task}' AND kind = 'review.escalated' AND payload LIKE '%\"doubtful\":[\"r2\"%'"),
    );
    assert_eq!(escalated, 1, "one escalation, naming the doubtful reviewer");
    let obs = query_strings(
        &db,
        &format!("SELECT body FROM observation WHERE task_id = '{task}'"),
    );
    assert!(
        obs.iter()
            .any(|o| o.contains("escalated to the senior reviewer")),
        "{obs:?}"
    );
    // The senior's revise stood in for r2's doubtful approve: rework.
    let why = query_strings(
        &db,
        &format!("SELECT json_extract(payload, '$.reason') FROM event WHERE task_id = '{task}' AND kind = 'task.review_rejected'"),
    );
    assert_eq!(why.len(), 1);
    assert!(why[0].contains("senior boss revise"), "{why:?}");
    // The senior's brief said it was the escalation.
    let brief =
        std::fs::read_to_string(home.path().join(format!("briefs/{task}-r1-boss.md"))).unwrap();
    assert!(brief.contains("## You are the senior reviewer"), "{brief}");
    assert!(
        brief.contains("**r2** (approve, confidence 0.40): probably fine, not sure"),
        "{brief}"
    );
    // Round 2: approvals all round, done.
    wait_status(&db, &task, "done");
    assert!(daemon.stop().success());
}

#[test]
fn a_revise_sends_the_task_back_with_the_feedback_in_the_next_brief() {
    let home = setup();
    let task = new_task(&home);
    plan(&home, &task, "r1", 1, "revise 0.9 handle the empty input");
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_status(&db, &task, "done");
    assert_eq!(concluded(&db, &task), ["task.review_rejected", "task.done"]);
    assert_eq!(
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{task}'")),
        2
    );
    let first =
        std::fs::read_to_string(home.path().join(format!("briefs/{task}-r1-writer.md"))).unwrap();
    assert!(!first.contains("rework round"), "{first}");
    let second =
        std::fs::read_to_string(home.path().join(format!("briefs/{task}-r2-writer.md"))).unwrap();
    assert!(second.contains("## This is a rework round"), "{second}");
    assert!(
        second.contains("- **r1** (revise, confidence 0.90): handle the empty input"),
        "{second}"
    );
    // The reviewers of round 2 see what was asked in round 1.
    let review2 =
        std::fs::read_to_string(home.path().join(format!("briefs/{task}-r2-r1.md"))).unwrap();
    assert!(
        review2.contains("## Requests of the previous round"),
        "{review2}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn revisions_past_the_protocols_round_limit_fail_the_task_with_an_alert() {
    let home = setup();
    let task = new_task(&home);
    plan(&home, &task, "r1", 1, "revise 0.9 not yet");
    plan(&home, &task, "r1", 2, "reject 0.9 still wrong");
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_status(&db, &task, "failed");
    // The protocol's max_rounds (2) applied, not the task's default (3).
    assert_eq!(
        query_i64(
            &db,
            &format!("SELECT round * 10 + max_rounds FROM task WHERE id = '{task}'")
        ),
        22
    );
    let alerts = query_strings(
        &db,
        &format!("SELECT body FROM observation WHERE task_id = '{task}' AND level = 'alert'"),
    );
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("failed after 2 of 2 rounds") && a.contains("r1 reject")),
        "{alerts:?}"
    );
    // Exactly one writer run per round, and no third round.
    assert_eq!(
        query_i64(
            &db,
            &format!("SELECT COUNT(*) FROM session WHERE task_id = '{task}' AND agent = 'writer'")
        ),
        2
    );
    assert!(daemon.stop().success());
}

#[test]
fn an_invalid_protocol_file_refuses_the_start_naming_file_and_key() {
    let home = setup();
    std::fs::write(
        home.path().join("config/review_protocols/bad.yaml"),
        "name: bad\napplies_to: [data]\nreviewers:\n  - role: reviewer\npass_rule: all_approve\nmax_rounds: 0\n",
    )
    .unwrap();
    let out = home.run(&["serve", "--bind", &format!("127.0.0.1:{}", free_port())]);
    assert_ne!(out.code, 0, "{out}");
    let err = out.stderr.as_str();
    assert!(
        err.contains("bad.yaml line 6: `max_rounds` must be between 1 and 100, got 0"),
        "{err}"
    );
    // `doctor` runs the same start checks and fails the same way.
    let doctor = home.run(&["doctor"]);
    assert_ne!(doctor.code, 0, "{doctor}");
    let text = doctor.stdout.as_str();
    assert!(text.contains("FAIL serve start checks"), "{text}");
    assert!(
        text.contains("`max_rounds` must be between 1 and 100, got 0"),
        "{text}"
    );
    // A seat no agent can fill does not refuse the start (the protocol is
    // reported unusable instead; tests/runtimes.rs).
    std::fs::write(
        home.path().join("config/review_protocols/bad.yaml"),
        "name: bad\napplies_to: [data]\nreviewers:\n  - role: reviewer\npass_rule: unanimous\n",
    )
    .unwrap();
    let out = home.run(&["serve", "--bind", &format!("127.0.0.1:{}", free_port())]);
    let err = out.stderr.as_str();
    assert!(
        err.contains("bad.yaml: pass_rule: unknown variant `unanimous`"),
        "{err}"
    );
    assert!(err.contains("line 5"), "{err}");
}
