//! What the store's second backend would cost the first: the same claim-shaped
//! statements (a guarded `UPDATE … RETURNING` in a write transaction, then a
//! read by id) on a real SQLite file through sqlx's SQLite pool and through
//! its `Any` pool (one code path for both backends), and on the suite's
//! PostgreSQL (`MOZI_TEST_PG_URL`, when set) through the `Any` pool.
//! Medians per statement pair. `cargo bench --bench store_backends`.

use std::time::{Duration, Instant};

const N: usize = 2000;
const CREATE: &str =
    "CREATE TABLE task (id TEXT PRIMARY KEY, title TEXT NOT NULL, round BIGINT NOT NULL)";
const INSERT: &str = "INSERT INTO task (id, title, round) VALUES ($1, $2, 0)";
const BUMP: &str = "UPDATE task SET round = round + 1 WHERE id = $1 AND round = $2 RETURNING round";
const READ: &str = "SELECT title, round FROM task WHERE id = $1";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

async fn run_sqlite(pool: &sqlx::SqlitePool) -> Duration {
    sqlx::query(CREATE).execute(pool).await.unwrap();
    for i in 0..100 {
        sqlx::query(INSERT)
            .bind(format!("T-{i:04}"))
            .bind("t")
            .execute(pool)
            .await
            .unwrap();
    }
    let mut xs = Vec::with_capacity(N);
    for n in 0..N {
        let id = format!("T-{:04}", n % 100);
        let round = (n / 100) as i64;
        let t = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        let _: Option<i64> = sqlx::query_scalar(BUMP)
            .bind(&id)
            .bind(round)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let _: (String, i64) = sqlx::query_as(READ)
            .bind(&id)
            .fetch_one(pool)
            .await
            .unwrap();
        xs.push(t.elapsed());
    }
    median(xs)
}

async fn run_any(pool: &sqlx::AnyPool) -> Duration {
    sqlx::query(CREATE).execute(pool).await.unwrap();
    for i in 0..100 {
        sqlx::query(INSERT)
            .bind(format!("T-{i:04}"))
            .bind("t")
            .execute(pool)
            .await
            .unwrap();
    }
    let mut xs = Vec::with_capacity(N);
    for n in 0..N {
        let id = format!("T-{:04}", n % 100);
        let round = (n / 100) as i64;
        let t = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        let _: Option<i64> = sqlx::query_scalar(BUMP)
            .bind(&id)
            .bind(round)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let _: (String, i64) = sqlx::query_as(READ)
            .bind(&id)
            .fetch_one(pool)
            .await
            .unwrap();
        xs.push(t.elapsed());
    }
    median(xs)
}

fn main() {
    sqlx::any::install_default_drivers();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = |name: &str| {
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join(name))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        };
        let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts("typed.db"))
            .await
            .unwrap();
        let typed = run_sqlite(&sqlite).await;
        let any_url = format!("sqlite://{}?mode=rwc", dir.path().join("any.db").display());
        let any = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&any_url)
            .await
            .unwrap();
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&any)
            .await
            .unwrap();
        sqlx::query("PRAGMA synchronous=NORMAL")
            .execute(&any)
            .await
            .unwrap();
        let any_sqlite = run_any(&any).await;
        println!("claim-shaped update + read, median of {N}:");
        println!(
            "  SQLite, typed pool   {:>8.1} µs",
            typed.as_secs_f64() * 1e6
        );
        println!(
            "  SQLite, Any pool     {:>8.1} µs  ({:.2}× typed)",
            any_sqlite.as_secs_f64() * 1e6,
            any_sqlite.as_secs_f64() / typed.as_secs_f64()
        );
        if let Ok(url) = std::env::var("MOZI_TEST_PG_URL") {
            let name = format!("bench_{}", std::process::id());
            let admin = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            let (base, query) = url.split_once('?').unwrap_or((&url, ""));
            let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
            let db_url = format!("{base}/{name}?{query}");
            let pg = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&db_url)
                .await
                .unwrap();
            let any_pg = run_any(&pg).await;
            pg.close().await;
            sqlx::query(&format!("DROP DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            println!(
                "  PostgreSQL, Any pool {:>8.1} µs  ({:.2}× SQLite typed; Unix socket, fsync off)",
                any_pg.as_secs_f64() * 1e6,
                any_pg.as_secs_f64() / typed.as_secs_f64()
            );
        }
    });
}
