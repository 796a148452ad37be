//! Agent runtimes through `moziplus serve` (issue 12; defects 4 and 8 of
//! issue 13): the run environment is an allow-list, infrastructure failures
//! cost no round and degrade readiness, agent failures cost a round spaced
//! by the backoff with their stderr in the observation, the session log
//! keeps stdout and stderr, the demo works from an empty directory, a team
//! without a reviewer starts, and the real OpenClaw CLI works a task.
//!
//! The LLM is a scripted fake (`support/scripted_llm.rs`): NVIDIA and the
//! other providers cannot be reached from tests. Like NVIDIA's free tier it
//! speaks only chat completions. The CLIs are the real ones from npm,
//! installed by `scripts/test.sh` into `.tools/` (`MOZI_TEST_OPENCLAW`,
//! `MOZI_TEST_NODE_DIR`).

#[path = "support/scripted_llm.rs"]
mod scripted_llm;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str =
    "daemon:\n  tick_interval: 1\n  task_timeout: 120\n  kill_grace: 2\n  retry_backoff: [2]\n";

/// `moziplus serve` with exactly `env` on top of a clean environment (no
/// `MOZI_*` from the caller).
fn start_with_env(home: &TestHome, env: &[(&str, String)]) -> Daemon {
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.path().join("daemon.log"))
        .unwrap();
    let mut cmd = home.command();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn daemon");
    let d = Daemon { child, port };
    wait_for(Duration::from_secs(30), "daemon /health", || {
        d.get("/health").is_some_and(|(c, _)| c == 200)
    });
    d
}

/// Every session log of a project, for failure messages.
fn session_logs(db: &Path) -> String {
    query_strings(db, "SELECT log_path FROM session")
        .iter()
        .map(|p| {
            format!(
                "--- {p}\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect()
}

fn task_status(db: &Path, id: &str) -> String {
    query_strings(db, &format!("SELECT status FROM task WHERE id = '{id}'"))
        .pop()
        .unwrap_or_default()
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Replays a project's events from its start (`since=<project>:0`) at
/// `levels`, reading until `until` appears or `limit` passes.
fn replay_events(port: u16, project: &str, levels: &str, until: &str, limit: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    write!(
        s,
        "GET /api/events?project={project}&levels={levels}&since={project}:0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&buf).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn an_agent_sees_only_the_allow_listed_environment() {
    let home = TestHome::with_config(CONFIG, "");
    let dump = home.path().join("env-dump.txt");
    let script = home.script(
        "dump.sh",
        &format!(
            "#!/bin/bash\nenv | sort > {}\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
            dump.display()
        ),
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: dumper\n    runtime: command\n    model: fake/m1\n    command: [\"{}\", \"--model={{model}}\"]\n    env: {{ AGENT_SETTING: \"on\" }}\n    pass_env: [PASSED_VAR]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let t = home.create_task("p", "dump the environment", &[]);
    let secrets = [
        ("NVIDIA_API_KEY", "nvapi-secret-1".to_string()),
        ("DEEPSEEK_API_KEY", "ds-secret-2".to_string()),
        ("MOZI_SERVER__API_TOKEN", "api-token-secret-3".to_string()),
        ("SOME_DAEMON_VAR", "daemon-only-4".to_string()),
        ("PASSED_VAR", "passed-5".to_string()),
    ];
    let daemon = start_with_env(&home, &secrets);
    let db = home.db("p");
    wait_for(Duration::from_secs(30), "the task to be done", || {
        task_status(&db, &t) == "done"
    });
    let env = std::fs::read_to_string(&dump).unwrap();
    for (name, value) in &secrets[..4] {
        assert!(
            !env.contains(value),
            "{name}'s value reached the agent:\n{env}"
        );
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} reached the agent:\n{env}"
        );
    }
    let has = |prefix: &str| env.lines().any(|l| l.starts_with(prefix));
    for expected in [
        "PASSED_VAR=passed-5",
        "AGENT_SETTING=on",
        &format!("MOZI_TASK={t}"),
        "MOZI_PROJECT=p",
        "MOZI_AGENT=dumper",
        "MOZI_SESSION=S-",
        "MOZI_SESSION_TOKEN=",
        "MOZI_RUN_KEY=mozi-",
        "MOZI_MODEL=fake/m1",
        "OPENAI_API_KEY=mozi-",
        &format!("OPENAI_BASE_URL=http://127.0.0.1:{}/v1", daemon.port),
        "PATH=",
        "HOME=",
    ] {
        assert!(
            has(expected),
            "{expected:?} missing from the run's environment:\n{env}"
        );
    }
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    assert!(
        has(&format!("PATH={bin_dir}:")),
        "PATH starts with the binary's folder:\n{env}"
    );
    // Nothing else of the daemon's MOZI_* settings.
    let allowed_mozi = [
        "MOZI_HOME",
        "MOZI_PROJECT",
        "MOZI_TASK",
        "MOZI_AGENT",
        "MOZI_SESSION",
        "MOZI_SESSION_TOKEN",
        "MOZI_RUN_KIND",
        "MOZI_BIN",
        "MOZI_BRIEF",
        "MOZI_RUN_KEY",
        "MOZI_GATEWAY",
        "MOZI_MODEL",
        "MOZI_WORKSPACE",
    ];
    for l in env.lines().filter(|l| l.starts_with("MOZI_")) {
        let name = l.split('=').next().unwrap();
        assert!(
            allowed_mozi.contains(&name),
            "unexpected {name} in the run's environment"
        );
    }
    // The command's {model} placeholder was filled in.
    let command = query_strings(&db, "SELECT command FROM session").join("\n");
    assert!(command.contains("--model=fake/m1"), "{command}");
    assert!(daemon.stop().success());

    // Naming a provider key in pass_env refuses the start.
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: dumper\n    runtime: command\n    command: [\"{}\"]\n    pass_env: [NVIDIA_API_KEY]\n",
            script.display()
        ),
    )
    .unwrap();
    let out = home.run(&["serve", "--bind", &format!("127.0.0.1:{}", free_port())]);
    assert_ne!(out.code, 0, "{out}");
    let err = out.stderr.as_str();
    assert!(
        err.contains("agents.dumper.pass_env names NVIDIA_API_KEY"),
        "{err}"
    );
}

#[test]
fn a_missing_cli_costs_no_round_degrades_readiness_and_recovers_once_installed() {
    let home = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  task_timeout: 60\n  kill_grace: 2\n  retry_backoff: [5]\n",
        "",
    );
    let agent = home.path().join("bin/late-agent");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: late\n    runtime: command\n    kinds: [code]\n    command: [\"{}\"]\n  - id: coder\n    runtime: codex\n    kinds: [codex]\n",
            agent.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let t = home.create_task(
        "p",
        "needs the late agent",
        &["--kind", "code", "--max-rounds", "1"],
    );
    let c = home.create_task(
        "p",
        "needs codex",
        &["--kind", "codex", "--max-rounds", "1"],
    );
    // A PATH without codex.
    let daemon = start_with_env(&home, &[("PATH", "/usr/bin:/bin".to_string())]);
    let db = home.db("p");
    wait_for(
        Duration::from_secs(20),
        "readiness to report both problems",
        || {
            daemon.get("/health/ready").is_some_and(|(code, body)| {
                code == 503 && body.contains("late-agent") && body.contains("runtime codex")
            })
        },
    );
    let (_, body) = daemon.get("/health/ready").unwrap();
    let ready = json_of(&body);
    let degraded = ready["degraded"].as_array().unwrap();
    assert!(
        degraded
            .iter()
            .any(|p| p["agent"] == "coder" && p["runtime"] == "codex" && p["project"] == "p"),
        "{ready}"
    );
    // Within the backoff: one attempt each, no round counted, nothing failed.
    std::thread::sleep(Duration::from_millis(1500));
    for id in [&t, &c] {
        assert_eq!(task_status(&db, id), "pending", "{id}");
        assert_eq!(
            query_i64(&db, &format!("SELECT round FROM task WHERE id = '{id}'")),
            1
        );
    }
    assert_eq!(
        query_i64(
            &db,
            &format!("SELECT COUNT(*) FROM session WHERE task_id = '{t}'")
        ),
        1
    );
    let detail = query_strings(
        &db,
        &format!("SELECT detail FROM session WHERE task_id = '{c}'"),
    )
    .join("\n");
    assert!(detail.contains("\"infrastructure\":true"), "{detail}");
    let obs = query_strings(&db, "SELECT body FROM observation ORDER BY id").join("\n");
    assert!(
        obs.contains("runtime codex: `codex` not found on PATH"),
        "{obs}"
    );
    assert!(obs.contains("no round counted"), "{obs}");
    // Installing the program ends the problem at the next attempt.
    std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
    std::fs::write(
        &agent,
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wait_for(
        Duration::from_secs(20),
        "the task to be done once the agent exists",
        || task_status(&db, &t) == "done",
    );
    // Positive control of "one attempt within the backoff": the same session
    // count sees the attempt made after it.
    assert!(
        query_i64(
            &db,
            &format!("SELECT COUNT(*) FROM session WHERE task_id = '{t}'")
        ) >= 2,
        "the retry after the backoff is counted"
    );
    let (_, body) = daemon.get("/health/ready").unwrap();
    let ready = json_of(&body);
    let degraded = ready["degraded"].as_array().unwrap();
    assert!(degraded.iter().all(|p| p["agent"] != "late"), "{ready}");
    assert!(
        degraded.iter().any(|p| p["agent"] == "coder"),
        "codex is still missing: {ready}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_failing_cli_costs_a_round_with_its_stderr_and_rounds_wait_for_the_backoff() {
    let home = TestHome::with_config(CONFIG, "");
    let script = home.script(
        "bad-flags.sh",
        "#!/bin/bash\necho 'starting' >&2\necho \"error: unexpected argument '--full-auto' found\" >&2\nexit 2\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: bad\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let t = home.create_task("p", "fails at start", &["--max-rounds", "2"]);
    let daemon = start_with_env(&home, &[]);
    let db = home.db("p");
    wait_for(
        Duration::from_secs(30),
        "the task to fail after two rounds",
        || task_status(&db, &t) == "failed",
    );
    let obs = query_strings(&db, "SELECT body FROM observation ORDER BY id").join("\n");
    assert!(obs.contains("exit code 2"), "{obs}");
    assert!(
        obs.contains("unexpected argument '--full-auto' found"),
        "stderr in the observation: {obs}"
    );
    let starts = query_strings(&db, "SELECT CAST(started_at AS TEXT) || ' ' || CAST(ended_at AS TEXT) FROM session ORDER BY started_at");
    assert_eq!(starts.len(), 2, "{starts:?}");
    let first_end: i64 = starts[0].split(' ').nth(1).unwrap().parse().unwrap();
    let second_start: i64 = starts[1].split(' ').next().unwrap().parse().unwrap();
    assert!(
        second_start - first_end >= 2000,
        "round 2 started {} ms after round 1 failed; the backoff is 2 s",
        second_start - first_end
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_json_result_error_fails_the_run_and_the_log_keeps_stdout_and_stderr() {
    let home = TestHome::with_config(CONFIG, "");
    // An OpenClaw-style program: progress on both streams, then its verdict.
    let script = home.script(
        "aborting.sh",
        "#!/bin/bash\necho out-line-1\necho err-line-1 >&2\necho out-line-2\necho err-line-2 >&2\n\"$MOZI_BIN\" bb output \"$MOZI_TASK\" --summary partial --text partial >/dev/null\necho '{\"payloads\":[{\"text\":\"gave up\"}],\"meta\":{\"aborted\":true,\"agentMeta\":{\"sessionId\":\"oc-9\"}}}'\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "runtimes:\n  jsonrt:\n    command: [\"{}\"]\n    json_result: true\nagents:\n  - id: aborter\n    runtime: jsonrt\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let t = home.create_task("p", "aborts", &["--max-rounds", "1"]);
    let daemon = start_with_env(&home, &[]);
    let db = home.db("p");
    wait_for(Duration::from_secs(30), "the task to fail", || {
        task_status(&db, &t) == "failed"
    });
    let detail = query_strings(&db, "SELECT detail FROM session").join("\n");
    assert!(
        detail.contains("openclaw reported an error: the run was aborted"),
        "{detail}"
    );
    assert!(detail.contains("\"cli_session\":\"oc-9\""), "{detail}");
    let log_path = query_strings(&db, "SELECT log_path FROM session")
        .pop()
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    for line in [
        "out-line-1",
        "out-line-2",
        "err-line-1",
        "err-line-2",
        "\"aborted\":true",
    ] {
        assert!(
            log.contains(line),
            "{line} missing from the session log:\n{log}"
        );
    }
    assert!(
        log.contains("[mozi:activity] {\"activity\":{\"kind\":\"error\""),
        "{log}"
    );
    let mode = std::fs::metadata(&log_path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "the log is private"
    );
    assert!(daemon.stop().success());
}

#[test]
fn serve_demo_in_an_empty_directory_completes_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("../moziplus-demo-test.log")).ok();
    let mut cmd = std::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("MOZI_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .current_dir(dir.path())
        .env("MOZI_DEMO_PACE", "0")
        .args(["serve", "--demo", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null))
        .spawn()
        .unwrap();
    let daemon = Daemon { child, port };
    wait_for(Duration::from_secs(30), "daemon /health", || {
        daemon.get("/health").is_some_and(|(c, _)| c == 200)
    });
    let db = dir.path().join("projects/demo/blackboard.db");
    wait_for(
        Duration::from_secs(120),
        "the demo's four tasks to be done",
        || {
            query_i64(&db, "SELECT COUNT(*) FROM task WHERE id IN ('T-0001','T-0002','T-0003','T-0004') AND status = 'done'") == 4
        },
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'failed'"),
        0
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE outcome = 'failed'"),
        0
    );
    // The review step ran: one rework round on the code task.
    assert_eq!(
        query_i64(&db, "SELECT round FROM task WHERE id = 'T-0003'"),
        2
    );
    assert!(dir.path().join("config/agents.yaml").is_file());
    // With bubblewrap installed (scripts/test.sh installs it) the demo's
    // agents, which set no `permissions:`, ran in the sandbox.
    if std::path::Path::new("/usr/bin/bwrap").is_file() {
        let commands = query_strings(&db, "SELECT command FROM session");
        assert!(
            !commands.is_empty() && commands.iter().all(|c| c.contains("bwrap")),
            "{commands:?}"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn a_team_without_a_reviewer_starts_and_holds_only_the_tasks_needing_review() {
    let home = TestHome::with_config(CONFIG, "");
    std::fs::create_dir_all(home.path().join("config/review_protocols")).unwrap();
    std::fs::write(
        home.path()
            .join("config/review_protocols/output_review.yaml"),
        include_str!("../config/review_protocols/output_review.yaml"),
    )
    .unwrap();
    let script = home.script(
        "solo.sh",
        "#!/bin/bash\nexec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: solo\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    // doctor and serve agree: the protocol is reported, the start is fine.
    let doctor = home.run(&["doctor"]);
    let text = doctor.stdout.as_str();
    assert_eq!(doctor.code, 0, "{text}");
    assert!(text.contains("ok   serve start checks"), "{text}");
    assert!(text.contains("warn review protocol output"), "{text}");
    assert!(
        text.contains("no agent in config/agents.yaml can be the reviewer role reviewer"),
        "{text}"
    );
    let reviewed = home.create_task("p", "needs review", &["--protocol", "output"]);
    let plain = home.create_task("p", "no review", &[]);
    let daemon = start_with_env(&home, &[]);
    let db = home.db("p");
    wait_for(
        Duration::from_secs(30),
        "the plain task done, the other in review",
        || task_status(&db, &plain) == "done" && task_status(&db, &reviewed) == "review",
    );
    wait_for(
        Duration::from_secs(10),
        "the observation saying why it waits",
        || {
            query_strings(&db, "SELECT body FROM observation")
                .iter()
                .any(|b| {
                    b.contains(&format!(
                        "{reviewed} waits in review: review protocol \"output\" cannot be used"
                    ))
                })
        },
    );
    let (code, body) = daemon.get("/health/ready").unwrap();
    assert_eq!(code, 200, "{body}");
    let ready = json_of(&body);
    assert_eq!(
        ready["unusable_review_protocols"][0]["protocol"], "output",
        "{ready}"
    );
    // Said once, not every tick.
    let ticks = daemon.ticks();
    std::thread::sleep(Duration::from_secs(2));
    // Positive control: there were ticks to repeat it (and the count below
    // sees the one observation).
    assert!(daemon.ticks() > ticks, "the ticker ran during the wait");
    assert_eq!(
        query_i64(
            &db,
            &format!(
                "SELECT COUNT(*) FROM observation WHERE body LIKE '{reviewed} waits in review%'"
            )
        ),
        1
    );
    assert_eq!(task_status(&db, &reviewed), "review");
    assert!(daemon.stop().success());
}

/// The environment of a daemon whose runs use the CLIs of `.tools/`: a PATH
/// with Node >= 24 and the CLI first, a private HOME.
fn cli_env(
    home: &TestHome,
    cli: &Path,
    llm: &scripted_llm::ScriptedLlm,
) -> Vec<(&'static str, String)> {
    let mut path = Vec::new();
    if let Some(node) = std::env::var_os("MOZI_TEST_NODE_DIR") {
        path.push(PathBuf::from(node));
    }
    path.push(cli.parent().unwrap().to_path_buf());
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let user_home = home.path().join("user-home");
    std::fs::create_dir_all(&user_home).unwrap();
    let _ = llm;
    vec![
        (
            "PATH",
            std::env::join_paths(path).unwrap().into_string().unwrap(),
        ),
        ("HOME", user_home.display().to_string()),
        ("NVIDIA_API_KEY", "nvapi-never-seen".to_string()),
    ]
}

fn gateway_config(llm: &scripted_llm::ScriptedLlm) -> String {
    format!(
        "{CONFIG}gateway:\n  default_provider: fake\n  providers:\n    - name: fake\n      base_url: {}\n",
        llm.base_url
    )
}

/// Checks a CLI's finished task: output attached, every call booked to the
/// session, transcript events on /api/events.
fn assert_worked_through_the_gateway(
    home: &TestHome,
    daemon: &Daemon,
    llm: &scripted_llm::ScriptedLlm,
    task: &str,
    tool: &str,
) {
    let db = home.db("p");
    let read = home.ok(&["bb", "--project", "p", "read", task, "--json"]);
    assert!(read.contains("scripted result"), "output attached: {read}");
    let (calls, prompt, completion) = llm.totals();
    assert!(
        calls >= 2,
        "a tool call and a final answer at least, got {calls}"
    );
    assert_eq!(
        llm.served.lock().unwrap().refused_content,
        0,
        "the strict fake (content must be a string, as llama.cpp's server wants) refused none"
    );
    let booked_prompt = query_i64(&db, "SELECT COALESCE(SUM(prompt_tokens), 0) FROM session");
    let booked_completion = query_i64(
        &db,
        "SELECT COALESCE(SUM(completion_tokens), 0) FROM session",
    );
    assert_eq!(
        (booked_prompt, booked_completion),
        (prompt, completion),
        "every model call crossed the gateway and was booked to the run"
    );
    assert!(
        llm.served
            .lock()
            .unwrap()
            .requests
            .iter()
            .all(|(_, model, _)| model == "scripted-model"),
        "the agent's model reached the upstream"
    );
    let events = replay_events(
        daemon.port,
        "p",
        "optional,daily",
        "\"kind\":\"tool_call\"",
        Duration::from_secs(15),
    );
    assert!(events.contains("\"kind\":\"session.activity\""), "{events}");
    assert!(events.contains("\"kind\":\"tool_call\""), "{events}");
    assert!(events.contains(&format!("\"tool\":\"{tool}\"")), "{events}");
    let detail = query_strings(
        &db,
        &format!("SELECT detail FROM session WHERE task_id = '{task}' AND outcome = 'succeeded'"),
    )
    .join("\n");
    assert!(
        detail.contains("cli_session"),
        "the CLI's session id is recorded: {detail}"
    );
}

#[test]
fn openclaw_works_a_task_through_the_gateway() {
    let Some(openclaw) = test_tool("MOZI_TEST_OPENCLAW") else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    let home = TestHome::with_config(
        &gateway_config(&llm),
        "agents:\n  - id: claw\n    runtime: openclaw\n    model: fake/scripted-model\n",
    );
    home.create_project("p");
    let env = cli_env(&home, &openclaw, &llm);
    // doctor sees the CLI and its Node.
    let mut doctor = home.command();
    for (k, v) in &env {
        doctor.env(k, v);
    }
    let out = doctor.arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok   runtime openclaw node"), "{text}");
    assert!(text.contains("ok   runtime openclaw "), "{text}");
    let t = home.create_task("p", "post a result", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(
        Duration::from_secs(240),
        "openclaw to finish the task",
        || {
            let s = task_status(&db, &t);
            assert_ne!(
                s,
                "failed",
                "{}",
                query_strings(&db, "SELECT body FROM observation").join("\n")
            );
            s == "done"
        },
    );
    // `bb done` comes from the tool call; the CLI still sends its final turn.
    wait_for(Duration::from_secs(120), "the openclaw run to end", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) == 1
    });
    assert_eq!(
        query_strings(&db, "SELECT outcome FROM session"),
        ["succeeded"]
    );
    assert_worked_through_the_gateway(&home, &daemon, &llm, &t, "exec");
    assert!(daemon.stop().success());
}

#[test]
fn codex_works_a_task_through_the_gateway() {
    let Some(codex) = test_tool("MOZI_TEST_CODEX") else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    let home = TestHome::with_config(
        &gateway_config(&llm),
        "agents:\n  - id: cdx\n    runtime: codex\n    model: fake/scripted-model\n",
    );
    home.create_project("p");
    let env = cli_env(&home, &codex, &llm);
    let t = home.create_task("p", "post a result", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(Duration::from_secs(240), "codex to finish its run", || {
        let s = task_status(&db, &t);
        assert_ne!(
            s,
            "failed",
            "{}",
            query_strings(&db, "SELECT body FROM observation").join("\n")
        );
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) == 1
    });
    assert_eq!(
        query_strings(&db, "SELECT outcome FROM session"),
        ["succeeded"],
        "{}\n{}",
        query_strings(&db, "SELECT body FROM observation").join("\n"),
        session_logs(&db)
    );
    assert_eq!(task_status(&db, &t), "done");
    assert_worked_through_the_gateway(&home, &daemon, &llm, &t, "shell");
    assert!(daemon.stop().success());
}

/// The real Codex CLI hits its task's budget mid-run: its first model call
/// fits the cap, the second (after the tool result) does not. The gateway
/// refuses it before it reaches the fake provider, the daemon ends the run,
/// and the task is blocked with the reason `budget` in its first round.
///
/// The cap is measured, not guessed: two runs under a 1-token cap are
/// refused at their first call, and each refusal names what that call
/// needed (its prompt counted by the gateway plus its output allowance;
/// the brief grows a little with each run's story). The cap is then set
/// (`moziplus budget set`, which unblocks the task) to what the third run's
/// first call should need plus a 60-token margin: that call fits, and the
/// second needs well beyond it (the same prompt plus the tool call and its
/// result, on top of the ~110 tokens the first call used).
#[test]
fn codex_hits_its_task_budget_mid_run_and_the_task_is_blocked() {
    let Some(codex) = test_tool("MOZI_TEST_CODEX") else {
        return;
    };
    hits_its_task_budget_mid_run(&codex, "codex");
}

/// As [`codex_hits_its_task_budget_mid_run_and_the_task_is_blocked`], for
/// the real Claude Code (Anthropic Messages through the gateway).
#[test]
fn claude_code_hits_its_task_budget_mid_run_and_the_task_is_blocked() {
    let Some(claude) = test_tool("MOZI_TEST_CLAUDE") else {
        return;
    };
    hits_its_task_budget_mid_run(&claude, "claude-code");
}

fn hits_its_task_budget_mid_run(cli: &Path, runtime: &str) {
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    // The tool call fails (`false` before `bb output … && bb done …`), so
    // the task stays the run's and the CLI asks the model again.
    llm.served.lock().unwrap().shell_prefix = Some("false".to_string());
    let config = format!(
        "{}budgets:\n  default_max_output_tokens: 100\n  tasks: {{'*': {{tokens: 1}}}}\n",
        gateway_config(&llm)
    );
    let home = TestHome::with_config(
        &config,
        &format!("agents:\n  - id: cli\n    runtime: {runtime}\n    model: fake/scripted-model\n"),
    );
    home.create_project("p");
    let env = cli_env(&home, cli, &llm);
    let t = home.create_task("p", "post a result", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    let blocks = |db: &Path| {
        query_strings(
            db,
            &format!("SELECT payload FROM event WHERE task_id = '{t}' AND kind = 'task.blocked' ORDER BY id"),
        )
    };
    wait_for(Duration::from_secs(120), "the first call refused", || {
        !blocks(&db).is_empty()
    });
    assert_eq!(
        llm.totals().0,
        0,
        "the refused call never reached the provider"
    );
    // What the first call of a run needed; each run's brief tells the
    // story of the runs before, so it grows by about the same each run.
    let needed = |n: usize| -> u64 {
        let block = blocks(&db).remove(n);
        block
            .split("may need up to ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the refusal names what the call needed: {block}"))
    };
    let first = needed(0);
    home.ok(&[
        "bb",
        "--project",
        "p",
        "reopen",
        &t,
        "--reason",
        "measure again",
    ]);
    wait_for(Duration::from_secs(120), "the second run refused", || {
        blocks(&db).len() == 2
            && query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL") == 0
    });
    let second = needed(1);
    let cap = second + second.saturating_sub(first) + 60;
    let bind = format!("127.0.0.1:{}", daemon.port);
    let changed = home.ok(&[
        "budget",
        "--bind",
        &bind,
        "--json",
        "set",
        &format!("task:p/{t}"),
        "--tokens",
        &cap.to_string(),
    ]);
    assert!(
        changed.contains(&format!("\"p/{t}\"")),
        "unblocked: {changed}"
    );
    wait_for(Duration::from_secs(240), "the third run blocked", || {
        blocks(&db).len() == 3
            && query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL") == 0
    });
    let (calls, prompt, completion) = llm.totals();
    assert_eq!(
        calls,
        1,
        "one call fit under the cap ({cap}), the next never reached the provider: {:?}",
        blocks(&db)
    );
    assert!(
        (prompt + completion) as u64 <= cap,
        "the provider served {} tokens, the cap is {cap}",
        prompt + completion
    );
    let third = blocks(&db).remove(2);
    assert!(third.contains("budget: budget exceeded: task"), "{third}");
    assert!(
        third.contains(&format!("of its limit of {cap} tokens")),
        "{third}"
    );
    assert_eq!(task_status(&db, &t), "blocked");
    assert_eq!(
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{t}'")),
        1,
        "no round spent"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session"),
        3,
        "{}",
        session_logs(&db)
    );
    assert!(daemon.stop().success());
}

#[test]
fn claude_code_works_a_task_through_the_gateway() {
    let Some(claude) = test_tool("MOZI_TEST_CLAUDE") else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    let home = TestHome::with_config(
        &gateway_config(&llm),
        "agents:\n  - id: cc\n    runtime: claude-code\n    model: fake/scripted-model\n",
    );
    home.create_project("p");
    let env = cli_env(&home, &claude, &llm);
    let t = home.create_task("p", "post a result", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(Duration::from_secs(240), "claude to finish its run", || {
        let s = task_status(&db, &t);
        assert_ne!(
            s,
            "failed",
            "{}",
            query_strings(&db, "SELECT body FROM observation").join("\n")
        );
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) == 1
    });
    assert_eq!(
        query_strings(&db, "SELECT outcome FROM session"),
        ["succeeded"],
        "{}\n{}",
        query_strings(&db, "SELECT body FROM observation").join("\n"),
        session_logs(&db)
    );
    assert_eq!(task_status(&db, &t), "done");
    assert_worked_through_the_gateway(&home, &daemon, &llm, &t, "Bash");
    assert!(daemon.stop().success());
}

/// Claude Code finishes its task through the board's MCP tool
/// (`mcp__moziplus__done`) instead of the shell: the adapter registers
/// `moziplus mcp` with `--mcp-config --strict-mcp-config`, and the server
/// takes the run's identity from Claude Code's environment (the tool call
/// names no task and no agent). The run is sandboxed (the default), so the
/// tool reaches the board through the daemon (`POST /api/runs/bb`).
#[test]
fn claude_code_finishes_a_task_through_the_mcp_tool() {
    let Some(claude) = test_tool("MOZI_TEST_CLAUDE") else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    llm.served.lock().unwrap().mcp_tool = Some("mcp__moziplus__done".into());
    let home = TestHome::with_config(
        &gateway_config(&llm),
        "agents:\n  - id: cc\n    runtime: claude-code\n    model: fake/scripted-model\n",
    );
    home.create_project("p");
    let mut env = cli_env(&home, &claude, &llm);
    env.push((
        REAL_DEFAULT_PERMISSIONS.0,
        REAL_DEFAULT_PERMISSIONS.1.to_string(),
    ));
    let t = home.create_task("p", "finish through MCP", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(Duration::from_secs(240), "claude to finish its run", || {
        let s = task_status(&db, &t);
        assert_ne!(
            s,
            "failed",
            "{}",
            query_strings(&db, "SELECT body FROM observation").join("\n")
        );
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) == 1
    });
    assert_eq!(
        query_strings(&db, "SELECT outcome FROM session"),
        ["succeeded"],
        "{}\n{}",
        query_strings(&db, "SELECT body FROM observation").join("\n"),
        session_logs(&db)
    );
    assert_eq!(task_status(&db, &t), "done", "{}", session_logs(&db));
    // With no `permissions:` (the shipped default, not the suite's) the run
    // was sandboxed (bubblewrap is installed by scripts/test.sh), so the MCP
    // server reached the board through the daemon's socket: the database
    // was hidden from it.
    let sandbox: serde_json::Value =
        serde_json::from_str(&query_strings(&db, "SELECT sandbox FROM session")[0])
            .expect("the session records its sandbox");
    assert_eq!(sandbox["mode"], "sandbox", "{sandbox}");
    // The board moved through the MCP tool, as the run's agent; the shell
    // was never offered a command.
    assert_eq!(
        query_strings(
            &db,
            &format!("SELECT actor FROM event WHERE kind = 'task.done' AND task_id = '{t}'")
        ),
        ["cc"]
    );
    assert_eq!(llm.served.lock().unwrap().tool_calls, 1);
    let events = replay_events(
        daemon.port,
        "p",
        "optional,daily",
        "mcp__moziplus__done",
        Duration::from_secs(15),
    );
    assert!(
        events.contains("\"tool\":\"mcp__moziplus__done\""),
        "{events}"
    );
    assert!(!events.contains("\"tool\":\"Bash\""), "{events}");
    assert!(daemon.stop().success());
}

#[test]
fn a_cli_reporting_an_error_in_its_json_fails_the_run() {
    let (Some(codex), Some(claude)) = (test_tool("MOZI_TEST_CODEX"), test_tool("MOZI_TEST_CLAUDE"))
    else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    // Every upstream call is refused: the CLIs report it in their own JSON
    // (Codex `turn.failed`, Claude Code `is_error`) and may still exit 0.
    llm.served.lock().unwrap().fail_with = Some((400, "scripted refusal".into()));
    let home = TestHome::with_config(
        &gateway_config(&llm),
        "agents:\n  - id: cdx\n    runtime: codex\n    kinds: [codex]\n    model: fake/scripted-model\n  - id: cc\n    runtime: claude-code\n    kinds: [claude]\n    model: fake/scripted-model\n",
    );
    home.create_project("p");
    let mut env = cli_env(&home, &codex, &llm);
    let claude_dir = claude.parent().unwrap().display().to_string();
    for (k, v) in env.iter_mut() {
        if *k == "PATH" {
            *v = format!("{claude_dir}:{v}");
        }
    }
    let a = home.create_task(
        "p",
        "codex fails",
        &["--kind", "codex", "--max-rounds", "1"],
    );
    let b = home.create_task(
        "p",
        "claude fails",
        &["--kind", "claude", "--max-rounds", "1"],
    );
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(Duration::from_secs(300), "both tasks to fail", || {
        task_status(&db, &a) == "failed" && task_status(&db, &b) == "failed"
    });
    let detail = |task: &str| {
        query_strings(
            &db,
            &format!("SELECT detail FROM session WHERE task_id = '{task}'"),
        )
        .join("\n")
    };
    let (da, db_) = (detail(&a), detail(&b));
    assert!(
        da.contains("codex turn.failed"),
        "{da}\n{}",
        session_logs(&db)
    );
    assert!(
        db_.contains("claude reported an error"),
        "{db_}\n{}",
        session_logs(&db)
    );
    let obs = query_strings(&db, "SELECT body FROM observation").join("\n");
    assert!(
        obs.contains("codex turn.failed") && obs.contains("claude reported an error"),
        "{obs}"
    );
    assert!(daemon.stop().success());
}

/// A git repository with one commit, as project `p`'s workspace.
fn git_workspace(home: &TestHome) -> PathBuf {
    let repo = home.project_dir("p").join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "agent@example.com"]);
    git(&["config", "user.name", "agent"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "base"]);
    std::fs::create_dir_all(home.project_dir("p").join("config")).unwrap();
    std::fs::write(
        home.project_dir("p").join("config/project.yaml"),
        "workspace: repo\n",
    )
    .unwrap();
    repo
}

/// The real CLI with no `permissions:` at all (the shipped default, `auto`:
/// the sandbox where bubblewrap works): the scripted model's one shell
/// call commits a file, lists the folder, runs Python and finishes the task
/// with `moziplus bb` (through the daemon: the database is hidden). The
/// commit is on the task's branch afterwards, and the run could not write
/// outside its workspace.
fn a_sandboxed_cli_commits_and_runs_commands(runtime: &str, cli: &Path, tool_name: &str) {
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    llm.served.lock().unwrap().shell_prefix = Some(
        "cd \"$MOZI_WORKSPACE\" && echo sandboxed > work.txt && git add work.txt && git commit -q -m 'work in the sandbox' && ls && python3 -c 'print(6*7)' && (echo x > \"$MOZI_HOME/escaped\" || true)"
            .into(),
    );
    let home = TestHome::with_config(
        &gateway_config(&llm),
        &format!(
            "agents:\n  - id: boxed\n    runtime: {runtime}\n    model: fake/scripted-model\n"
        ),
    );
    home.create_project("p");
    let repo = git_workspace(&home);
    let mut env = cli_env(&home, cli, &llm);
    env.push((
        REAL_DEFAULT_PERMISSIONS.0,
        REAL_DEFAULT_PERMISSIONS.1.to_string(),
    ));
    let t = home.create_task("p", "commit a file", &[]);
    let daemon = start_with_env(&home, &env);
    let db = home.db("p");
    wait_for(Duration::from_secs(240), "the sandboxed run to end", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) >= 1
    });
    assert_eq!(
        task_status(&db, &t),
        "done",
        "{}\n{}",
        query_strings(&db, "SELECT body FROM observation").join("\n"),
        session_logs(&db)
    );
    let command = query_strings(&db, "SELECT command FROM session").join("\n");
    assert!(
        command.contains("bwrap") && command.contains("--unshare-net"),
        "{command}"
    );
    let show = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["show", &format!("mozi/p/{t}:work.txt")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&show.stdout).trim(),
        "sandboxed",
        "the commit is on the task's branch: {show:?}\n{}",
        session_logs(&db)
    );
    assert!(
        !home.path().join("escaped").exists(),
        "nothing written outside"
    );
    let read = home.ok(&["bb", "--project", "p", "read", &t, "--json"]);
    assert!(read.contains("scripted result"), "output attached: {read}");
    let logs = session_logs(&db);
    assert!(logs.contains("42"), "python3 ran inside: {logs}");
    let _ = tool_name;
    assert!(daemon.stop().success());
}

#[test]
fn claude_code_in_the_sandbox_commits_and_runs_commands() {
    let Some(claude) = test_tool("MOZI_TEST_CLAUDE") else {
        return;
    };
    a_sandboxed_cli_commits_and_runs_commands("claude-code", &claude, "Bash");
}

#[test]
fn codex_in_the_sandbox_commits_and_runs_commands() {
    let Some(codex) = test_tool("MOZI_TEST_CODEX") else {
        return;
    };
    a_sandboxed_cli_commits_and_runs_commands("codex", &codex, "shell");
}

#[test]
fn openclaw_exec_in_the_sandbox_commits_and_cannot_write_outside() {
    let Some(openclaw) = test_tool("MOZI_TEST_OPENCLAW") else {
        return;
    };
    a_sandboxed_cli_commits_and_runs_commands("openclaw", &openclaw, "exec");
}
