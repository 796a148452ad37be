//! Reading a blackboard file from a test: a plain connection, one-value
//! queries, and a logical dump of every row to prove "nothing changed".

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

/// Runs a future to completion on a fresh current-thread runtime (for the
/// synchronous tests that need a store call or a dump).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Opens a plain connection to an existing database file (no pragmas beyond
/// sqlx's defaults; never creates the file).
pub async fn raw_connection(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .expect("options")
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()))
}

/// A read-only pool of the test's own on the blackboard's file: the store
/// offers no raw pool, and the test's SQL is no business of it.
pub async fn raw_pool(path: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
        .await
        .expect("a read-only connection to the blackboard file")
}

/// Opens `db` on a throwaway runtime and runs `f` with the connection.
fn with_db<T, F, Fut>(db: &Path, f: F) -> T
where
    F: FnOnce(sqlx::SqliteConnection) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    block_on(async {
        let conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("open db");
        f(conn).await
    })
}

/// One integer from a query on a blackboard.
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    if let Some((url, schema)) = super::pg::store_of(db) {
        let out = super::pg::psql_in(&url, &schema, sql);
        return out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: not an integer: {out:?}"));
    }
    with_db(db, |mut conn| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    })
}

/// A column of strings from a query on a blackboard.
pub fn query_strings(db: &Path, sql: &str) -> Vec<String> {
    if let Some((url, schema)) = super::pg::store_of(db) {
        let out = super::pg::psql_in(&url, &schema, sql);
        return out.lines().map(str::to_string).collect();
    }
    with_db(db, |mut conn| async move {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&mut conn)
            .await
            .expect(sql)
    })
}

/// Every row of every table (plus `user_version`), one sorted line per row:
/// equal dumps mean equal database contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump(pub BTreeSet<String>);

impl Dump {
    /// Rows of one table in this dump.
    pub fn table_rows(&self, table: &str) -> usize {
        let prefix = format!("{table}|");
        self.0.iter().filter(|l| l.starts_with(&prefix)).count()
    }

    /// The dump without some tables (e.g. `sqlite_sequence`).
    pub fn without(&self, tables: &[&str]) -> Dump {
        Dump(
            self.0
                .iter()
                .filter(|l| !tables.iter().any(|t| l.starts_with(&format!("{t}|"))))
                .cloned()
                .collect(),
        )
    }

    /// Panics with the differing lines if `after` is not equal to `self`.
    #[track_caller]
    pub fn assert_same(&self, after: &Dump, context: &str) {
        if self == after {
            return;
        }
        let removed: Vec<_> = self.0.difference(&after.0).take(20).collect();
        let added: Vec<_> = after.0.difference(&self.0).take(20).collect();
        panic!("database changed by {context}\nremoved rows: {removed:#?}\nadded rows: {added:#?}");
    }
}

/// Dumps a database file: `table|quote(col1)|quote(col2)…` for every row.
///
/// On PostgreSQL (a home of the suite's second pass) the project's schema:
/// `table|<the row as PostgreSQL writes it>`, comparable with itself only.
pub async fn dump(db: &Path) -> Dump {
    if let Some((url, schema)) = super::pg::store_of(db) {
        let mut lines = BTreeSet::new();
        let version =
            super::pg::psql_in(&url, &schema, "SELECT max(version) FROM _sqlx_migrations");
        lines.insert(format!("pragma|user_version={version}"));
        let tables = super::pg::psql_in(
            &url,
            &schema,
            &format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' \
                 AND table_name <> '_sqlx_migrations' ORDER BY 1"
            ),
        );
        let every_row = tables
            .lines()
            .map(|t| format!("SELECT '{t}|' || replace(r::text, chr(10), '\\n') FROM \"{t}\" r"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        if !every_row.is_empty() {
            let rows = super::pg::psql_in(&url, &schema, &every_row);
            lines.extend(rows.lines().map(str::to_string));
        }
        return Dump(lines);
    }
    let mut conn = raw_connection(db).await;
    let mut lines = BTreeSet::new();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .expect("user_version");
    lines.insert(format!("pragma|user_version={version}"));
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .expect("tables");
    for t in tables {
        let cols: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{t}\")"))
            .fetch_all(&mut conn)
            .await
            .expect("table_info")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let expr = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\""))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        for r in rows {
            lines.insert(format!("{t}|{r}"));
        }
    }
    conn.close().await.expect("close");
    Dump(lines)
}
