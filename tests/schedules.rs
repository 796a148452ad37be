//! Schedules: each slot fired exactly once.
//!
//! * the store and the service on a controlled clock (`ManualClock`): two
//!   services on one file firing the same slots, the overlap policies, a
//!   3-hour gap with `missed: skip` and `once`, dependencies by tag, the
//!   `project.yaml` sync;
//! * every CLI verb and every API route against a real home and daemon;
//! * a real daemon: every 2 s for 20 s, `kill -9` and restart, `skip`
//!   overlap while the last instance is open.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moziplus::blackboard::{
    Actor, Blackboard, FiringReason, ManualClock, MissedPolicy, OpenMode, OverlapPolicy, Priority,
    Recurrence, ScheduleDef, TaskStatus,
};
use moziplus::home::{Home, ProjectId};
use moziplus::service::{Notifier, ProjectService};
use support::*;

const T0: i64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
const HOUR: i64 = 3_600_000;

fn def(id: &str, recurrence: Recurrence) -> ScheduleDef {
    ScheduleDef {
        id: id.into(),
        recurrence,
        timezone: "UTC".into(),
        title: "{{ schedule }} {{ date }} {{ time }}".into(),
        description: "recurring".into(),
        kind: None,
        assignee: None,
        priority: Priority::Normal,
        tags: vec!["routine".into()],
        review_protocol: None,
        depends_on_tags: vec![],
        overlap: OverlapPolicy::Allow,
        missed: MissedPolicy::Skip,
        jitter_ms: 0,
        enabled: true,
    }
}

async fn service(dir: &std::path::Path, clock: Arc<ManualClock>) -> ProjectService {
    let bb = Blackboard::open_with_clock(
        &dir.join("blackboard.db"),
        "p",
        OpenMode::Create { max_connections: 2 },
        clock,
    )
    .await
    .unwrap();
    ProjectService::new(
        bb,
        Home::new(dir),
        ProjectId::parse("p").unwrap(),
        Notifier::none(),
    )
}

fn op() -> Actor {
    Actor::operator("alice")
}

/// (scheduled_at, reason, task) of every recorded slot, oldest first.
async fn history(svc: &ProjectService, id: &str) -> Vec<(i64, FiringReason, Option<String>)> {
    let mut v: Vec<_> = svc
        .schedule_firings(id, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.scheduled_at, f.reason, f.task_id))
        .collect();
    v.reverse();
    v
}

#[tokio::test]
async fn two_daemons_on_one_file_fire_each_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let a = service(dir.path(), clock.clone()).await;
    let b = service(dir.path(), clock.clone()).await;
    a.put_schedule(
        &def("hourly", Recurrence::Cron("0 * * * *".into())),
        &op(),
        false,
        true,
    )
    .await
    .unwrap();
    let mut fired = 0;
    for _ in 0..6 {
        clock.advance(HOUR);
        // Both "daemons" tick at once over the same due slot.
        let (x, y) = tokio::join!(a.fire_due_schedules(), b.fire_due_schedules());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.fired.len() + y.fired.len(), 1, "one of them, once");
        fired += x.fired.len() + y.fired.len();
        // A manual tick right after changes nothing.
        assert!(a.fire_due_schedules().await.unwrap().fired.is_empty());
    }
    assert_eq!(fired, 6);
    let h = history(&a, "hourly").await;
    assert_eq!(h.len(), 6);
    assert!(h
        .iter()
        .all(|(_, r, t)| *r == FiringReason::OnTime && t.is_some()));
    let tasks = a.list_tasks(&Default::default()).await.unwrap();
    assert_eq!(tasks.len(), 6);
    assert!(tasks.iter().all(|t| t.tags == ["routine"]));
    assert!(
        tasks.iter().any(|t| t.title == "hourly 2027-01-15 09:00"),
        "{tasks:?}"
    );
    let events = a.events_after(0, 1000).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "schedule.fired").count(),
        6
    );
}

#[tokio::test]
async fn overlap_policies_against_the_last_instance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let svc = service(dir.path(), clock.clone()).await;
    for (id, policy) in [
        ("skip", OverlapPolicy::Skip),
        ("queue", OverlapPolicy::Queue),
        ("allow", OverlapPolicy::Allow),
    ] {
        let mut d = def(id, Recurrence::Interval(60_000));
        d.overlap = policy;
        svc.put_schedule(&d, &op(), false, true).await.unwrap();
    }
    clock.advance(60_000);
    assert_eq!(svc.fire_due_schedules().await.unwrap().fired.len(), 3);
    clock.advance(60_000);
    let tick = svc.fire_due_schedules().await.unwrap();
    // skip: skipped (first instance still pending); queue and allow fire.
    assert_eq!(tick.fired.len(), 2);
    assert_eq!(tick.skipped, 1);
    let h = history(&svc, "skip").await;
    assert_eq!(h[1].1, FiringReason::Overlap);
    assert_eq!(h[1].2, None);
    let q = history(&svc, "queue").await;
    let second = svc
        .task_detail(q[1].2.as_deref().unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(
        second
            .depends_on
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        vec![q[0].2.clone().unwrap()],
        "queue: the new instance waits for the open one"
    );
    let a = history(&svc, "allow").await;
    let second = svc
        .task_detail(a[1].2.as_deref().unwrap(), 10)
        .await
        .unwrap();
    assert!(second.depends_on.is_empty());
    // Once the skip schedule's instance is done, the next slot fires.
    let first = h[0].2.clone().unwrap();
    svc.set_status(&first, TaskStatus::Cancelled, &op(), "done with it")
        .await
        .unwrap();
    clock.advance(60_000);
    svc.fire_due_schedules().await.unwrap();
    let h = history(&svc, "skip").await;
    assert_eq!(h[2].1, FiringReason::OnTime);
    let skipped = svc
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "schedule.skipped")
        .collect::<Vec<_>>();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].payload["reason"], "overlap");
}

#[tokio::test]
async fn a_three_hour_gap_is_skipped_or_fired_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let svc = service(dir.path(), clock.clone()).await;
    let mut once = def("once", Recurrence::Cron("0 * * * *".into()));
    once.missed = MissedPolicy::Once;
    svc.put_schedule(&once, &op(), false, true).await.unwrap();
    svc.put_schedule(
        &def("skip", Recurrence::Cron("0 * * * *".into())),
        &op(),
        false,
        true,
    )
    .await
    .unwrap();
    clock.advance(HOUR); // 09:00 fires on time
    assert_eq!(svc.fire_due_schedules().await.unwrap().fired.len(), 2);
    // Down from 09:00 to 12:30: 10:00, 11:00 and 12:00 pass unseen.
    clock.advance(3 * HOUR + HOUR / 2);
    let tick = svc.fire_due_schedules().await.unwrap();
    assert_eq!(tick.fired.len(), 1, "only `once` catches up");
    assert_eq!(tick.next_due, Some(T0 + 5 * HOUR));
    let h = history(&svc, "once").await;
    assert_eq!(
        h.iter().map(|(at, r, _)| (*at, *r)).collect::<Vec<_>>(),
        vec![
            (T0 + HOUR, FiringReason::OnTime),
            (T0 + 3 * HOUR, FiringReason::Missed),
            (T0 + 4 * HOUR, FiringReason::CatchUp),
        ]
    );
    let h = history(&svc, "skip").await;
    assert_eq!(
        h.iter().map(|(at, r, _)| (*at, *r)).collect::<Vec<_>>(),
        vec![
            (T0 + HOUR, FiringReason::OnTime),
            (T0 + 4 * HOUR, FiringReason::Missed),
        ]
    );
    let rows = svc.schedule_firings("skip", 10).await.unwrap();
    assert_eq!(
        rows[0].slots, 3,
        "one row stands for the three missed slots"
    );
    // Nothing is fired twice on the next tick.
    assert!(svc.fire_due_schedules().await.unwrap().fired.is_empty());
}

#[tokio::test]
async fn paused_resumed_run_now_and_dependencies_by_tag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let svc = service(dir.path(), clock.clone()).await;
    let blocker = svc
        .create_task(
            moziplus::blackboard::NewTask {
                title: "migration".into(),
                tags: vec!["db".into()],
                ..Default::default()
            },
            &op(),
            true,
        )
        .await
        .unwrap();
    let mut d = def("nightly", Recurrence::Interval(60_000));
    d.depends_on_tags = vec!["db".into()];
    svc.put_schedule(&d, &op(), false, true).await.unwrap();
    svc.set_schedule_enabled("nightly", false, &op())
        .await
        .unwrap();
    clock.advance(3 * 60_000);
    let tick = svc.fire_due_schedules().await.unwrap();
    assert!(tick.fired.is_empty());
    assert_eq!(tick.skipped, 1);
    assert_eq!(
        history(&svc, "nightly").await,
        vec![(T0 + 3 * 60_000, FiringReason::Paused, None)]
    );
    // Resumed: the slots that passed while paused do not fire.
    svc.set_schedule_enabled("nightly", true, &op())
        .await
        .unwrap();
    assert!(svc.fire_due_schedules().await.unwrap().fired.is_empty());
    clock.advance(60_000);
    let tick = svc.fire_due_schedules().await.unwrap();
    assert_eq!(tick.fired.len(), 1);
    let detail = svc.task_detail(&tick.fired[0].id, 10).await.unwrap();
    assert_eq!(
        detail
            .depends_on
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        vec![blocker.id.clone()]
    );
    // By hand: fires at once, whatever the overlap policy — here at the very
    // millisecond of the slot just fired, which keeps its own key.
    let manual = svc.run_schedule_now("nightly", &op()).await.unwrap();
    assert_eq!(manual.status, TaskStatus::Pending);
    let h = history(&svc, "nightly").await;
    assert_eq!(h.last().unwrap().1, FiringReason::Manual);
    assert_eq!(h[h.len() - 2].0, h[h.len() - 1].0, "same time, two keys");
    // An agent run may not manage schedules.
    let e = svc
        .run_schedule_now("nightly", &Actor::session("dev1"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("operators"), "{e}");
    svc.remove_schedule("nightly", &op()).await.unwrap();
    assert!(svc.schedule_views().await.unwrap().is_empty());
    // Its tasks stay.
    assert_eq!(svc.list_tasks(&Default::default()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn config_sync_wins_for_its_ids_and_removes_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let svc = service(dir.path(), clock.clone()).await;
    svc.put_schedule(
        &def("report", Recurrence::Interval(60_000)),
        &op(),
        false,
        true,
    )
    .await
    .unwrap();
    svc.put_schedule(
        &def("mine", Recurrence::Interval(60_000)),
        &op(),
        false,
        true,
    )
    .await
    .unwrap();
    let mut from_file = def("report", Recurrence::Cron("0 9 * * *".into()));
    from_file.title = "daily report {{ date }}".into();
    let refused = svc
        .sync_config_schedules(&[from_file.clone(), def("lint", Recurrence::Interval(HOUR))])
        .await
        .unwrap();
    assert!(refused.is_empty());
    let views = svc.schedule_views().await.unwrap();
    let ids: Vec<_> = views.iter().map(|v| v.schedule.def.id.as_str()).collect();
    assert_eq!(ids, ["lint", "mine", "report"]);
    let report = views
        .iter()
        .find(|v| v.schedule.def.id == "report")
        .unwrap();
    assert_eq!(report.schedule.def, from_file, "the file wins");
    // Synced again unchanged: the anchor stays (no slot is lost to a restart).
    let anchor = report.schedule.anchor_at;
    clock.advance(10_000);
    svc.sync_config_schedules(&[from_file.clone(), def("lint", Recurrence::Interval(HOUR))])
        .await
        .unwrap();
    assert_eq!(
        svc.schedule_view("report")
            .await
            .unwrap()
            .schedule
            .anchor_at,
        anchor
    );
    // Dropped from the file: removed; the operator's own stays.
    svc.sync_config_schedules(&[from_file]).await.unwrap();
    let ids: Vec<_> = svc
        .schedule_views()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.schedule.def.id)
        .collect();
    assert_eq!(ids, ["mine", "report"]);
    // A bad definition is refused naming what is wrong.
    let mut bad = def("broken", Recurrence::Cron("0 25 * * *".into()));
    bad.timezone = "UTC".into();
    let refused = svc.sync_config_schedules(&[bad]).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]
            .1
            .contains("invalid cron expression \"0 25 * * *\""),
        "{refused:?}"
    );
    let mut bad = def("badkind", Recurrence::Interval(HOUR));
    bad.kind = Some("Not A Kind".into());
    let refused = svc.sync_config_schedules(&[bad]).await.unwrap();
    assert!(
        refused[0]
            .1
            .contains("schedule badkind: task template: invalid task kind"),
        "{refused:?}"
    );
}

// ---- CLI and API -------------------------------------------------------

#[test]
fn every_cli_verb() {
    // One agent taking `code`, so a template no agent takes is judged.
    let home = TestHome::with_config(
        "",
        "agents:\n  - id: w\n    runtime: demo\n    kinds: [code]\n",
    );
    home.create_project("p");
    let add = home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "standup",
        "--cron",
        "0 9 * * 1-5",
        "--timezone",
        "Europe/Berlin",
        "--title",
        "standup {{ date }}",
        "--tag",
        "daily",
        "--missed",
        "once",
        "--force",
        "--json",
    ]);
    let v = add.json();
    assert_eq!(v["id"], "standup");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(v["missed"], "once");
    assert_eq!(v["overlap"], "skip");
    assert!(v["next_at"].is_string(), "{v}");
    // The same id again: a conflict (exit 3).
    home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "standup",
        "--every",
        "1h",
        "--title",
        "x",
        "--force",
    ])
    .fails(3, &["schedule standup already exists"]);
    // Bad input names what is wrong.
    home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "bad",
        "--cron",
        "0 9 * *",
        "--title",
        "x",
        "--force",
    ])
    .fails(1, &["invalid cron expression \"0 9 * *\""]);
    home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "bad",
        "--every",
        "soon",
        "--title",
        "x",
        "--force",
    ])
    .fails(1, &["every: invalid duration \"soon\""]);
    home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "bad",
        "--every",
        "1h",
        "--title",
        "x",
        "--overlap",
        "sometimes",
        "--force",
    ])
    .fails(1, &["--overlap: unknown overlappolicy \"sometimes\""]);
    // Without --force, a task no agent would take is refused.
    home.run(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "orphan",
        "--every",
        "1h",
        "--title",
        "x",
        "--kind",
        "nobody-does-this",
    ])
    .fails(1, &["could never start"]);

    let text = home.ok(&["schedule", "list", "--project", "p"]);
    assert!(
        text.contains("standup") && text.contains("active"),
        "{text}"
    );
    let list = home
        .run(&["schedule", "list", "--project", "p", "--json"])
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let v = home
        .run(&["schedule", "pause", "--project", "p", "standup", "--json"])
        .json();
    assert_eq!(v["enabled"], false);
    assert!(v["next_at"].is_null());
    let v = home
        .run(&["schedule", "resume", "--project", "p", "standup", "--json"])
        .json();
    assert_eq!(v["enabled"], true);

    let t = home
        .run(&["schedule", "run-now", "--project", "p", "standup", "--json"])
        .json();
    let task = t["id"].as_str().unwrap().to_string();
    assert!(
        t["title"].as_str().unwrap().starts_with("standup 20"),
        "{t}"
    );
    assert_eq!(t["tags"], serde_json::json!(["daily"]));

    let v = home
        .run(&["schedule", "show", "--project", "p", "standup", "--json"])
        .json();
    assert_eq!(v["schedule"]["last_task_id"], task.as_str());
    assert_eq!(v["schedule"]["last_task_status"], "pending");
    assert_eq!(v["firings"][0]["reason"], "manual");
    assert_eq!(v["firings"][0]["task_id"], task.as_str());
    let text = home.ok(&["schedule", "show", "--project", "p", "standup"]);
    assert!(text.contains("manual") && text.contains(&task), "{text}");

    home.ok(&["schedule", "remove", "--project", "p", "standup"]);
    home.run(&["schedule", "show", "--project", "p", "standup"])
        .fails(1, &["schedule standup not found"]);
    home.run(&["schedule", "list"]).fails(1, &["--project"]);
    // The task it created stays.
    assert_eq!(query_i64(&home.db("p"), "SELECT COUNT(*) FROM task"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_route() {
    let home = TestHome::new();
    home.create_project("p");
    let d = Daemon::start(&home);
    let base = d.url("/api/projects/p/schedules");
    let body = serde_json::json!({
        "id": "lint", "every": "1h", "title": "lint {{ date }}", "overlap": "allow",
        "priority": "high", "force": true
    });
    let r = post_json(&base, &body, &[]).await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["every_ms"], 3_600_000);
    assert_eq!(v["priority"], "high");
    assert_eq!(post_json(&base, &body, &[]).await.status(), 409);
    let bad = post_json(
        &base,
        &serde_json::json!({"id": "x", "cron": "0 9 * * *", "timezone": "Mars/Base", "title": "t", "force": true}),
        &[],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let e: serde_json::Value = bad.json().await.unwrap();
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unknown time zone \"Mars/Base\""), "{msg}");
    let bad = post_json(
        &base,
        &serde_json::json!({"id": "x", "title": "t", "when": "now"}),
        &[],
    )
    .await;
    assert_eq!(bad.status(), 400);

    let client = reqwest::Client::new();
    let list: serde_json::Value = client
        .get(&base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["id"], "lint");
    assert!(list[0]["next_at"].is_string());

    let r = post_json(&format!("{base}/lint/pause"), &serde_json::json!({}), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["enabled"],
        false
    );
    let r = post_json(&format!("{base}/lint/resume"), &serde_json::json!({}), &[]).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["enabled"],
        true
    );
    let r = post_json(&format!("{base}/lint/run"), &serde_json::json!({}), &[]).await;
    assert_eq!(r.status(), 201);
    let task: serde_json::Value = r.json().await.unwrap();
    assert_eq!(task["priority"], "high");

    let detail: serde_json::Value = client
        .get(format!("{base}/lint?limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["schedule"]["last_task_id"], task["id"]);
    assert_eq!(detail["firings"][0]["reason"], "manual");
    assert_eq!(detail["firings"][0]["fired"], true);
    let missing = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let r = client.delete(format!("{base}/lint")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = client.delete(format!("{base}/lint")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let spec: serde_json::Value = client
        .get(d.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/projects/{id}/schedules",
        "/api/projects/{id}/schedules/{schedule}",
        "/api/projects/{id}/schedules/{schedule}/pause",
        "/api/projects/{id}/schedules/{schedule}/resume",
        "/api/projects/{id}/schedules/{schedule}/run",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    d.stop();
}

// ---- A real daemon -----------------------------------------------------

fn firing_keys(home: &TestHome) -> Vec<(i64, String, Option<String>)> {
    firing_keys_of(home, "%")
}

/// (slot, reason, task) of every recorded slot of the schedules whose id is
/// `LIKE id`, oldest first.
fn firing_keys_of(home: &TestHome, id: &str) -> Vec<(i64, String, Option<String>)> {
    let db = home.db("p");
    let rows = query_strings(
        &db,
        &format!("SELECT scheduled_at || '|' || reason || '|' || COALESCE(task_id, '') FROM schedule_firing WHERE schedule_id LIKE '{id}' ORDER BY scheduled_at"),
    );
    rows.into_iter()
        .map(|r| {
            let mut p = r.split('|');
            let at = p.next().unwrap().parse().unwrap();
            let reason = p.next().unwrap().to_string();
            let task = p.next().unwrap();
            (at, reason, (!task.is_empty()).then(|| task.to_string()))
        })
        .collect()
}

fn project_yaml(home: &TestHome, body: &str) {
    let p = home.project_dir("p").join("config/project.yaml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[test]
fn a_bad_project_yaml_schedule_is_an_alert_naming_it() {
    let home = TestHome::new();
    home.create_project("p");
    project_yaml(
        &home,
        "schedules:\n  - id: good\n    every: 1h\n    title: good\n  - id: bad\n    cron: \"0 9 * *\"\n    title: bad\n",
    );
    let d = Daemon::start(&home);
    let db = home.db("p");
    wait_for(Duration::from_secs(15), "the alert", || {
        query_i64(
            &db,
            "SELECT COUNT(*) FROM observation WHERE level = 'alert'",
        ) > 0
    });
    let body = query_strings(&db, "SELECT body FROM observation WHERE level = 'alert'").join("\n");
    assert!(
        body.contains("project.yaml schedules[1] (id bad): invalid cron expression \"0 9 * *\""),
        "{body}"
    );
    assert!(
        body.contains("no schedule of project.yaml was synced"),
        "{body}"
    );
    // Nothing half-synced: the good entry waits for the file to be fixed.
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM schedule"), 0);
    d.stop();
}

#[test]
fn every_two_seconds_for_twenty_seconds_gives_ten_tasks() {
    let home = TestHome::new();
    home.create_project("p");
    let d = Daemon::start(&home);
    home.ok(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "tick",
        "--every",
        "2s",
        "--title",
        "tick {{ time }}",
        "--overlap",
        "allow",
        "--force",
    ]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let n = query_i64(&home.db("p"), "SELECT COUNT(*) FROM task");
    let elapsed = started.elapsed();
    let keys = firing_keys(&home);
    assert!(
        (9..=11).contains(&n),
        "{n} tasks in {elapsed:?}, want 10 ± 1: {keys:?}"
    );
    eprintln!("measured: {n} tasks in {elapsed:?} from an every-2s schedule");
    // One task per firing key, all on time.
    assert_eq!(keys.iter().filter(|k| k.2.is_some()).count() as i64, n);
    assert!(keys.iter().all(|k| k.1 == "on_time"), "{keys:?}");
    d.stop();
}

#[test]
fn kill_nine_and_restart_fire_no_slot_twice_and_once_catches_up_once() {
    let home = TestHome::new();
    home.create_project("p");
    project_yaml(
        &home,
        "schedules:\n  - id: beat\n    every: 2s\n    title: beat {{ time }}\n    overlap: allow\n    missed: once\n  - id: quiet\n    every: 2s\n    title: quiet {{ time }}\n    overlap: allow\n",
    );
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(20), "three firings", || {
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM task") >= 3
    });
    d.crash();
    let before = firing_keys_of(&home, "beat");
    // Down long enough that some slots are past their 5 s grace.
    std::thread::sleep(Duration::from_secs(10));
    let d = Daemon::start(&home);
    wait_for(Duration::from_secs(20), "the catch-up", || {
        firing_keys(&home).iter().any(|k| k.1 == "catch_up")
    });
    std::thread::sleep(Duration::from_secs(4));
    d.stop();
    let after = firing_keys_of(&home, "beat");
    // What was recorded before the crash is unchanged, no key twice (the
    // primary key), and one task per fired key.
    assert_eq!(&after[..before.len()], &before[..]);
    let tasks = query_i64(
        &home.db("p"),
        "SELECT COUNT(*) FROM task WHERE title LIKE 'beat %'",
    );
    assert_eq!(after.iter().filter(|k| k.2.is_some()).count() as i64, tasks);
    let distinct_tasks: std::collections::BTreeSet<_> =
        after.iter().filter_map(|k| k.2.clone()).collect();
    assert_eq!(distinct_tasks.len() as i64, tasks);
    assert_eq!(
        after.iter().filter(|k| k.1 == "catch_up").count(),
        1,
        "exactly one catch-up: {after:?}"
    );
    assert!(after.iter().any(|k| k.1 == "missed"), "{after:?}");
    // Slots are increasing and none was lost between them: every 2 s slot
    // from the first to the last is covered by a row (a skip row counts
    // for `slots` of them).
    let slots: i64 = query_i64(
        &home.db("p"),
        "SELECT SUM(slots) FROM schedule_firing WHERE schedule_id = 'beat'",
    );
    let span = (after.last().unwrap().0 - after[0].0) / 2000 + 1;
    assert_eq!(slots, span, "{after:?}");
    // `missed: skip` (the default) over the same downtime: no catch-up, the
    // missed slots recorded, every task still one per fired key.
    let quiet = firing_keys_of(&home, "quiet");
    assert!(!quiet.iter().any(|k| k.1 == "catch_up"), "{quiet:?}");
    assert!(quiet.iter().any(|k| k.1 == "missed"), "{quiet:?}");
    let quiet_tasks = query_i64(
        &home.db("p"),
        "SELECT COUNT(*) FROM task WHERE title LIKE 'quiet %'",
    );
    assert_eq!(
        quiet.iter().filter(|k| k.2.is_some()).count() as i64,
        quiet_tasks
    );
    eprintln!(
        "measured: beat {} rows, {tasks} tasks, 1 catch-up; quiet {} rows, {quiet_tasks} tasks",
        after.len(),
        quiet.len()
    );
}

#[test]
fn skip_overlap_waits_for_the_open_instance() {
    let home = TestHome::new();
    home.create_project("p");
    let d = Daemon::start(&home);
    home.ok(&[
        "schedule",
        "add",
        "--project",
        "p",
        "--id",
        "slow",
        "--every",
        "1s",
        "--title",
        "slow",
        "--force",
    ]);
    wait_for(Duration::from_secs(15), "the first instance", || {
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM task") == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    // Still one task: its slots since were skipped for overlap.
    assert_eq!(query_i64(&home.db("p"), "SELECT COUNT(*) FROM task"), 1);
    let overlap = query_i64(
        &home.db("p"),
        "SELECT COUNT(*) FROM schedule_firing WHERE reason = 'overlap'",
    );
    assert!(overlap >= 2, "{:?}", firing_keys(&home));
    // The probe sees a firing when the instance closes.
    let first = query_strings(&home.db("p"), "SELECT id FROM task")[0].clone();
    home.bb_ok("p", &["cancel", &first, "--reason", "closing"]);
    wait_for(Duration::from_secs(15), "the next instance", || {
        query_i64(&home.db("p"), "SELECT COUNT(*) FROM task") == 2
    });
    let v = home
        .run(&["schedule", "list", "--project", "p", "--json"])
        .json();
    assert_eq!(v[0]["last_task_status"], "pending");
    assert_ne!(v[0]["last_task_id"], first.as_str());
    d.stop();
}

/// Regression: the schema version stayed at 2 after migration 0003 was
/// added, so a database migrated to 2 was never brought past it. One at 2
/// now gets every later migration (0003's columns, 0005's tables) on open.
#[test]
fn a_database_at_schema_version_two_gets_the_later_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["0001_blackboard.sql", "0002_inbox_applied.sql"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crates/store/migrations")
                .join(f),
            old.join(f),
        )
        .unwrap();
    }
    let db = dir.path().join("blackboard.db");
    block_on(async {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&db)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query("PRAGMA user_version = 2")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let bb = Blackboard::open(&db, "p", OpenMode::CLI).await.unwrap();
        bb.close().await;
    });
    assert_eq!(
        query_i64(&db, "PRAGMA user_version"),
        moziplus::blackboard::LATEST_SCHEMA_VERSION
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM pragma_table_info('session') WHERE name = 'llm_calls'"
        ),
        1,
        "0003 applied"
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schedule_firing'"
        ),
        1,
        "0005 applied"
    );
}
