//! The agent CLI's write-ahead-log policy (`OpenMode::Agent`): a `moziplus bb`
//! call that has the database to itself leaves the WAL in place instead of
//! checkpointing and deleting it on every exit, folds it in once it passes
//! `AGENT_WAL_LIMIT_BYTES`, and nothing committed is lost either way. A WAL
//! left beside a database that was deleted by hand is never replayed into the
//! new one (SQLite itself discards a WAL found beside an empty database).

mod support;

use std::path::Path;

use moziplus::blackboard::AGENT_WAL_LIMIT_BYTES;
use sqlx::Connection;
use support::{block_on, raw_connection, TestHome};

fn wal_len(db: &Path) -> Option<u64> {
    std::fs::metadata(db.with_extension("db-wal"))
        .ok()
        .map(|m| m.len())
}

fn count(db: &Path, sql: &str) -> i64 {
    block_on(async {
        let mut c = raw_connection(db).await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    })
}

#[test]
fn alone_the_cli_keeps_a_bounded_wal_and_loses_nothing() {
    let h = TestHome::new();
    h.create_project("p");
    let db = h.db("p");
    let mut max_wal = 0;
    let mut ids = Vec::new();
    // Enough writes to pass the limit several times over (each claim or
    // create appends a few pages).
    for i in 0..60 {
        let id = h.create_task("p", &format!("task {i}"), &[]);
        h.bb_ok("p", &["claim", &id, "--agent", "worker"]);
        ids.push(id);
        let wal = wal_len(&db).expect("the agent CLI leaves the WAL in place");
        max_wal = max_wal.max(wal);
    }
    // The WAL was kept between calls (it exists after every one) but never
    // grew far past the limit: one call's writes at most on top of it.
    assert!(
        max_wal <= AGENT_WAL_LIMIT_BYTES + 64 * 1024,
        "WAL reached {max_wal} bytes (limit {AGENT_WAL_LIMIT_BYTES})"
    );
    assert!(max_wal > 0);
    // Every write is visible to a fresh reader (which replays the WAL) …
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM task WHERE status = 'working'"),
        60
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM event WHERE kind = 'task.claimed'"
        ),
        60
    );
    // … and to the CLI itself.
    let listed = h.bb("p", &["list", "--status", "working", "--json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(60), "{listed}");
}

#[test]
fn a_claim_while_another_process_holds_the_database() {
    let h = TestHome::new();
    h.create_project("p");
    let db = h.db("p");
    block_on(async {
        // Another process would be the daemon; another connection in this
        // process holds the same POSIX lock the CLI probes for.
        let mut holder = raw_connection(&db).await;
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task")
            .fetch_one(&mut holder)
            .await
            .unwrap();
        let id = h.create_task("p", "while held", &[]);
        h.bb_ok("p", &["claim", &id, "--agent", "worker"]);
        let status: String = sqlx::query_scalar("SELECT status FROM task WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut holder)
            .await
            .unwrap();
        assert_eq!(status, "working");
        holder.close().await.unwrap();
    });
}

#[test]
fn a_wal_left_beside_a_deleted_database_is_not_replayed() {
    let h = TestHome::new();
    h.create_project("p");
    let db = h.db("p");
    for i in 0..3 {
        h.create_task("p", &format!("old {i}"), &[]);
    }
    assert!(wal_len(&db).unwrap_or(0) > 0, "the CLI left its WAL behind");
    // Someone deletes the database by hand but not its WAL.
    std::fs::remove_file(&db).unwrap();
    // The daemon's open (create mode) makes a fresh database …
    block_on(async {
        let bb = moziplus::blackboard::Blackboard::open(
            &db,
            "p",
            moziplus::blackboard::OpenMode::Create { max_connections: 1 },
        )
        .await
        .expect("a fresh database");
        bb.close().await;
    });
    // … which holds none of the old database's rows and is intact.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM task"), 0);
    assert_eq!(
        block_on(async {
            let mut c = raw_connection(&db).await;
            let r: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            r
        }),
        "ok"
    );
    let id = h.create_task("p", "new", &[]);
    assert_eq!(id, "T-0001");
}

/// A second handle opened and closed in a process that already has the
/// database open (the daemon taking a snapshot, say) must not drop that
/// process's SQLite locks: if it did, a CLI call would think it closed the
/// last connection, checkpoint and delete the WAL under the first handle, and
/// the first handle's later writes would vanish from everyone else's view.
#[test]
fn a_second_handle_in_the_same_process_keeps_the_first_ones_writes_visible() {
    use moziplus::blackboard::{Actor, Blackboard, NewTask, OpenMode};
    let h = TestHome::new();
    h.create_project("p");
    let db = h.db("p");
    block_on(async {
        let daemon = Blackboard::open(&db, "p", OpenMode::Create { max_connections: 2 })
            .await
            .unwrap();
        daemon.status_counts().await.unwrap();
        // The second handle, opened and closed while the first stays open.
        let second = Blackboard::open(&db, "p", OpenMode::CLI).await.unwrap();
        second.status_counts().await.unwrap();
        second.close().await;
        // Another process writes and exits.
        let from_cli = h.create_task("p", "from the CLI", &[]);
        // The first handle writes after that …
        let mine = daemon
            .create_task(
                NewTask {
                    title: "from the long-lived handle".into(),
                    ..Default::default()
                },
                &Actor::daemon(),
            )
            .await
            .unwrap();
        // … and both writes are visible to a new process.
        let listed = h.bb("p", &["list", "--json"]).json();
        let ids: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&from_cli.as_str()), "{ids:?}");
        assert!(ids.contains(&mine.id.as_str()), "{ids:?}");
        daemon.close().await;
    });
}
