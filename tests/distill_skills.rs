//! Experiences → distill task → skill.
//!
//! Library level on a `ManualClock`: exactly one distill task per tag under
//! concurrent creators on two connections pools (two daemons) and across a
//! reopen; expiry to `deprecated` after `expire_days` by time travel; brief
//! references keep a lesson alive. End to end with a real `moziplus serve`
//! and a real distill agent: a bad skill is refused with an observation
//! naming the defect, the next round's valid skill is installed under
//! `skills/custom/`, its lessons become `distilled`, and `moziplus brief
//! render` lists the new skill for a task with the tag. A daemon killed
//! with -9 and restarted does not create a second distill task.

mod support;

use std::sync::Arc;
use std::time::Duration;

use moziplus::blackboard::{
    Actor, Blackboard, ExperienceStatus, ManualClock, NewExperience, NewTask, OpenMode, TaskStatus,
};
use moziplus::brief::{render_task_brief, BriefEngine, BriefKind, BriefRequest};
use moziplus::config::ExperienceConfig;
use moziplus::home::Home;
use moziplus::review::Protocols;
use moziplus::skills::distill::create_distill_tasks;
use moziplus::skills::{load_skill, SkillSource};

use support::*;

const T0: i64 = 1_772_355_600_000;
const DAY: i64 = 86_400_000;

async fn open(path: &std::path::Path, clock: Arc<ManualClock>) -> Blackboard {
    Blackboard::open_with_clock(path, "p", OpenMode::Create { max_connections: 4 }, clock)
        .await
        .unwrap()
}

async fn lesson(bb: &Blackboard, tags: &[&str], text: &str) -> i64 {
    bb.add_experience(
        NewExperience {
            task_id: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            lesson: text.into(),
        },
        &Actor::session("coder"),
    )
    .await
    .unwrap()
    .id
}

async fn distill_tasks(bb: &Blackboard) -> Vec<String> {
    let pool = support::raw_pool(bb.path()).await;
    let ids = sqlx::query_scalar("SELECT id FROM task WHERE kind = 'distill' ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_lessons_make_exactly_one_distill_task_under_concurrent_ticks_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("blackboard.db");
    let clock = Arc::new(ManualClock::new(T0));
    let a = open(&db, clock.clone()).await;
    let b = open(&db, clock.clone()).await;
    let cfg = ExperienceConfig::default();
    for n in 1..=4 {
        lesson(&a, &["csv"], &format!("lesson {n}")).await;
        clock.advance(1000);
    }
    lesson(&a, &["other"], "unrelated").await;
    // Four lessons: below the threshold of five.
    assert!(create_distill_tasks(&a, &cfg).await.unwrap().is_empty());
    lesson(&a, &["csv", "python"], "lesson 5").await;
    clock.advance(1000);
    // Two "daemons" ticking at once, many times over.
    let mut handles = Vec::new();
    for bb in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let cfg = cfg.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..10 {
                n += create_distill_tasks(&bb, &cfg).await.unwrap().len();
            }
            n
        }));
    }
    let mut created = 0;
    for h in handles {
        created += h.await.unwrap();
    }
    assert_eq!(created, 1, "exactly one creator won");
    let ids = distill_tasks(&a).await;
    assert_eq!(ids.len(), 1);
    let t = a.task(&ids[0]).await.unwrap();
    assert_eq!(t.tags, ["csv", "distill:csv"]);
    assert_eq!(t.review_protocol.as_deref(), Some("skill-check"));
    assert!(
        t.description.contains("experience 6 (coder): lesson 5"),
        "{}",
        t.description
    );
    // A restart: fresh handles on the same file still see the open task.
    a.close().await;
    b.close().await;
    let c = open(&db, clock.clone()).await;
    lesson(&c, &["csv"], "lesson 6").await;
    // Not even a candidate while its task is open: the tick takes no write lock.
    let threshold = cfg.distill_threshold;
    assert!(c.distill_candidates(threshold).await.unwrap().is_empty());
    assert!(create_distill_tasks(&c, &cfg).await.unwrap().is_empty());
    assert_eq!(distill_tasks(&c).await.len(), 1);
    // Once it was given up (cancelled or failed), it is not retried until a
    // new lesson arrives.
    c.set_status(
        &ids[0],
        TaskStatus::Cancelled,
        &Actor::operator("lead"),
        "not now",
    )
    .await
    .unwrap();
    clock.advance(1000);
    assert!(c.distill_candidates(threshold).await.unwrap().is_empty());
    assert!(create_distill_tasks(&c, &cfg).await.unwrap().is_empty());
    clock.advance(1000);
    lesson(&c, &["csv"], "lesson 7").await;
    assert_eq!(c.distill_candidates(threshold).await.unwrap(), ["csv"]);
    assert_eq!(create_distill_tasks(&c, &cfg).await.unwrap().len(), 1);
    assert_eq!(distill_tasks(&c).await.len(), 2);
}

#[tokio::test]
async fn lessons_unreferenced_for_expire_days_become_deprecated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let bb = open(&dir.path().join("blackboard.db"), clock.clone()).await;
    let old = lesson(&bb, &["csv"], "never shown again").await;
    let kept = lesson(&bb, &["weather"], "shown in a brief on day 20").await;
    // Day 20: a real run's brief shows the weather lesson (and counts it).
    clock.set(T0 + 20 * DAY);
    let home = Home::new(dir.path());
    let task = bb
        .create_task(
            NewTask {
                title: "report".into(),
                kind: Some("analysis".into()),
                tags: vec!["weather".into()],
                ..Default::default()
            },
            &Actor::operator("lead"),
        )
        .await
        .unwrap();
    // The home has no prompt_templates/: the templates built into the binary render.
    let engine = BriefEngine::load(&home).unwrap();
    let brief = render_task_brief(
        &home,
        &bb,
        &engine,
        &Protocols::default(),
        &task,
        BriefRequest {
            kind: BriefKind::Work,
            agent: "analyst",
            project_context: None,
            count_references: true,
            bin: "moziplus",
            workspace: None,
            sandbox: None,
        },
    )
    .await
    .unwrap()
    .text;
    assert!(
        brief.contains(&format!("- [{kept}] shown in a brief on day 20")),
        "{brief}"
    );
    assert!(!brief.contains("never shown again"), "{brief}");
    let status = |id: i64| {
        let bb = bb.clone();
        async move {
            bb.experiences(None, None, 100)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.id == id)
                .unwrap()
        }
    };
    assert_eq!(status(kept).await.times_referenced, 1);
    assert_eq!(status(kept).await.last_referenced_at, Some(T0 + 20 * DAY));
    // Day 30 minus a millisecond: nothing is due yet.
    clock.set(T0 + 30 * DAY - 1);
    assert!(bb.expire_experiences(30).await.unwrap().is_empty());
    // Day 30: the unreferenced lesson goes; the referenced one stays.
    clock.set(T0 + 30 * DAY);
    assert_eq!(bb.expire_experiences(30).await.unwrap(), [old]);
    assert_eq!(status(old).await.status, ExperienceStatus::Deprecated);
    assert_eq!(status(kept).await.status, ExperienceStatus::Active);
    // Day 50: 30 days after its last reference, it goes too.
    clock.set(T0 + 50 * DAY - 1);
    assert!(bb.expire_experiences(30).await.unwrap().is_empty());
    clock.set(T0 + 50 * DAY);
    assert_eq!(bb.expire_experiences(30).await.unwrap(), [kept]);
    // A preview (`brief render`) does not count as a reference.
    let n = lesson(&bb, &["weather"], "fresh").await;
    render_task_brief(
        &home,
        &bb,
        &engine,
        &Protocols::default(),
        &task,
        BriefRequest {
            kind: BriefKind::Work,
            agent: "analyst",
            project_context: None,
            count_references: false,
            bin: "moziplus",
            workspace: None,
            sandbox: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(status(n).await.times_referenced, 0);
}

// --- end to end --------------------------------------------------------------

const CONFIG: &str = "daemon:\n  tick_interval: 1\n  task_timeout: 30\n  kill_grace: 1\nexperience:\n  distill_threshold: 5\n";

/// Writes the skill; on round 1, if `bad-first` exists, without `## Pitfalls`.
const DISTILLER: &str = r###"#!/usr/bin/env python3
import json, os, subprocess, tempfile
home, task = os.environ["MOZI_HOME"], os.environ["MOZI_TASK"]
def bb(*a):
    return subprocess.run(["moziplus", "bb", *a], check=True, capture_output=True, text=True).stdout
t = json.loads(bb("read", task, "--json"))
skill = """---
name: csv-hygiene
description: Checks that keep CSV outputs loadable.
---

# CSV hygiene

## When to use
Any task that writes or reads a CSV.

## Steps
1. Check the header row.

## Pitfalls
- Empty files.
"""
if t["round"] == 1 and os.path.exists(f"{home}/bad-first"):
    skill = skill.split("## Pitfalls")[0]
d = tempfile.mkdtemp()
open(f"{d}/SKILL.md", "w").write(skill)
open(f"{d}/meta.yaml", "w").write("version: 1\ntags: [csv]\nsource_experiences: [1, 2, 3, 4, 5]\n")
bb("output", task, "--summary", "skill", "--file", f"{d}/SKILL.md", "--name", "SKILL.md")
bb("output", task, "--summary", "meta", "--file", f"{d}/meta.yaml", "--name", "meta.yaml")
bb("done", task)
"###;

fn distill_home(distiller_kinds: &str) -> TestHome {
    let home = TestHome::with_config(CONFIG, "");
    let s = home.script("distiller.py", DISTILLER).display().to_string();
    std::fs::write(
        home.path().join("config/agents.yaml"),
        format!("agents:\n  - id: distiller\n    runtime: command\n    command: [\"{s}\"]\n    kinds: [{distiller_kinds}]\n"),
    )
    .unwrap();
    home.create_project("p");
    for n in 1..=5 {
        home.ok(&[
            "bb",
            "--project",
            "p",
            "experience",
            "add",
            "--tags",
            "csv",
            "--lesson",
            &format!("CSV lesson {n}"),
        ]);
    }
    home
}

#[test]
fn a_bad_skill_is_refused_with_an_observation_and_the_next_round_installs_a_valid_one() {
    let home = distill_home("distill");
    std::fs::write(home.path().join("bad-first"), "").unwrap();
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_for(
        Duration::from_secs(60),
        "the distill task to be done",
        || {
            query_i64(
                &db,
                "SELECT COUNT(*) FROM task WHERE kind = 'distill' AND status = 'done'",
            ) == 1
        },
    );
    let task = query_strings(&db, "SELECT id FROM task WHERE kind = 'distill'")
        .pop()
        .unwrap();
    let warn = query_strings(
        &db,
        &format!("SELECT body FROM observation WHERE task_id = '{task}' AND level = 'warn'"),
    );
    assert_eq!(
        warn,
        [format!("distill output rejected: projects/p/artifacts/{task}/outputs/SKILL.md: missing the section heading `## Pitfalls`. Fix it and post SKILL.md and meta.yaml again.")]
    );
    assert_eq!(
        query_i64(&db, &format!("SELECT round FROM task WHERE id = '{task}'")),
        2
    );
    // The round-2 brief told the distiller why round 1 was refused.
    let briefs = std::fs::read_dir(
        home.path()
            .join(format!("projects/p/artifacts/{task}/sessions")),
    )
    .unwrap()
    .filter_map(|e| e.ok())
    .filter(|e| e.file_name().to_string_lossy().ends_with(".brief.md"))
    .map(|e| std::fs::read_to_string(e.path()).unwrap())
    .collect::<Vec<_>>();
    assert!(
        briefs
            .iter()
            .any(|b| b.contains("## Your previous attempt was refused")
                && b.contains("missing the section heading `## Pitfalls`")),
        "{briefs:?}"
    );
    // The skill is installed and loads as a custom skill.
    let skill = load_skill(
        &home.path().join("skills/custom/csv-hygiene"),
        SkillSource::Custom,
    )
    .unwrap();
    assert_eq!(skill.description, "Checks that keep CSV outputs loadable.");
    assert_eq!(skill.tags, ["csv"]);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM experience WHERE status = 'distilled'"
        ),
        5
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM experience WHERE status = 'active'"
        ),
        0
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE kind = 'distill'"),
        1,
        "no second distill task"
    );
    // A task tagged csv now gets the skill in its brief.
    let t = home.create_task(
        "p",
        "load the csv",
        &["--kind", "nothing-takes-this", "--tags", "csv", "--force"],
    );
    let brief = home.ok(&["brief", "render", "--project", "p", "--task", &t]);
    assert!(brief.contains("- **csv-hygiene** — Checks that keep CSV outputs loadable. (`skills/custom/csv-hygiene/SKILL.md`)"), "{brief}");
    assert!(daemon.stop().success());
}

#[test]
fn a_daemon_killed_and_restarted_does_not_create_a_second_distill_task() {
    // Nobody takes distill work here, so the task stays open across the crash.
    let home = distill_home("code");
    let daemon = Daemon::start(&home);
    let db = home.db("p");
    wait_for(Duration::from_secs(30), "a distill task", || {
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE kind = 'distill'") == 1
    });
    daemon.crash();
    home.ok(&[
        "bb",
        "--project",
        "p",
        "experience",
        "add",
        "--tags",
        "csv",
        "--lesson",
        "one more",
    ]);
    let daemon = Daemon::start(&home);
    let ticks = |d: &Daemon| d.status()["ticks"].as_u64().unwrap_or(0);
    let start = ticks(&daemon);
    wait_for(
        Duration::from_secs(30),
        "three ticks after the restart",
        || ticks(&daemon) >= start + 3,
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM task WHERE kind = 'distill'"),
        1
    );
    assert!(daemon.stop().success());
}

#[test]
fn brief_render_prints_the_brief_and_names_a_missing_variable() {
    let home = TestHome::with_config(
        "",
        "agents:\n  - id: a\n    runtime: command\n    command: [\"true\"]\n",
    );
    home.create_project("p");
    let t = home.create_task("p", "say hello", &["--description", "Say it twice."]);
    let out = home.ok(&["brief", "render", "--project", "p", "--task", &t]);
    assert!(out.starts_with("# Brief: say hello\n"), "{out}");
    assert!(out.contains("Say it twice."), "{out}");
    // The brief names the binary by its absolute path (login shells reset PATH).
    assert!(out.contains(&format!("`{BIN} bb done {t}`")), "{out}");
    // A home template reading a variable the context lacks: an error naming it.
    std::fs::create_dir_all(home.path().join("prompt_templates")).unwrap();
    for (n, body) in [
        ("work.md.j2", "{{ task.title }} by {{ task.deadline }}\n"),
        ("review.md.j2", "r"),
        ("distill.md.j2", "d"),
    ] {
        std::fs::write(home.path().join("prompt_templates").join(n), body).unwrap();
    }
    let out = home.run(&["brief", "render", "--project", "p", "--task", &t]);
    assert_eq!(out.code, 1, "{out}");
    let err = out.stderr.as_str();
    assert!(
        err.contains("rendering work.md.j2: undefined variable(s) task.deadline"),
        "{err}"
    );
}
