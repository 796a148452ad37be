//! Task workspaces (issue 15) with a real `moziplus serve`, real `git` and
//! command agents (bash scripts): a worktree per task on a git workspace,
//! run concurrently without seeing each other; reuse across rounds; removal
//! when done (branch kept), or kept with an observation when it holds
//! uncommitted changes; a kill -9 in the middle of a worktree creation; a
//! directory per task on a plain folder; a `TMPDIR` per run.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 60\n  kill_grace: 1\n  max_global_agents: 5\n  max_per_agent: 3\n  retry_backoff: [1]\n";

/// A repository with one commit on `main` (and a committer identity for
/// the agents' commits).
fn repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "agent@example.com"]);
    git(&repo, &["config", "user.name", "agent"]);
    for (name, body) in files {
        std::fs::write(repo.join(name), body).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    repo
}

fn home_with(agent_script: &str, workspace: &Path) -> TestHome {
    let home = TestHome::with_config(CONFIG, "");
    let script = home.script("agent.sh", agent_script);
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: coder\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    std::fs::create_dir_all(home.path().join("projects/p/config")).unwrap();
    std::fs::write(
        home.path().join("projects/p/config/project.yaml"),
        format!("workspace: {}\n", workspace.display()),
    )
    .unwrap();
    home
}

fn status(home: &TestHome, task: &str) -> String {
    query_strings(
        &home.db("p"),
        &format!("SELECT status FROM task WHERE id = '{task}'"),
    )
    .pop()
    .unwrap_or_default()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Both runs wait for each other (so they run at once), each writes and
/// commits its own file, then records what its folder holds.
const CONCURRENT_AGENT: &str = r#"#!/bin/bash
set -e
touch "$MOZI_HOME/started-$MOZI_TASK"
for i in $(seq 300); do
  [ "$(ls "$MOZI_HOME" | grep -c '^started-')" -ge 2 ] && break
  sleep 0.1
done
echo "$MOZI_TASK" > "file-$MOZI_TASK.txt"
git add "file-$MOZI_TASK.txt"
git commit -q -m "work of $MOZI_TASK"
touch "$MOZI_HOME/committed-$MOZI_TASK"
for i in $(seq 300); do
  [ "$(ls "$MOZI_HOME" | grep -c '^committed-')" -ge 2 ] && break
  sleep 0.1
done
pwd > "$MOZI_HOME/cwd-$MOZI_TASK"
ls > "$MOZI_HOME/seen-$MOZI_TASK"
git rev-parse --abbrev-ref HEAD > "$MOZI_HOME/branch-$MOZI_TASK"
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

#[test]
fn concurrent_tasks_get_their_own_worktrees_and_branches_that_outlive_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "base\n")]);
    let home = home_with(CONCURRENT_AGENT, &repo);
    let a = home.create_task("p", "a", &[]);
    let b = home.create_task("p", "b", &[]);
    let daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "both tasks done", || {
        status(&home, &a) == "done" && status(&home, &b) == "done"
    });
    for (me, other) in [(&a, &b), (&b, &a)] {
        let seen = read(home.path().join(format!("seen-{me}")));
        assert!(seen.contains(&format!("file-{me}.txt")), "{me} sees {seen}");
        assert!(seen.contains("README.md"), "{me} sees {seen}");
        assert!(
            !seen.contains(&format!("file-{other}.txt")),
            "{me} must not see {other}'s file: {seen}"
        );
        assert_eq!(
            read(home.path().join(format!("cwd-{me}"))),
            home.path()
                .join("projects/p/worktrees")
                .join(me.as_str())
                .canonicalize()
                .unwrap_or_else(|_| home.path().join("projects/p/worktrees").join(me.as_str()))
                .display()
                .to_string()
        );
        assert_eq!(
            read(home.path().join(format!("branch-{me}"))),
            format!("mozi/p/{me}")
        );
        // The branch outlives the worktree and holds the commit.
        assert_eq!(
            git(&repo, &["show", &format!("mozi/p/{me}:file-{me}.txt")]),
            me.as_str()
        );
        assert!(
            git(&repo, &["ls-tree", "--name-only", &format!("mozi/p/{me}")])
                .lines()
                .all(|f| f != format!("file-{other}.txt")),
            "{other}'s file is on {me}'s branch"
        );
    }
    wait_for(Duration::from_secs(20), "the worktrees removed", || {
        !home.path().join("projects/p/worktrees").join(&a).exists()
            && !home.path().join("projects/p/worktrees").join(&b).exists()
    });
    let list = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("worktree ")).count(),
        1,
        "only the main worktree is left: {list}"
    );
    // The main checkout never saw the agents' files.
    assert!(!repo.join(format!("file-{a}.txt")).exists());
    drop(daemon);
}

/// Round 1 commits, leaves an untracked file and fails; round 2 finds that
/// file (so it runs in the same worktree), cleans up and finishes.
const TWO_ROUND_AGENT: &str = r#"#!/bin/bash
set -e
pwd >> "$MOZI_HOME/cwds"
if [ -f scratch.txt ]; then
  echo reused > "$MOZI_HOME/round2"
  rm scratch.txt
  exec "$MOZI_BIN" bb done "$MOZI_TASK"
fi
echo one > one.txt
git add one.txt
git commit -q -m "round 1"
echo scratch > scratch.txt
exit 1
"#;

#[test]
fn a_second_round_of_a_task_reuses_its_worktree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "base\n")]);
    let home = home_with(TWO_ROUND_AGENT, &repo);
    let t = home.create_task("p", "two rounds", &["--max-rounds", "3"]);
    let _daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "the task done in round 2", || {
        status(&home, &t) == "done"
    });
    assert_eq!(read(home.path().join("round2")), "reused");
    let cwds = read(home.path().join("cwds"));
    let cwds: Vec<&str> = cwds.lines().collect();
    assert_eq!(cwds.len(), 2, "two runs: {cwds:?}");
    assert_eq!(cwds[0], cwds[1], "both rounds in one worktree");
    assert_eq!(git(&repo, &["show", &format!("mozi/p/{t}:one.txt")]), "one");
    wait_for(Duration::from_secs(20), "the worktree removed", || {
        !Path::new(cwds[0]).exists()
    });
}

/// Leaves an uncommitted change and finishes.
const DIRTY_AGENT: &str = r#"#!/bin/bash
set -e
echo changed >> README.md
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

#[test]
fn a_worktree_with_uncommitted_changes_is_kept_with_an_observation() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "base\n")]);
    let home = home_with(DIRTY_AGENT, &repo);
    let t = home.create_task("p", "dirty", &[]);
    let daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "the task done", || {
        status(&home, &t) == "done"
    });
    let sql = format!(
        "SELECT body FROM observation WHERE task_id = '{t}' AND body LIKE '%worktree%kept%'"
    );
    wait_for(Duration::from_secs(20), "the observation", || {
        !query_strings(&home.db("p"), &sql).is_empty()
    });
    let body = query_strings(&home.db("p"), &sql).remove(0);
    assert!(body.contains(&format!("mozi/p/{t}")), "{body}");
    let wt = home.path().join("projects/p/worktrees").join(&t);
    assert!(wt.join("README.md").exists(), "the worktree is kept");
    assert_eq!(read(wt.join("README.md")), "base\nchanged");
    // Written once, not at every tick.
    let ticks = daemon.ticks();
    std::thread::sleep(Duration::from_secs(3));
    // Positive control: there were ticks to repeat it (and the probe below
    // sees the one observation).
    assert!(daemon.ticks() > ticks, "the ticker ran during the wait");
    assert_eq!(query_strings(&home.db("p"), &sql).len(), 1);
}

/// The pids of `pid`'s descendants, parents before children.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

/// Checks it runs in a complete worktree on its branch, commits, finishes.
const CHECKING_AGENT: &str = r#"#!/bin/bash
set -e
git rev-parse --abbrev-ref HEAD > "$MOZI_HOME/branch"
git status --porcelain > "$MOZI_HOME/status"
cat data.txt > "$MOZI_HOME/data"
echo after > after.txt
git add after.txt
git commit -q -m after
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

#[test]
fn a_kill_9_in_the_middle_of_a_worktree_creation_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("smudging");
    // A checkout that takes long: a smudge filter that says it started,
    // then sleeps. The daemon (and its git) die while it runs.
    let repo = repo(
        dir.path(),
        &[
            (".gitattributes", "*.txt filter=slow\n"),
            ("data.txt", "the data\n"),
        ],
    );
    git(
        &repo,
        &[
            "config",
            "filter.slow.smudge",
            &format!("touch {}; sleep 30; cat", marker.display()),
        ],
    );
    git(&repo, &["config", "filter.slow.clean", "cat"]);
    let home = home_with(CHECKING_AGENT, &repo);
    let t = home.create_task("p", "crash in creation", &[]);
    let daemon = Daemon::start(&home);
    wait_for(
        Duration::from_secs(30),
        "the worktree creation under way",
        || marker.exists(),
    );
    // The whole service dies at once (as when its unit or container is
    // killed): the daemon first, then every process it started, parents
    // before children so git cannot clean up after itself.
    let pids = descendants(daemon.pid());
    assert!(!pids.is_empty(), "git runs under the daemon");
    daemon.crash();
    for p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let wt = home.path().join("projects/p/worktrees").join(&t);
    assert!(wt.exists(), "a half-made worktree is left");
    assert_eq!(
        read(repo.join(".git/worktrees").join(&t).join("locked")),
        "initializing",
        "git was stopped in the middle of `worktree add`"
    );
    assert!(
        !wt.join("data.txt").exists() || read(wt.join("data.txt")) != "the data",
        "the checkout was cut short"
    );
    // The slow filter goes; the restart must repair what was left.
    git(&repo, &["config", "--unset", "filter.slow.smudge"]);
    let _daemon = Daemon::start(&home);
    wait_for(
        Duration::from_secs(60),
        "the task done after restart",
        || status(&home, &t) == "done",
    );
    assert_eq!(read(home.path().join("branch")), format!("mozi/p/{t}"));
    assert_eq!(read(home.path().join("status")), "", "a clean checkout");
    assert_eq!(read(home.path().join("data")), "the data");
    assert_eq!(
        git(&repo, &["show", &format!("mozi/p/{t}:after.txt")]),
        "after"
    );
    wait_for(Duration::from_secs(20), "the worktree removed", || {
        !wt.exists()
    });
}

/// Records where it ran and its TMPDIR, then finishes.
const RECORDING_AGENT: &str = r#"#!/bin/bash
set -e
echo "$MOZI_TASK $(pwd) $TMPDIR" >> "$MOZI_HOME/runs"
[ -d "$TMPDIR" ] && [ -w "$TMPDIR" ]
echo mine > "mine-$MOZI_TASK.txt"
ls > "$MOZI_HOME/seen-$MOZI_TASK"
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

fn recorded_runs(home: &TestHome) -> Vec<(String, String, String)> {
    read(home.path().join("runs"))
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            (v[0].to_string(), v[1].to_string(), v[2].to_string())
        })
        .collect()
}

#[test]
fn a_plain_folder_gives_a_directory_per_task_and_every_run_its_own_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let home = home_with(RECORDING_AGENT, &plain);
    let a = home.create_task("p", "a", &[]);
    let b = home.create_task("p", "b", &[]);
    let _daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "both tasks done", || {
        status(&home, &a) == "done" && status(&home, &b) == "done"
    });
    let runs = recorded_runs(&home);
    assert_eq!(runs.len(), 2);
    for (task, cwd, _) in &runs {
        assert_eq!(cwd, &plain.join(task).display().to_string());
        assert!(plain.join(task).join(format!("mine-{task}.txt")).exists());
    }
    for (me, other) in [(&a, &b), (&b, &a)] {
        let seen = read(home.path().join(format!("seen-{me}")));
        assert!(!seen.contains(&format!("mine-{other}")), "{seen}");
    }
    assert_ne!(runs[0].2, runs[1].2, "a TMPDIR per run");
    for (_, _, tmp) in &runs {
        assert!(tmp.starts_with(&home.path().display().to_string()), "{tmp}");
        wait_for(Duration::from_secs(10), "the run's TMPDIR removed", || {
            !Path::new(tmp).exists()
        });
    }
    // The directories stay (they are the work).
    assert!(plain.join(&a).is_dir());
}

#[test]
fn without_a_workspace_each_task_gets_a_directory_under_the_project() {
    let home = TestHome::with_config(CONFIG, "");
    let script = home.script("agent.sh", RECORDING_AGENT);
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!(
            "agents:\n  - id: coder\n    runtime: command\n    command: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    home.create_project("p");
    let a = home.create_task("p", "a", &[]);
    let _daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(60), "the task done", || {
        status(&home, &a) == "done"
    });
    let runs = recorded_runs(&home);
    assert_eq!(
        runs[0].1,
        home.path()
            .join("projects/p/workspaces")
            .join(&a)
            .display()
            .to_string()
    );
}

#[test]
fn doctor_checks_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "x\n")]);
    let home = home_with("#!/bin/bash\n", &repo);
    let out = home.run(&["doctor"]);
    let text = out.stdout.as_str();
    let line = text
        .lines()
        .find(|l| l.contains("project p workspace"))
        .unwrap_or_else(|| panic!("no workspace line in {text}"));
    assert!(line.starts_with("ok"), "{line}");
    assert!(line.contains("git repository on main"), "{line}");
    // A workspace that is a file, not a folder: a failed check.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    std::fs::write(
        home.path().join("projects/p/config/project.yaml"),
        format!("workspace: {}\n", file.display()),
    )
    .unwrap();
    let out = home.run(&["doctor"]);
    assert_ne!(out.code, 0, "{out}");
    let text = out.stdout.as_str();
    let line = text
        .lines()
        .find(|l| l.contains("project p workspace"))
        .unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("not a directory"),
        "{line}"
    );
}

/// Commits a file named for its project and task, records its branch, done.
const PROJECT_AGENT: &str = r#"#!/bin/bash
set -e
echo "$MOZI_PROJECT" > "file-$MOZI_PROJECT-$MOZI_TASK.txt"
git add "file-$MOZI_PROJECT-$MOZI_TASK.txt"
git commit -q -m "work of $MOZI_PROJECT/$MOZI_TASK"
git rev-parse --abbrev-ref HEAD > "$MOZI_HOME/branch-$MOZI_PROJECT-$MOZI_TASK"
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#;

/// Issue 23, finding 7: branches were `mozi/<task>` for every project, so
/// p2's T-0001 started on p1's T-0001 commits, and p2's later tasks failed
/// forever with "already used by worktree". Branches are now
/// `mozi/<project>/<task>`: two projects on one repository work side by
/// side, each task once, each on its own branch.
#[test]
fn two_projects_on_one_repository_work_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "base\n")]);
    let home = home_with(PROJECT_AGENT, &repo);
    home.create_project("q");
    std::fs::create_dir_all(home.path().join("projects/q/config")).unwrap();
    std::fs::write(
        home.path().join("projects/q/config/project.yaml"),
        format!("workspace: {}\n", repo.display()),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for project in ["p", "q"] {
        for title in ["one", "two"] {
            tasks.push((project, home.create_task(project, title, &[])));
        }
    }
    let daemon = Daemon::start(&home);
    let status_in = |project: &str, task: &str| {
        query_strings(
            &home.db(project),
            &format!("SELECT status FROM task WHERE id = '{task}'"),
        )
        .pop()
        .unwrap_or_default()
    };
    wait_for(
        Duration::from_secs(90),
        "every task of both projects done",
        || tasks.iter().all(|(p, t)| status_in(p, t) == "done"),
    );
    for (project, task) in &tasks {
        let branch = format!("mozi/{project}/{task}");
        assert_eq!(
            read(home.path().join(format!("branch-{project}-{task}"))),
            branch
        );
        let files = git(&repo, &["ls-tree", "--name-only", &branch]);
        assert!(
            files.contains(&format!("file-{project}-{task}.txt")),
            "{branch} holds its own commit: {files}"
        );
        let other = if *project == "p" { "q" } else { "p" };
        assert!(
            !files.contains(&format!("file-{other}-")),
            "{branch} started on the other project's commits: {files}"
        );
        assert_eq!(
            query_i64(
                &home.db(project),
                &format!("SELECT COUNT(*) FROM session WHERE task_id = '{task}'")
            ),
            1,
            "{project}/{task} ran once, without failed sessions"
        );
    }
    assert!(daemon.stop().success());
}

/// Issue 23, finding 9: the daemon trusted the worktree's contents.
/// * An agent that rewrites its `.git` to `gitdir: /outside` made the
///   daemon delete `/outside/index.lock` and put `/outside/mozi-base` into
///   the next brief. Now a `.git` that does not point at the repository's
///   own admin folder marks the worktree broken: it is made again, and
///   nothing outside is touched or read.
/// * An agent that replaces its worktree with a symbolic link made
///   `git worktree remove` delete the outside folder's files. Now the
///   daemon refuses, with an observation, and the files stay.
#[test]
fn a_rewritten_git_file_and_a_symlinked_worktree_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), &[("README.md", "base\n")]);
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let agent = format!(
        r#"#!/bin/bash
set -e
n=$(ls "$MOZI_HOME" | grep -c "^run-$MOZI_TASK-" || true)
cp "$MOZI_BRIEF" "$MOZI_HOME/run-$MOZI_TASK-$n"
mode=$(cat "$MOZI_HOME/mode-$MOZI_TASK")
if [ "$mode" = gitdir ] && [ "$n" = 0 ]; then
  echo "gitdir: {out}/admin" > .git
  exit 1
fi
if [ "$mode" = symlink ]; then
  wt=$(pwd)
  cd ..
  rm -rf "$wt"
  ln -s {out}/files "$wt"
fi
exec "$MOZI_BIN" bb done "$MOZI_TASK"
"#,
        out = outside.display()
    );
    let home = home_with(&agent, &repo);
    // The outside admin folder a rewritten `.git` points at, complete
    // enough to pass for a worktree's.
    let admin = outside.join("admin");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::write(admin.join("index.lock"), "").unwrap();
    std::fs::write(admin.join("index"), "").unwrap();
    std::fs::write(admin.join("mozi-base"), "INJECTED-TEXT from outside").unwrap();
    let files = outside.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("precious.txt"), "keep me").unwrap();

    let rewritten = home.create_task("p", "rewrites .git", &[]);
    std::fs::write(home.path().join(format!("mode-{rewritten}")), "gitdir").unwrap();
    // On the branch name worktrees had before namespacing, which is still
    // accepted for an existing worktree (and was the only one before).
    std::fs::write(
        admin.join("HEAD"),
        format!("ref: refs/heads/mozi/{rewritten}\n"),
    )
    .unwrap();
    let linked = home.create_task("p", "symlinks its worktree", &[]);
    std::fs::write(home.path().join(format!("mode-{linked}")), "symlink").unwrap();
    let daemon = Daemon::start(&home);
    wait_for(Duration::from_secs(90), "both tasks done", || {
        status(&home, &rewritten) == "done" && status(&home, &linked) == "done"
    });
    // The second run of the rewriting task started on a worktree made again.
    let second = read(home.path().join(format!("run-{rewritten}-1")));
    assert!(
        second.contains(&format!("mozi/p/{rewritten}")),
        "the brief names the task's branch: {second}"
    );
    assert!(
        !second.contains("INJECTED-TEXT"),
        "outside text in the brief: {second}"
    );
    assert!(
        admin.join("index.lock").exists(),
        "the daemon removed a file outside the repository"
    );
    // The symlinked worktree: refused with an observation, files kept.
    let observed = format!(
        "SELECT body FROM observation WHERE task_id = '{linked}' AND body LIKE '%symbolic link%'"
    );
    wait_for(Duration::from_secs(20), "the refusal's observation", || {
        !query_strings(&home.db("p"), &observed).is_empty()
    });
    assert_eq!(
        std::fs::read_to_string(files.join("precious.txt")).unwrap(),
        "keep me",
        "git worktree remove followed the link"
    );
    assert!(daemon.stop().success());
}
