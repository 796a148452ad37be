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
