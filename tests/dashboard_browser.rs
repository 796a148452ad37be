//! The dashboard in a real headless Chromium (Debian's `/usr/bin/chromium`,
//! driven by `playwright-core` from `.tools/`) against a real daemon.
//!
//! Each test starts `moziplus serve` in a temporary home and runs one script
//! of `tests/browser/` against it; a failing script fails the test with its
//! whole output. Scripts may ask the test to stop or start the daemon (a line
//! `@@ACTION stop-daemon` on their stdout, answered `ok` on their stdin), so
//! every process stays owned here. Screenshots go to `<target>/screenshots/`.
//!
//! `scripts/test.sh` installs the browser tools. Without them the tests skip
//! with a loud message, unless `CI` is set: then they fail.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{free_port, http, wait_for, Daemon, PgDatabase, TestHome, BIN};

/// One browser at a time: two cores are shared with the rest of the suite.
static SERIAL: Mutex<()> = Mutex::new(());

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

struct Tools {
    node: PathBuf,
    playwright: PathBuf,
    chromium: PathBuf,
}

/// The browser tools, or `None` (after a loud message) when they are absent
/// outside CI.
fn tools() -> Option<Tools> {
    let chromium = std::env::var_os("MOZI_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let playwright = std::env::var_os("MOZI_PLAYWRIGHT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join(".tools"));
    let node = PathBuf::from("node");
    let has_node = Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !has_node {
        missing.push("node".to_string());
    }
    if !chromium.exists() {
        missing.push(chromium.display().to_string());
    }
    if !playwright.join("node_modules/playwright-core").is_dir() {
        missing.push(format!(
            "{}/node_modules/playwright-core",
            playwright.display()
        ));
    }
    if missing.is_empty() {
        return Some(Tools {
            node,
            playwright,
            chromium,
        });
    }
    let msg = format!(
        "browser tools missing: {} — run scripts/test.sh (it installs chromium and playwright-core)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED dashboard browser test: {msg} !!!!!!!!!!\n");
    None
}

/// `<target>/screenshots`, next to the test binaries.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("screenshots")
}

/// A home with the repository's configuration, agents and templates, so the
/// demo runs as `moziplus serve --demo` runs it from a checkout.
fn demo_home() -> TestHome {
    let home = TestHome::with_config("", "");
    for dir in ["config", "agents", "prompt_templates", "skills"] {
        copy_dir(&Path::new(REPO).join(dir), &home.path().join(dir));
    }
    home
}

fn copy_dir(from: &Path, to: &Path) {
    if !from.is_dir() {
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// `moziplus serve` on a fixed port (so it can come back on the same one).
struct Serve {
    child: Option<Child>,
    port: u16,
    demo: bool,
    env: Vec<(String, String)>,
}

impl Serve {
    fn start(home: &TestHome, port: u16, demo: bool) -> Serve {
        Serve::start_env(home, port, demo, &[])
    }

    /// [`Serve::start`] with extra environment variables (a provider's key).
    fn start_env(home: &TestHome, port: u16, demo: bool, env: &[(&str, &str)]) -> Serve {
        let mut s = Serve {
            child: None,
            port,
            demo,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn(home);
        s
    }

    fn spawn(&mut self, home: &TestHome) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.path().join("daemon.log"))
            .unwrap();
        let mut cmd = home.command();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)]);
        if self.demo {
            cmd.arg("--demo");
        }
        let child = cmd
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(30), "daemon /health", || {
            http(port, "GET", "/health").is_some_and(|(c, _)| c == 200)
        });
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// Runs `tests/browser/<script>` against `serve`, answering its actions;
/// panics with the script's output when it fails.
fn run_script(tools: &Tools, home: &TestHome, serve: &mut Serve, script: &str, project: &str) {
    let script_path = Path::new(REPO).join("tests/browser").join(script);
    let mut child = Command::new(&tools.node)
        .arg(&script_path)
        .current_dir(REPO)
        .env("MOZI_URL", format!("http://127.0.0.1:{}", serve.port))
        .env("MOZI_PLAYWRIGHT", &tools.playwright)
        .env("MOZI_CHROMIUM", &tools.chromium)
        .env("MOZI_SCREENSHOTS", screenshot_dir())
        .env("MOZI_BIN", BIN)
        .env("MOZI_HOME", home.path())
        .env("MOZI_PROJECT", project)
        .env_remove("MOZI_SESSION")
        .env_remove("MOZI_AGENT")
        .env_remove("MOZI_TASK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out_tx = tx.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(format!("[stderr] {line}"));
        }
    });

    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut output = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                println!("{line}");
                if let Some(action) = line.strip_prefix("@@ACTION ") {
                    match action.trim() {
                        "stop-daemon" => serve.stop(),
                        "start-daemon" => serve.spawn(home),
                        other => panic!("{script} asked for an unknown action {other:?}"),
                    }
                    writeln!(stdin, "ok").expect("answer the script");
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break child.wait().expect("wait node");
            }
        }
        if let Some(status) = child.try_wait().expect("poll node") {
            // Drain what the reader threads still hold.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
                println!("{line}");
                output.push(line);
            }
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{script} did not finish within {SCRIPT_LIMIT:?}:\n{}",
                output.join("\n")
            );
        }
    };
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert!(
        status.success(),
        "{script} failed ({status}):\n{}\n--- daemon log (tail) ---\n{}",
        output.join("\n"),
        tail(&log, 40)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A daemon whose home has a project `live` that no demo agent works on.
fn live_daemon() -> (TestHome, Serve) {
    let home = demo_home();
    home.create_project("live");
    let serve = Serve::start(&home, free_port(), false);
    (home, serve)
}

#[test]
fn dashboard_loads_against_the_demo() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let home = demo_home();
    let mut serve = Serve::start(&home, free_port(), true);
    run_script(&tools, &home, &mut serve, "dashboard_loads.mjs", "demo");
}

#[test]
fn board_moves_a_task_live() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "board_live.mjs", "live");
}

#[test]
fn approving_a_decision_on_the_page_settles_it() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "decision_approve.mjs", "live");
}

/// Issue 26, item 6: after a restart the Events page showed `urgent 0`.
/// An alert written before a restart is counted and listed first after it,
/// and acknowledging it on the page stores who and when (screenshots
/// `alert-unacknowledged`, `alert-acknowledged`).
#[test]
fn an_alert_survives_a_restart_and_is_acknowledged_on_the_page() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "alert_ack.mjs", "live");
}

#[test]
fn overlay_shows_while_the_daemon_is_down() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "overlay_reconnect.mjs", "live");
}

#[test]
fn cli_writes_update_the_board_in_place_and_resync_refetches() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "board_in_place.mjs", "live");
}

#[test]
fn schedules_view_shows_next_firing_history_and_buttons() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "schedules_view.mjs", "live");
}

#[test]
fn task_actions_on_the_page_change_the_task() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (home, mut serve) = live_daemon();
    run_script(&tools, &home, &mut serve, "task_actions.mjs", "live");
}

/// Writes three days of LLM usage into project `live`'s stored ledger
/// (through the blackboard's own `add_usage`, as the gateway's usage writer
/// does): two runs of task `task` by agents `coder` and `reviewer`, two
/// models. The page loads after all of it: its charts can only come from
/// the stored history.
fn seed_ledger(home: &TestHome, task: &str) {
    use moziplus::blackboard::usage::{usage_bucket, UsageBooking};
    use moziplus::blackboard::{Blackboard, NewSession, OpenMode, Outcome};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bb = Blackboard::open(&home.db("live"), "live", OpenMode::CLI)
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let mut rows = Vec::new();
        for (i, (agent, model)) in [
            ("coder", "qwen/qwen3.5-397b"),
            ("reviewer", "deepseek-ai/deepseek-v4-pro"),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("S-costs{i}");
            bb.create_session(&NewSession {
                id: id.clone(),
                task_id: task.to_string(),
                agent: agent.to_string(),
                token: format!("token-{i}"),
                command: "seeded".into(),
                log_path: None,
                sandbox: None,
                daemon: None,
            })
            .await
            .unwrap();
            bb.end_session(&id, Outcome::Succeeded, Some(0), None)
                .await
                .unwrap();
            for day in 0..3i64 {
                rows.push(UsageBooking {
                    session_id: id.clone(),
                    provider: "nvidia".into(),
                    model: model.into(),
                    bucket_start: usage_bucket(now - day * 86_400_000),
                    responses: 4 + day,
                    unpriced: 0,
                    prompt_tokens: 3_000 * (i as i64 + 1) + 500 * day,
                    completion_tokens: 700 + 100 * day,
                    cached_tokens: 200,
                    cost: 0.01 * (i as f64 + 1.0) + 0.002 * day as f64,
                });
            }
        }
        bb.add_usage(&rows).await.unwrap();
        bb.close().await;
    });
}

#[test]
fn costs_view_charts_the_stored_ledger_and_changes_a_budget() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let home = demo_home();
    home.create_project("live");
    let task = home.create_task("live", "priced work", &["--kind", "manual", "--force"]);
    seed_ledger(&home, &task);
    // Set without a daemon: stored in budgets.json, read by the one below.
    home.ok(&[
        "budget",
        "set",
        "project:live:day",
        "--tokens",
        "100000",
        "--usd",
        "5",
    ]);
    let mut serve = Serve::start(&home, free_port(), false);
    run_script(&tools, &home, &mut serve, "costs_view.mjs", "live");
    // The page's change went through the API into the stored overrides.
    let stored = std::fs::read_to_string(home.path().join("budgets.json")).unwrap();
    assert!(stored.contains("\"home:day\""), "{stored}");
}

/// Issue 26, item 1: a held-back task's reason on its card. The agent
/// `ghost` runs a program that does not exist: its first run fails for the
/// machine's reason and the daemon holds it back for the (long) backoff.
#[test]
fn a_held_back_task_says_why_on_its_card() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let home = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [600]\n",
        "agents:\n  - id: ghost\n    runtime: command\n    kinds: [ghost]\n    command: [\"/nonexistent/agent-binary\"]\n",
    );
    home.create_project("live");
    let mut serve = Serve::start(&home, free_port(), false);
    run_script(&tools, &home, &mut serve, "waiting_reason.mjs", "live");
    let shot = screenshot_dir().join("waiting-reason-held-back.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "the screenshot {} was written",
        shot.display()
    );
}

/// Issue 26, item 3: a provider outage shows on the overview, not only on
/// the Gateway tab. The provider `down` points at a port nothing listens on
/// (it stands in for an unreachable NVIDIA); two failed calls open its
/// breaker, and the overview's banner names it with the breaker's reason.
#[test]
fn an_open_breaker_shows_on_the_overview() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let refused = free_port();
    let home = TestHome::with_config(
        &format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  breaker: {{ failure_threshold: 2, open_seconds: 600 }}\n  retry: {{ max_retries: 0 }}\n  providers:\n    - name: down\n      base_url: http://127.0.0.1:{refused}/v1\n      api_key_env: DOWN_TEST_KEY\n"
        ),
        "",
    );
    home.create_project("live");
    let mut serve = Serve::start_env(&home, free_port(), false, &[("DOWN_TEST_KEY", "k")]);
    run_script(&tools, &home, &mut serve, "provider_down.mjs", "live");
    serve.stop();
    let shot = screenshot_dir().join("overview-provider-down.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "the screenshot {} was written",
        shot.display()
    );
}

/// A fake provider on loopback that answers every request 429 with
/// `Retry-After: 1` (it stands in for NVIDIA at its limit); returns its port.
fn always_429() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let answer = r#"{"error":{"message":"Too Many Requests","type":"rate_limit"}}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

/// Issue 26, item 3: the limiter's retreat showed "429 ratio —". The
/// provider `nv` (limited) answers every call 429; after two calls the
/// Gateway page shows the retreat's 429 share with its counts.
#[test]
fn the_gateway_page_shows_a_retreats_429_share() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let nv = always_429();
    let home = TestHome::with_config(
        &format!(
            "daemon:\n  tick_interval: 1\ngateway:\n  retry: {{ max_retries: 0 }}\n  providers:\n    - name: nv\n      base_url: http://127.0.0.1:{nv}/v1\n      api_key_env: NV_TEST_KEY\n      limited: true\n"
        ),
        "",
    );
    home.create_project("live");
    let mut serve = Serve::start_env(&home, free_port(), false, &[("NV_TEST_KEY", "k")]);
    run_script(&tools, &home, &mut serve, "retreat_ratio.mjs", "live");
    serve.stop();
    let shot = screenshot_dir().join("gateway-retreat-ratio.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "the screenshot {} was written",
        shot.display()
    );
}

/// Issue 26, item 5: the Agents tab. `ghost` runs a program that does not
/// exist (held back after its first run), `slow` prints a line and sleeps
/// (running, with that line as its activity); `asker` proposes a decision
/// and waits (its session says so on the overview).
#[test]
fn the_agents_tab_shows_state_activity_and_last_error() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let home = TestHome::with_config("daemon:\n  tick_interval: 1\n  retry_backoff: [600]\n", "");
    let slow = home.script(
        "slow.sh",
        "#!/bin/bash\necho 'reading the spec'\nexec sleep 1000\n",
    );
    let asker = home.script(
        "asker.sh",
        "#!/bin/bash\n\"$MOZI_BIN\" bb decide --question 'which db?' --task \"$MOZI_TASK\" --propose\nexec sleep 1000\n",
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: ghost\n    runtime: command\n    kinds: [ghost]\n    command: [\"/nonexistent/agent-binary\"]\n  - id: slow\n    runtime: command\n    kinds: [slow]\n    command: [\"{}\"]\n  - id: asker\n    runtime: command\n    kinds: [ask]\n    command: [\"{}\"]\n",
            slow.display(),
            asker.display()
        ),
    )
    .unwrap();
    home.create_project("live");
    let mut serve = Serve::start(&home, free_port(), false);
    run_script(&tools, &home, &mut serve, "agents_view.mjs", "live");
    serve.stop();
    let shot = screenshot_dir().join("agents-view.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "the screenshot {} was written",
        shot.display()
    );
}

/// Issue 27: the run's sandbox on the task panel. `boxed` runs in
/// bubblewrap (Debian's `bubblewrap`, installed by `scripts/test.sh`),
/// `open` with `permissions: full`; each finishes with `bb done`.
#[test]
fn the_task_panel_shows_each_runs_sandbox_and_marks_full_unsafe() {
    let Some(tools) = tools() else { return };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let home = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  retry_backoff: [600]\nsandbox:\n  allow_hosts: [\"registry.example:443\"]\n",
        "",
    );
    let agent = home.script("agent.sh", "#!/bin/bash\nexec \"$MOZI_BIN\" bb done\n");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: boxed\n    runtime: command\n    kinds: [boxed]\n    permissions: sandbox\n    command: [\"{0}\"]\n  - id: open\n    runtime: command\n    kinds: [open]\n    permissions: full\n    command: [\"{0}\"]\n",
            agent.display()
        ),
    )
    .unwrap();
    home.create_project("live");
    let mut serve = Serve::start(&home, free_port(), false);
    run_script(&tools, &home, &mut serve, "run_sandbox.mjs", "live");
    serve.stop();
    for name in ["run-sandbox", "run-sandbox-full-unsafe"] {
        let shot = screenshot_dir().join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
            "the screenshot {} was written",
            shot.display()
        );
    }
}

/// Two daemons on one PostgreSQL store (the suite's real server): the
/// overview shows the cluster — both daemons, their agents and runs, the
/// one that leads, and when each was last seen (`cluster_view.mjs`,
/// `overview-cluster.png`).
#[test]
fn the_overview_lists_the_clusters_daemons() {
    let Some(tools) = tools() else { return };
    let Some(db) = PgDatabase::create("cluster_view") else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agents = "agents:\n  - id: w\n    runtime: command\n    command: [\"true\"]\n";
    let homes: Vec<TestHome> = (0..2)
        .map(|_| {
            let h = TestHome::with_config("daemon:\n  tick_interval: 1\n", agents);
            let out = h.run_env(
                &["project", "create", "--id", "live", "--name", "Live"],
                &[("MOZI_STORE__URL", &db.url)],
            );
            assert_eq!(out.code, 0, "{}", out.stderr);
            h
        })
        .collect();
    let _other = Daemon::start_env(&homes[1], &[("MOZI_STORE__URL", &db.url)]);
    let mut serve = Serve::start_env(
        &homes[0],
        free_port(),
        false,
        &[("MOZI_STORE__URL", &db.url)],
    );
    run_script(&tools, &homes[0], &mut serve, "cluster_view.mjs", "live");
    serve.stop();
    let shot = screenshot_dir().join("overview-cluster.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "the screenshot {} was written",
        shot.display()
    );
}
