//! The two engines under one statement text: a blackboard's pool is either
//! SQLite's (a file per project) or PostgreSQL's (a schema per project), and
//! every statement of the store runs on both through sqlx's `Any` rows and
//! arguments.
//!
//! Why not sqlx's own `AnyPool`: it hides the typed connection, and the
//! SQLite side needs it (the release check that closes a connection a
//! cancelled `BEGIN` left inside a transaction, and the agent mode that
//! keeps the WAL; see `open.rs`). Here each engine keeps its typed pool and
//! its hooks; a query borrows a typed connection and runs through the
//! connection's own `Any` backend, which converts arguments and rows.
//!
//! Statements are written once, in SQLite's form: `?` and `?N` parameters.
//! PostgreSQL gets them numbered `$N` ([`numbered`]); what the dialects
//! spell differently (JSON, list functions, the write lock) is in
//! [`Backend`]'s methods.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Describe, Either, Execute, Executor, Sqlite, SqlitePool};
use sqlx_core::any::AnyConnectionBackend;

use crate::postgres::{Connections, PgConn};

/// Which engine a blackboard is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The rows of a JSON array parameter, as a one-column table `value`.
    pub(crate) fn json_each(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_each({param})"),
            Backend::Postgres => {
                format!("jsonb_array_elements_text(CAST({param} AS TEXT)::jsonb) AS je(value)")
            }
        }
    }

    /// The larger of two values (SQLite's two-argument `max`).
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Backend::Sqlite => "max",
            Backend::Postgres => "greatest",
        }
    }

    /// The text at `key` of a JSON object stored as text.
    pub(crate) fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Backend::Postgres => format!("(CAST({column} AS jsonb) ->> '{key}')"),
        }
    }
}

/// A blackboard's pool.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    /// The process's connections to the store (every project shares them,
    /// so a daemon with many projects holds a few connections, not a few
    /// per project), this project's schema, and the statement that points
    /// a connection at it (see [`Connections`]).
    Postgres {
        conns: std::sync::Arc<Connections>,
        schema: std::sync::Arc<str>,
        use_schema: std::sync::Arc<str>,
    },
}

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres { .. } => Backend::Postgres,
        }
    }

    pub(crate) async fn acquire(&self) -> sqlx::Result<Conn> {
        Ok(match self {
            Pool::Sqlite(p) => Conn::Sqlite(p.acquire().await?),
            Pool::Postgres {
                conns,
                schema,
                use_schema,
            } => Conn::Postgres(acquire_in_schema(conns, schema, use_schema).await?),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            // Shared by every project of the process: it stays open.
            Pool::Postgres { .. } => {}
        }
    }

    /// A transaction opened with `begin` (`BEGIN IMMEDIATE` on SQLite;
    /// PostgreSQL's `BEGIN` followed by `lock`, a statement that takes the
    /// project's write lock).
    pub(crate) async fn begin_with(&self, begin: &'static str, lock: &str) -> sqlx::Result<Tx> {
        let mut conn = self.acquire().await?;
        let statement = match conn {
            Conn::Sqlite(_) => Some(Cow::Borrowed(begin)),
            Conn::Postgres(_) => None,
        };
        // Inside a transaction it is not parked (see `Connections`) until
        // the commit.
        conn.set_clean(false);
        conn.backend().begin(statement).await?;
        let mut tx = Tx { conn, open: true };
        if !lock.is_empty() {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        Ok(tx)
    }
}

/// A connection of the store's, pointed at one project's schema (boxed:
/// the future is `Send` for every lifetime the daemon's tasks need).
fn acquire_in_schema(
    conns: &std::sync::Arc<Connections>,
    schema: &std::sync::Arc<str>,
    use_schema: &str,
) -> BoxFuture<'static, sqlx::Result<PgConn>> {
    let (conns, schema, use_schema) = (conns.clone(), schema.clone(), use_schema.to_string());
    async move { conns.acquire(&schema, &use_schema).await }.boxed()
}

/// Whether a connection whose statement ended with `r` can serve the next
/// one as it is: a statement the server refused leaves it usable, a lost
/// socket or a protocol error does not.
fn still_usable<T>(r: &sqlx::Result<T>) -> bool {
    matches!(r, Ok(_) | Err(sqlx::Error::Database(_)))
}

/// A connection borrowed from a [`Pool`].
#[derive(Debug)]
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PgConn),
}

impl Conn {
    fn set_clean(&mut self, clean: bool) {
        if let Conn::Postgres(c) = self {
            c.clean = clean;
        }
    }

    fn backend(&mut self) -> &mut dyn AnyConnectionBackend {
        match self {
            Conn::Sqlite(c) => &mut **c,
            Conn::Postgres(c) => &mut **c,
        }
    }
}

/// A transaction on a [`Conn`]: rolled back when dropped uncommitted, as
/// sqlx's own `Transaction` is.
#[derive(Debug)]
pub(crate) struct Tx {
    conn: Conn,
    open: bool,
}

impl Tx {
    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        self.conn.backend().commit().await?;
        self.open = false;
        self.conn.set_clean(true);
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            self.conn.backend().start_rollback();
            self.conn.set_clean(false);
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// SQLite's parameters (`?`, `?N`) as PostgreSQL's `$N`, by SQLite's own
/// rule: a bare `?` takes one more than the largest number used so far.
/// Text inside quotes ('…', "…") is left alone.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse::<u32>().unwrap_or(largest + 1);
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            None => out.push(c),
        }
    }
    out
}

type Row = Either<AnyQueryResult, AnyRow>;

/// The rows a future gathered, handed on as a stream.
fn gathered<'e>(
    rows: impl std::future::Future<Output = sqlx::Result<Vec<Row>>> + Send + 'e,
) -> BoxStream<'e, sqlx::Result<Row>> {
    stream::once(rows)
        .map_ok(|rows| stream::iter(rows.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, mut query: E) -> BoxStream<'e, sqlx::Result<Row>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let arguments = match query.take_arguments().map_err(sqlx::Error::Encode) {
            Ok(arguments) => arguments,
            Err(error) => return stream::once(async move { Err(error) }).boxed(),
        };
        let persistent = query.persistent();
        match self {
            Conn::Sqlite(c) => {
                AnyConnectionBackend::fetch_many(&mut **c, query.sql(), persistent, arguments)
            }
            Conn::Postgres(c) => {
                let sql = numbered(query.sql());
                // The rewritten text lives in this future, so the rows are
                // gathered before they are handed on (the store's queries
                // are bounded, and collected by their callers anyway).
                let rows = async move {
                    let outside_tx = c.clean;
                    c.clean = false;
                    let r = AnyConnectionBackend::fetch_many(&mut **c, &sql, persistent, arguments)
                        .try_collect::<Vec<_>>()
                        .await;
                    c.clean = outside_tx && still_usable(&r);
                    r
                };
                gathered(rows)
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        mut query: E,
    ) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let arguments = match query.take_arguments().map_err(sqlx::Error::Encode) {
            Ok(arguments) => arguments,
            Err(error) => return async move { Err(error) }.boxed(),
        };
        let persistent = query.persistent();
        match self {
            Conn::Sqlite(c) => {
                AnyConnectionBackend::fetch_optional(&mut **c, query.sql(), persistent, arguments)
            }
            Conn::Postgres(c) => {
                let sql = numbered(query.sql());
                async move {
                    let outside_tx = c.clean;
                    c.clean = false;
                    let r =
                        AnyConnectionBackend::fetch_optional(&mut **c, &sql, persistent, arguments)
                            .await;
                    c.clean = outside_tx && still_usable(&r);
                    r
                }
                .boxed()
            }
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<AnyStatement<'q>>>
    where
        'c: 'e,
    {
        match self {
            Conn::Sqlite(c) => AnyConnectionBackend::prepare_with(&mut **c, sql, parameters),
            Conn::Postgres(c) => async move {
                let sql = numbered(sql);
                let outside_tx = c.clean;
                c.clean = false;
                let r = AnyConnectionBackend::prepare_with(&mut **c, &sql, parameters)
                    .await
                    .map(|s| sqlx::Statement::to_owned(&s));
                c.clean = outside_tx && still_usable(&r);
                r
            }
            .boxed(),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Any>>>
    where
        'c: 'e,
    {
        match self {
            Conn::Sqlite(c) => AnyConnectionBackend::describe(&mut **c, sql),
            Conn::Postgres(c) => async move {
                let sql = numbered(sql);
                let outside_tx = c.clean;
                c.clean = false;
                let r = AnyConnectionBackend::describe(&mut **c, &sql).await;
                c.clean = outside_tx && still_usable(&r);
                r
            }
            .boxed(),
        }
    }
}

/// A statement on the pool borrows a connection for itself, as sqlx's own
/// pool does.
impl<'p> Executor<'p> for &'_ Pool {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, sqlx::Result<Row>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        let rows = async move {
            let mut conn = pool.acquire().await?;
            (&mut conn).fetch_many(query).try_collect::<Vec<_>>().await
        };
        gathered(rows)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        async move {
            let mut conn = pool.acquire().await?;
            (&mut conn).fetch_optional(query).await
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<AnyStatement<'q>>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        async move {
            let mut conn = pool.acquire().await?;
            let statement = (&mut conn).prepare_with(sql, parameters).await?;
            Ok(sqlx::Statement::to_owned(&statement))
        }
        .boxed()
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Any>>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        async move {
            let mut conn = pool.acquire().await?;
            (&mut conn).describe(sql).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn sqlite_parameters_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(
            numbered("a = ?2 AND b = ?1 OR c = ?2"),
            "a = $2 AND b = $1 OR c = $2"
        );
        // A bare `?` after `?3` is the fourth.
        assert_eq!(numbered("x = ?3, y = ?"), "x = $3, y = $4");
        assert_eq!(
            numbered("a = '?' AND \"q?\" = ? AND '$.x' = ?"),
            "a = '?' AND \"q?\" = $1 AND '$.x' = $2"
        );
    }
}
