//! Copying a blackboard's rows to another blackboard, on either engine
//! (`moziplus store copy`): every table in parent-first order, in one
//! transaction on the target, then the row counts compared.

use sqlx::any::AnyTypeInfoKind;
use sqlx::{Column, Row, ValueRef};

use crate::board::{Blackboard, TABLES};
use crate::db::Backend;
use crate::error::{BbError, BbResult};

/// Rows per table, in [`TABLES`] order.
pub type RowCounts = Vec<(&'static str, i64)>;

/// Rows read from a table: its column names and each row's values.
struct TableRows {
    columns: Vec<String>,
    kinds: Vec<AnyTypeInfoKind>,
    rows: Vec<sqlx::any::AnyRow>,
}

impl Blackboard {
    /// Rows in each table.
    pub async fn row_counts(&self) -> BbResult<RowCounts> {
        let mut counts = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&self.pool)
                .await?;
            counts.push((*t, n));
        }
        Ok(counts)
    }

    /// Copies every row of `self` into `target`, which must be empty unless
    /// `replace` (then its rows go first, in the same transaction). Returns
    /// the counts, equal on both sides, or an error naming the table whose
    /// counts differ (and then nothing of the copy is kept).
    pub async fn copy_into(&self, target: &Blackboard, replace: bool) -> BbResult<RowCounts> {
        let mut tx = target.begin_write().await?;
        let mut present = 0i64;
        for t in TABLES {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut *tx)
                .await?;
            present += n;
        }
        if present > 0 && !replace {
            return Err(BbError::Conflict(format!(
                "project {} at {} already has {present} rows; nothing was copied (--force \
                 replaces them)",
                target.project(),
                target.path().display()
            )));
        }
        if target.backend() == Backend::Sqlite {
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *tx)
                .await?;
        }
        for t in TABLES.iter().rev() {
            sqlx::query(&format!("DELETE FROM {t}"))
                .execute(&mut *tx)
                .await?;
        }
        let mut counts = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let table = self.read_table(t).await?;
            for row in &table.rows {
                insert(&mut tx, t, &table, row).await?;
            }
            counts.push((*t, table.rows.len() as i64));
        }
        if target.backend() == Backend::Postgres {
            // Identity columns go on from the highest id copied, as
            // SQLite's rowids and AUTOINCREMENT do.
            let identities: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND column_name = 'id'
                   AND is_identity = 'YES'",
            )
            .fetch_all(&mut *tx)
            .await?;
            for t in identities {
                sqlx::query(&format!(
                    "SELECT CAST(setval(pg_get_serial_sequence('{t}', 'id'),
                                   COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false) AS BIGINT)"
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
        for (t, n) in &counts {
            let copied: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut *tx)
                .await?;
            if copied != *n {
                return Err(BbError::Invalid(format!(
                    "table {t}: {n} rows read but {copied} in the target; nothing was kept"
                )));
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    async fn read_table(&self, table: &str) -> BbResult<TableRows> {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&self.pool)
            .await?;
        let (columns, kinds) = match rows.first() {
            Some(r) => r
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_info().kind()))
                .unzip(),
            None => (Vec::new(), Vec::new()),
        };
        Ok(TableRows {
            columns,
            kinds,
            rows,
        })
    }
}

/// One row into `table`, each value bound as what its column holds (a
/// NULL keeps its column's type, which PostgreSQL checks).
async fn insert(
    tx: &mut crate::db::Tx,
    table: &str,
    rows: &TableRows,
    row: &sqlx::any::AnyRow,
) -> BbResult<()> {
    let marks = vec!["?"; rows.columns.len()].join(", ");
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({marks})",
        rows.columns.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for (i, kind) in rows.kinds.iter().enumerate() {
        // SQLite's column type is its declared one; a value's own type
        // decides where the declaration says nothing.
        let kind = match kind {
            AnyTypeInfoKind::Null => row.try_get_raw(i)?.type_info().kind(),
            k => *k,
        };
        q = match kind {
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                q.bind(row.try_get::<Option<i64>, _>(i)?)
            }
            AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                q.bind(row.try_get::<Option<f64>, _>(i)?)
            }
            AnyTypeInfoKind::Bool => q.bind(row.try_get::<Option<bool>, _>(i)?),
            AnyTypeInfoKind::Blob => q.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
            AnyTypeInfoKind::Text | AnyTypeInfoKind::Null => {
                q.bind(row.try_get::<Option<String>, _>(i)?)
            }
        };
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
