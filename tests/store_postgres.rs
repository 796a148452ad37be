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
