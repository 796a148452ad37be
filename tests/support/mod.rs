//! Shared helpers for the daemon's integration tests: a temporary home, the
//! real `moziplus` binary as a child process, and a minimal HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_moziplus");

/// A temporary moziplus home.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    /// A home with `default.yaml` and `agents.yaml` as given.
    pub fn new(default_yaml: &str, agents_yaml: &str) -> TestHome {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("projects")).unwrap();
        std::fs::write(dir.path().join("config/default.yaml"), default_yaml).unwrap();
        std::fs::write(dir.path().join("config/agents.yaml"), agents_yaml).unwrap();
        TestHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `moziplus` command in this home with no `MOZI_*` from the caller.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("MOZI_") {
                c.env_remove(k);
            }
        }
        c.env("MOZI_HOME", self.path());
        c
    }

    /// Runs `moziplus args…` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run moziplus")
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "moziplus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_project(&self, id: &str) {
        self.ok(&["project", "create", "--id", id, "--name", id]);
    }

    pub fn create_task(&self, project: &str, extra: &[&str]) -> String {
        let mut args = vec!["bb", "--project", project, "create"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    pub fn db(&self, project: &str) -> PathBuf {
        self.path()
            .join("projects")
            .join(project)
            .join("blackboard.db")
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

/// A free loopback port (released before use; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `moziplus serve`.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(home: &TestHome) -> Daemon {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.path().join("daemon.log"))
            .unwrap();
        let child = home
            .cmd()
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

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path)
    }
    pub fn post(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "POST", path)
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = self.get("/api/daemon/status").expect("status");
        serde_json::from_str(&body).expect("status JSON")
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

/// Minimal HTTP/1.1 client over loopback.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
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

/// Opens `db` on a throwaway runtime and runs `f` with the connection.
fn with_db<T, F, Fut>(db: &Path, f: F) -> T
where
    F: FnOnce(sqlx::SqliteConnection) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("open db");
        f(conn).await
    })
}

/// One integer from a query on a blackboard.
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    with_db(db, |mut conn| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    })
}

/// A column of strings from a query on a blackboard.
pub fn query_strings(db: &Path, sql: &str) -> Vec<String> {
    with_db(db, |mut conn| async move {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&mut conn)
            .await
            .expect(sql)
    })
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
