//! Shared helpers for the integration tests: a throw-away moziplus home, the
//! real `moziplus` binary run as a child process with a scrubbed environment,
//! and a logical dump of a blackboard file to prove "nothing changed".
//!
//! Every helper works on real files and real processes; nothing is mocked.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

/// How long any single child process may take before the test fails. Generous:
/// the suite must pass on a loaded 2-core machine.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The `moziplus` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_moziplus")
}

/// Removes every `MOZI_*` variable of the test process from a child's
/// environment, so a developer's shell cannot leak into the tests.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOZI_") {
            cmd.env_remove(k);
        }
    }
}

/// What a finished child process left behind.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for failure messages.
    pub what: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    fn from_output(what: String, o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            what,
        }
    }

    /// Asserts exit 0 and returns trimmed stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self.stdout.trim().to_string()
    }

    /// Asserts the exit code and that stderr contains every needle.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> &Out {
        assert_eq!(self.code, code, "wrong exit code (want {code}):\n{self}");
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr does not mention {n:?}:\n{self}"
            );
        }
        self
    }

    /// Parses stdout as JSON (for `--json` commands).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// Waits for a spawned child with [`CHILD_TIMEOUT`], killing it (and failing
/// the test) if it hangs.
pub fn wait_child(child: Child, what: String) -> Out {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(Ok(o)) => Out::from_output(what, o),
        Ok(Err(e)) => panic!("waiting for `{what}`: {e}"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("`{what}` did not finish within {CHILD_TIMEOUT:?}");
        }
    }
}

/// A temporary moziplus home, deleted when dropped.
pub struct TestHome {
    dir: tempfile::TempDir,
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHome {
    pub fn new() -> TestHome {
        TestHome {
            dir: tempfile::Builder::new()
                .prefix("moziplus-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn project_dir(&self, project: &str) -> PathBuf {
        self.root().join("projects").join(project)
    }

    pub fn db(&self, project: &str) -> PathBuf {
        self.project_dir(project).join("blackboard.db")
    }

    /// `moziplus --home <root>` with a scrubbed environment, cwd = the home.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        scrub_env(&mut c);
        c.arg("--home").arg(self.root());
        c.current_dir(self.root());
        c.stdin(Stdio::null());
        c
    }

    /// Runs `moziplus --home <root> ARGS…` and waits for it.
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
        self.run(&[
            "project",
            "create",
            "--id",
            id,
            "--name",
            &format!("Project {id}"),
        ])
        .ok();
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

/// Runs a future to completion on a fresh current-thread runtime (for the
/// synchronous tests that need a store call or a dump).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Opens a plain connection to an existing database file (no pragmas beyond
/// sqlx's defaults; never creates the file).
pub async fn raw_connection(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .expect("options")
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()))
}

/// Every row of every table (plus `user_version`), one sorted line per row:
/// equal dumps mean equal database contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump(pub BTreeSet<String>);

impl Dump {
    /// Rows of one table in this dump.
    pub fn table_rows(&self, table: &str) -> usize {
        let prefix = format!("{table}|");
        self.0.iter().filter(|l| l.starts_with(&prefix)).count()
    }

    /// The dump without some tables (e.g. `sqlite_sequence`).
    pub fn without(&self, tables: &[&str]) -> Dump {
        Dump(
            self.0
                .iter()
                .filter(|l| !tables.iter().any(|t| l.starts_with(&format!("{t}|"))))
                .cloned()
                .collect(),
        )
    }

    /// Panics with the differing lines if `after` is not equal to `self`.
    #[track_caller]
    pub fn assert_same(&self, after: &Dump, context: &str) {
        if self == after {
            return;
        }
        let removed: Vec<_> = self.0.difference(&after.0).take(20).collect();
        let added: Vec<_> = after.0.difference(&self.0).take(20).collect();
        panic!("database changed by {context}\nremoved rows: {removed:#?}\nadded rows: {added:#?}");
    }
}

/// Dumps a database file: `table|quote(col1)|quote(col2)…` for every row.
pub async fn dump(db: &Path) -> Dump {
    let mut conn = raw_connection(db).await;
    let mut lines = BTreeSet::new();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .expect("user_version");
    lines.insert(format!("pragma|user_version={version}"));
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .expect("tables");
    for t in tables {
        let cols: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{t}\")"))
            .fetch_all(&mut conn)
            .await
            .expect("table_info")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let expr = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\""))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        for r in rows {
            lines.insert(format!("{t}|{r}"));
        }
    }
    conn.close().await.expect("close");
    Dump(lines)
}
