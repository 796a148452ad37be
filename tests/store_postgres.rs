//! The store's second backend starts here: the suite's PostgreSQL (a real
//! server, Debian's, started by scripts/test.sh as an unprivileged user)
//! answers sqlx's PostgreSQL driver over its Unix socket, and each test's
//! database is its own.

mod support;

use support::*;

#[test]
fn the_suites_postgresql_answers_sqlx_and_each_test_has_its_own_database() {
    let (Some(a), Some(b)) = (PgDatabase::create("first"), PgDatabase::create("second")) else {
        return;
    };
    a.psql("CREATE TABLE task (id TEXT PRIMARY KEY, title TEXT NOT NULL)");
    a.psql("INSERT INTO task VALUES ('T-0001', 'only in the first')");
    let version = block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&a.url)
            .await
            .expect("sqlx connects over the socket");
        let title: String = sqlx::query_scalar("SELECT title FROM task WHERE id = $1")
            .bind("T-0001")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(title, "only in the first");
        let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        version
    });
    assert!(version >= 150000, "PostgreSQL 15 or later: {version}");
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'task'"),
        "0",
        "the second database does not see the first's table"
    );
}

/// The ground the shared statements stand on: one statement text, with
/// `$N` parameters, `RETURNING` and `ON CONFLICT`, runs unchanged on
/// SQLite (a real file) and on PostgreSQL through sqlx.
#[test]
fn one_statement_text_runs_on_sqlite_and_on_postgresql() {
    let Some(pg) = PgDatabase::create("shared_sql") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("board.db");
    const CREATE: &str =
        "CREATE TABLE task (id TEXT PRIMARY KEY, title TEXT NOT NULL, round BIGINT NOT NULL)";
    const INSERT: &str = "INSERT INTO task (id, title, round) VALUES ($1, $2, $3) \
                          ON CONFLICT (id) DO NOTHING RETURNING round";
    const BUMP: &str =
        "UPDATE task SET round = round + 1 WHERE id = $1 AND round = $2 RETURNING round";
    block_on(async {
        let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&file)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let postgres = sqlx::postgres::PgPoolOptions::new()
            .connect(&pg.url)
            .await
            .unwrap();
        sqlx::query(CREATE).execute(&sqlite).await.unwrap();
        sqlx::query(CREATE).execute(&postgres).await.unwrap();
        let first_sqlite: Option<i64> = sqlx::query_scalar(INSERT)
            .bind("T-0001")
            .bind("x")
            .bind(1_i64)
            .fetch_optional(&sqlite)
            .await
            .unwrap();
        let first_pg: Option<i64> = sqlx::query_scalar(INSERT)
            .bind("T-0001")
            .bind("x")
            .bind(1_i64)
            .fetch_optional(&postgres)
            .await
            .unwrap();
        assert_eq!((first_sqlite, first_pg), (Some(1), Some(1)));
        // The same id again: nothing inserted, nothing returned, on both.
        let again_sqlite: Option<i64> = sqlx::query_scalar(INSERT)
            .bind("T-0001")
            .bind("y")
            .bind(9_i64)
            .fetch_optional(&sqlite)
            .await
            .unwrap();
        let again_pg: Option<i64> = sqlx::query_scalar(INSERT)
            .bind("T-0001")
            .bind("y")
            .bind(9_i64)
            .fetch_optional(&postgres)
            .await
            .unwrap();
        assert_eq!((again_sqlite, again_pg), (None, None));
        // A guarded update (the shape of a claim): only the expected round moves.
        for (expected, moved) in [(1_i64, Some(2_i64)), (1, None)] {
            let s: Option<i64> = sqlx::query_scalar(BUMP)
                .bind("T-0001")
                .bind(expected)
                .fetch_optional(&sqlite)
                .await
                .unwrap();
            let p: Option<i64> = sqlx::query_scalar(BUMP)
                .bind("T-0001")
                .bind(expected)
                .fetch_optional(&postgres)
                .await
                .unwrap();
            assert_eq!((s, p), (moved, moved));
        }
        sqlite.close().await;
        postgres.close().await;
    });
}

/// A home's blackboards go from SQLite files to PostgreSQL and back with
/// `moziplus store copy`: every row arrives (the counts are checked by the
/// command and again here), a non-empty target is refused without
/// `--force`, the copied board works through the CLI on PostgreSQL
/// (`MOZI_STORE__URL`), and the round trip gives back the same rows.
#[test]
fn store_copy_moves_a_home_to_postgresql_and_back_with_every_row() {
    let Some(db) = PgDatabase::create("copy") else {
        return;
    };
    let files = TestHome::new();
    files.create_project("p");
    let t1 = files.create_task("p", "first", &[]);
    files.create_task("p", "second", &["--depends-on", &t1, "--tags", "x"]);
    files.bb_ok("p", &["claim", &t1, "--agent", "dev"]);
    files.bb_ok("p", &["comment", &t1, "--agent", "dev", "--body", "on it"]);
    files.bb_ok("p", &["done", &t1, "--agent", "dev"]);
    let before = files.bb_ok("p", &["list"]);
    let events = query_i64(&files.db("p"), "SELECT COUNT(*) FROM event");
    assert!(events >= 4, "the fixture wrote events: {events}");

    let to_pg = files.run(&[
        "store",
        "copy",
        "--from",
        files.path().to_str().unwrap(),
        "--to",
        &db.url,
    ]);
    assert_eq!(to_pg.code, 0, "{}", to_pg.stderr);
    assert!(
        to_pg.stdout.contains("row counts verified"),
        "{}",
        to_pg.stdout
    );
    assert_eq!(
        db.psql("SELECT COUNT(*) FROM p_p.event"),
        events.to_string(),
        "every event is in the project's schema"
    );
    assert_eq!(db.psql("SELECT COUNT(*) FROM p_p.task"), "2");

    // A second copy onto the same database is refused and changes nothing.
    let again = files.run(&[
        "store",
        "copy",
        "--from",
        files.path().to_str().unwrap(),
        "--to",
        &db.url,
    ]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("already holds p") && again.stderr.contains("--force"),
        "{}",
        again.stderr
    );
    assert_eq!(db.psql("SELECT COUNT(*) FROM p_p.task"), "2");

    // The board on PostgreSQL answers the CLI as the file did, and takes writes.
    let on_pg = files.run_env(
        &["bb", "--project", "p", "list"],
        &[("MOZI_STORE__URL", &db.url)],
    );
    assert_eq!(on_pg.code, 0, "{}", on_pg.stderr);
    assert_eq!(
        on_pg.stdout.trim_end(),
        before.trim_end(),
        "the same board, read from PostgreSQL"
    );
    let t3 = files.run_env(
        &["bb", "--project", "p", "create", "--title", "third"],
        &[("MOZI_STORE__URL", &db.url)],
    );
    assert_eq!(t3.stdout.trim(), "T-0003", "{}", t3.stderr);
    let event_ids = db.psql("SELECT MAX(id) FROM p_p.event");
    assert!(
        event_ids.parse::<i64>().unwrap() > events,
        "new events take new ids after the copied ones"
    );

    // And back, into a fresh home: the same rows.
    let back = TestHome::new();
    back.create_project("p");
    let home_back = back.run(&[
        "store",
        "copy",
        "--from",
        &db.url,
        "--to",
        back.path().to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(home_back.code, 0, "{}", home_back.stderr);
    assert_eq!(query_i64(&back.db("p"), "SELECT COUNT(*) FROM task"), 3);
    assert_eq!(
        query_i64(&back.db("p"), "SELECT COUNT(*) FROM event"),
        db.psql("SELECT COUNT(*) FROM p_p.event")
            .parse::<i64>()
            .unwrap()
    );
    let listed = back.bb_ok("p", &["list"]);
    assert!(
        listed.contains("third") && listed.contains("first"),
        "{listed}"
    );
}

/// `moziplus backup` on a home whose blackboards are in PostgreSQL says
/// to use the database's own tools instead of pretending.
#[test]
fn backup_on_postgresql_names_pg_dump() {
    let Some(db) = PgDatabase::create("backup") else {
        return;
    };
    let h = TestHome::new();
    h.create_project("p");
    let out = h.run_env(&["backup"], &[("MOZI_STORE__URL", &db.url)]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("pg_dump") && out.stderr.contains("p_<id>"),
        "{}",
        out.stderr
    );
}

/// `moziplus doctor` checks the store: on PostgreSQL, reachable (with the
/// password hidden), the project schemas, and the cluster's daemons; an
/// unreachable server is a failed check naming what to fix.
#[test]
fn doctor_checks_the_store_and_its_daemons() {
    let Some(db) = PgDatabase::create("doctor") else {
        return;
    };
    let h = TestHome::new();
    let env = [("MOZI_STORE__URL", db.url.as_str())];
    assert_eq!(
        h.run_env(&["project", "create", "--id", "p", "--name", "P"], &env)
            .code,
        0
    );
    let out = h.run_env(&["doctor"], &env);
    assert!(
        out.stdout.contains("store") && out.stdout.contains("reachable; 1 project schema(s)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("no daemon is running on this store"),
        "{}",
        out.stdout
    );
    let files = h.run(&["doctor"]);
    assert!(
        files.stdout.contains("SQLite files under projects/"),
        "{}",
        files.stdout
    );
    let down = h.run_env(
        &["doctor"],
        &[("MOZI_STORE__URL", "postgres://mozi:s3cret@127.0.0.1:9/none")],
    );
    assert_ne!(down.code, 0);
    assert!(down.stdout.contains("unreachable"), "{}", down.stdout);
    assert!(
        !down.stdout.contains("s3cret"),
        "the password is hidden: {}",
        down.stdout
    );
}

/// A process's connections to the store are shared by all its projects
/// and parked under the schema they last served (`postgres::Connections`):
/// however the statements of many projects interleave, are cancelled
/// mid-way or steal each other's connections, each runs in its own
/// project's schema, and the process holds no more connections than its
/// pool allows.
#[test]
fn shared_connections_keep_every_statement_in_its_own_project() {
    use moziplus::blackboard::{Actor, Blackboard, NewTask, SystemClock};
    let Some(pg) = PgDatabase::create("parking") else {
        return;
    };
    const PROJECTS: usize = 20;
    const TASKS: usize = 30;
    let url = pg.url.clone();
    let (finished, cancelled) = block_on(async move {
        let mut boards = Vec::new();
        for p in 0..PROJECTS {
            let clock = std::sync::Arc::new(SystemClock);
            boards.push(
                Blackboard::open_postgres(&url, &format!("p{p:02}"), 8, clock)
                    .await
                    .expect("open"),
            );
        }
        let mut set = tokio::task::JoinSet::new();
        for i in 0..TASKS {
            for (p, bb) in boards.iter().enumerate() {
                let bb = bb.clone();
                set.spawn(async move {
                    let op = Actor::operator("test");
                    let create = bb.create_task(
                        NewTask {
                            title: format!("p{p:02}-{i}"),
                            ..Default::default()
                        },
                        &op,
                    );
                    if i % 3 == 0 {
                        // Cancelled wherever it is: its connection must not
                        // serve anyone as it is.
                        tokio::time::timeout(std::time::Duration::from_micros(300), create)
                            .await
                            .map(|r| r.expect("create"))
                            .is_ok()
                    } else {
                        // The reads in between move connections around.
                        let _ = bb.tick_probe().await.expect("probe");
                        create.await.expect("create");
                        true
                    }
                });
            }
        }
        let (mut finished, mut cancelled) = (0, 0);
        while let Some(done) = set.join_next().await {
            if done.unwrap() {
                finished += 1
            } else {
                cancelled += 1
            }
        }
        (finished, cancelled)
    });
    assert_eq!(finished + cancelled, PROJECTS * TASKS);
    for p in 0..PROJECTS {
        let foreign = pg.psql(&format!(
            "SELECT count(*) FROM \"p_p{p:02}\".task WHERE title NOT LIKE 'p{p:02}-%'"
        ));
        assert_eq!(foreign, "0", "project p{p:02} holds another project's task");
        let own: usize = pg
            .psql(&format!("SELECT count(*) FROM \"p_p{p:02}\".task"))
            .parse()
            .unwrap();
        // Every create not cancelled landed; a cancelled one may have too.
        assert!(
            (TASKS * 2 / 3..=TASKS).contains(&own),
            "project p{p:02} has {own} tasks"
        );
    }
    let most = pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'moziplus' \
         AND datname = current_database()",
    );
    assert!(
        most.parse::<i64>().unwrap() <= 8,
        "{most} connections left open by a pool of 8"
    );
}

/// The budgets the cluster's daemons share (`moziplus.budget_*`), straight
/// on the store: three daemons' handles (each its own pool) race 60
/// reservations each for one window capped at 1,000 tokens, 10 tokens
/// apiece: exactly 100 are held, whatever the interleaving. A gone
/// daemon's holds stop counting; a spend adds up; a reservation made with
/// limits of another version is refused as stale; a project's ledger is
/// added once however many daemons ask at once.
#[test]
fn budget_reservations_across_daemons_never_pass_a_cap() {
    use moziplus::blackboard::cluster::{Beat, BudgetAnswer, BudgetWindow, Cluster};
    use std::time::Duration;
    let Some(pg) = PgDatabase::create("budgets") else {
        return;
    };
    let url = pg.url.clone();
    const ALIVE: Duration = Duration::from_secs(10);
    let window = |max: i64| BudgetWindow {
        scope: "project-day:p",
        start: 1000,
        max_tokens: Some(max),
        max_usd: None,
    };
    let pg = &pg;
    block_on(async move {
        let mut daemons = Vec::new();
        for id in ["d1", "d2", "d3"] {
            let c = Cluster::join(&url, id).await.expect("join");
            c.beat(&Beat {
                host: "h",
                ..Default::default()
            })
            .await
            .expect("beat");
            daemons.push(c);
        }
        let mut set = tokio::task::JoinSet::new();
        for (d, c) in daemons.iter().enumerate() {
            for i in 0..60 {
                let c = c.clone();
                set.spawn(async move {
                    let w = [window(1000)];
                    let answer = c.reserve_budget(i, &w, 10, 0.0, ALIVE, 0).await;
                    (d, answer.expect("reserve"))
                });
            }
        }
        let mut held = [0; 3];
        let mut over = 0;
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                (d, BudgetAnswer::Held) => held[d] += 1,
                (_, BudgetAnswer::Over { unit, limit, .. }) => {
                    assert_eq!((unit, limit), ("tokens", 1000.0));
                    over += 1
                }
                (_, other) => panic!("{other:?}"),
            }
        }
        assert_eq!(held.iter().sum::<i32>(), 100, "held per daemon {held:?}");
        assert_eq!(over, 80);
        let uses = daemons[0].budget_use(0, ALIVE).await.unwrap();
        assert_eq!(
            (uses[0].spent_tokens, uses[0].held_tokens),
            (0, 1000),
            "{uses:?}"
        );

        // The third daemon stops without giving its holds back (a crash):
        // they stop counting, and their room is anyone's.
        let gone = held[2];
        pg.psql("UPDATE moziplus.daemon SET stopped_at = 1 WHERE id = 'd3'");
        let w = [window(1000)];
        for i in 0..gone {
            let answer = daemons[0]
                .reserve_budget(1000 + i64::from(i), &w, 10, 0.0, ALIVE, 0)
                .await
                .unwrap();
            assert_eq!(
                answer,
                BudgetAnswer::Held,
                "room {i} of the gone daemon's {gone}"
            );
        }
        assert!(matches!(
            daemons[0]
                .reserve_budget(2000, &w, 10, 0.0, ALIVE, 0)
                .await
                .unwrap(),
            BudgetAnswer::Over { .. }
        ));

        // A call ends: its spend is booked, its hold released.
        let spent = daemons[0]
            .spend_budget(&[("project-day:p".to_string(), 1000)], 7, 0.5)
            .await
            .unwrap();
        assert_eq!(spent, vec![(7, 0.5)]);
        daemons[0].release_budget(0).await.unwrap();
        let uses = daemons[0].budget_use(0, ALIVE).await.unwrap();
        assert_eq!((uses[0].spent_tokens, uses[0].held_tokens), (7, 990));
        // The soft threshold is marked once.
        assert!(daemons[0].warn_budget("project-day:p", 1000).await.unwrap());
        assert!(!daemons[1].warn_budget("project-day:p", 1000).await.unwrap());

        // The run-time budgets changed: limits of version 0 are stale.
        let v = daemons[1]
            .change_budget_limits(|_| "{\"overrides\": []}".to_string())
            .await
            .unwrap();
        assert_eq!(v, 1);
        assert_eq!(
            daemons[0]
                .reserve_budget(3000, &w, 1, 0.0, ALIVE, 0)
                .await
                .unwrap(),
            BudgetAnswer::Stale { version: 1 }
        );

        // Three daemons seeding one project at once: its ledger is added
        // once.
        let rows = vec![("project-day:q".to_string(), 1000, 40, 0.0)];
        let mut set = tokio::task::JoinSet::new();
        for c in &daemons {
            let (c, rows) = (c.clone(), rows.clone());
            set.spawn(async move { c.seed_budget("q", &rows).await.unwrap() });
        }
        let mut firsts = 0;
        while let Some(first) = set.join_next().await {
            firsts += usize::from(first.unwrap());
        }
        assert_eq!(firsts, 1);
        assert!(daemons[2].budget_seeded("q").await.unwrap());
    });
    assert_eq!(
        pg.psql("SELECT tokens FROM moziplus.budget_spend WHERE scope = 'project-day:q'"),
        "40"
    );
}
