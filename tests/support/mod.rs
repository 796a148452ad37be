//! Shared helpers for the integration tests: a throw-away moziplus home, the
//! real `moziplus` binary run as a child process with a scrubbed environment
//! (CLI commands and `moziplus serve`), HTTP over loopback, reading the
//! blackboard files, and the processes a home left running.
//!
//! Every helper works on real files and real processes; nothing is mocked.
//! Each test binary uses a different subset, hence the `allow`s.
#![allow(dead_code, unused_imports)]

mod db;
mod http;
mod out;
mod pg;
mod sse;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use db::{block_on, dump, query_i64, query_strings, raw_connection, raw_pool, Dump};
pub use http::{bearer, dechunk, free_port, http, parse_response, post_json};
pub use out::{wait_child, Out, CHILD_TIMEOUT};
pub use pg::{PgDatabase, PrivateServer};
pub use sse::{Frame, Sse};

/// The `moziplus` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_moziplus");

/// Removes every `MOZI_*` variable of the test process from a child's
/// environment, so a developer's shell cannot leak into the tests.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOZI_") {
            cmd.env_remove(k);
        }
    }
}

/// A temporary moziplus home, deleted when dropped.
///
/// With `MOZI_TEST_BACKEND=postgres` (the suite's second pass over the
/// service's tests, `scripts/test.sh`), the home's blackboards live in a
/// database of its own on the suite's PostgreSQL (`MOZI_STORE__URL` on
/// every command), dropped with the home.
pub struct TestHome {
    dir: tempfile::TempDir,
    store: Option<pg::PgDatabase>,
}

/// The home's store for this pass: a fresh PostgreSQL database, or files.
fn test_store(dir: &tempfile::TempDir) -> Option<pg::PgDatabase> {
    if std::env::var("MOZI_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    let label = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let db = pg::PgDatabase::create(&label);
    assert!(
        db.is_some(),
        "MOZI_TEST_BACKEND=postgres needs MOZI_TEST_PG_URL"
    );
    db
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if self.store.is_some() {
            pg::forget_home(self.path());
        }
    }
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHome {
    /// An empty home: the binary creates `config/` and `projects/` as it
    /// needs them.
    pub fn new() -> TestHome {
        Self::with_prefix("moziplus-test-")
    }

    /// An empty home whose folder name starts with `prefix` (a long one
    /// makes a long home path).
    pub fn with_prefix(prefix: &str) -> TestHome {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        let store = test_store(&dir);
        if let Some(db) = &store {
            pg::register_home(dir.path(), &db.url);
        }
        TestHome { dir, store }
    }

    /// The PostgreSQL database this home's blackboards are in, if any.
    pub fn store_db(&self) -> Option<&pg::PgDatabase> {
        self.store.as_ref()
    }

    /// A home with `config/default.yaml` and `config/agents.yaml` as given
    /// and an empty `projects/`.
    pub fn with_config(default_yaml: &str, agents_yaml: &str) -> TestHome {
        let home = TestHome::new();
        std::fs::create_dir_all(home.path().join("config")).unwrap();
        std::fs::create_dir_all(home.path().join("projects")).unwrap();
        std::fs::write(home.path().join("config/default.yaml"), default_yaml).unwrap();
        std::fs::write(home.path().join("config/agents.yaml"), agents_yaml).unwrap();
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn project_dir(&self, project: &str) -> PathBuf {
        self.path().join("projects").join(project)
    }

    pub fn db(&self, project: &str) -> PathBuf {
        self.project_dir(project).join("blackboard.db")
    }

    /// `moziplus --home <home>` with a scrubbed environment plus
    /// `MOZI_HOME=<home>` (which the daemon and its agents inherit), run in
    /// the home with stdin closed. Every way a test runs the binary in a home
    /// starts here.
    ///
    /// Agents without `permissions:` get `workspace` here
    /// (`MOZI_SANDBOX__DEFAULT_PERMISSIONS`): most tests' command agents
    /// write markers in the home on purpose, which the default sandbox
    /// hides. The tests of the default itself (`sandbox.rs`, the real CLIs
    /// and the demo in `runtimes.rs`) set it back to `auto`, the shipped
    /// default, with [`REAL_DEFAULT_PERMISSIONS`].
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        scrub_env(&mut c);
        c.env("MOZI_SANDBOX__DEFAULT_PERMISSIONS", "workspace");
        c.env("MOZI_HOME", self.path());
        if let Some(db) = &self.store {
            c.env("MOZI_STORE__URL", &db.url);
        }
        c.arg("--home").arg(self.path());
        c.current_dir(self.path());
        c.stdin(Stdio::null());
        c
    }

    /// Runs `moziplus --home <home> ARGS…` and waits for it.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Like [`run`](Self::run) with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = describe(args, env);
        let child = c.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        wait_child(child, what)
    }

    /// Runs and insists on success; returns trimmed stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok()
    }

    /// `moziplus bb --project P ARGS…`.
    pub fn bb(&self, project: &str, args: &[&str]) -> Out {
        let mut full = vec!["bb", "--project", project];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// `bb` that must succeed; returns trimmed stdout.
    #[track_caller]
    pub fn bb_ok(&self, project: &str, args: &[&str]) -> String {
        self.bb(project, args).ok()
    }

    /// Creates a project through the CLI.
    #[track_caller]
    pub fn create_project(&self, id: &str) {
        self.ok(&[
            "project",
            "create",
            "--id",
            id,
            "--name",
            &format!("Project {id}"),
        ]);
    }

    /// Creates a task through the CLI; returns its id.
    #[track_caller]
    pub fn create_task(&self, project: &str, title: &str, extra: &[&str]) -> String {
        let mut args = vec!["create", "--title", title];
        args.extend_from_slice(extra);
        let id = self.bb_ok(project, &args);
        assert!(id.starts_with("T-"), "unexpected create output {id:?}");
        id
    }

    /// Logical dump of a project's blackboard (see [`dump`]).
    pub fn dump(&self, project: &str) -> Dump {
        block_on(dump(&self.db(project)))
    }

    /// Writes `config/agents.yaml` with one agent, `worker`, that runs
    /// `script` through the `command` runtime.
    pub fn command_worker(&self, script: &Path) {
        std::fs::write(
            self.path().join("config/agents.yaml"),
            format!(
                "agents:\n  - id: worker\n    runtime: command\n    command: [\"{}\"]\n",
                script.display()
            ),
        )
        .unwrap();
    }

    /// Writes an executable script under the home and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

fn describe(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in env {
        s.push_str(&format!("{k}={v} "));
    }
    s.push_str("moziplus");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Names of the entries of a directory, sorted (empty if it does not exist).
pub fn listing_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The environment that gives agents without `permissions:` the shipped
/// default (`auto`: the sandbox where bubblewrap works) instead of the
/// suite's `workspace` ([`TestHome::command`]).
pub const REAL_DEFAULT_PERMISSIONS: (&str, &str) = ("MOZI_SANDBOX__DEFAULT_PERMISSIONS", "auto");

/// A running `moziplus serve`, logging to `daemon.log` in its home.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(home: &TestHome) -> Daemon {
        Daemon::start_env(home, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_env(home: &TestHome, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.path().join("daemon.log"))
            .unwrap();
        let child = home
            .command()
            .envs(env.iter().copied())
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn daemon");
        let d = Daemon { child, port };
        wait_for(Duration::from_secs(30), "daemon /health", || {
            d.get("/health").is_some_and(|(c, _)| c == 200)
        });
        // `/health` answers before the first tick has run; readiness needs
        // one (`ticker_alive`). On a loaded host the first tick can come
        // seconds later, and a test that read readiness at once saw 503.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ticked = d
                .get("/api/daemon/status")
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|s| !s["last_tick"].is_null() || s["ticker_running"] == false);
            if ticked {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path)
    }

    /// A bodiless control `POST path` (`/api/daemon/stop`, `…/tick`) from a
    /// synchronous test → (status, body). JSON bodies go through
    /// [`post_json`].
    pub fn post(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "POST", path)
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = self.get("/api/daemon/status").expect("status");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Ticks since the daemon started (`ticks` of the status): read before
    /// and after a wait, it shows the ticker did run in that window.
    pub fn ticks(&self) -> u64 {
        self.status()["ticks"].as_u64().expect("status.ticks")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (a crash).
    pub fn crash(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Polls `f` until it is true, failing the test after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of live (non-zombie) processes whose environment has `MOZI_HOME=home`.
pub fn processes_of_home(home: &Path) -> Vec<i32> {
    let needle = format!("MOZI_HOME={}", home.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

/// Whether a pid is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Live agent processes of a home (those with a `MOZI_SESSION`).
pub fn agent_processes(home: &Path) -> Vec<i32> {
    processes_of_home(home)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| kv.starts_with(b"MOZI_SESSION="))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based) →
    // indexes 11 and 12 here.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Positive control for an "it does not spin" check: a shell busy loop,
/// measured with [`cpu_seconds`] over 2 s, must use more than `limit` of a
/// core, so the probe would have caught a spinning daemon. Returns the share.
#[track_caller]
pub fn assert_cpu_probe_sees_a_spinner(limit: f64) -> f64 {
    let mut spinner = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn a busy loop");
    let pid = spinner.id() as i32;
    let window = Duration::from_secs(2);
    let before = cpu_seconds(pid);
    std::thread::sleep(window);
    let share = (cpu_seconds(pid) - before) / window.as_secs_f64();
    spinner.kill().ok();
    spinner.wait().ok();
    assert!(
        share > limit,
        "control: a busy loop measured {:.1}% CPU, not above the {:.1}% limit",
        share * 100.0,
        limit * 100.0
    );
    share
}

/// `git -C dir ARGS…`, which must succeed; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git on PATH");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tool path `scripts/test.sh` installs and exports in `var` (an agent
/// CLI, an SDK's python): `None` (the test skips, saying so) outside it,
/// and a failure under CI, where every tool must be there.
pub fn test_tool(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: run the suite through scripts/test.sh, which installs it")
        }
        _ => {
            eprintln!("skipping: {var} is not set (scripts/test.sh installs the tool and sets it)");
            None
        }
    }
}

/// A `command` agent (Python) that calls its daemon's gateway with its run
/// key (`fake/echo`, `max_tokens` 10: 15 tokens reserved and used per call
/// against the suite's fake provider), `pause_secs` apart, until a call is
/// refused; then it keeps running, as an agent busy with other work would
/// (its daemon must end it).
pub fn spending_agent(pause_secs: f64) -> String {
    format!(
        r#"#!/usr/bin/env python3
import json, os, sys, time, urllib.error, urllib.request
base = os.environ["OPENAI_BASE_URL"].rstrip("/")
for i in range(60):
    req = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps({{"model": "fake/echo", "max_tokens": 10,
                         "messages": [{{"role": "user", "content": "hi"}}]}}).encode(),
        headers={{"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"}},
    )
    try:
        urllib.request.urlopen(req, timeout=30).read()
        print(f"call {{i}}: ok", flush=True)
    except urllib.error.HTTPError as e:
        print(f"call {{i}}: HTTP {{e.code}} {{e.read().decode()}}", file=sys.stderr, flush=True)
        break
    time.sleep({pause_secs})
time.sleep(120)
"#
    )
}
