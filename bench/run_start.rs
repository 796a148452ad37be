//! Run start cost (issue 12): from a ready task to the agent's process
//! exec'd, daemon side — the claim, the brief rendered and written, the
//! runtime's generated CLI configuration (Codex `config.toml`, OpenClaw
//! `openclaw.json`, Claude Code's config dir), the allow-listed environment,
//! the session row and `spawn` (which returns once the child has exec'd).
//! Then the daemon's memory per running run: RSS with 200 runs alive minus
//! RSS before, divided by 200.
//!
//! The CLIs are stand-ins that `exec sleep` (the daemon's work does not
//! depend on what the child does after exec). Run:
//! `cargo bench --bench run_start` (release build; prints medians and p95).

use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, ActorKind, Blackboard, NewTask, OpenMode};
use moziplus::daemon::runs::{start_run, RunKind};
use moziplus::daemon::Daemon;
use moziplus::home::Home;
use moziplus::registry::{self, NewProject, ProjectId};

const RUNS_PER_RUNTIME: usize = 100;
const MEMORY_RUNS: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn start_one(d: &Daemon, bb: &Blackboard, agent: &str, n: usize) -> Duration {
    let task = bb
        .create_task(
            NewTask {
                title: format!("bench task {n}"),
                description: "Measure the start of a run.".into(),
                kind: Some(agent.to_string()),
                ..Default::default()
            },
            &Actor::operator("bench"),
        )
        .await
        .unwrap();
    let def = d.agents().agent(agent).unwrap().clone();
    let holder = Actor {
        name: agent.to_string(),
        kind: ActorKind::Daemon,
    };
    let t0 = Instant::now();
    let claimed = bb.claim_task(&task.id, &holder, 3_600_000).await.unwrap();
    start_run(d, bb, &claimed, &def, RunKind::Work, 600).await;
    t0.elapsed()
}

async fn stop_all(d: &Daemon) {
    d.shutdown(Vec::new()).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.default_config_file(), "daemon:\n  kill_grace: 1\n").unwrap();
    // Stand-in CLIs on PATH.
    let bin = dir.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["codex", "claude", "openclaw", "sleeper"] {
        let p = bin.join(name);
        std::fs::write(&p, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::env::set_var(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    std::fs::write(
        home.agents_file(),
        "agents:\n  - id: command\n    runtime: command\n    permissions: workspace\n    kinds: [command]\n    model: nvidia/some/model\n    command: [\"sleeper\", \"{brief}\", \"{model}\"]\n  - id: codex\n    runtime: codex\n    permissions: workspace\n    kinds: [codex]\n    model: nvidia/some/model\n  - id: claude-code\n    runtime: claude-code\n    permissions: workspace\n    kinds: [claude-code]\n    model: nvidia/some/model\n  - id: openclaw\n    runtime: openclaw\n    permissions: workspace\n    kinds: [openclaw]\n    model: nvidia/some/model\n",
    )
    .unwrap();
    let id = ProjectId::parse("bench").unwrap();
    rt.block_on(registry::create_project(
        &home,
        NewProject {
            id: id.clone(),
            name: "bench".into(),
            description: String::new(),
            agents: vec![],
        },
    ))
    .unwrap();
    println!("run_start: ready task -> agent exec'd (claim, brief, generated CLI config, env, session row, spawn); {RUNS_PER_RUNTIME} runs per runtime");
    for runtime in ["command", "codex", "claude-code", "openclaw"] {
        let d = Daemon::new(home.clone(), vec![]).unwrap();
        let bb = rt
            .block_on(Blackboard::open(
                &home.blackboard_file(&id),
                id.as_str(),
                OpenMode::Create { max_connections: 4 },
            ))
            .unwrap();
        let mut times: Vec<Duration> = (0..RUNS_PER_RUNTIME)
            .map(|n| rt.block_on(start_one(&d, &bb, runtime, n)))
            .collect();
        assert_eq!(
            d.runs().len(),
            RUNS_PER_RUNTIME,
            "every run started ({runtime})"
        );
        times.sort();
        println!(
            "  {runtime:<12} median {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.95).as_secs_f64() * 1000.0,
            times.last().unwrap().as_secs_f64() * 1000.0
        );
        rt.block_on(stop_all(&d));
        rt.block_on(bb.close());
    }
    // Memory per running run.
    let d = Daemon::new(home.clone(), vec![]).unwrap();
    let bb = rt
        .block_on(Blackboard::open(
            &home.blackboard_file(&id),
            id.as_str(),
            OpenMode::Create { max_connections: 4 },
        ))
        .unwrap();
    for n in 0..20 {
        rt.block_on(start_one(&d, &bb, "codex", n));
    }
    rt.block_on(stop_all(&d));
    let d = Daemon::new(home.clone(), vec![]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib();
    for n in 0..MEMORY_RUNS {
        rt.block_on(start_one(&d, &bb, "codex", n));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    assert_eq!(d.runs().len(), MEMORY_RUNS);
    println!(
        "memory: RSS {before} KiB -> {after} KiB with {MEMORY_RUNS} codex runs alive: {:.1} KiB per running run",
        (after.saturating_sub(before)) as f64 / MEMORY_RUNS as f64
    );
    rt.block_on(stop_all(&d));
    rt.block_on(bb.close());
}
