//! Regression tests of issue 13's HTTP-side defects: each test reproduces
//! the attack or fault the issue describes against the real `moziplus serve`
//! child process, over real loopback sockets, with real blackboard files.
//!
//! * defect 9 — idle sockets under a 1,024-descriptor limit;

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// An agent that finishes its task at once.
fn done_agent(home: &TestHome) {
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
}

fn task_done(home: &TestHome, project: &str, task: &str) -> bool {
    query_i64(
        &home.db(project),
        &format!("SELECT COUNT(*) FROM task WHERE id = '{task}' AND status = 'done'"),
    ) == 1
}

/// `moziplus serve` with its descriptor limit (soft and hard) set to
/// `nofile`, as a shell's `ulimit -n` would.
fn start_with_fd_limit(home: &TestHome, nofile: u64) -> Daemon {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.path().join("daemon.log"))
        .unwrap();
    let mut cmd = home.cmd();
    cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                nofile,
                nofile,
            )
            .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().expect("spawn daemon");
    let d = Daemon { child, port };
    wait_for(Duration::from_secs(30), "daemon /health", || {
        d.get("/health").is_some_and(|(c, _)| c == 200)
    });
    d
}

/// The soft descriptor limit of a process, from /proc.
fn fd_limit_of(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn idle_sockets_under_a_1024_descriptor_limit_leave_the_daemon_answering() {
    // This process holds 1,100 sockets: lift its own soft limit first.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 2048,
        "the test needs a hard descriptor limit of at least 2048, have {hard}"
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();

    let home = TestHome::new(
        "daemon:\n  tick_interval: 1\nserver:\n  header_timeout: 2\n",
        "",
    );
    done_agent(&home);
    home.create_project("p");
    let d = start_with_fd_limit(&home, 1024);
    assert_eq!(
        fd_limit_of(d.pid()),
        1024,
        "the daemon runs under 1,024 descriptors"
    );

    // The attack: 1,100 connections that never send a byte.
    let mut idle: Vec<TcpStream> = (0..1100)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", d.port)).unwrap_or_else(|e| panic!("socket {i}: {e}"))
        })
        .collect();
    let t0 = Instant::now();
    let (code, body) = d.get("/health").expect("/health answers under the flood");
    let health_wait = t0.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(
        health_wait < Duration::from_secs(15),
        "/health took {health_wait:?} behind 1,100 idle sockets"
    );
    println!("/health answered in {health_wait:?} behind 1,100 idle sockets");
    // Work still runs: briefs, logs and the database find descriptors.
    let t = home.create_task("p", &["--title", "runs during the flood"]);
    wait_for(Duration::from_secs(60), "the task to be done", || {
        task_done(&home, "p", &t)
    });
    // Idle sockets are closed by the daemon (the header timeout), not kept.
    let mut closed = 0;
    for s in idle.iter_mut().take(200) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "the daemon closes connections that send nothing"
    );
    drop(idle);
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(
        !log.contains("os error 24"),
        "no run hit the descriptor limit:\n{log}"
    );
    assert!(d.stop().success());
}
