//! Physical isolation of projects: one project's missing, garbage,
//! locked or too-new `blackboard.db` never affects commands on another, and
//! commands on the broken one fail with a message naming the file and what is
//! wrong with it — without "repairing" it behind the user's back.

mod support;

use std::path::Path;

use moziplus::blackboard::{BbError, Blackboard, OpenMode, LATEST_SCHEMA_VERSION};
use sqlx::Connection;
use support::{block_on, listing_of, raw_connection, TestHome};

/// Two projects, `a` and `b`, each with one task.
fn two_projects() -> TestHome {
    let h = TestHome::new();
    for p in ["a", "b"] {
        h.create_project(p);
        h.create_task(p, &format!("work in {p}"), &[]);
    }
    h
}

/// Runs the everyday commands on `b` and checks they all work.
#[track_caller]
fn b_still_works(h: &TestHome) {
    let done_before = h.bb("b", &["read", "--json"]).json()["counts"]["done"]
        .as_i64()
        .unwrap();
    let id = h.create_task("b", "created while a is broken", &[]);
    assert!(h
        .bb_ok("b", &["claim", &id, "--agent", "worker"])
        .contains(&format!("claimed {id} for worker")));
    h.bb_ok("b", &["comment", &id, "--body", "still fine"]);
    h.bb_ok(
        "b",
        &[
            "output",
            &id,
            "--agent",
            "worker",
            "--summary",
            "ok",
            "--text",
            "x",
        ],
    );
    h.bb_ok("b", &["done", &id, "--agent", "worker"]);
    let board = h.bb("b", &["read", "--json"]).json();
    assert_eq!(board["project"], "b");
    assert_eq!(board["counts"]["done"], done_before + 1, "{board}");
    assert_eq!(board["counts"]["pending"], 1, "the seed task: {board}");
    let detail = h.bb("b", &["read", &id, "--json"]).json();
    assert_eq!(detail["status"], "done");
    assert_eq!(detail["comments"][0]["body"], "still fine");
    assert_eq!(detail["outputs"][0]["summary"], "ok");
    h.run(&["project", "show", "b"]).ok();
}

/// Commands on the broken project `a` fail, naming its file and `needle`.
#[track_caller]
fn a_fails_clearly(h: &TestHome, needle: &str) {
    let path = h.db("a");
    let path = path.to_str().unwrap();
    for args in [
        &["read"][..],
        &["list"],
        &["create", "--title", "x"],
        &["claim", "T-0001", "--agent", "w"],
        &["comment", "T-0001", "--body", "x"],
    ] {
        h.bb("a", args).fails(1, &["project a", path, needle]);
    }
    h.run(&["project", "show", "a"]).fails(1, &[path, needle]);
}

fn remove_db(h: &TestHome, project: &str) {
    let db = h.db(project);
    for suffix in ["", "-wal", "-shm"] {
        let f = format!("{}{suffix}", db.display());
        if Path::new(&f).exists() {
            std::fs::remove_file(f).unwrap();
        }
    }
}

#[test]
fn a_deleted_blackboard_does_not_affect_another_project() {
    let h = two_projects();
    remove_db(&h, "a");
    b_still_works(&h);
    a_fails_clearly(&h, "blackboard.db does not exist");
    assert!(
        !h.db("a").exists(),
        "a CLI command recreated the deleted blackboard"
    );

    // Backups of every project: a fails loudly, b is still snapshotted.
    let out = h.run(&["backup"]);
    out.fails(1, &["backup failed for a:", "does not exist"]);
    assert!(out.stdout.contains("b: "), "{out}");
    assert_eq!(listing_of(&h.path().join("backups/b")).len(), 1);
    assert!(listing_of(&h.path().join("backups/a")).is_empty());

    // doctor names the broken project and still checks the healthy one.
    let out = h.run(&["doctor"]);
    out.fails(1, &["doctor found"]);
    assert!(out.stdout.contains("FAIL project a blackboard"), "{out}");
    assert!(out.stdout.contains("ok   project b blackboard"), "{out}");

    // The recovery path: opening in create mode (what the daemon does on
    // start) makes an empty, migrated, private blackboard; the CLI works again.
    block_on(async {
        let bb = Blackboard::open(&h.db("a"), "a", OpenMode::Create { max_connections: 1 })
            .await
            .unwrap();
        assert_eq!(bb.status_counts().await.unwrap().values().sum::<i64>(), 0);
        bb.close().await;
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.db("a")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(h.create_task("a", "fresh start", &[]), "T-0001");
}

#[test]
fn a_garbage_blackboard_does_not_affect_another_project() {
    let h = two_projects();
    remove_db(&h, "a");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(h.db("a"), &garbage).unwrap();
    b_still_works(&h);
    a_fails_clearly(&h, "not an SQLite database");
    assert_eq!(
        std::fs::read(h.db("a")).unwrap(),
        garbage,
        "the garbage file was modified"
    );

    // A file with a valid SQLite header but garbage pages is caught as well.
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend_from_slice(&garbage);
    std::fs::write(h.db("a"), &fake).unwrap();
    b_still_works(&h);
    a_fails_clearly(&h, "file is not a database");
    assert_eq!(
        std::fs::read(h.db("a")).unwrap(),
        fake,
        "the bad file was modified"
    );

    let out = h.run(&["backup"]);
    out.fails(1, &["backup failed for a:"]);
    assert_eq!(listing_of(&h.path().join("backups/b")).len(), 1, "{out}");
}

/// The corrupt-file message tells the user to restore from backups/ with
/// `moziplus restore`; that advice must work on the corrupt file itself.
#[test]
fn restore_recovers_a_garbage_blackboard() {
    let h = two_projects();
    h.run(&["backup", "--project", "a"]).ok();
    let snapshot = h
        .path()
        .join("backups/a")
        .join(&listing_of(&h.path().join("backups/a"))[0]);
    let want = block_on(support::dump(&snapshot));
    remove_db(&h, "a");
    std::fs::write(h.db("a"), b"this is not a database, it is a shopping list").unwrap();
    let advice = h.bb("a", &["read"]);
    advice.fails(1, &["not an SQLite database", "moziplus restore"]);

    let out = h.run(&["restore", "--project", "a", "--latest"]);
    assert_eq!(
        out.code, 0,
        "`moziplus restore`, as the error message advises, must recover a corrupt blackboard:\n{out}"
    );
    h.dump("a").without(&["sqlite_sequence"]).assert_same(
        &want.without(&["sqlite_sequence"]),
        "restore over a garbage file",
    );
    assert!(h.bb_ok("a", &["read"]).contains("work in a"));
}

#[test]
fn a_locked_blackboard_does_not_block_another_project() {
    let h = two_projects();
    block_on(async {
        // Hold a's write lock for the whole time b is being used.
        let mut conn = raw_connection(&h.db("a")).await;
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        b_still_works(&h);
        // b never waited for a's lock (a's busy timeout is 10 s per command).
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Readers of a itself are not blocked by its writer either (WAL).
        assert!(h.bb_ok("a", &["read"]).contains("work in a"));
        sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn a_blackboard_from_a_newer_moziplus_is_refused() {
    let h = two_projects();
    let newer = LATEST_SCHEMA_VERSION + 1;
    block_on(async {
        let mut conn = raw_connection(&h.db("a")).await;
        sqlx::query(&format!("PRAGMA user_version = {newer}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    let before = h.dump("a");
    let needle = format!(
        "schema version {newer} is newer than this moziplus supports ({LATEST_SCHEMA_VERSION}); upgrade moziplus"
    );
    a_fails_clearly(&h, &needle);
    h.run(&["backup", "--project", "a"]).fails(1, &[&needle]);
    let out = h.run(&["doctor"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(&needle), "{out}");
    h.dump("a")
        .assert_same(&before, "commands on a too-new blackboard");
    b_still_works(&h);

    // The library refuses it the same way, with a typed error.
    block_on(async {
        match Blackboard::open(&h.db("a"), "a", OpenMode::CLI).await {
            Err(BbError::SchemaTooNew { found, known, .. }) => {
                assert_eq!((found, known), (newer, LATEST_SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    });
}

/// Regression: the schema version stayed at 2 when migration 0003 was
/// added, so a blackboard made before it never got `session.llm_calls`.
/// A blackboard at version 2 with only 0001 and 0002 applied must get every
/// later migration when it is opened.
#[test]
fn a_blackboard_of_an_older_schema_gets_every_later_migration() {
    let h = two_projects();
    block_on(async {
        let mut conn = raw_connection(&h.db("a")).await;
        for sql in [
            "DROP INDEX session_daemon_running",
            "ALTER TABLE session DROP COLUMN daemon",
            "ALTER TABLE session DROP COLUMN sandbox",
            "DROP TABLE event_ack",
            "DROP INDEX event_alert",
            // 0006: not_before; a hold written the old way, in the lease
            // column of a pending task, must move over.
            "ALTER TABLE task DROP COLUMN not_before",
            "UPDATE task SET lease_expires_at = 4102444800000 WHERE status = 'pending'",
            "DROP TABLE schedule_firing",
            "DROP TABLE schedule",
            "DROP TABLE llm_usage",
            "ALTER TABLE session DROP COLUMN gateway_cost",
            "ALTER TABLE session DROP COLUMN cached_tokens",
            "DROP INDEX session_agent_ended",
            "ALTER TABLE session DROP COLUMN llm_calls",
            "ALTER TABLE session DROP COLUMN llm_wait_ms",
            "DELETE FROM _sqlx_migrations WHERE version >= 3",
            "PRAGMA user_version = 2",
        ] {
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
        conn.close().await.unwrap();
    });
    // `bb list`: the held task is not ready, so `bb read`'s summary would
    // not name it.
    assert!(h.bb_ok("a", &["list"]).contains("work in a"));
    let columns = support::query_strings(
        &h.db("a"),
        "SELECT name FROM pragma_table_info('session') ORDER BY name",
    );
    for c in [
        "cached_tokens",
        "gateway_cost",
        "llm_calls",
        "llm_wait_ms",
        "sandbox",
        "daemon",
    ] {
        assert!(columns.iter().any(|n| n == c), "{c} missing: {columns:?}");
    }
    assert_eq!(
        support::query_i64(&h.db("a"), "SELECT COUNT(*) FROM schedule"),
        0,
        "migration 0005 applied too"
    );
    let held = "SELECT COUNT(*) FROM task WHERE status = 'pending' AND not_before = 4102444800000 AND lease_expires_at IS NULL";
    assert!(
        support::query_i64(&h.db("a"), held) >= 1,
        "migration 0006 moved the old hold to not_before"
    );
    assert_eq!(
        support::query_i64(
            &h.db("a"),
            "SELECT COUNT(*) FROM task WHERE status = 'pending' AND lease_expires_at IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        support::query_i64(&h.db("a"), "PRAGMA user_version"),
        LATEST_SCHEMA_VERSION
    );
    assert_eq!(
        support::query_i64(&h.db("a"), "SELECT COUNT(*) FROM llm_usage"),
        0
    );
    assert_eq!(
        support::query_i64(&h.db("a"), "SELECT COUNT(*) FROM event_ack"),
        0,
        "migration 0007 applied too"
    );
}
