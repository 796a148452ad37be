//! Issue 13, "Prove it": the demo workload under injected faults.
//!
//! A real `moziplus serve` (file-descriptor limit 1,024, set on the child with
//! `setrlimit`) works 24 tasks with the bundled demo agent
//! (`moziplus demo-agent`, which does its work through the real `moziplus bb`
//! CLI) while the test
//! * holds the blackboard's write lock from another process at random points
//!   for random times (up to 9 s, so ticks run out of their 10 s);
//! * appends a torn line and a 2 MiB line to the inbox between the lines that
//!   create half of the tasks;
//! * kill -9s the daemon twice, restarting it each time;
//! * opens 2,000 idle sockets to the last daemon.
//!
//! Afterwards: every task done exactly once (one successful session each),
//! every inbox task created once, no session left running, no task `working`,
//! the daemon's idle CPU under 1 %, and no process left after it stops.
//! No model is involved: the demo agent needs no LLM.

mod support;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use support::*;

const TASKS_CLI: usize = 12;
const TASKS_INBOX: usize = 12;
const FD_LIMIT: u64 = 1024;
const IDLE_SOCKETS: usize = 2000;

const CONFIG: &str = "daemon:
  tick_interval: 5
  task_timeout: 120
  kill_grace: 1
  max_global_agents: 4
  max_per_agent: 2
inbox:
  watch_interval: 1
experience:
  distill_threshold: 1000
";

/// `moziplus serve` with at most [`FD_LIMIT`] open files.
fn start_limited(home: &TestHome, port: u16) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.path().join("daemon.log"))
        .unwrap();
    let mut cmd = home.command();
    cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = nix::libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn daemon");
    let d = Daemon { child, port };
    wait_for(Duration::from_secs(60), "daemon /health", || {
        d.get("/health").is_some_and(|(c, _)| c == 200)
    });
    d
}

/// Holds the write lock of `db` at random points for random times until
/// `stop`; returns how many times and how long in all.
fn lock_holder(
    db: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Duration)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::ConnectOptions;
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .busy_timeout(Duration::from_secs(30))
                .connect()
                .await
                .expect("open db");
            let (mut n, mut total) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let (pause, hold) = {
                    let mut r = rand::thread_rng();
                    (
                        Duration::from_millis(r.gen_range(500..3000)),
                        Duration::from_millis(r.gen_range(200..9000)),
                    )
                };
                tokio::time::sleep(pause).await;
                if sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .is_err()
                {
                    continue;
                }
                tokio::time::sleep(hold).await;
                sqlx::query("ROLLBACK").execute(&mut conn).await.ok();
                n += 1;
                total += hold;
            }
            (n, total)
        })
    })
}

fn push_tasks(home: &TestHome, from: usize, to: usize) {
    let mut child = home
        .command()
        .args(["inbox", "push"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = String::new();
    for i in from..to {
        lines.push_str(&format!(
            "{{\"type\":\"create_task\",\"project\":\"demo\",\"task\":{{\"title\":\"inbox-{i}\",\"kind\":\"{}\",\"max_rounds\":10}}}}\n",
            ["plan", "data", "code", "analysis"][i % 4]
        ));
    }
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "inbox push");
}

/// A `working` task with no running session, or a running session whose
/// process is gone, for longer than a moment.
fn stranded(db: &std::path::Path) -> Vec<String> {
    query_strings(
        db,
        "SELECT id FROM task t WHERE status = 'working' AND NOT EXISTS
           (SELECT 1 FROM session s WHERE s.task_id = t.id AND s.ended_at IS NULL)",
    )
}

#[test]
fn the_demo_workload_survives_locks_torn_and_huge_inbox_lines_idle_sockets_and_two_kill_9s() {
    let started = Instant::now();
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    // The demo agent built into the binary (`moziplus demo-agent`), paced
    // down so the faults land while runs are in flight.
    let command = format!(
        "[\"env\", \"MOZI_DEMO_PACE=0.05\", \"{}\", \"demo-agent\", \"{{brief}}\"]",
        env!("CARGO_BIN_EXE_moziplus")
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: demo-planner\n    runtime: command\n    command: {command}\n    kinds: [plan, analysis]\n  - id: demo-coder\n    runtime: command\n    command: {command}\n    kinds: [code, data]\n"
        ),
    )
    .unwrap();
    home.create_project("demo");
    for i in 0..TASKS_CLI {
        home.create_task(
            "demo",
            &format!("cli-{i}"),
            &[
                "--kind",
                ["plan", "data", "code", "analysis"][i % 4],
                "--max-rounds",
                "10",
            ],
        );
    }
    let db = home.db("demo");
    let inbox = home.path().join("inbox/daemon.jsonl");
    let append = |bytes: &[u8]| {
        use std::io::Write;
        std::fs::create_dir_all(inbox.parent().unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inbox)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    };

    let port = free_port();
    let mut daemon = start_limited(&home, port);
    let stop = Arc::new(AtomicBool::new(false));
    let locks = lock_holder(db.clone(), stop.clone());

    // Inbox: half the inbox tasks, a torn line, the other half (the push
    // starts on a new line), a 2 MiB line, and a wake.
    push_tasks(&home, 0, TASKS_INBOX / 2);
    append(b"{\"type\":\"create_task\",\"project\":\"demo\",\"task\":{\"title\":\"torn");
    push_tasks(&home, TASKS_INBOX / 2, TASKS_INBOX);
    let mut huge =
        b"{\"type\":\"create_task\",\"project\":\"demo\",\"task\":{\"title\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'h', 2 << 20));
    huge.extend_from_slice(b"\"}}\n");
    append(&huge);
    home.ok(&["inbox", "push", "{\"type\":\"wake\"}"]);

    // Two kill -9s at random points of the work.
    let mut rng = rand::thread_rng();
    for k in 0..2 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(3000..9000)));
        let before = agent_processes(home.path());
        daemon.crash();
        eprintln!(
            "kill -9 #{} at {:?} with {} agent process(es) running",
            k + 1,
            started.elapsed(),
            before.len()
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..2000)));
        daemon = start_limited(&home, port);
    }

    // 2,000 idle sockets against the last daemon (1,024 descriptors).
    let mut idle = Vec::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..IDLE_SOCKETS {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            idle.push(s);
        }
    }
    eprintln!("{} of {IDLE_SOCKETS} idle sockets connected", idle.len());
    wait_for(
        Duration::from_secs(60),
        "/health with the idle sockets open",
        || daemon.get("/health").is_some_and(|(c, _)| c == 200),
    );

    // Let the lock holder go on a while longer, then stop injecting.
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::SeqCst);
    let (holds, held) = locks.join().unwrap();
    eprintln!("write lock held {holds} times, {held:?} in all");

    let total = (TASKS_CLI + TASKS_INBOX) as i64;
    let mut stuck_since: Option<Instant> = None;
    wait_for(Duration::from_secs(300), "every task done", || {
        // Nothing may stay `working` without a running session for long.
        let s = stranded(&db);
        if s.is_empty() {
            stuck_since = None;
        } else {
            let since = *stuck_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "tasks working with no run for 10 s: {s:?}"
            );
        }
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'done'") == total
    });
    drop(idle);
    eprintln!("all {total} tasks done after {:?}", started.elapsed());

    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task"),
        total,
        "no task lost or created twice"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(DISTINCT title) FROM task"),
        total,
        "each inbox line applied once"
    );
    let not_once = query_strings(
        &db,
        "SELECT id || ': ' || (SELECT COUNT(*) FROM session s WHERE s.task_id = task.id AND s.outcome = 'succeeded')
         FROM task WHERE (SELECT COUNT(*) FROM session s WHERE s.task_id = task.id AND s.outcome = 'succeeded') <> 1",
    );
    assert!(
        not_once.is_empty(),
        "one successful session per task: {not_once:?}"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL"),
        0,
        "no session left running"
    );
    let sessions = query_i64(&db, "SELECT COUNT(*) FROM session");
    // Reported on the board they name, once each, whichever daemon read them.
    let malformed = query_i64(
        &db,
        "SELECT COUNT(*) FROM observation WHERE body LIKE 'inbox line skipped%'",
    );
    assert_eq!(
        malformed, 2,
        "the torn line and the huge line reported once each"
    );

    // Idle once the work is done.
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_seconds(daemon.pid());
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let idle_cpu = (cpu_seconds(daemon.pid()) - before) / window.as_secs_f64();
    eprintln!(
        "{sessions} sessions for {total} tasks; inbox malformed lines {malformed}; idle CPU {:.2}%",
        idle_cpu * 100.0
    );
    assert!(idle_cpu < 0.01, "idle CPU {:.2}% ≥ 1%", idle_cpu * 100.0);
    // Positive control: the same probe sees a process that does spin.
    assert_cpu_probe_sees_a_spinner(0.01);

    // Positive control: the /proc scan finds this home's processes while
    // they run (the daemon's own), so the empty scan below means gone.
    assert!(
        processes_of_home(home.path()).contains(&daemon.pid()),
        "the scan sees the daemon"
    );
    assert!(daemon.stop().success(), "graceful stop");
    assert!(
        processes_of_home(home.path()).is_empty(),
        "no process left: {:?}",
        processes_of_home(home.path())
    );
    eprintln!("fault injection finished in {:?}", started.elapsed());
}

/// Issue 23, finding 4: a crash leaves `daemon.lock` behind with a PID in
/// it, and `rm daemon.lock` let a second `serve` start beside the first (it
/// SIGTERMed the first one's run; the task ended in round 2). The lock is
/// the kernel's, on the home directory: after the `rm`, the second daemon is
/// refused, `doctor` names the holder, and the first one's run finishes its
/// task in round 1.
#[test]
fn a_deleted_lock_file_lets_no_second_daemon_in() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    let command = format!(
        "[\"env\", \"MOZI_DEMO_PACE=1\", \"{}\", \"demo-agent\", \"{{brief}}\"]",
        env!("CARGO_BIN_EXE_moziplus")
    );
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: demo-coder\n    runtime: command\n    command: {command}\n    kinds: [code]\n"
        ),
    )
    .unwrap();
    home.create_project("demo");
    let db = home.db("demo");

    // A crash leaves the file behind, with the dead daemon's PID inside.
    let crashed = Daemon::start(&home);
    let crashed_pid = crashed.pid();
    crashed.crash();
    let left = std::fs::read_to_string(home.path().join("daemon.lock")).expect("left behind");
    assert_eq!(left.trim(), crashed_pid.to_string());

    let first = Daemon::start(&home);
    let task = home.create_task("demo", "slow", &["--kind", "code"]);
    wait_for(Duration::from_secs(30), "the run to start", || {
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL") == 1
    });
    // The cleanup the left-over file invites.
    std::fs::remove_file(home.path().join("daemon.lock")).unwrap();

    let port = free_port();
    // A second daemon that gets in serves until killed: `wait_child` fails
    // the test then.
    let second = home
        .command()
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a second serve");
    let second = wait_child(second, "a second serve".into());
    let said = format!("{}{}", second.stderr, second.stdout);
    assert_ne!(second.code, 0, "a second daemon was let in: {said}");
    assert!(
        said.contains("already serving") && said.contains(&format!("pid {}", first.pid())),
        "the refusal names the holder: {said}"
    );
    assert!(
        http(port, "GET", "/health").is_none(),
        "nothing listens on the second daemon's port"
    );

    let doctor = home.run(&["doctor"]);
    assert!(
        doctor
            .stdout
            .contains(&format!("held by pid {} (", first.pid())),
        "doctor names the holder:\n{doctor}"
    );

    wait_for(Duration::from_secs(90), "the task done", || {
        query_i64(
            &db,
            &format!("SELECT COUNT(*) FROM task WHERE id = '{task}' AND status = 'done'"),
        ) == 1
    });
    assert_eq!(
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{task}'")),
        1,
        "the first daemon's run was not interrupted"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session"),
        1,
        "one session: nobody ran the task twice"
    );
    assert!(first.stop().success(), "graceful stop");
    // Positive control: once the holder is gone, doctor says so and a
    // daemon starts.
    let doctor = home.run(&["doctor"]);
    assert!(doctor.stdout.contains("free: no daemon"), "{doctor}");
    Daemon::start(&home).stop();
}

/// Issue 23, finding 5: a symlinked log was refused, but an agent that
/// hard-linked its log to an outside 0600 file of the same user got that
/// file served by the log API. The API now serves a log only with one link
/// and only the very file the daemon created (device and inode recorded on
/// the session): both the hard link (two links) and the hard link whose
/// original was then removed (one link, another inode) are 403, while an
/// untouched log is served.
#[test]
fn an_agent_that_hard_links_its_log_gets_no_outside_file_served() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    let outside = tempfile::tempdir().unwrap();
    let script = home.script(
        "agent.sh",
        &format!(
            "#!/bin/sh\n\
             log=\"$MOZI_HOME/projects/p/artifacts/$MOZI_TASK/sessions/$MOZI_SESSION.log\"\n\
             mode=$(cat \"$MOZI_HOME/mode-$MOZI_TASK\")\n\
             echo 'my honest output'\n\
             if [ \"$mode\" != none ]; then\n\
               rm -f \"$log\" && ln {out}/secret-$MOZI_TASK \"$log\" || exit 7\n\
               if [ \"$mode\" = unlink ]; then rm {out}/secret-$MOZI_TASK; fi\n\
             fi\n\
             exec \"$MOZI_BIN\" bb done \"$MOZI_TASK\"\n",
            out = outside.path().display()
        ),
    );
    home.command_worker(&script);
    home.create_project("p");
    let mut tasks = Vec::new();
    for mode in ["linked", "unlink", "none"] {
        let t = home.create_task("p", mode, &[]);
        std::fs::write(home.path().join(format!("mode-{t}")), mode).unwrap();
        let secret = outside.path().join(format!("secret-{t}"));
        std::fs::write(&secret, format!("TOP-SECRET of {t}\n")).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        tasks.push((mode, t));
    }
    let db = home.db("p");
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(90), "three sessions ended", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) >= 3
    });
    for (mode, t) in &tasks {
        let sid = query_strings(
            &db,
            &format!("SELECT id FROM session WHERE task_id = '{t}'"),
        )
        .remove(0);
        let log = home
            .path()
            .join(format!("projects/p/artifacts/{t}/sessions/{sid}.log"));
        let nlink = std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(&log).unwrap());
        for path in [
            format!("/api/projects/p/sessions/{sid}/log"),
            format!("/api/projects/p/sessions/{sid}/log/stream"),
        ] {
            let (code, body) = d.get(&path).expect("the log API answers");
            assert!(
                !body.contains("TOP-SECRET"),
                "{mode}: the outside file leaked: {body}"
            );
            match *mode {
                "none" if path.ends_with("/log") => {
                    assert_eq!(code, 200, "{mode}: an untouched log is served: {body}");
                    assert!(body.contains("my honest output"), "{mode}: {body}");
                }
                "none" => assert_eq!(code, 200, "{mode}: {body}"),
                "linked" => {
                    assert_eq!(nlink, 2, "the agent hard-linked its log");
                    assert_eq!(code, 403, "{mode}: {body}");
                    assert!(body.contains("links"), "{mode}: {body}");
                }
                _ => {
                    assert_eq!(nlink, 1, "the original is gone: one link left");
                    assert_eq!(code, 403, "{mode}: {body}");
                    assert!(
                        body.contains("not the file the daemon created"),
                        "{mode}: {body}"
                    );
                }
            }
        }
    }
    assert!(d.stop().success());
}

/// Issue 23, finding 6: a FIFO, or a skill folder without `meta.yaml`,
/// under `projects/<id>/skills/` made every claimed task go `run_failed`
/// twice and then `failed` (nine tasks lost in 90 s). A broken skill is now
/// skipped and reported; it costs no task a round.
#[test]
fn a_broken_project_skill_costs_no_task_a_round() {
    let home = TestHome::with_config(CONFIG, "agents: []\n");
    let script = home.script("agent.sh", "#!/bin/sh\nexec \"$MOZI_BIN\" bb done\n");
    home.command_worker(&script);
    home.create_project("p");
    let skills = home.path().join("projects/p/skills");
    std::fs::create_dir_all(skills.join("no-meta")).unwrap();
    std::fs::write(
        skills.join("no-meta/SKILL.md"),
        "---\nname: no-meta\n---\nbody\n",
    )
    .unwrap();
    std::fs::create_dir_all(skills.join("a-fifo")).unwrap();
    std::fs::write(skills.join("a-fifo/meta.yaml"), "version: 1\ntags: [x]\n").unwrap();
    nix::unistd::mkfifo(
        &skills.join("a-fifo/SKILL.md"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let tasks: Vec<String> = (0..3)
        .map(|i| home.create_task("p", &format!("t{i}"), &[]))
        .collect();
    let db = home.db("p");
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "every task done", || {
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'done'") == tasks.len() as i64
    });
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM event WHERE kind = 'task.run_failed'"
        ),
        0,
        "no run failed for the skills"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE round <> 1"),
        0,
        "no task lost a round"
    );
    // Reported once per broken skill (the positive side of the check).
    let reports = query_strings(
        &db,
        "SELECT body FROM observation WHERE body LIKE 'skill skipped:%'",
    );
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports.iter().any(|r| r.contains("a-fifo")), "{reports:?}");
    assert!(
        reports.iter().any(|r| r.contains("meta.yaml")),
        "{reports:?}"
    );
    // Readiness lists both, and stays ready: the project keeps running.
    let (code, body) = d.get("/health/ready").expect("readiness");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let skills: Vec<&serde_json::Value> = ready["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["kind"] == "skill" && w["project"] == "p")
        .collect();
    assert_eq!(skills.len(), 2, "{body}");
    assert!(
        skills
            .iter()
            .any(|w| w["subject"].as_str().unwrap().contains("a-fifo")),
        "{body}"
    );
    assert_eq!(code, 200, "{body}");
    assert!(d.stop().success());
}
