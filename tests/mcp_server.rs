//! `moziplus mcp` (issue 15), driven by the official MCP client library: the
//! `mcp` package from PyPI, installed by scripts/test.sh into
//! .tools/mcp-venv and found through MOZI_TEST_MCP_PYTHON.
//!
//! The client runs as a real agent run of `moziplus serve` (a command agent),
//! so the server it starts gets a real session's identity from the run's
//! environment, exactly as an agent CLI hands it on. Everything here is real:
//! the daemon, the SQLite blackboard, the stdio server, the SDK.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::*;

const CONFIG: &str =
    "daemon:\n  tick_interval: 1\n  task_timeout: 120\n  kill_grace: 2\n  retry_backoff: [2]\n";

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/drive.py");

/// The venv's python with the `mcp` package (`test_tool`).
fn python() -> Option<PathBuf> {
    test_tool("MOZI_TEST_MCP_PYTHON")
}

fn task_status(db: &Path, id: &str) -> String {
    query_strings(db, &format!("SELECT status FROM task WHERE id = '{id}'"))
        .pop()
        .unwrap_or_default()
}

/// A refused call's kind, insisting it was a tool error (`isError`) with a
/// structured body.
fn refusal<'a>(report: &'a Value, call: &str) -> (&'a str, &'a str) {
    let r = &report[call];
    assert_eq!(r["is_error"], true, "{call} must be a tool error: {r}");
    let kind = r["structured"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{call}: no error kind: {r}"));
    let message = r["structured"]["message"].as_str().unwrap_or_default();
    (kind, message)
}

fn succeeded<'a>(report: &'a Value, call: &str) -> &'a Value {
    let r = &report[call];
    assert_eq!(r["is_error"], false, "{call} must succeed: {r}");
    &r["structured"]
}

#[test]
fn the_official_mcp_client_works_a_task_through_moziplus_mcp() {
    let Some(py) = python() else {
        return;
    };
    let home = TestHome::with_config(CONFIG, "");
    let report_path = home.path().join("mcp-report.json");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: mcper\n    runtime: command\n    command: [\"{}\", \"{DRIVER}\", \"{}\"]\n",
            py.display(),
            report_path.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let t = home.create_task("p", "work over MCP", &[]);
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_for(Duration::from_secs(120), "the MCP run to end", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) >= 1
    });
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); daemon log:\n{}",
            std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default()
        )
    });
    let report: Value = serde_json::from_str(&text).unwrap();
    assert!(
        report.get("exception").is_none(),
        "the client broke: {report:#}"
    );

    // initialize
    assert_eq!(report["server"]["name"], "moziplus", "{report:#}");
    assert!(report["protocol_version"].is_string());

    // Every tool, with a description and an object schema naming its fields.
    let tools = report["tools"].as_object().expect("tools");
    for name in [
        "read",
        "heartbeat",
        "output",
        "comment",
        "review",
        "done",
        "fail",
        "decide",
        "decision_wait",
        "experience_add",
    ] {
        let tool = &tools
            .get(name)
            .unwrap_or_else(|| panic!("tool {name} missing: {:?}", tools.keys()));
        assert!(
            tool["description"].as_str().is_some_and(|d| d.len() > 20),
            "{name} has a description: {tool}"
        );
        assert_eq!(tool["input_schema"]["type"], "object", "{name}: {tool}");
    }
    let output = &tools["output"]["input_schema"];
    assert_eq!(output["required"], serde_json::json!(["summary"]));
    for field in ["task", "summary", "text", "file", "name", "agent"] {
        assert!(
            output["properties"][field]["description"].is_string(),
            "output.{field} is described: {output}"
        );
    }
    let verdicts = &tools["review"]["input_schema"];
    assert!(
        verdicts.to_string().contains("\"revise\""),
        "the verdict's values are in the schema: {verdicts}"
    );
    assert_eq!(
        tools["decision_wait"]["input_schema"]["required"],
        serde_json::json!(["id"])
    );

    // Reads.
    let board = succeeded(&report, "read_board");
    assert_eq!(board["project"], "p", "{board}");
    let detail = succeeded(&report, "read_task");
    assert_eq!(detail["id"], t.as_str());
    assert_eq!(detail["status"], "working");
    assert_eq!(detail["claimed_by"], "mcper");
    assert_eq!(refusal(&report, "read_unknown").0, "not_found");
    assert!(succeeded(&report, "heartbeat")["lease_expires_at"].is_string());

    // Another agent's identity is refused, with the CLI's message.
    for call in ["output_as_other", "done_as_other"] {
        let (kind, message) = refusal(&report, call);
        assert_eq!(kind, "forbidden", "{call}: {message}");
        assert!(
            message.contains("--agent intruder refused: this run is agent mcper"),
            "{call}: {message}"
        );
        assert_eq!(report[call]["structured"]["cli_exit_code"], 1);
    }
    // A forged session token too.
    let (kind, message) = refusal(&report, "forged_token");
    assert_eq!(kind, "forbidden", "{message}");
    // Issue 23, finding 10: a FIFO, numbers past any duration, and a
    // reserved name without a session are refused, each with its reason.
    let (kind, message) = refusal(&report, "output_fifo");
    assert_eq!(kind, "invalid", "{message}");
    assert!(message.contains("a FIFO"), "{message}");
    for call in ["decision_wait_overflow", "heartbeat_overflow"] {
        let (kind, message) = refusal(&report, call);
        assert_eq!(kind, "invalid", "{call}: {message}");
        assert!(message.contains("must be between"), "{call}: {message}");
    }
    let (kind, message) = refusal(&report, "no_session_as_daemon");
    assert_eq!(kind, "forbidden", "{message}");
    assert!(message.contains("\"daemon\" is reserved"), "{message}");

    // Malformed calls are tool errors naming what was wrong.
    let (_, m) = refusal(&report, "malformed_type");
    assert!(m.contains("invalid type"), "{m}");
    let (_, m) = refusal(&report, "malformed_missing");
    assert!(m.contains("missing field `summary`"), "{m}");
    let (_, m) = refusal(&report, "malformed_unknown_field");
    assert!(m.contains("unknown field `tsk`"), "{m}");
    let (kind, m) = refusal(&report, "malformed_task_id");
    assert_eq!(kind, "invalid", "{m}");
    assert!(m.contains("malformed task id \"T-bad\""), "{m}");

    // The CLI's `--file -` (stdin) would read the protocol's own stream.
    let (kind, m) = refusal(&report, "output_stdin");
    assert_eq!(kind, "invalid", "{m}");
    assert!(m.contains("not available over MCP"), "{m}");

    // Writes as the run's agent.
    assert_eq!(succeeded(&report, "comment")["body"], "-starts with a dash");
    assert!(succeeded(&report, "experience_add")["id"].is_number());
    assert!(succeeded(&report, "output")["id"].is_number());
    assert_eq!(succeeded(&report, "done")["status"], "done");
    // Once done, an output is a conflict (the CLI's exit 3).
    let (kind, m) = refusal(&report, "output_after_done");
    assert_eq!(kind, "conflict", "{m}");
    assert_eq!(
        report["output_after_done"]["structured"]["cli_exit_code"],
        3
    );
    let after = succeeded(&report, "read_after");
    assert_eq!(after["outputs"][0]["summary"], "made over MCP");

    // The task moved, as the CLI and the blackboard see it.
    let read = home.ok(&["bb", "--project", "p", "read", &t, "--json"]);
    let read: Value = serde_json::from_str(&read).unwrap();
    assert_eq!(read["status"], "done", "{read:#}");
    assert_eq!(read["outputs"][0]["agent"], "mcper");
    assert_eq!(
        read["outputs"][0]["inline_text"],
        "hello from the MCP client"
    );
    assert_eq!(task_status(&db, &t), "done");
    let comments = query_strings(
        &db,
        &format!("SELECT author || ':' || comment_type || ':' || body FROM comment WHERE task_id = '{t}'"),
    );
    assert!(
        comments.contains(&"mcper:note:-starts with a dash".to_string()),
        "{comments:?}"
    );
    assert!(
        comments.iter().all(|c| !c.contains("forged")),
        "nothing written with a forged token: {comments:?}"
    );
    assert!(
        comments.iter().all(|c| !c.contains("as daemon")),
        "nothing written as daemon: {comments:?}"
    );
    assert_eq!(
        query_strings(&db, "SELECT outcome FROM session"),
        ["succeeded"]
    );
    assert!(daemon.stop().success());
}
