//! Run start with a git workspace (issue 15): from a ready task to the
//! agent's process exec'd, daemon side, on a repository of 1,000 files —
//! the claim, the task's worktree (`git worktree add -b mozi/<task>` on the
//! task's first run; checked from git's files and reused on later runs),
//! the brief, the run's files and `TMPDIR`, the session row and `spawn`.
//!
//! Targets: median < 100 ms with the worktree created on this run, < 20 ms
//! with it reused. The last line is the floor: the same `git worktree add`
//! run alone. The agent is a stand-in that `exec sleep`s. Run:
//! `cargo bench --bench workspace_start` (release build; prints medians and
//! p95).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use moziplus::blackboard::{Actor, ActorKind, Blackboard, NewTask, Task};
use moziplus::daemon::runs::{start_run, RunKind};
use moziplus::daemon::Daemon;
use moziplus::home::Home;
use moziplus::registry::{self, NewProject, ProjectId};

const FILES: usize = 1_000;
const RUNS: usize = 30;

fn git(dir: &Path, args: &[&str]) {
    let s = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .expect("git on PATH");
    assert!(s.success(), "git {args:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "  {what:<34} median {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.95).as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}

async fn new_task(bb: &Blackboard, n: usize) -> Task {
    bb.create_task(
        NewTask {
            title: format!("bench task {n}"),
            description: "Measure the start of a run in a worktree.".into(),
            kind: Some("sleeper".into()),
            ..Default::default()
        },
        &Actor::operator("bench"),
    )
    .await
    .unwrap()
}

async fn start_one(d: &Daemon, bb: &Blackboard, task: &Task) -> Duration {
    let def = d.agents().agent("sleeper").unwrap().clone();
    let holder = Actor {
        name: "sleeper".into(),
        kind: ActorKind::Daemon,
    };
    let t0 = Instant::now();
    let claimed = bb.claim_task(&task.id, &holder, 3_600_000).await.unwrap();
    start_run(d, bb, &claimed, &def, RunKind::Work, 600).await;
    t0.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The repository: 1,000 files in 50 folders, one commit.
    let repo = dir.path().join("repo");
    for i in 0..FILES {
        let sub = repo.join(format!("src/m{:02}", i % 50));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i:04}.rs")),
            format!("// file {i}\npub fn f{i}() -> usize {{ {i} }}\n"),
        )
        .unwrap();
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "-c",
            "user.email=b@example.com",
            "-c",
            "user.name=b",
            "commit",
            "-q",
            "-m",
            "base",
        ],
    );
    let home = Home::new(dir.path().join("home"));
    std::fs::create_dir_all(home.config_dir()).unwrap();
    std::fs::write(home.default_config_file(), "daemon:\n  kill_grace: 1\n").unwrap();
    std::fs::write(
        home.agents_file(),
        "agents:\n  - id: sleeper\n    runtime: command\n    permissions: workspace\n    kinds: [sleeper]\n    command: [\"sleep\", \"60\"]\n",
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
    std::fs::write(
        home.project_config_file(&id),
        format!("workspace: {}\n", repo.display()),
    )
    .unwrap();
    let d = Daemon::new(home.clone(), vec![]).unwrap();
    rt.block_on(d.projects().refresh(&d)).unwrap();
    let bb = d.projects().get("bench").unwrap().bb.unwrap();
    println!(
        "workspace_start: ready task -> agent exec'd on a git workspace of {FILES} files; {RUNS} runs each"
    );
    // A worktree made by the run.
    let tasks: Vec<Task> = (0..RUNS).map(|n| rt.block_on(new_task(&bb, n))).collect();
    let created: Vec<Duration> = tasks
        .iter()
        .map(|t| rt.block_on(start_one(&d, &bb, t)))
        .collect();
    assert_eq!(d.runs().len(), RUNS, "every run started");
    for t in &tasks {
        let wt = home.project_dir(&id).join("worktrees").join(&t.id);
        assert!(wt.join("src/m07/f0007.rs").exists(), "worktree of {}", t.id);
    }
    report("worktree created on this run", created);
    // Worktrees that exist already (a later round): made beforehand.
    let tasks: Vec<Task> = (RUNS..2 * RUNS)
        .map(|n| rt.block_on(new_task(&bb, n)))
        .collect();
    let root = rt.block_on(moziplus::daemon::worktrees::workspace_root(&d, "bench"));
    for t in &tasks {
        let ws = rt
            .block_on(d.workspaces().prepare_work(&root, "bench", &t.id))
            .unwrap();
        assert!(ws.created);
    }
    let reused: Vec<Duration> = tasks
        .iter()
        .map(|t| rt.block_on(start_one(&d, &bb, t)))
        .collect();
    assert_eq!(d.runs().len(), 2 * RUNS, "every run started");
    report("worktree reused", reused);
    rt.block_on(d.shutdown(Vec::new()));
    // The floor: git's own `worktree add` of the same repository, alone.
    let floor: Vec<Duration> = (0..RUNS)
        .map(|n| {
            let path = dir.path().join(format!("floor-{n}"));
            let t0 = Instant::now();
            git(
                &repo,
                &[
                    "worktree",
                    "add",
                    "--quiet",
                    "-b",
                    &format!("floor/{n}"),
                    &path.display().to_string(),
                    "HEAD",
                ],
            );
            t0.elapsed()
        })
        .collect();
    report("floor: `git worktree add` alone", floor);
}
