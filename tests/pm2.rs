//! Under real PM2: `pm2 start ecosystem.config.cjs`, `pm2 restart` and
//! `pm2 stop` leave no orphaned agent process and no `working` task without a
//! run. `scripts/test.sh` installs PM2 into `.tools/` and sets MOZI_TEST_PM2.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

fn pm2() -> PathBuf {
    if let Ok(p) = std::env::var("MOZI_TEST_PM2") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/pm2");
    assert!(
        local.exists(),
        "PM2 not found: run the suite with ./scripts/test.sh (it installs pm2 into .tools/), or set MOZI_TEST_PM2"
    );
    local
}

struct Pm2 {
    bin: PathBuf,
    pm2_home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Pm2 {
    fn run(&self, args: &[&str]) {
        let mut c = Command::new(&self.bin);
        c.args(args).env("PM2_HOME", self.pm2_home.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("MOZI_") {
                c.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = c.output().expect("run pm2");
        assert!(
            out.status.success(),
            "pm2 {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .arg("kill")
            .env("PM2_HOME", self.pm2_home.path())
            .output();
    }
}

/// Every working task has a live run (a running session whose process exists).
fn no_orphan_work(home: &TestHome) {
    let db = home.db("p");
    let working = query_strings(&db, "SELECT id FROM task WHERE status = 'working'");
    for t in working {
        let pids = query_strings(
            &db,
            &format!(
                "SELECT CAST(pid AS TEXT) FROM session WHERE task_id = '{t}' AND ended_at IS NULL"
            ),
        );
        assert!(
            pids.iter().any(|p| p.parse().is_ok_and(alive)),
            "task {t} is working without a live run (sessions {pids:?})"
        );
    }
}

#[test]
fn pm2_start_restart_stop_leave_no_orphans_and_no_unowned_work() {
    let home = TestHome::with_config(
        "daemon:\n  tick_interval: 1\n  task_timeout: 600\n  kill_grace: 2\n  max_per_agent: 2\n",
        "",
    );
    let script = home.script("stuck.sh", "#!/bin/bash\nsleep 1000 &\nsleep 1000\n");
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: worker\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    home.create_task("p", "one", &[]);
    home.create_task("p", "two", &[]);
    let port = free_port();
    let pm2 = Pm2 {
        bin: pm2(),
        pm2_home: tempfile::tempdir().unwrap(),
        env: vec![
            ("MOZI_HOME".into(), home.path().display().to_string()),
            ("MOZI_BIN".into(), BIN.into()),
            ("MOZI_SERVE_ARGS".into(), format!("--bind 127.0.0.1:{port}")),
            ("MOZI_PM2_NAME".into(), "moziplus-test".into()),
        ],
    };
    let ecosystem = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ecosystem.config.cjs");
    pm2.run(&["start", ecosystem.to_str().unwrap()]);
    let healthy = || http(port, "GET", "/health").is_some_and(|(c, _)| c == 200);
    wait_for(
        Duration::from_secs(60),
        "moziplus under pm2 to answer",
        healthy,
    );
    let db = home.db("p");
    wait_for(Duration::from_secs(30), "two runs", || {
        agent_processes(home.path()).len() >= 4
            && query_i64(
                &db,
                "SELECT COUNT(*) FROM session WHERE ended_at IS NULL AND pid IS NOT NULL",
            ) == 2
    });
    let before = agent_processes(home.path());
    no_orphan_work(&home);

    pm2.run(&["restart", "moziplus-test"]);
    wait_for(
        Duration::from_secs(60),
        "old agents to be gone after restart",
        || before.iter().all(|p| !alive(*p)),
    );
    wait_for(
        Duration::from_secs(60),
        "moziplus to answer after restart",
        healthy,
    );
    wait_for(Duration::from_secs(30), "runs to start again", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM session WHERE ended_at IS NULL AND pid IS NOT NULL",
        ) == 2
    });
    no_orphan_work(&home);
    // A graceful stop is not the agent's fault: same round, killed outcome.
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE outcome = 'killed'"),
        2
    );
    assert_eq!(query_i64(&db, "SELECT MAX(round) FROM task"), 1);

    pm2.run(&["stop", "moziplus-test"]);
    wait_for(
        Duration::from_secs(60),
        "every agent process to be gone after stop",
        || agent_processes(home.path()).is_empty(),
    );
    assert!(!healthy(), "the daemon is stopped");
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE status = 'working'"),
        0,
        "no working task without a run"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM session WHERE ended_at IS NULL"),
        0
    );
}
