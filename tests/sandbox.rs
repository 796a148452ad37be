//! `permissions: sandbox` with a real `moziplus serve`, real bubblewrap
//! (Debian's `bubblewrap`, installed by `scripts/test.sh`), real `git` and
//! command agents (bash scripts) that try to get out: each escape is one
//! line of the agent's report, which it writes in its own worktree (the
//! one place it may write) and the test reads from outside.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 60\n  kill_grace: 1\n  max_global_agents: 5\n  max_per_agent: 3\n  retry_backoff: [1]\n";

fn repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "agent@example.com"]);
    git(&repo, &["config", "user.name", "agent"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    repo
}

/// A home whose agent `coder` runs `script` with `permissions: sandbox`
/// on project `p`, whose workspace is a git repository.
fn sandboxed_home(config: &str, script: &str) -> (TestHome, PathBuf) {
    let home = TestHome::with_config(config, "");
    let script = home.script("agent.sh", script);
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: coder\n    runtime: command\n    permissions: sandbox\n    pass_env: [OTHER_PORT, ALLOWED_PORT]\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let repo = repo(&home.project_dir("p"));
    std::fs::create_dir_all(home.path().join("projects/p/config")).unwrap();
    std::fs::write(
        home.path().join("projects/p/config/project.yaml"),
        "workspace: repo\n",
    )
    .unwrap();
    (home, repo)
}

fn status(home: &TestHome, task: &str) -> String {
    query_strings(
        &home.db("p"),
        &format!("SELECT status FROM task WHERE id = '{task}'"),
    )
    .pop()
    .unwrap_or_default()
}

/// The agent: commits its work, then tries each way out and writes one
/// `name=result` line per try into `report.txt` in its worktree; finishes
/// with `moziplus bb done` through the daemon.
const ESCAPE_AGENT: &str = r#"#!/bin/bash
r=report.txt
DAEMON_PID=$(grep -o 'daemon-pid-[0-9]*' "$MOZI_BRIEF" | head -1 | cut -d- -f3)
echo "daemon_pid=$DAEMON_PID" >> $r
try() { # name, command: "open" if it worked, "closed" if not
  if bash -c "$2" >/dev/null 2>&1; then echo "$1=open" >> $r; else echo "$1=closed" >> $r; fi
}
echo "work" > work.txt
git add work.txt && git commit -q -m "work of $MOZI_TASK" && echo "commit=ok" >> $r
GIT_COMMON=$(cd "$(git rev-parse --git-common-dir)" && pwd)
try move_main "git update-ref refs/heads/main HEAD"
try write_repo_head "echo 'ref: refs/heads/elsewhere' > '$GIT_COMMON/HEAD'"
try write_repo_config "git config --file '$GIT_COMMON/config' core.hooksPath /tmp"
try write_hook "echo 'touch /tmp/pwn' > '$GIT_COMMON/hooks/post-commit'"
try write_packed_refs "echo x >> '$GIT_COMMON/packed-refs'"
try commit_again "echo more > more.txt && git add more.txt && git commit -q -m more"
try write_home "echo x > '$MOZI_HOME/escaped'"
try write_root "echo x > /escaped"
try write_other_db "echo x >> '$MOZI_HOME/projects/q/blackboard.db'"
try write_usr "echo x > /usr/escaped"
try write_tmp_outside "echo x > /tmp/inside-only && test -f /tmp/inside-only"
try read_other_db "cat '$MOZI_HOME/projects/q/blackboard.db'"
try read_own_db "cat '$MOZI_HOME/projects/p/blackboard.db'"
try read_config "cat '$MOZI_HOME/config/default.yaml'"
try read_other_worktree "cat '$MOZI_HOME/projects/p/worktrees/T-9999/secret.txt'"
try read_ssh "cat '$HOME/.ssh/id_ed25519'"
try read_shadow "grep -q root /etc/shadow"
try other_port "exec 3<>/dev/tcp/127.0.0.1/$OTHER_PORT"
try gateway "exec 3<>/dev/tcp/127.0.0.1/${MOZI_GATEWAY##*:}; printf 'GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer $MOZI_RUN_KEY\r\n\r\n' >&3; head -1 <&3 | grep -q ' 200 '"
http() { # method path: the status line of the daemon's answer, from inside
  exec 3<>/dev/tcp/127.0.0.1/${MOZI_GATEWAY##*:}
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n' "$1" "$2" >&3
  head -1 <&3
}
export -f http
try api_other_project "http GET /api/projects/q/tasks | grep -q ' 200 '"
try api_daemon_stop "http POST /api/daemon/stop | grep -q ' 200 '"
try api_sessions "http GET /api/daemon/sessions | grep -q ' 200 '"
try daemon_environ "cat /proc/$DAEMON_PID/environ"
try any_environ_token "cat /proc/[0-9]*/environ | tr '\0' '\n' | grep -q SANDBOX_SENTINEL=visible"
ls /proc | grep -c '^[0-9]' | sed 's/^/pids=/' >> $r
try bb_other_project "'$MOZI_BIN' bb --project q list"
try bb_list "'$MOZI_BIN' bb list --json | grep -q '$MOZI_TASK'"
try bb_comment "'$MOZI_BIN' bb comment --body 'from the sandbox'"
git add $r && git commit -q -m report
exec "$MOZI_BIN" bb done
"#;

#[test]
fn a_sandboxed_agent_commits_in_its_worktree_and_reaches_nothing_else() {
    let (home, repo) = sandboxed_home(CONFIG, ESCAPE_AGENT);
    let main_before = git(&repo, &["rev-parse", "main"]);
    home.create_project("q");
    // Another task's worktree, next to this one.
    let other = home.project_dir("p").join("worktrees/T-9999");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "other task").unwrap();
    // The user's home, with a key the agent must not read.
    let user_home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(user_home.path().join(".ssh")).unwrap();
    std::fs::write(user_home.path().join(".ssh/id_ed25519"), "PRIVATE").unwrap();
    // A loopback service that is not the daemon's.
    let other_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other_port.local_addr().unwrap().port().to_string();
    // The daemon's environment holds a value no run is given.
    let daemon = Daemon::start_env(
        &home,
        &[
            ("HOME", user_home.path().to_str().unwrap()),
            ("OTHER_PORT", &other_addr),
            ("SANDBOX_SENTINEL", "visible"),
        ],
    );
    // The agent finds the daemon's pid in its brief (the task's title).
    let task = home.create_task("p", &format!("escape daemon-pid-{}", daemon.pid()), &[]);
    wait_for(Duration::from_secs(60), "the task done", || {
        status(&home, &task) == "done"
    });
    let branch = format!("mozi/p/{task}");
    let report = git(&repo, &["show", &format!("{branch}:report.txt")]);
    let line = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
            .to_string()
    };
    assert_eq!(line("commit"), "ok", "{report}");
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:work.txt")]),
        "work",
        "the commit is on the task's branch"
    );
    for closed in [
        "write_root",
        "write_usr",
        "read_other_db",
        "read_own_db",
        "read_config",
        "read_other_worktree",
        "read_ssh",
        "read_shadow",
        "other_port",
        "daemon_environ",
        "any_environ_token",
        "bb_other_project",
        "api_other_project",
        "api_daemon_stop",
        "api_sessions",
        "move_main",
        "write_repo_head",
        "write_repo_config",
        "write_hook",
        "write_packed_refs",
    ] {
        assert_eq!(line(closed), "closed", "{closed} must fail:\n{report}");
    }
    // The repository's own branch did not move; the run's branch did,
    // twice (its refs folder is the one place of `refs/` it may write).
    assert_eq!(git(&repo, &["rev-parse", "main"]), main_before);
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:more.txt")]),
        "more",
        "{report}"
    );
    for open in [
        "write_tmp_outside",
        "gateway",
        "bb_list",
        "bb_comment",
        "commit_again",
    ] {
        assert_eq!(line(open), "open", "{open} must work:\n{report}");
    }
    let pids: usize = line("pids").parse().unwrap();
    assert_eq!(line("daemon_pid"), daemon.pid().to_string());
    assert!(
        pids <= 10,
        "the run sees only its own processes ({pids}):\n{report}"
    );
    // The home's path inside is a mount point on the run's own /tmp: a
    // write there lands in the sandbox, never in the home.
    assert!(!home.path().join("escaped").exists(), "{report}");
    assert_eq!(
        query_i64(&home.db("q"), "SELECT COUNT(*) FROM task"),
        0,
        "another project's blackboard is untouched"
    );
    assert!(!Path::new("/usr/escaped").exists());
    assert!(
        !Path::new("/tmp/inside-only").exists(),
        "/tmp is the run's own"
    );
    let comments = query_strings(
        &home.db("p"),
        &format!("SELECT author || ':' || body FROM comment WHERE task_id = '{task}'"),
    );
    assert!(
        comments.iter().any(|c| c == "coder:from the sandbox"),
        "bb comment through the daemon is the agent's own: {comments:?}"
    );
    drop(other_port);
    daemon.stop();
}

/// The agent goes out through the daemon's proxy with `curl` (a real
/// client, with the `HTTPS_PROXY` the run was given): the allow-listed
/// host answers, a host off the list does not, and a direct connection
/// finds no network.
const PROXY_AGENT: &str = r#"#!/bin/bash
r=report.txt
via() { curl -sS --max-time 10 --proxytunnel --noproxy '' -x "$HTTPS_PROXY" "$@"; }
grep -q "You run in a sandbox" "$MOZI_BRIEF" && grep -q "through the proxy already set in .HTTPS_PROXY.: 127.0.0.1:$ALLOWED_PORT" "$MOZI_BRIEF" && echo "brief=told" >> $r || echo "brief=silent" >> $r
if out=$(via "http://127.0.0.1:$ALLOWED_PORT/"); then echo "allowed=$out" >> $r; else echo "allowed=failed" >> $r; fi
via "http://127.0.0.1:$OTHER_PORT/" >/dev/null 2>>err.txt && echo "other=open" >> $r || echo "other=closed" >> $r
curl -sS --max-time 10 https://pypi.example/simple/ >/dev/null 2>>err.txt && echo "env_proxy=open" >> $r || echo "env_proxy=closed" >> $r
curl -sS --max-time 5 --noproxy '*' "http://127.0.0.1:$ALLOWED_PORT/" >/dev/null 2>>err.txt && echo "direct=open" >> $r || echo "direct=closed" >> $r
git add $r err.txt && git commit -q -m report
exec "$MOZI_BIN" bb done
"#;

#[test]
fn an_allow_listed_host_is_reached_through_the_proxy_and_every_refusal_is_in_the_runs_log() {
    // The allow-listed host: a loopback HTTP server standing in for a
    // package registry (the tests reach no real network).
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in allowed.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nfrom-registry");
        }
    });
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port().to_string();
    let config = format!("{CONFIG}sandbox:\n  allow_hosts: [\"127.0.0.1:{allowed_port}\"]\n");
    let (home, repo) = sandboxed_home(&config, PROXY_AGENT);
    let daemon = Daemon::start_env(
        &home,
        &[("ALLOWED_PORT", &allowed_port), ("OTHER_PORT", &other_port)],
    );
    let task = home.create_task("p", "fetch a package", &[]);
    wait_for(Duration::from_secs(60), "the task done", || {
        status(&home, &task) == "done"
    });
    let report = git(&repo, &["show", &format!("mozi/p/{task}:report.txt")]);
    let errors = git(&repo, &["show", &format!("mozi/p/{task}:err.txt")]);
    let line = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
            .to_string()
    };
    assert_eq!(
        line("brief"),
        "told",
        "the brief says what the sandbox allows"
    );
    assert_eq!(line("allowed"), "from-registry", "{report}\n{errors}");
    assert_eq!(line("other"), "closed", "{report}");
    assert_eq!(line("env_proxy"), "closed", "{report}");
    assert_eq!(line("direct"), "closed", "{report}");
    assert!(
        errors.contains("403"),
        "curl saw the proxy's refusal:\n{errors}"
    );
    let log_path = query_strings(
        &home.db("p"),
        &format!("SELECT log_path FROM session WHERE task_id = '{task}'"),
    )
    .pop()
    .expect("a session");
    let log = std::fs::read_to_string(&log_path).unwrap();
    for expected in [
        "[mozi:sandbox] sandbox: read-write".to_string(),
        format!("other hosts through the proxy: 127.0.0.1:{allowed_port}"),
        format!("[mozi:sandbox] connected to 127.0.0.1:{allowed_port}"),
        format!("[mozi:sandbox] refused connection to 127.0.0.1:{other_port}: not in sandbox.allow_hosts"),
        "[mozi:sandbox] refused connection to pypi.example:443".to_string(),
    ] {
        assert!(log.contains(&expected), "the run's log has {expected:?}:\n{log}");
    }
    // The same lines through the log API the dashboard reads.
    let session = query_strings(
        &home.db("p"),
        &format!("SELECT id FROM session WHERE task_id = '{task}'"),
    )
    .pop()
    .unwrap();
    let (code, body) = daemon
        .get(&format!("/api/projects/p/sessions/{session}/log"))
        .expect("the log API answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("refused connection to pypi.example:443"),
        "{body}"
    );
    // The session's detail keeps the sandbox it ran in.
    let (code, body) = daemon
        .get(&format!("/api/projects/p/tasks/{task}"))
        .expect("the task API answers");
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sb = &detail["sessions"][0]["sandbox"];
    assert_eq!(sb["mode"], "sandbox", "{sb}");
    assert_eq!(sb["unsafe"], false, "{sb}");
    assert_eq!(
        sb["allow_hosts"],
        serde_json::json!([format!("127.0.0.1:{allowed_port}")])
    );
    let worktree = home.project_dir("p").join(format!("worktrees/{task}"));
    let listed = |key: &str| -> Vec<String> {
        sb[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {sb}"))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        listed("read_write").contains(&worktree.display().to_string()),
        "{sb}"
    );
    assert!(!listed("read_only").is_empty(), "{sb}");
    assert!(
        sb["network"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{sb}"
    );
    drop(other);
    daemon.stop();
}

#[test]
fn the_proxy_refuses_a_caller_without_a_runs_key() {
    let (home, _repo) = sandboxed_home(CONFIG, "#!/bin/bash\nexit 0\n");
    let daemon = Daemon::start(&home);
    let socket = home.path().join("run/api.sock");
    wait_for(Duration::from_secs(10), "the sandbox socket", || {
        socket.exists()
    });
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic cnVuOm1vemktbm90LWEta2V5\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    assert!(answer.contains("needs the run's key"), "{answer}");
    daemon.stop();
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let mut cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        for b in cmd.iter_mut().filter(|b| **b == 0) {
            *b = b' ';
        }
        if alive(pid) && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// The agent leaves a detached, daemonised sleeper (its own session and
/// process group, so the run's group signal misses it) and hangs.
const HANGING_AGENT: &str = r#"#!/bin/bash
setsid nohup sleep 7331 >/dev/null 2>&1 < /dev/null &
touch started
git add started && git commit -q -m started
exec sleep 7332
"#;

#[test]
fn a_timeout_kills_everything_the_sandboxed_run_started() {
    let config = CONFIG.replace("task_timeout: 60", "task_timeout: 3");
    let (home, repo) = sandboxed_home(&config, HANGING_AGENT);
    let task = home.create_task("p", "hang", &["--max-rounds", "1"]);
    let daemon = Daemon::start(&home);
    let branch = format!("mozi/p/{task}");
    wait_for(Duration::from_secs(30), "the agent started", || {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["rev-parse", "--verify", "-q", &branch])
            .output()
            .is_ok_and(|o| o.status.success())
            && !processes_with("sleep 7331").is_empty()
    });
    wait_for(Duration::from_secs(30), "the timeout", || {
        query_strings(
            &home.db("p"),
            &format!(
                "SELECT outcome FROM session WHERE task_id = '{task}' AND ended_at IS NOT NULL"
            ),
        )
        .iter()
        .any(|o| o == "timed_out")
    });
    wait_for(
        Duration::from_secs(10),
        "every process of the run gone",
        || processes_with("sleep 7331").is_empty() && processes_with("sleep 7332").is_empty(),
    );
    daemon.stop();
}

#[test]
fn a_sandboxed_agent_without_bubblewrap_is_refused_never_run_unsandboxed() {
    let config = format!("{CONFIG}sandbox:\n  bwrap: /nonexistent/bwrap\n");
    let (home, _repo) = sandboxed_home(
        &config,
        "#!/bin/bash\ntouch \"$MOZI_HOME/ran-unsandboxed\"\n",
    );
    let task = home.create_task("p", "refused", &[]);
    let daemon = Daemon::start(&home);
    wait_for(
        Duration::from_secs(30),
        "the agent held as degraded",
        || {
            daemon.get("/health/ready").is_some_and(|(_, body)| {
                body.contains("permissions: sandbox") && body.contains("/nonexistent/bwrap")
            })
        },
    );
    // The claim is given back right after the refusal is recorded: wait for
    // it rather than race it.
    wait_for(Duration::from_secs(10), "the task back in pending", || {
        status(&home, &task) == "pending"
    });
    assert!(!home.path().join("ran-unsandboxed").exists());
    daemon.stop();
}

#[test]
fn doctor_checks_bubblewrap_and_names_each_agents_mode() {
    let home = TestHome::with_config(
        CONFIG,
        "agents:\n  - id: boxed\n    runtime: demo\n    permissions: sandbox\n  - id: open\n    runtime: demo\n    permissions: full\n  - id: plain\n    runtime: demo\n    permissions: workspace\n",
    );
    let out = home.run(&["doctor"]);
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("doctor has no {name}:\n{out}"))
            .to_string()
    };
    assert!(
        line("sandbox ").contains("/usr/bin/bwrap makes a sandbox"),
        "{out}"
    );
    assert!(line("permissions boxed").ends_with("sandbox"), "{out}");
    assert!(line("permissions open").contains("UNSAFE"), "{out}");
    assert!(line("permissions open").starts_with("warn "), "{out}");
    assert!(line("permissions plain").contains("workspace"), "{out}");

    // Without bubblewrap the sandboxed agent's check fails doctor.
    std::fs::write(
        home.path().join("config/default.yaml"),
        format!("{CONFIG}sandbox:\n  bwrap: /nonexistent/bwrap\n"),
    )
    .unwrap();
    let out = home.run(&["doctor"]);
    out.fails(1, &["doctor found"]);
    assert!(
        out.stdout
            .contains("sandbox.bwrap names /nonexistent/bwrap"),
        "{out}"
    );
    assert!(out.stdout.contains("its runs are refused"), "{out}");

    // An agent with no `permissions:` gets the shipped default, `auto`:
    // the sandbox here, `workspace` (a warning) where bubblewrap is missing.
    let home = TestHome::with_config(CONFIG, "agents:\n  - id: unset\n    runtime: demo\n");
    let out = home.run_env(&["doctor"], &[REAL_DEFAULT_PERMISSIONS]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("permissions unset") && l.ends_with("auto → sandbox")),
        "{out}"
    );
    std::fs::write(
        home.path().join("config/default.yaml"),
        format!("{CONFIG}sandbox:\n  bwrap: /nonexistent/bwrap\n"),
    )
    .unwrap();
    let out = home.run_env(&["doctor"], &[REAL_DEFAULT_PERMISSIONS]);
    assert!(
        out.stdout.lines().any(|l| l.contains("permissions unset")
            && l.starts_with("warn ")
            && l.contains("auto → workspace")
            && l.contains("install bubblewrap")),
        "{out}"
    );
}

/// `POST /api/runs/bb` answers only a run in flight: no key is 401, a key
/// that is no live run's is 403, even with the operator's api_token; a
/// `--file` naming a path is refused (it would be read outside the sandbox).
#[test]
fn the_runs_bb_route_answers_only_a_run_in_flight() {
    let config = format!("{CONFIG}server:\n  api_token: operator-token\n");
    let (home, _repo) = sandboxed_home(&config, "#!/bin/bash\nexec sleep 30\n");
    let task = home.create_task("p", "hold", &[]);
    let daemon = Daemon::start(&home);
    let url = daemon.url("/api/runs/bb");
    let body = serde_json::json!({ "args": ["list"] });
    block_on(async {
        let none = post_json(&url, &body, &[]).await;
        assert_eq!(none.status().as_u16(), 401);
        let operator = bearer("operator-token");
        let forged = post_json(&url, &body, &[("authorization", &operator)]).await;
        assert_eq!(forged.status().as_u16(), 403);
        let dead = bearer("mozi-not-a-run");
        let forged = post_json(&url, &body, &[("authorization", &dead)]).await;
        assert_eq!(forged.status().as_u16(), 403);
    });
    // The run's key, read as its process holds it.
    wait_for(Duration::from_secs(30), "the run started", || {
        !agent_processes(home.path()).is_empty()
    });
    let pid = agent_processes(home.path())[0];
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let key = env
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"MOZI_RUN_KEY="))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .expect("the run has a key");
    let auth = bearer(&key);
    block_on(async {
        let ok = post_json(&url, &body, &[("authorization", &auth)]).await;
        assert_eq!(ok.status().as_u16(), 200);
        let answer: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(answer["code"], 0, "{answer}");
        assert!(
            answer["stdout"].as_str().unwrap().contains(&task),
            "{answer}"
        );
        let file =
            serde_json::json!({ "args": ["output", "--summary", "s", "--file", "/etc/hostname"] });
        let refused = post_json(&url, &file, &[("authorization", &auth)]).await;
        assert_eq!(refused.status().as_u16(), 400);
        let other = serde_json::json!({ "args": ["--project", "q", "list"] });
        let twice = post_json(&url, &other, &[("authorization", &auth)]).await;
        let answer: serde_json::Value = twice.json().await.unwrap();
        assert_eq!(
            answer["code"], 2,
            "a second --project is a usage error: {answer}"
        );
    });
    daemon.stop();
}

/// A home too deep for the sandbox's Unix socket (a path holds at most 107
/// bytes): agents without `permissions:` run with `workspace` and work,
/// with the reason in the daemon's log and in doctor, instead of every run
/// being refused for want of a socket.
#[test]
fn a_home_too_deep_for_the_socket_runs_default_agents_with_workspace_and_says_why() {
    let home = TestHome::with_prefix(&format!("moziplus-test-{}-", "d".repeat(90)));
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(home.path().join("config/default.yaml"), CONFIG).unwrap();
    let script = home.script("done.sh", "#!/bin/bash\nexec \"$MOZI_BIN\" bb done\n");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: plain\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    assert!(home.path().join("run/api.sock").as_os_str().len() > 107);
    let out = home.run_env(&["doctor"], &[REAL_DEFAULT_PERMISSIONS]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("permissions plain") && l.contains("auto → workspace")),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("a Unix socket's path holds at most 107"),
        "{out}"
    );
    let daemon = Daemon::start_env(&home, &[REAL_DEFAULT_PERMISSIONS]);
    let task = home.create_task("p", "work anyway", &[]);
    wait_for(Duration::from_secs(60), "the task done", || {
        status(&home, &task) == "done"
    });
    let commands = query_strings(&home.db("p"), "SELECT command FROM session");
    assert!(
        commands.iter().all(|c| !c.contains("bwrap")),
        "{commands:?}"
    );
    daemon.stop();
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("not in a sandbox")
            && log.contains("move the moziplus home to a shorter path"),
        "{log}"
    );
}

/// The official MCP client (tests/mcp/drive.py, `sandbox` scenario) runs
/// as a sandboxed command agent and drives `moziplus mcp` inside the
/// sandbox: the database is hidden there, so every tool goes through the
/// daemon with the run's key, under the run's own identity. The agent
/// finishes its task with the `done` tool.
#[test]
fn a_sandboxed_agent_finishes_its_task_with_the_mcp_tools() {
    let Some(py) = test_tool("MOZI_TEST_MCP_PYTHON") else {
        return;
    };
    // The venv as it is on disk (its folder shown read-only inside), and
    // a folder the agent may write its report to.
    let venv = std::fs::canonicalize(py.parent().unwrap().parent().unwrap()).unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/drive.py");
    let out = tempfile::tempdir().unwrap();
    let out_dir = std::fs::canonicalize(out.path()).unwrap();
    let report_path = out_dir.join("report.json");
    let config = format!(
        "{CONFIG}sandbox:\n  read_only: [\"{}\", \"{}\"]\n  read_write: [\"{}\"]\n",
        venv.display(),
        driver.parent().unwrap().display(),
        out_dir.display()
    );
    let (home, _repo) = sandboxed_home(&config, "#!/bin/bash\nexit 0\n");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: coder\n    runtime: command\n    permissions: sandbox\n    command: [\"{}\", \"{}\", \"{}\", \"sandbox\"]\n",
            venv.join("bin/python").display(),
            driver.display(),
            report_path.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&home);
    let task = home.create_task("p", "work over MCP in the sandbox", &[]);
    wait_for(Duration::from_secs(120), "the run to end", || {
        query_i64(
            &home.db("p"),
            "SELECT COUNT(*) FROM session WHERE ended_at IS NOT NULL",
        ) >= 1
    });
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        let log = query_strings(&home.db("p"), "SELECT log_path FROM session")
            .pop()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        panic!("no report ({e}); the run's log:\n{log}")
    });
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(report.get("exception").is_none(), "{report:#}");
    let ok = |call: &str| -> serde_json::Value {
        let r = &report[call];
        assert_eq!(r["is_error"], false, "{call} must succeed: {r}");
        r["structured"].clone()
    };
    let refused = |call: &str| -> (String, String) {
        let r = &report[call];
        assert_eq!(r["is_error"], true, "{call} must be refused: {r}");
        (
            r["structured"]["error"].as_str().unwrap_or_default().into(),
            r["structured"]["message"]
                .as_str()
                .unwrap_or_default()
                .into(),
        )
    };
    assert_eq!(
        report["tools"],
        serde_json::json!([
            "comment",
            "decide",
            "decision_wait",
            "done",
            "experience_add",
            "fail",
            "heartbeat",
            "output",
            "read",
            "review"
        ])
    );
    assert!(ok("read_board")["counts"].is_object(), "{report:#}");
    assert_eq!(ok("read_task")["id"], task.as_str());
    assert_eq!(ok("heartbeat")["id"], task.as_str());
    assert_eq!(ok("comment")["body"], "-from the sandbox over MCP");
    assert_eq!(ok("comment")["author"], "coder");
    assert_eq!(ok("decide")["status"], "approved", "{report:#}");
    assert_eq!(ok("decision_wait")["question"], "sandboxed MCP?");
    assert_eq!(ok("experience_add")["agent"], "coder");
    assert_eq!(ok("output")["summary"], "made over MCP inside");
    assert_eq!(ok("output_file")["summary"], "a file from inside");
    assert_eq!(ok("done")["status"], "done");
    assert_eq!(ok("read_after")["status"], "done");
    // Refusals name what is wrong, with the kinds a local server gives.
    let (kind, unknown) = refused("read_unknown");
    assert_eq!(kind, "not_found", "{unknown}");
    assert!(unknown.contains("T-9999"), "{unknown}");
    let (kind, other) = refused("output_as_other");
    assert_eq!(kind, "forbidden", "{other}");
    assert!(other.contains("intruder"), "{other}");
    let (_, review) = refused("review_own_working_task");
    assert!(review.contains("review"), "{review}");
    let (kind, fifo) = refused("output_fifo");
    assert_eq!(kind, "invalid");
    assert!(fifo.contains("not a regular file"), "{fifo}");
    let (_, hidden) = refused("output_hidden_file");
    assert!(hidden.contains("default.yaml"), "{hidden}");
    let (kind, again) = refused("done_again");
    assert!(again.contains(&task), "{kind}: {again}");
    let (_, forged) = refused("forged_key");
    assert!(forged.contains("no run in flight"), "{forged}");
    // What the tools wrote is on the board, as the run's agent.
    let db = home.db("p");
    assert_eq!(
        query_strings(
            &db,
            &format!("SELECT author FROM comment WHERE task_id = '{task}' AND body LIKE '%sandbox over MCP'")
        ),
        ["coder"]
    );
    let artifact = home
        .project_dir("p")
        .join(format!("artifacts/{task}/outputs/notes.md"));
    assert_eq!(
        std::fs::read_to_string(&artifact).unwrap(),
        "written inside the sandbox"
    );
    assert!(query_strings(&db, "SELECT body FROM comment WHERE body = 'forged'").is_empty());
    daemon.stop();
}
