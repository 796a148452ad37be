//! Every refusal of the blackboard CLI: a clear message naming what was
//! wrong, a non-zero exit code (1 error, 2 usage, 3 conflict) and the
//! database left exactly as it was (every row of every table compared).
//!
//! Illegal transitions, unknown and malformed ids, wrong-agent writes under a
//! daemon session, artifact path escapes, dependency cycles and bad
//! configuration files are all exercised through the real binary.
//!
//! The case tables are kept one case per line (`rustfmt::skip`) so each reads
//! as "command → exit code → what the message must say".

mod support;

use moziplus::blackboard::{sessions, Blackboard, NewSession, OpenMode, Outcome};
use support::{block_on, listing_of, Out, TestHome};

const ERROR: i32 = 1;
const USAGE: i32 = 2;
const CONFLICT: i32 = 3;

/// `bb --project p REST…`
fn bb<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["bb", "--project", "p"];
    v.extend_from_slice(rest);
    v
}

/// Runs a command that must be refused: checks the exit code, the message,
/// that nothing was printed as a success, and that project `p`'s database is
/// unchanged.
#[track_caller]
fn refused(h: &TestHome, args: &[&str], env: &[(&str, &str)], code: i32, needles: &[&str]) -> Out {
    let before = h.dump("p");
    let out = h.run_env(args, env);
    out.fails(code, needles);
    assert!(
        out.stdout.trim().is_empty(),
        "a refused command printed a result:\n{out}"
    );
    h.dump("p").assert_same(&before, &out.what);
    out
}

/// A project `p` with one task in every interesting state:
///
/// | task   | state                                                     |
/// |--------|-----------------------------------------------------------|
/// | T-0001 | pending                                                   |
/// | T-0002 | working, claimed by `a`                                   |
/// | T-0003 | done (by `a`)                                             |
/// | T-0004 | review (protocol `output`, by `a`; `r` reviewed round 1)  |
/// | T-0005 | pending, depends on T-0001                                |
/// | T-0006 | cancelled                                                 |
/// | T-0007 | blocked                                                   |
///
/// plus decision 1, recorded (approved) by `human`.
fn fixture() -> TestHome {
    let h = TestHome::new();
    h.create_project("p");
    let tasks: [(&str, &[&str]); 7] = [
        ("pending", &[]),
        ("working", &[]),
        ("done", &[]),
        ("in review", &["--protocol", "output"]),
        ("waits", &["--depends-on", "T-0001"]),
        ("cancelled", &[]),
        ("blocked", &[]),
    ];
    for (i, (title, extra)) in tasks.iter().enumerate() {
        assert_eq!(h.create_task("p", title, extra), format!("T-{:04}", i + 1));
    }
    for t in ["T-0002", "T-0003", "T-0004"] {
        h.bb_ok("p", &["claim", t, "--agent", "a"]);
    }
    h.bb_ok("p", &["done", "T-0003", "--agent", "a"]);
    h.bb_ok("p", &["done", "T-0004", "--agent", "a"]);
    h.bb_ok(
        "p",
        &[
            "review",
            "T-0004",
            "--agent",
            "r",
            "--verdict",
            "approve",
            "--confidence",
            "0.9",
        ],
    );
    h.bb_ok("p", &["cancel", "T-0006", "--reason", "not needed"]);
    h.bb_ok(
        "p",
        &["block", "T-0007", "--reason", "waiting for a person"],
    );
    h.bb_ok(
        "p",
        &["decide", "--question", "which db?", "--decision", "sqlite"],
    );
    for (t, want) in [
        ("T-0001", "pending"),
        ("T-0002", "working"),
        ("T-0003", "done"),
        ("T-0004", "review"),
        ("T-0005", "pending"),
        ("T-0006", "cancelled"),
        ("T-0007", "blocked"),
    ] {
        let status = h.bb("p", &["read", t, "--json"]).json()["status"].clone();
        assert_eq!(status, want, "fixture {t}");
    }
    h
}

#[test]
#[rustfmt::skip]
fn illegal_transitions_are_refused_and_change_nothing() {
    let h = fixture();
    let cases: &[(&[&str], i32, &[&str])] = &[
        // done/submit on a pending task
        (&["done", "T-0001", "--agent", "a"], CONFLICT, &["cannot submit task T-0001", "it is pending, not working"]),
        // review on a working task
        (&["review", "T-0002", "--agent", "r", "--verdict", "approve", "--confidence", "1"], CONFLICT, &["cannot review task T-0002", "it is working, not in review"]),
        // claim a done task; reopen, fail or cancel a done task
        (&["claim", "T-0003", "--agent", "b"], ERROR, &["task T-0003: illegal transition from done to working"]),
        (&["reopen", "T-0003"], ERROR, &["task T-0003: illegal transition from done to pending"]),
        (&["fail", "T-0003", "--reason", "x"], ERROR, &["illegal transition from done to failed"]),
        (&["cancel", "T-0003"], ERROR, &["illegal transition from done to cancelled"]),
        // claim a task whose dependency is not done
        (&["claim", "T-0005", "--agent", "b"], CONFLICT, &["task T-0005 is not ready: waiting on T-0001 (pending)"]),
        // claim a task someone else holds
        (&["claim", "T-0002", "--agent", "b"], CONFLICT, &["task T-0002 is already claimed by a (working)"]),
        (&["claim", "T-0004", "--agent", "b"], CONFLICT, &["task T-0004 is already claimed by a (review)"]),
        // claim a blocked or cancelled task
        (&["claim", "T-0007", "--agent", "b"], ERROR, &["illegal transition from blocked to working"]),
        (&["claim", "T-0006", "--agent", "b"], ERROR, &["illegal transition from cancelled to working"]),
        // release / heartbeat / output / done on tasks that are not working
        (&["release", "T-0001", "--agent", "a"], CONFLICT, &["cannot release task T-0001: it is pending, not working"]),
        (&["heartbeat", "T-0003", "--agent", "a"], CONFLICT, &["task T-0003: it is done, not working"]),
        (&["output", "T-0004", "--agent", "a", "--summary", "s", "--text", "x"], CONFLICT, &["cannot post an output to task T-0004: it is review, not working"]),
        (&["done", "T-0006", "--agent", "a"], CONFLICT, &["task T-0006: it is cancelled, not working"]),
        // block a task in review; reopen a pending one
        (&["block", "T-0004", "--reason", "x"], ERROR, &["illegal transition from review to blocked"]),
        (&["reopen", "T-0001"], ERROR, &["illegal transition from pending to pending"]),
        // a second review of the same round; reviewing your own work
        (&["review", "T-0004", "--agent", "r", "--verdict", "approve", "--confidence", "1"], CONFLICT, &["r already reviewed round 1 of task T-0004"]),
        (&["review", "T-0004", "--agent", "a", "--verdict", "approve", "--confidence", "1"], ERROR, &["a wrote task T-0004 and cannot review it"]),
        // deciding a settled decision again
        (&["decision", "approve", "1"], CONFLICT, &["decision D1 is already approved by human"]),
        (&["decision", "reject", "1"], CONFLICT, &["decision D1 is already approved by human"]),
    ];
    for (args, code, needles) in cases {
        refused(&h, &bb(args), &[], *code, needles);
    }
}

#[test]
#[rustfmt::skip]
fn invalid_values_are_errors_and_bad_syntax_is_a_usage_error() {
    let h = fixture();
    let cases: &[(&[&str], i32, &[&str])] = &[
        (&["review", "T-0004", "--agent", "s", "--verdict", "approve", "--confidence", "1.5"], ERROR, &["confidence must be between 0 and 1, got 1.5"]),
        (&["review", "T-0004", "--agent", "s", "--verdict", "reject", "--confidence", "0.5"], ERROR, &["must not be empty"]),
        (&["create", "--title", "   "], ERROR, &["task title must not be empty"]),
        (&["create", "--title", "x", "--tags", "Bad Tag"], ERROR, &["invalid tag \"Bad Tag\""]),
        (&["create", "--title", "x", "--max-rounds", "0"], ERROR, &["max_rounds must be between 1 and 1000, got 0"]),
        (&["create", "--title", "x", "--kind", "Big/Kind"], ERROR, &["invalid task kind \"Big/Kind\""]),
        (&["create", "--title", "x", "--assignee", "../b"], ERROR, &["invalid assignee agent id \"../b\""]),
        (&["claim", "T-0001", "--agent", "a", "--lease", "0"], ERROR, &["--lease (lease_secs) must be between 1 and 31536000 seconds (365 days), got 0"]),
        // Issue 23, finding 10: numbers past any sensible duration are
        // errors, not an i64::MAX lease, an empty expiry or a panic (exit 101).
        (&["heartbeat", "T-0002", "--agent", "a", "--lease", "18446744073709551615"], ERROR, &["--lease (lease_secs) must be between 1 and 31536000 seconds", "got 18446744073709551615"]),
        (&["decide", "--question", "q", "--propose", "--expires", "18446744073709551615"], ERROR, &["a decision's expiry (expires_secs) must be between 1 and 31536000 seconds"]),
        (&["decision", "wait", "1", "--timeout", "18446744073709551615"], ERROR, &["a decision wait's timeout must be between 0 and 31536000 seconds"]),
        // …and reserved names are refused as --agent, as HTTP refuses them.
        (&["--agent", "daemon", "decide", "--question", "q", "--decision", "d"], ERROR, &["agent name \"daemon\" is reserved"]),
        (&["comment", "T-0001", "--agent", "system", "--body", "x"], ERROR, &["agent name \"system\" is reserved"]),
        (&["comment", "T-0001", "--agent", "../evil", "--body", "x"], ERROR, &["invalid agent id \"../evil\""]),
        (&["comment", "T-0001", "--body", "  "], ERROR, &["comment body must not be empty"]),
        (&["fail", "T-0002", "--reason", " "], ERROR, &["a failure needs a reason"]),
        (&["output", "T-0002", "--agent", "a", "--summary", "s", "--text", "x", "--file", "f"], ERROR, &["pass either --file or --text, not both"]),
        (&["output", "T-0002", "--agent", "a", "--summary", "s", "--name", "n"], ERROR, &["--name needs --file"]),
        (&["observe", "--level", "info", "--body", ""], ERROR, &["observation body must not be empty"]),
        (&["experience", "add", "--tags", "Nope!", "--lesson", "l"], ERROR, &["invalid tag \"Nope!\""]),
        // clap's usage errors: exit 2
        (&["claim"], USAGE, &["required", "<TASK>"]),
        (&["create"], USAGE, &["--title"]),
        (&["review", "T-0004", "--verdict", "maybe", "--confidence", "1"], USAGE, &["maybe"]),
        (&["claim", "T-0001", "--lease", "soon"], USAGE, &["soon"]),
        (&["list", "--status", "sleeping"], USAGE, &["sleeping"]),
        (&["create", "--title", "x", "--priority", "asap"], USAGE, &["asap"]),
        (&["frobnicate"], USAGE, &["frobnicate"]),
    ];
    for (args, code, needles) in cases {
        refused(&h, &bb(args), &[], *code, needles);
    }
    refused(&h, &["project", "create", "--id", "x"], &[], USAGE, &["--name"]);
    refused(&h, &["bb", "read"], &[], ERROR, &["no project: pass --project ID or set MOZI_PROJECT"]);
}

#[test]
#[rustfmt::skip]
fn unknown_projects_and_tasks_are_named() {
    let h = fixture();
    // Issue 26, item 8: the message names the home it looked in.
    let in_home = format!("in home {}", h.path().display());
    let unknown = &["unknown project \"nope\"", in_home.as_str(), "--home or MOZI_HOME"][..];
    refused(&h, &["bb", "--project", "nope", "read"], &[], ERROR, unknown);
    refused(&h, &["bb", "read"], &[("MOZI_PROJECT", "nope")], ERROR, unknown);
    refused(&h, &["bb", "--project", "nope", "create", "--title", "x"], &[], ERROR, unknown);
    refused(&h, &["project", "show", "nope"], &[], ERROR, unknown);
    refused(&h, &["project", "archive", "nope"], &[], ERROR, unknown);
    refused(&h, &["project", "restore", "nope"], &[], ERROR, unknown);
    refused(&h, &["backup", "--project", "nope"], &[], ERROR, unknown);
    refused(&h, &["restore", "--project", "nope", "--latest"], &[], ERROR, unknown);
    assert_eq!(listing_of(&h.path().join("projects")), [".registry.lock", "_registry.yaml", "p"], "an unknown project left files behind");
    assert!(!h.path().join("backups/nope").exists());

    let cases: &[&[&str]] = &[
        &["read", "T-9999"],
        &["claim", "T-9999", "--agent", "a"],
        &["comment", "T-9999", "--body", "x"],
        &["done", "T-9999", "--agent", "a"],
        &["heartbeat", "T-9999", "--agent", "a"],
        &["release", "T-9999", "--agent", "a"],
        &["output", "T-9999", "--agent", "a", "--summary", "s", "--text", "x"],
        &["cancel", "T-9999"],
        &["reopen", "T-9999"],
        &["depend", "T-0001", "--on", "T-9999"],
        &["depend", "T-9999", "--on", "T-0001"],
        &["observe", "--body", "x", "--task", "T-9999"],
    ];
    for args in cases {
        refused(&h, &bb(args), &[], ERROR, &["task T-9999 not found"]);
    }
    refused(&h, &bb(&["create", "--title", "x", "--depends-on", "T-9999"]), &[], ERROR, &["dependency task T-9999 not found"]);
    refused(&h, &bb(&["create", "--title", "x", "--parent", "T-9999"]), &[], ERROR, &["parent task T-9999 not found"]);
    refused(&h, &bb(&["decision", "show", "99"]), &[], ERROR, &["decision D99 not found"]);
    refused(&h, &bb(&["decision", "approve", "99"]), &[], ERROR, &["decision D99 not found"]);
}

#[test]
fn malformed_task_ids_are_refused() {
    let h = fixture();
    for id in [
        "T-1",
        "../x",
        "t-0001",
        "T-0001/..",
        "T-00a1",
        "/etc/passwd",
        "",
    ] {
        let needle = format!("malformed task id {id:?}");
        for args in [
            vec!["read", id],
            vec!["claim", id, "--agent", "a"],
            vec!["comment", id, "--body", "x"],
            vec!["done", id, "--agent", "a"],
            vec!["heartbeat", id, "--agent", "a"],
            vec![
                "output",
                id,
                "--agent",
                "a",
                "--summary",
                "s",
                "--text",
                "x",
            ],
            vec!["depend", "T-0001", "--on", id],
            vec!["create", "--title", "x", "--depends-on", id],
            vec!["create", "--title", "x", "--parent", id],
        ] {
            if id.is_empty() && args.contains(&"--depends-on") {
                continue; // an empty list element is skipped, by design
            }
            refused(&h, &bb(&args), &[], ERROR, &[needle.as_str()]);
        }
        if !id.is_empty() {
            // The task may also come from the daemon-provided environment.
            refused(
                &h,
                &bb(&["claim", "--agent", "a"]),
                &[("MOZI_TASK", id)],
                ERROR,
                &[needle.as_str()],
            );
        }
    }
    let artifacts = listing_of(&h.project_dir("p").join("artifacts"));
    assert!(
        artifacts.is_empty(),
        "a malformed id created artifact folders: {artifacts:?}"
    );
}

#[test]
fn malformed_project_ids_are_refused() {
    let h = fixture();
    let root_before = listing_of(h.path());
    let projects_before = listing_of(&h.path().join("projects"));
    let registry = h.path().join("projects/_registry.yaml");
    let registry_before = std::fs::read_to_string(&registry).unwrap();
    for id in ["../etc", "A", "a.b", "a/b", "..", "-a", "p ", ""] {
        let needle = format!("invalid project id {id:?}");
        let needles = &[needle.as_str()][..];
        // `--opt=value` so that ids starting with '-' reach the program.
        let project_flag = format!("--project={id}");
        let id_flag = format!("--id={id}");
        refused(&h, &["bb", &project_flag, "read"], &[], ERROR, needles);
        refused(
            &h,
            &["bb", &project_flag, "create", "--title", "x"],
            &[],
            ERROR,
            needles,
        );
        if !id.is_empty() {
            refused(&h, &["bb", "read"], &[("MOZI_PROJECT", id)], ERROR, needles);
        }
        refused(
            &h,
            &["project", "create", &id_flag, "--name", "X"],
            &[],
            ERROR,
            needles,
        );
        refused(&h, &["project", "show", "--", id], &[], ERROR, needles);
        refused(&h, &["project", "archive", "--", id], &[], ERROR, needles);
        refused(&h, &["backup", &project_flag], &[], ERROR, needles);
        refused(
            &h,
            &["restore", &project_flag, "--latest"],
            &[],
            ERROR,
            needles,
        );
    }
    assert_eq!(
        listing_of(h.path()),
        root_before,
        "files appeared in the home"
    );
    assert_eq!(
        listing_of(&h.path().join("projects")),
        projects_before,
        "files appeared in projects/"
    );
    assert_eq!(std::fs::read_to_string(&registry).unwrap(), registry_before);
}

/// Records a running session for `agent` on `task` through the store API (as
/// the daemon does) and returns its secret token.
fn start_session(h: &TestHome, id: &str, task: &str, agent: &str) -> String {
    let token = sessions::new_token();
    block_on(async {
        let bb = Blackboard::open(&h.db("p"), "p", OpenMode::CLI)
            .await
            .unwrap();
        bb.create_session(&NewSession {
            id: id.into(),
            task_id: task.into(),
            agent: agent.into(),
            token: token.clone(),
            command: "test".into(),
            log_path: None,
            sandbox: None,
            daemon: None,
        })
        .await
        .unwrap();
        bb.close().await;
    });
    token
}

fn end_session(h: &TestHome, id: &str) {
    block_on(async {
        let bb = Blackboard::open(&h.db("p"), "p", OpenMode::CLI)
            .await
            .unwrap();
        assert!(bb
            .end_session(id, Outcome::Succeeded, Some(0), None)
            .await
            .unwrap());
        bb.close().await;
    });
}

/// The environment the daemon gives a run on T-0001 of project `p`.
fn session_env<'a>(session: &'a str, agent: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MOZI_PROJECT", "p"),
        ("MOZI_SESSION", session),
        ("MOZI_AGENT", agent),
        ("MOZI_TASK", "T-0001"),
        ("MOZI_SESSION_TOKEN", token),
    ]
}

#[test]
#[rustfmt::skip]
fn an_agent_may_only_write_as_itself() {
    let h = fixture();
    let tok_a = start_session(&h, "S-a", "T-0001", "a");
    let tok_b = start_session(&h, "S-b", "T-0001", "b");
    let env_a = session_env("S-a", "a", &tok_a);

    // Impersonation attempts while a's session is valid.
    refused(&h, &["bb", "claim", "--agent", "other"], &env_a, ERROR, &["--agent other refused: this run is agent a, and an agent may only write as itself"]);
    refused(&h, &["bb", "claim"], &session_env("S-a", "a", "0000"), ERROR, &["MOZI_SESSION_TOKEN does not match session S-a"]);
    refused(&h, &["bb", "claim"], &session_env("S-a", "a", &tok_b), ERROR, &["MOZI_SESSION_TOKEN does not match session S-a"]);
    refused(&h, &["bb", "claim"], &session_env("S-a", "a", ""), ERROR, &["MOZI_SESSION=S-a is set but MOZI_SESSION_TOKEN is missing"]);
    refused(&h, &["bb", "claim"], &session_env("S-a", "b", &tok_a), ERROR, &["session S-a belongs to agent a, not b"]);
    refused(&h, &["bb", "claim"], &session_env("S-a", "", &tok_a), ERROR, &["MOZI_SESSION is set but MOZI_AGENT is missing"]);
    refused(&h, &["bb", "claim"], &session_env("S-404", "a", &tok_a), ERROR, &["session S-404 is not known on project p"]);

    // The genuine agent succeeds: the refusals above were about identity.
    let out = h.run_env(&["bb", "claim"], &env_a);
    assert!(out.ok().contains("claimed T-0001 for a"), "{out}");

    // Agents cannot use operator powers, nor write system comments.
    refused(&h, &["bb", "cancel"], &env_a, ERROR, &["agent a may not set task T-0001 to cancelled"]);
    refused(&h, &["bb", "block", "--reason", "x"], &env_a, ERROR, &["agent a may not set task T-0001 to blocked"]);
    refused(&h, &["bb", "decision", "approve", "1"], &env_a, ERROR, &["agent a may not approve or reject decisions"]);
    refused(&h, &["bb", "comment", "--type", "system", "--body", "x"], &env_a, ERROR, &["system comments are written by the daemon only"]);

    // Agent b, with its own valid session, cannot touch a's task.
    let env_b = session_env("S-b", "b", &tok_b);
    refused(&h, &["bb", "output", "--summary", "mine now", "--text", "x"], &env_b, ERROR, &["cannot post an output to task T-0001: it is claimed by a, not b"]);
    refused(&h, &["bb", "done"], &env_b, ERROR, &["cannot submit task T-0001: it is claimed by a, not b"]);
    refused(&h, &["bb", "heartbeat"], &env_b, ERROR, &["cannot renew the lease of task T-0001: it is claimed by a, not b"]);
    refused(&h, &["bb", "release"], &env_b, ERROR, &["cannot release task T-0001: it is claimed by a, not b"]);
    refused(&h, &["bb", "fail", "--reason", "sabotage"], &env_b, ERROR, &["cannot fail task T-0001: it is claimed by a, not b"]);

    // Without a session, naming another agent does not make you the holder.
    refused(&h, &bb(&["output", "T-0002", "--agent", "b", "--summary", "s", "--text", "x"]), &[], ERROR, &["cannot post an output to task T-0002: it is claimed by a, not b"]);
    refused(&h, &bb(&["done", "T-0002", "--agent", "b"]), &[], ERROR, &["cannot submit task T-0002: it is claimed by a, not b"]);
    refused(&h, &bb(&["heartbeat", "T-0002", "--agent", "b"]), &[], ERROR, &["claimed by a, not b"]);
    refused(&h, &bb(&["release", "T-0002", "--agent", "b"]), &[], ERROR, &["claimed by a, not b"]);

    // Once the run has ended, its credentials are worthless.
    end_session(&h, "S-a");
    refused(&h, &["bb", "comment", "--body", "still here"], &env_a, ERROR, &["session S-a has already ended"]);
    refused(&h, &["bb", "done"], &env_a, ERROR, &["session S-a has already ended"]);
}

#[test]
fn artifact_paths_cannot_escape_outputs() {
    let h = fixture();
    let outside = tempfile::tempdir().unwrap();
    let src = h.path().join("report.txt");
    std::fs::write(&src, "the report").unwrap();
    let src = src.to_str().unwrap();
    let outputs = h.project_dir("p").join("artifacts/T-0002/outputs");
    std::fs::create_dir_all(&outputs).unwrap();
    std::os::unix::fs::symlink(outside.path(), outputs.join("link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("planted.txt"),
        outputs.join("planted.txt"),
    )
    .unwrap();
    let absolute = outside.path().join("abs.txt");

    let post = |name: &str, needle: &str| {
        let args = [
            "output",
            "T-0002",
            "--agent",
            "a",
            "--summary",
            "s",
            "--file",
            src,
            "--name",
            name,
        ];
        refused(&h, &bb(&args), &[], ERROR, &[needle]);
    };
    let relative = "must be a relative path inside outputs/";
    post("../x", relative);
    post("../../../../x", relative);
    post("sub/../../x", relative);
    post("./x", relative);
    post(absolute.to_str().unwrap(), relative);
    post("link/x", "resolves outside");
    post("planted.txt", "is a symlink");
    // A folder chain below a symlink that points outside: nothing may be
    // created outside, not even the folders.
    post("link/new/x", "resolves outside");

    let leaked = listing_of(outside.path());
    assert!(
        leaked.is_empty(),
        "files or folders were created outside outputs/: {leaked:?}"
    );
    assert!(!h.project_dir("p").join("artifacts/T-0002/x").exists());
    assert!(!h.project_dir("p").join("artifacts/x").exists());

    // The legitimate path works and lands inside outputs/.
    let out = h.bb(
        "p",
        &[
            "output",
            "T-0002",
            "--agent",
            "a",
            "--summary",
            "s",
            "--file",
            src,
            "--name",
            "sub/ok.txt",
        ],
    );
    assert!(out.ok().contains("outputs/sub/ok.txt"), "{out}");
    assert_eq!(
        std::fs::read_to_string(outputs.join("sub/ok.txt")).unwrap(),
        "the report"
    );
}

/// The temporary file an artifact is first written to must not be a planted
/// symlink either: the bytes would land outside `outputs/`.
#[test]
fn artifact_temp_file_cannot_be_a_planted_symlink() {
    let h = fixture();
    let outside = tempfile::tempdir().unwrap();
    let src = h.path().join("report.txt");
    std::fs::write(&src, "the report").unwrap();
    let outputs = h.project_dir("p").join("artifacts/T-0002/outputs");
    std::fs::create_dir_all(&outputs).unwrap();
    // `bb output` writes `<name without extension>.partial~`, then renames it.
    std::os::unix::fs::symlink(outside.path().join("hijack"), outputs.join("x.partial~")).unwrap();
    let out = h.bb(
        "p",
        &[
            "output",
            "T-0002",
            "--agent",
            "a",
            "--summary",
            "s",
            "--file",
            src.to_str().unwrap(),
            "--name",
            "x.txt",
        ],
    );
    assert!(
        !outside.path().join("hijack").exists(),
        "artifact bytes were written outside outputs/ through a planted symlink:\n{out}"
    );
    if out.code == 0 {
        let meta = std::fs::symlink_metadata(outputs.join("x.txt")).unwrap();
        assert!(meta.is_file(), "the stored artifact is a symlink:\n{out}");
        assert_eq!(
            std::fs::read_to_string(outputs.join("x.txt")).unwrap(),
            "the report"
        );
    }
}

#[test]
#[rustfmt::skip]
fn dependency_cycles_are_refused() {
    let h = TestHome::new();
    h.create_project("p");
    h.create_task("p", "one", &[]);
    h.create_task("p", "two", &["--depends-on", "T-0001"]);
    h.create_task("p", "three", &["--depends-on", "T-0002"]);
    refused(&h, &bb(&["depend", "T-0001", "--on", "T-0001"]), &[], ERROR, &["T-0001 depending on T-0001 would create a dependency cycle"]);
    refused(&h, &bb(&["depend", "T-0001", "--on", "T-0002"]), &[], ERROR, &["T-0001 depending on T-0002 would create a dependency cycle"]);
    refused(&h, &bb(&["depend", "T-0001", "--on", "T-0003"]), &[], ERROR, &["T-0001 depending on T-0003 would create a dependency cycle"]);
    refused(&h, &bb(&["depend", "T-0002", "--on", "T-0003"]), &[], ERROR, &["T-0002 depending on T-0003 would create a dependency cycle"]);
    // A legal edge is accepted, and is what makes the next one a cycle.
    h.create_task("p", "four", &[]);
    h.bb_ok("p", &["depend", "T-0004", "--on", "T-0003"]);
    refused(&h, &bb(&["depend", "T-0001", "--on", "T-0004"]), &[], ERROR, &["T-0001 depending on T-0004 would create a dependency cycle"]);
    // Dependencies cannot be added to finished tasks.
    h.bb_ok("p", &["cancel", "T-0004"]);
    refused(&h, &bb(&["depend", "T-0004", "--on", "T-0001"]), &[], ERROR, &["task T-0004 is cancelled: dependencies can only be added to open tasks"]);
}

#[test]
#[rustfmt::skip]
fn bad_configuration_is_refused_naming_file_key_and_line() {
    let h = TestHome::new();
    h.create_project("p");
    h.create_task("p", "t", &[]);
    let global = h.path().join("config/default.yaml");
    let project = h.project_dir("p").join("config/project.yaml");
    std::fs::create_dir_all(global.parent().unwrap()).unwrap();
    let project_original = std::fs::read_to_string(&project).unwrap();
    let claim = bb(&["claim", "T-0001", "--agent", "a"]);

    let global_cases: &[(&str, &[&str])] = &[
        ("daemon:\n  tick_interval: 30\n  tick_intervall: 5\n", &["default.yaml", "unknown field `tick_intervall`", "line 3"]),
        ("daemon:\n  tick_interval: \"30\n", &["default.yaml", "found unexpected end of stream", "while scanning a quoted scalar at line 2 column 18"]),
        ("logging:\n  level: info\n   max_file_size: 10MB\n", &["default.yaml", "mapping values are not allowed in this context at line 3 column 17"]),
        ("daemon:\n  tick_interval: 0\n", &["default.yaml line 2", "`daemon.tick_interval` must be between 1 and 86400 seconds, got 0"]),
        ("daemon:\n  task_timeout: soon\n", &["default.yaml", "task_timeout", "line 2"]),
        ("demon:\n  tick_interval: 5\n", &["default.yaml", "unknown field `demon`"]),
        ("review:\n  confidence_threshold: 1.5\n", &["default.yaml line 2", "`review.confidence_threshold` must be between 0 and 1"]),
    ];
    for (text, needles) in global_cases {
        std::fs::write(&global, text).unwrap();
        refused(&h, &claim, &[], ERROR, needles);
        // doctor reports the same problem (on stdout) and fails.
        let before = h.dump("p");
        let doctor = h.run(&["doctor"]);
        doctor.fails(ERROR, &["doctor found"]);
        assert!(doctor.stdout.contains("FAIL config"), "{doctor}");
        for n in *needles {
            assert!(doctor.stdout.contains(n), "doctor does not mention {n:?}:\n{doctor}");
        }
        h.dump("p").assert_same(&before, "doctor");
    }
    std::fs::remove_file(&global).unwrap();

    let project_cases: &[(&str, &[&str])] = &[
        ("max_agents: 3\n", &["project.yaml", "unknown field `max_agents`"]),
        ("max_global_agents: 0\n", &["project.yaml", "`max_global_agents` must be at least 1"]),
        ("max_global_agents: 50\n", &["project.yaml", "`max_global_agents` (50) exceeds the global daemon.max_global_agents (5)"]),
        ("agents: [\"../x\"]\n", &["project.yaml", "invalid agent id \"../x\""]),
        ("daemon:\n  tick_interval: 5\n", &["project.yaml", "unknown field `tick_interval`"]),
        ("daemon:\n  task_timeout: 0\n", &["project.yaml line 2", "`daemon.task_timeout` must be between 1 and 604800"]),
        ("agents: [a,\n", &["project.yaml", "did not find expected node content at line 2 column 1"]),
        ("context:\n  a: 1\n   b: 2\n", &["project.yaml", "mapping values are not allowed in this context at line 3 column 5"]),
    ];
    for (text, needles) in project_cases {
        std::fs::write(&project, text).unwrap();
        refused(&h, &claim, &[], ERROR, needles);
    }
    std::fs::write(&project, &project_original).unwrap();

    refused(&h, &claim, &[("MOZI_DAEMON__TASK_TIMEOUT", "0")], ERROR, &["environment variable MOZI_DAEMON__TASK_TIMEOUT", "daemon.task_timeout"]);
    refused(&h, &claim, &[("MOZI_DAEMON__NO_SUCH_KEY", "1")], ERROR, &["environment variable MOZI_DAEMON__NO_SUCH_KEY", "no_such_key"]);

    // Repaired, the same command works: the refusals were about configuration.
    assert!(h.bb_ok("p", &["claim", "T-0001", "--agent", "a"]).contains("claimed T-0001 for a"));
}

/// Issue 23, finding 10: a FIFO as an output's file froze the MCP server
/// (and the CLI), and `/dev/zero` had no size cap. Only regular files are
/// read, without blocking.
#[test]
fn an_output_file_must_be_a_regular_file() {
    let h = fixture();
    let fifo = h.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for (file, what) in [
        (fifo.to_str().unwrap(), "a FIFO"),
        ("/dev/zero", "a device"),
    ] {
        let args = [
            "output",
            "T-0002",
            "--agent",
            "a",
            "--summary",
            "s",
            "--file",
            file,
        ];
        refused(&h, &bb(&args), &[], ERROR, &[what]);
    }
}

/// A home with a team: `coder` takes `code` and `data`, `writer` takes
/// `docs` and is left out of project `p`'s `agents:` list, `reviewer` takes
/// `review`; protocol `output` is defined.
fn team_home() -> TestHome {
    let agents = "agents:\n\
        \x20 - { id: coder, runtime: command, command: [\"true\"], kinds: [code, data], roles: [reviewer] }\n\
        \x20 - { id: writer, runtime: command, command: [\"true\"], kinds: [docs] }\n\
        \x20 - { id: reviewer, runtime: command, command: [\"true\"], kinds: [review], roles: [reviewer] }\n";
    let h = TestHome::with_config("", agents);
    let protocols = h.path().join("config/review_protocols");
    std::fs::create_dir_all(&protocols).unwrap();
    std::fs::write(
        protocols.join("output.yaml"),
        "name: output\napplies_to: [data]\nreviewers:\n  - role: reviewer\npass_rule: all_approve\n",
    )
    .unwrap();
    h.create_project("p");
    std::fs::write(
        h.project_dir("p").join("config/project.yaml"),
        "agents: [coder, reviewer]\n",
    )
    .unwrap();
    h
}

#[test]
#[rustfmt::skip]
fn creation_refuses_a_task_that_could_never_start_unless_forced() {
    let h = team_home();
    let force = "--force (API and inbox: \"force\": true)";
    // Each refusal names the value, the known choices and the way out; the
    // board is left exactly as it was.
    refused(&h, &bb(&["create", "--title", "t", "--assignee", "ghost"]), &[], ERROR, &["unknown assignee \"ghost\"", "config/agents.yaml defines: coder, writer, reviewer", force]);
    refused(&h, &bb(&["create", "--title", "t", "--assignee", "writer"]), &[], ERROR, &["assignee \"writer\" is not allowed on the project", "its agents: coder, reviewer", force]);
    refused(&h, &bb(&["create", "--title", "t", "--kind", "design"]), &[], ERROR, &["no agent takes kind \"design\"", "kinds taken: code, data, review", force]);
    // `docs` is taken only by an agent the project leaves out.
    refused(&h, &bb(&["create", "--title", "t", "--kind", "docs"]), &[], ERROR, &["no agent takes kind \"docs\""]);
    refused(&h, &bb(&["create", "--title", "t", "--protocol", "nosuch"]), &[], ERROR, &["unknown review protocol \"nosuch\"", "config/review_protocols/ defines: output", force]);
    // Two problems at once: both are named.
    refused(&h, &bb(&["create", "--title", "t", "--kind", "design", "--protocol", "nosuch"]), &[], ERROR, &["no agent takes kind \"design\"", "unknown review protocol \"nosuch\""]);

    // What can start is created as before; an assignee takes any kind.
    assert_eq!(h.create_task("p", "fine", &["--kind", "data", "--protocol", "output"]), "T-0001");
    assert_eq!(h.create_task("p", "assigned", &["--assignee", "coder", "--kind", "design"]), "T-0002");

    // --force creates each anyway, stored as asked.
    assert_eq!(h.create_task("p", "ghostly", &["--assignee", "ghost", "--force"]), "T-0003");
    assert_eq!(h.create_task("p", "designed", &["--kind", "design", "--force"]), "T-0004");
    assert_eq!(h.create_task("p", "unreviewed", &["--protocol", "nosuch", "--force"]), "T-0005");
    let t = h.bb("p", &["read", "T-0003", "--json"]).json();
    assert!(t.to_string().contains("\"assignee\":\"ghost\""), "{t}");

    // doctor warns about each pending task that can never start, and only those.
    let doctor = h.run(&["doctor"]);
    for (task, why) in [
        ("T-0003", "can never start: unknown assignee \"ghost\""),
        ("T-0004", "can never start: no agent takes kind \"design\""),
        ("T-0005", "can never start: unknown review protocol \"nosuch\""),
    ] {
        let name = format!("project p task {task}");
        let line = doctor.stdout.lines().find(|l| l.contains(&name));
        assert!(line.is_some_and(|l| l.starts_with("warn ") && l.contains(why)), "doctor does not warn {name}: {why}:\n{doctor}");
    }
    for fine in ["task T-0001", "task T-0002"] {
        assert!(!doctor.stdout.contains(fine), "doctor warns about {fine}:\n{doctor}");
    }
}

/// Issue 26, item 2: `applies_to` did nothing (a `code` task under a
/// protocol with `applies_to: [code]` went straight to done). A task
/// created without a protocol now gets the one covering its kind; `none`
/// asks for no review; a protocol the team cannot staff is not applied.
#[test]
fn a_tasks_protocol_follows_its_kind_unless_one_is_given() {
    let h = team_home();
    let protocols = h.path().join("config/review_protocols");
    // `design-review` covers `code` but needs a role nobody has.
    std::fs::write(
        protocols.join("design.yaml"),
        "name: design-review\napplies_to: [code]\nreviewers:\n  - role: architect\npass_rule: all_approve\n",
    )
    .unwrap();
    let protocol_of = |id: &str| -> serde_json::Value {
        let t = h.bb("p", &["read", id, "--json"]).json();
        assert!(t["id"] == id, "{t}");
        t["review_protocol"].clone()
    };
    let by_kind = h.create_task("p", "by kind", &["--kind", "data"]);
    assert_eq!(protocol_of(&by_kind), "output");
    let opted_out = h.create_task("p", "no review", &["--kind", "data", "--protocol", "none"]);
    assert_eq!(protocol_of(&opted_out), serde_json::Value::Null);
    let named = h.create_task("p", "named", &["--kind", "code", "--protocol", "output"]);
    assert_eq!(protocol_of(&named), "output");
    // Only an unstaffable protocol covers `code`: none is applied.
    let unstaffed = h.create_task("p", "code", &["--kind", "code"]);
    assert_eq!(protocol_of(&unstaffed), serde_json::Value::Null);
}

/// A decision is shown one way (`D7`) and found by every form people have
/// seen (`7`, `D7`, `D-7`, `#7`).
#[test]
fn decision_ids_are_shown_one_way_and_read_in_every_form() {
    let h = fixture();
    for n in 2..=5 {
        let said = h.bb_ok(
            "p",
            &["decide", "--propose", "--question", &format!("q{n}?")],
        );
        assert_eq!(said, format!("decision D{n} proposed"));
    }
    let list = h.bb_ok("p", &["decision", "list"]);
    for n in 1..=5 {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("D{n} "))),
            "D{n} missing:\n{list}"
        );
    }
    assert!(h
        .bb_ok("p", &["decision", "show", "#1"])
        .starts_with("D1 [approved]"));
    for (form, verb, n) in [
        ("2", "approve", 2),
        ("D3", "approve", 3),
        ("D-4", "reject", 4),
        ("#5", "reject", 5),
    ] {
        let said = h.bb_ok("p", &["decision", verb, form]);
        let status = if verb == "approve" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(said, format!("decision D{n} {status}"), "{verb} {form}");
    }
    assert_eq!(
        h.bb_ok("p", &["decision", "wait", "d3", "--timeout", "1"]),
        "decision D3 approved by human"
    );
    // Anything else is a usage error naming the accepted forms.
    for bad in ["X3", "D", "T-0003", "0"] {
        refused(
            &h,
            &bb(&["decision", "approve", bad]),
            &[],
            USAGE,
            &["is not a decision id (D7; 7, D-7 and #7 are accepted too)"],
        );
    }
}

/// `bb read T-n` says why a pending task is not running: its open
/// dependencies (named), its not-before time, a team that cannot take it,
/// and (no daemon serves the home) the daemon; a blocked task its reason, a
/// working task the decision it waits on.
#[test]
fn a_waiting_task_says_why() {
    let h = team_home();
    let dep = h.create_task("p", "first", &[]);
    let after = h.create_task("p", "second", &["--depends-on", &dep]);
    let ghost = h.create_task("p", "haunted", &["--assignee", "ghost", "--force"]);
    let later = h.create_task("p", "later", &[]);
    // A retry's backoff, as the daemon leaves it: the task's not-before time.
    block_on(async {
        let mut c = support::raw_connection(&h.db("p")).await;
        sqlx::query("UPDATE task SET not_before = ? WHERE id = ?")
            .bind(4_102_444_800_000_i64) // 2100-01-01
            .bind(&later)
            .execute(&mut c)
            .await
            .unwrap();
    });
    let read = |id: &str| h.bb_ok("p", &["read", id]);
    let line = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("waiting for:"))
            .map(str::trim)
            .map(String::from)
    };

    // No daemon serves this home: every pending task says so too.
    const STOPPED: &str = "the daemon: none is running on this home (`moziplus serve`)";
    assert_eq!(
        line(&read(&after)),
        Some(format!(
            "waiting for: dependencies {dep} (pending); {STOPPED}"
        ))
    );
    let haunted = line(&read(&ghost)).unwrap_or_default();
    assert!(haunted.starts_with("waiting for: unknown assignee \"ghost\" (config/agents.yaml defines: coder, writer, reviewer)"), "{haunted}");
    assert_eq!(
        line(&read(&later)),
        Some(format!(
            "waiting for: not before 2100-01-01T00:00:00.000Z; {STOPPED}"
        ))
    );
    assert_eq!(
        line(&read(&dep)),
        Some(format!("waiting for: {STOPPED}")),
        "a ready task waits for the daemon only"
    );
    // `bb read`'s summary lists neither as ready (it listed both): each
    // says why, under its own heading.
    let summary = h.bb_ok("p", &["read"]);
    let expected = [
        "ready:".to_string(),
        "  (none)".to_string(),
        "waiting (dependencies done, but held):".to_string(),
    ];
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines[1..4], expected, "{summary}");
    let under = |id: &str| {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  {id} ")))
            .unwrap_or_else(|| panic!("{id} in {summary}"));
        lines[at + 1].trim().to_string()
    };
    assert_eq!(under(&dep), format!("waiting for: {STOPPED}"), "{summary}");
    assert!(
        under(&ghost).starts_with("waiting for: unknown assignee \"ghost\"")
            && under(&ghost).ends_with(STOPPED),
        "{summary}"
    );
    let json: serde_json::Value = serde_json::from_str(&h.bb_ok("p", &["read", "--json"])).unwrap();
    assert_eq!(json["waiting"][&ghost][0]["reason"], "no_agent", "{json}");
    assert_eq!(
        json["waiting"][&dep][0]["reason"], "daemon_stopped",
        "{json}"
    );

    // Once the dependency is done the reason goes away.
    h.bb_ok("p", &["claim", &dep, "--agent", "coder"]);
    assert_eq!(line(&read(&dep)), None, "a working task is not waiting");
    // Unless its run waits on a decision.
    h.bb_ok(
        "p",
        &[
            "decide",
            "--question",
            "which db?",
            "--task",
            &dep,
            "--propose",
            "--agent",
            "coder",
        ],
    );
    let n = support::query_i64(&h.db("p"), "SELECT MAX(id) FROM decision");
    assert_eq!(
        line(&read(&dep)),
        Some(format!(
            "waiting for: decision D{n} (`bb decision approve|reject`)"
        ))
    );
    h.bb_ok("p", &["decision", "approve", &format!("D{n}")]);
    assert_eq!(
        line(&read(&dep)),
        None,
        "an approved decision holds nothing"
    );
    h.bb_ok("p", &["done", &dep, "--agent", "coder"]);
    assert_eq!(line(&read(&after)), Some(format!("waiting for: {STOPPED}")));
    // A blocked task says why it was blocked.
    h.bb_ok("p", &["block", &later, "--reason", "needs a licence"]);
    assert_eq!(
        line(&read(&later)).as_deref(),
        Some("waiting for: blocked: needs a licence")
    );
}

/// Issue 26, item 9: `bb list --json | head -c 600` failed with "Broken
/// pipe" and `completions zsh | head -1` panicked. A reader that stops
/// early is not an error: exit 0, nothing on stderr.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::io::Read;
    use std::process::Stdio;
    let h = TestHome::new();
    h.create_project("p");
    // More than a pipe's 64 KiB of JSON.
    let long = "x".repeat(6_000);
    for i in 0..20 {
        h.create_task("p", &format!("t{i}"), &["--description", &long]);
    }
    for args in [
        &["bb", "--project", "p", "list", "--json"][..],
        &["completions", "zsh"],
        &["completions", "bash"],
    ] {
        let mut c = h.command();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut first = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The reader is gone: the rest cannot be written.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Issue 26, item 9: `bb list` had no header and ragged columns, and
/// `--status pending,blocked` was refused though the API takes lists.
#[test]
fn bb_list_has_a_header_aligned_columns_and_takes_comma_lists() {
    let h = fixture();
    let text = h.bb_ok("p", &["list", "--status", "pending,blocked"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID")
            && lines[0].contains("STATUS")
            && lines[0].contains("TITLE")
            && lines[0].ends_with("WAITING FOR"),
        "{text}"
    );
    let title_at = lines[0].find("TITLE").unwrap();
    let waiting_at = lines[0].find("WAITING FOR").unwrap();
    for l in &lines[1..] {
        assert!(l.contains("pending") || l.contains("blocked"), "{text}");
        assert!(!l.contains("working") && !l.contains("cancelled"), "{text}");
        for at in [title_at, waiting_at] {
            assert_eq!(
                l.char_indices().nth(at).map(|(_, c)| c != ' '),
                Some(true),
                "aligned: {text}"
            );
        }
    }
    let json = h
        .bb("p", &["list", "--status", "pending,blocked", "--json"])
        .json();
    let statuses: std::collections::BTreeSet<String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["blocked", "pending"].map(String::from).into());
}

/// Issue 26, item 9: completions offer task, project and agent ids. The
/// bash script of `moziplus completions bash` is sourced in a real bash and
/// its completion function run as bash runs it on <TAB>.
#[test]
fn bash_completion_offers_project_agent_and_task_ids() {
    let h = team_home();
    h.create_project("q");
    let t1 = h.create_task("p", "one", &[]);
    let t2 = h.create_task("p", "two", &[]);
    let done = h.create_task("p", "finished", &[]);
    h.bb_ok("p", &["claim", &done, "--agent", "coder"]);
    h.bb_ok("p", &["done", &done, "--agent", "coder"]);
    assert_eq!(h.ok(&["complete-ids", "projects"]), "p\nq");
    assert_eq!(h.ok(&["complete-ids", "agents"]), "coder\nwriter\nreviewer");
    // Open tasks only (a done one is not offered).
    assert_eq!(
        h.ok(&["complete-ids", "tasks", "--project", "p"]),
        format!("{t1}\n{t2}")
    );
    // A project that does not exist offers nothing, quietly.
    let none = h.run(&["complete-ids", "tasks", "--project", "nope"]);
    assert_eq!(none.ok(), "");

    let script = h.ok(&["completions", "bash"]);
    let path = h.path().join("moziplus.bash");
    std::fs::write(&path, script).unwrap();
    let bin_dir = std::path::Path::new(support::BIN).parent().unwrap();
    let complete = |words: &[&str]| -> String {
        let cword = words.len() - 1;
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let program = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; _moziplus_ids moziplus '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            quoted.join(" "),
            words.join(" "),
            words[cword],
            words[cword - 1],
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("MOZI_HOME", h.path())
            .env_remove("MOZI_PROJECT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete(&["moziplus", "bb", "--project", ""]), "p\nq");
    assert_eq!(
        complete(&["moziplus", "bb", "--project", "p", "read", "T"]),
        format!("{t1}\n{t2}")
    );
    assert_eq!(
        complete(&["moziplus", "bb", "-p", "p", "create", "--assignee", "w"]),
        "writer"
    );
    // Anything else is clap's own completion: the subcommands.
    let subcommands = complete(&["moziplus", "b"]);
    assert!(subcommands.lines().any(|l| l == "bb"), "{subcommands}");
}

/// `shell` (zsh or fish) at /usr/bin, or `None` with a note (a failure
/// under CI, where scripts/test.sh installs both).
fn shell(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new("/usr/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{name} missing — run scripts/test.sh (it installs zsh and fish)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED the {name} completion test: {msg} !!!!!!!!!!\n");
    None
}

/// Runs `program` in `shell` with the built moziplus on the PATH and `h` as
/// the home, in an empty directory (no file names among the candidates);
/// its standard output, trimmed.
fn in_shell(shell: &std::path::Path, h: &TestHome, program: &str) -> String {
    let bin_dir = std::path::Path::new(support::BIN).parent().unwrap();
    let cwd = h.path().join("empty-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = std::process::Command::new(shell)
        .current_dir(&cwd)
        .arg("-c")
        .arg(program)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("MOZI_HOME", h.path())
        .env_remove("MOZI_PROJECT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 26, item 9: zsh's completion offers the ids too. The script of
/// `moziplus completions zsh` is sourced in a real zsh and its `_moziplus`
/// run with the words of a command line, as the completion system runs it
/// on <TAB>; `compadd` (which needs the line editor) prints what it is
/// given, and clap's own completion is called for anything else.
#[test]
fn zsh_completion_offers_project_agent_and_task_ids() {
    let Some(zsh) = shell("zsh") else { return };
    let h = team_home();
    h.create_project("q");
    let t1 = h.create_task("p", "one", &[]);
    let t2 = h.create_task("p", "two", &[]);
    let script = h.ok(&["completions", "zsh"]);
    // One dispatch, to the id-aware function; clap's is kept under its own name.
    assert_eq!(script.matches("compdef _moziplus moziplus").count(), 1);
    assert_eq!(script.matches("\n_moziplus() {").count(), 1);
    assert_eq!(script.matches("\n_moziplus_clap() {").count(), 1);
    let path = h.path().join("_moziplus");
    std::fs::write(&path, script).unwrap();
    let complete = |words: &[&str]| -> String {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        in_shell(
            &zsh,
            &h,
            &format!(
                "compdef() {{ :; }}; source '{}'; \
                 compadd() {{ [[ $1 == -a ]] && print -l -- ${{(P)2}}; }}; \
                 _moziplus_clap() {{ print clap; }}; \
                 words=({}); CURRENT={}; _moziplus",
                path.display(),
                quoted.join(" "),
                words.len()
            ),
        )
    };
    assert_eq!(complete(&["moziplus", "bb", "--project", ""]), "p\nq");
    assert_eq!(
        complete(&["moziplus", "bb", "--project", "p", "read", "T"]),
        format!("{t1}\n{t2}")
    );
    assert_eq!(
        complete(&["moziplus", "bb", "-p", "p", "create", "--assignee", "w"]),
        "coder\nwriter\nreviewer"
    );
    // A --home given on the line is the one asked.
    let elsewhere = TestHome::new();
    let with_home = complete(&[
        "moziplus",
        "--home",
        elsewhere.path().to_str().unwrap(),
        "bb",
        "--project",
        "",
    ]);
    assert_eq!(with_home, "clap", "an empty home offers no project");
    // No tasks without a project, and anything else is clap's.
    assert_eq!(complete(&["moziplus", "bb", "read", "T"]), "clap");
    assert_eq!(complete(&["moziplus", "b"]), "clap");
}

/// Issue 26, item 9: fish's completion offers the ids too, asked of a real
/// fish with `complete -C` (what fish runs on <TAB>), beside clap's own.
#[test]
fn fish_completion_offers_project_agent_and_task_ids() {
    let Some(fish) = shell("fish") else { return };
    let h = team_home();
    h.create_project("q");
    let t1 = h.create_task("p", "one", &[]);
    let t2 = h.create_task("p", "two", &[]);
    let path = h.path().join("moziplus.fish");
    std::fs::write(&path, h.ok(&["completions", "fish"])).unwrap();
    // Candidates only (fish prints `candidate<TAB>description`).
    let complete = |line: &str| -> Vec<String> {
        let out = in_shell(
            &fish,
            &h,
            &format!("source '{}'; complete -C '{line}'", path.display()),
        );
        out.lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(complete("moziplus bb --project "), ["p", "q"]);
    assert_eq!(complete("moziplus bb --project p read T"), [t1, t2]);
    assert_eq!(complete("moziplus bb -p p create --assignee w"), ["writer"]);
    // A --home given on the line is the one asked: an empty one has none.
    let elsewhere = TestHome::new();
    let listed = complete(&format!(
        "moziplus --home {} bb --project ",
        elsewhere.path().display()
    ));
    assert!(listed.is_empty(), "{listed:?}");
    // clap's completions are still there: the subcommands.
    assert!(complete("moziplus b").iter().any(|c| c == "bb"));
}

/// Every command, flag and argument shown by `--help` (hidden ones aside)
/// without a line of help: `command-path name`.
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if a.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path} {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(sub_path.clone());
        }
        undocumented(sub, &sub_path, out);
    }
}

/// Issue 26, item 9: `--priority`, `--verdict` and `--status` did not list
/// their values, the decision verbs had no help, and a dozen flags had no
/// line at all. Every command, flag and argument now says what it takes,
/// and each vocabulary lists its values (and a wrong value names them).
#[test]
fn every_flag_is_documented_with_its_values() {
    use clap::CommandFactory;
    let mut missing = Vec::new();
    undocumented(&moziplus::cli::Cli::command(), "moziplus", &mut missing);
    assert!(missing.is_empty(), "without help:\n{}", missing.join("\n"));
    let h = team_home();
    for (args, values) in [
        (
            &["bb", "create", "--help"][..],
            "[possible values: urgent, high, normal, low]",
        ),
        (
            &["bb", "review", "--help"][..],
            "[possible values: approve, revise, reject]",
        ),
        (
            &["bb", "list", "--help"][..],
            "[possible values: pending, working, review, done, blocked, failed, cancelled]",
        ),
        (
            &["bb", "decision", "list", "--help"][..],
            "[possible values: proposed, approved, rejected]",
        ),
        (
            &["bb", "experience", "list", "--help"][..],
            "[possible values: active, distilled, deprecated]",
        ),
        (
            &["bb", "observe", "--help"][..],
            "[possible values: info, warn, alert]",
        ),
    ] {
        let help = h.ok(args);
        // clap wraps long lines: compare with the whitespace folded.
        let folded = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(folded.contains(values), "{args:?}:\n{help}");
    }
    // A wrong value is named with the choices; comma lists still parse.
    refused(
        &h,
        &bb(&["create", "--title", "t", "--priority", "asap"]),
        &[],
        USAGE,
        &[
            "invalid value 'asap' for '--priority <PRIORITY>'",
            "[possible values: urgent, high, normal, low]",
        ],
    );
    h.bb_ok("p", &["list", "--status", "pending,blocked"]);
}
