//! Online backups: a `moziplus backup` child process taken while 8
//! writers commit as fast as they can yields a sound snapshot holding every row
//! committed before it started, in a transactionally consistent state; `restore`
//! brings exactly that state back; `--keep` prunes old snapshots.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use moziplus::blackboard::{Actor, Blackboard, CommentType, OpenMode, LATEST_SCHEMA_VERSION};
use support::{dump, listing_of, raw_connection, Out, TestHome, CHILD_TIMEOUT};

const WRITERS: usize = 8;
const SEEDED: u64 = 5000;

/// Runs `moziplus ARGS…` without blocking the async test's runtime.
async fn run_async(home: &TestHome, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::from(home.command());
    cmd.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(CHILD_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("moziplus {args:?} did not finish in time"))
        .expect("run moziplus");
    Out::from_output(format!("moziplus {}", args.join(" ")), output)
}

async fn max_comment_id(db: &Path) -> i64 {
    let mut conn = raw_connection(db).await;
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM comment")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Seeds 5,000 comments of 4 KB (with their events, as the store writes them)
/// so the snapshot has ~20 MB to copy and takes long enough for the writers
/// to commit many rows while it runs.
async fn seed_comments(db: &Path, task: &str) {
    let mut conn = raw_connection(db).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO comment (task_id, author, comment_type, body, created_at)
         SELECT ?, 'seed', 'note', hex(randomblob(2048)), 0 FROM n",
    )
    .bind(task)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event (created_at, level, kind, task_id, actor, payload)
         SELECT 0, 'optional', 'comment.added', task_id, author,
                json_object('comment_id', id, 'comment_type', 'note')
         FROM comment WHERE author = 'seed' ORDER BY id",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

/// The snapshot path printed by `backup --json`.
fn snapshot_path(out: &Out) -> PathBuf {
    let v = out.json();
    let list = v.as_array().expect("backup --json prints a list");
    assert_eq!(list.len(), 1, "{out}");
    PathBuf::from(list[0]["path"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_eight_writers_holds_every_committed_row() {
    let home = Arc::new(TestHome::new());
    home.create_project("p");
    let task = home.create_task("p", "busy task", &[]);
    let db = home.db("p");
    seed_comments(&db, &task).await;

    // 8 writers, each with its own connection, committing comments in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (db, task, stop, progress_tx) =
            (db.clone(), task.clone(), stop.clone(), progress_tx.clone());
        writers.push(tokio::spawn(async move {
            let bb = Blackboard::open(&db, "p", OpenMode::Existing { max_connections: 1 })
                .await
                .expect("writer opens the blackboard");
            let actor = Actor::operator(format!("writer-{w}"));
            let mut n = 0u64;
            let mut result = Ok(());
            while !stop.load(Ordering::Relaxed) {
                let body = format!("writer {w} comment {n}");
                if let Err(e) = bb
                    .add_comment(&task, &actor, CommentType::Note, &body)
                    .await
                {
                    result = Err(format!("writer {w}: {e}"));
                    break;
                }
                n += 1;
                progress_tx.send_modify(|c| *c += 1);
            }
            bb.close().await;
            result.map(|()| n)
        }));
    }

    // Let them get going, then snapshot while they keep writing.
    progress.wait_for(|n| *n >= 200).await.unwrap();
    let committed_before = max_comment_id(&db).await;
    let commits_at_start = *progress.borrow();
    let out = run_async(&home, &["backup", "--project", "p", "--json"]).await;
    let commits_during = *progress.borrow() - commits_at_start;
    let snapshot = snapshot_path(&out);

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w
            .await
            .unwrap()
            .expect("a writer failed (e.g. database is locked)");
    }
    assert!(
        commits_during > 0,
        "the writers must have been committing while the backup ran"
    );
    let committed_total = max_comment_id(&db).await;
    eprintln!(
        "committed before the backup: {committed_before}; during it: {commits_during}; in total: {committed_total}"
    );
    assert_eq!(
        committed_total as u64,
        SEEDED + total,
        "every writer commit is stored"
    );
    assert!(committed_before > 0 && committed_before < committed_total);

    // The snapshot is a sound, current-schema database file, private to us.
    assert!(
        snapshot.starts_with(home.path().join("backups/p")),
        "{}",
        snapshot.display()
    );
    let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "snapshot mode");
    let mut snap = raw_connection(&snapshot).await;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut snap)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut snap)
        .await
        .unwrap();
    assert_eq!(version, LATEST_SCHEMA_VERSION);

    // Every row committed before the backup started is in it.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM comment WHERE id <= ? ORDER BY id")
        .bind(committed_before)
        .fetch_all(&mut snap)
        .await
        .unwrap();
    assert_eq!(
        ids,
        (1..=committed_before).collect::<Vec<_>>(),
        "comments missing from the snapshot"
    );
    let in_snapshot: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comment")
        .fetch_one(&mut snap)
        .await
        .unwrap();
    assert!(in_snapshot >= committed_before && in_snapshot <= committed_total);

    // …and it is transactionally consistent: each comment with its event.
    // (Each comment id appears in exactly one comment.added event.)
    let (comments, events, matched): (i64, i64, i64) = sqlx::query_as(
        "WITH ev AS (SELECT json_extract(payload, '$.comment_id') AS cid FROM event
                     WHERE kind = 'comment.added')
         SELECT (SELECT COUNT(*) FROM comment),
                (SELECT COUNT(DISTINCT cid) FROM ev),
                (SELECT COUNT(*) FROM ev JOIN comment c ON c.id = ev.cid)",
    )
    .fetch_one(&mut snap)
    .await
    .unwrap();
    assert_eq!(
        (events, matched),
        (comments, comments),
        "every comment has its event and every event its comment"
    );
    drop(snap);

    // Restore: the live board returns to exactly the snapshot's content.
    let snap_dump = dump(&snapshot).await;
    let events_before_restore: i64 = {
        let mut c = raw_connection(&db).await;
        sqlx::query_scalar("SELECT MAX(id) FROM event")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let live_dump = dump(&db).await;
    let out = run_async(&home, &["restore", "--project", "p", "--latest"]).await;
    let text = out.ok();
    // Issue 26, item 7: what the restore replaced is kept, outside the
    // snapshots `--latest` picks from, and named.
    let kept_dir = home.path().join("backups/.replaced/p");
    let kept: Vec<_> = std::fs::read_dir(&kept_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        text.contains(&format!("kept in {}", kept[0].display())),
        "{out}"
    );
    dump(&kept[0])
        .await
        .without(&["sqlite_sequence"])
        .assert_same(
            &live_dump.without(&["sqlite_sequence"]),
            "the kept copy (vs the replaced board)",
        );
    // The restore copies the blackboard's tables (not sqlx's bookkeeping).
    let rows: usize = moziplus::blackboard::TABLES
        .iter()
        .map(|t| snap_dump.table_rows(t))
        .sum();
    assert!(
        text.contains(&format!(
            "restored p from {} ({rows} rows)",
            snapshot.display()
        )),
        "{out}"
    );
    assert_eq!(max_comment_id(&db).await, in_snapshot);
    dump(&db).await.without(&["sqlite_sequence"]).assert_same(
        &snap_dump.without(&["sqlite_sequence"]),
        "restore (live vs snapshot)",
    );

    // Event ids are never reused after a restore (SSE resumes by id).
    home.bb_ok("p", &["comment", &task, "--body", "after the restore"]);
    let newest: i64 = {
        let mut c = raw_connection(&db).await;
        sqlx::query_scalar("SELECT MAX(id) FROM event")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert!(
        newest > events_before_restore,
        "event id {newest} reused (had {events_before_restore})"
    );

    // Retention: --keep 2 leaves the two newest snapshots and nothing else.
    let mut newest_paths = Vec::new();
    for _ in 0..3 {
        let out = run_async(
            &home,
            &["backup", "--project", "p", "--keep", "2", "--json"],
        )
        .await;
        newest_paths.push(snapshot_path(&out));
    }
    let kept: Vec<PathBuf> = listing_of(&home.path().join("backups/p"))
        .into_iter()
        .map(|n| home.path().join("backups/p").join(n))
        .collect();
    assert_eq!(
        kept,
        newest_paths[1..].to_vec(),
        "snapshots kept by --keep 2"
    );
}

#[test]
fn backup_of_every_project_and_restore_from_a_file() {
    let home = TestHome::new();
    home.create_project("a");
    home.create_project("b");
    home.create_task("a", "in a", &[]);
    home.create_task("b", "in b", &[]);
    let a_before = home.dump("a");

    // No --project: every active project.
    let out = home.run(&["backup", "--json"]);
    let list = out.json();
    let paths: Vec<(String, PathBuf)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["project"].as_str().unwrap().to_string(),
                PathBuf::from(s["path"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        paths.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{out}"
    );

    // Changes after the snapshot are undone by restoring it from its file.
    home.create_task("a", "later", &[]);
    home.bb_ok("a", &["claim", "T-0001", "--agent", "x"]);
    let out = home.run(&[
        "restore",
        "--project",
        "a",
        "--from",
        paths[0].1.to_str().unwrap(),
    ]);
    assert!(out.ok().starts_with("restored a from"), "{out}");
    home.dump("a")
        .without(&["sqlite_sequence"])
        .assert_same(&a_before.without(&["sqlite_sequence"]), "restore --from");
    assert!(home.bb_ok("a", &["read"]).contains("1 tasks"));
    // The restore working copy is cleaned up.
    assert_eq!(listing_of(&home.path().join("backups/a")).len(), 1);

    // Refusals: no snapshot yet, a missing file, neither --from nor --latest.
    home.create_project("c");
    home.run(&["restore", "--project", "c", "--latest"])
        .fails(1, &["no snapshots in", "backups/c"]);
    home.run(&["restore", "--project", "a", "--from", "/nonexistent/x.db"])
        .fails(1, &["/nonexistent/x.db", "snapshot file not found"]);
    home.run(&["restore", "--project", "a"])
        .fails(1, &["pass --from FILE or --latest"]);
    // A file that is not a database is refused and the live board is untouched.
    let junk = home.path().join("junk.db");
    std::fs::write(&junk, b"definitely not sqlite").unwrap();
    let before = home.dump("a");
    home.run(&[
        "restore",
        "--project",
        "a",
        "--from",
        junk.to_str().unwrap(),
    ])
    .fails(1, &["not an SQLite database"]);
    home.dump("a")
        .assert_same(&before, "restore of a junk file");
}
