//! The suite's PostgreSQL: a private cluster `scripts/test.sh` starts for
//! the run (`MOZI_TEST_PG_URL`, over its Unix socket). Each test gets a
//! database of its own, dropped when the test ends.

use std::process::Command;

/// A database of one test on the suite's PostgreSQL.
pub struct PgDatabase {
    /// Its connection URL (`postgres://…/<name>?host=<socket folder>`).
    pub url: String,
    pub name: String,
    admin: String,
}

impl PgDatabase {
    /// A fresh database named after `label` (and this process, so
    /// parallel test binaries never meet); `None` outside scripts/test.sh,
    /// and a failure under CI, where the server must be there.
    pub fn create(label: &str) -> Option<PgDatabase> {
        let admin = match std::env::var("MOZI_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => panic!(
                "MOZI_TEST_PG_URL is not set: run the suite through scripts/test.sh, which starts PostgreSQL"
            ),
            _ => {
                eprintln!("skipping: MOZI_TEST_PG_URL is not set (scripts/test.sh starts PostgreSQL and sets it)");
                return None;
            }
        };
        let name: String = format!("t_{}_{label}", std::process::id())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let url = with_database(&admin, &name);
        Some(PgDatabase { url, name, admin })
    }

    /// Runs `sql` in this database with `psql`; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([self.admin.as_str(), "-Atqc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("psql runs (scripts/test.sh installs PostgreSQL)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The homes whose blackboards are on PostgreSQL in this process (home
/// folder → database URL), so the helpers that read a blackboard by its
/// file path (`query_i64`, `query_strings`) read the project's schema instead.
static HOMES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

pub(super) fn register_home(home: &std::path::Path, url: &str) {
    HOMES
        .lock()
        .unwrap()
        .push((home.to_path_buf(), url.to_string()));
}

pub(super) fn forget_home(home: &std::path::Path) {
    HOMES.lock().unwrap().retain(|(h, _)| h != home);
}

/// For `<home>/projects/<id>/blackboard.db` of a home on PostgreSQL: its
/// database URL and the project's schema.
pub(super) fn store_of(db: &std::path::Path) -> Option<(String, String)> {
    let project = db.parent()?;
    let home = project.parent()?.parent()?;
    let url = HOMES
        .lock()
        .unwrap()
        .iter()
        .find(|(h, _)| h == home)
        .map(|(_, u)| u.clone())?;
    let id = project.file_name()?.to_string_lossy();
    Some((url, format!("p_{id}")))
}

/// `sql` in `schema` of the database at `url`: its rows, one per line,
/// columns separated by `|`.
///
/// The tests' SQL is SQLite's; its one JSON function, `json_extract(x,
/// '$.key')`, is spelled for PostgreSQL here.
pub(super) fn psql_in(url: &str, schema: &str, sql: &str) -> String {
    let sql = &sqlite_json_to_pg(sql);
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atq"])
        .arg("-c")
        .arg(format!("SET search_path TO \"{schema}\""))
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql runs (scripts/test.sh installs PostgreSQL)");
    assert!(
        out.status.success(),
        "psql {sql:?} in {schema}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// `json_extract(x, '$.key')` → `(CAST(x AS jsonb) ->> 'key')`.
fn sqlite_json_to_pg(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("json_extract(") {
        out.push_str(&rest[..i]);
        let args = &rest[i + "json_extract(".len()..];
        let Some(end) = args.find(')') else { break };
        let (col, path) = args[..end].split_once(',').expect("json_extract(x, path)");
        let key = path.trim().trim_matches('\'').trim_start_matches("$.");
        out.push_str(&format!("(CAST({} AS jsonb) ->> '{key}')", col.trim()));
        rest = &args[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A PostgreSQL server of one test's own (the tests that stop and restart
/// it cannot use the suite's shared one): `initdb` into a temporary
/// folder, listening on a socket there only, stopped and removed on drop.
pub struct PrivateServer {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    user: Option<String>,
    /// `postgres://postgres@localhost/postgres?host=<dir>`.
    pub url: String,
}

impl PrivateServer {
    /// `None` outside scripts/test.sh (a failure under CI).
    pub fn start() -> Option<PrivateServer> {
        let bin = match std::env::var("MOZI_TEST_PG_BIN") {
            Ok(b) if !b.is_empty() => std::path::PathBuf::from(b),
            _ if std::env::var_os("CI").is_some() => {
                panic!("MOZI_TEST_PG_BIN is not set: run the suite through scripts/test.sh")
            }
            _ => return None,
        };
        let user = std::env::var("MOZI_TEST_PG_USER")
            .ok()
            .filter(|u| !u.is_empty());
        let dir = tempfile::Builder::new()
            .prefix("moziplus-pg-own-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        if let Some(u) = &user {
            let ok = Command::new("chown").arg(u).arg(&dir).status().unwrap();
            assert!(ok.success(), "chown {u} {}", dir.display());
        }
        let server = PrivateServer {
            url: format!(
                "postgres://postgres@localhost/postgres?host={}",
                dir.display()
            ),
            dir,
            bin,
            user,
        };
        let data = server.dir.join("data");
        server.run(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        server.pg_ctl("start");
        Some(server)
    }

    fn run(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(&args[1..])
            .output()
            .expect("PostgreSQL's programs run");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, verb: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off",
            self.dir.display()
        );
        let mut args = vec![
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
        ];
        if verb != "stop" {
            args.extend(["-o", &options]);
        } else {
            args.extend(["-m", "fast"]);
        }
        args.push(verb);
        self.run(&args);
    }

    /// Stops the server (connections are closed).
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again.
    pub fn start_again(&self) {
        self.pg_ctl("start");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let program = self.bin.join("pg_ctl");
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
