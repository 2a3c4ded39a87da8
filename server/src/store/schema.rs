//! The tables of `confab.db`, their creation, the format check and the
//! record of the last committed change (the head) in `meta`.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::check::{GENESIS, Head};
use super::error::{Damage, StoreError, damaged, sql};
use super::{APPLICATION, FORMAT_VERSION, OLDEST_MIGRATED_FORMAT};

/// The record tables of format 4 (see the module docs of [`store`](super)).
const RECORD_TABLES: &str = "
    CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL,
                           state BLOB NOT NULL, sum BLOB NOT NULL) STRICT;
    CREATE TABLE changes (seq INTEGER PRIMARY KEY, change BLOB NOT NULL, sum BLOB NOT NULL) STRICT;";

/// Whether the database holds no table at all: a new (or emptied) file.
pub(super) fn is_empty(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql(path))?;
    Ok(tables == 0)
}

/// Creates the tables of a new store, with the head of an empty log, in one transaction.
pub(super) fn create(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction().map_err(sql(path))?;
    tx.execute_batch(&format!(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT; {RECORD_TABLES}
         INSERT INTO meta (key, value) VALUES ('application', '{APPLICATION}'), ('format', {FORMAT_VERSION});"
    ))
    .map_err(sql(path))?;
    set_head(&tx, path, &Head { seq: 0, sum: GENESIS })?;
    tx.commit().map_err(sql(path))
}

/// Replaces the record tables of an older format by this format's, empty:
/// part of the migration's transaction, which then writes the snapshot.
pub(super) fn recreate_record_tables(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch(&format!("DROP TABLE snapshot; DROP TABLE changes; {RECORD_TABLES}")).map_err(sql(path))?;
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", params![FORMAT_VERSION]).map_err(sql(path))?;
    Ok(())
}

/// Records `head` as the last committed change: in the transaction that commits it.
pub(super) fn set_head(conn: &Connection, path: &Path, head: &Head) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('head_seq', ?1), ('head_sum', ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![head.seq, head.sum.as_slice()]))
    .map_err(sql(path))?;
    Ok(())
}

/// The last committed change as `meta` records it (format 4 on).
pub(super) fn head(conn: &Connection, path: &Path) -> Result<Head, StoreError> {
    let seq = meta(conn, path, "head_seq")?;
    let sum = meta(conn, path, "head_sum")?;
    match (seq, sum) {
        (Some(Value::Integer(seq)), Some(Value::Blob(sum))) => match <[u8; 32]>::try_from(sum.as_slice()) {
            Ok(sum) if seq >= 0 => Ok(Head { seq, sum }),
            _ => Err(damaged(path, Damage::NoHead(format!("head_seq {seq}, a head_sum of {} bytes", sum.len())))),
        },
        (seq, sum) => Err(damaged(path, Damage::NoHead(format!("head_seq is {seq:?}, head_sum is {sum:?}")))),
    }
}

fn meta(conn: &Connection, path: &Path, key: &str) -> Result<Option<Value>, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sql(path))
}

/// Checks that an existing database is a confab store of this format or one
/// it migrates from; returns its format.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
        .map_err(sql(path))?;
    if !has_meta || meta(conn, path, "application")? != Some(Value::Text(APPLICATION.into())) {
        return Err(StoreError::NotAStore { path: path.to_owned() });
    }
    match meta(conn, path, "format")? {
        Some(Value::Integer(v)) if (i64::from(OLDEST_MIGRATED_FORMAT)..=i64::from(FORMAT_VERSION)).contains(&v) => {
            Ok(u32::try_from(v).unwrap_or(FORMAT_VERSION))
        }
        Some(Value::Integer(v)) => Err(StoreError::VersionMismatch {
            path: path.to_owned(),
            found: u32::try_from(v).unwrap_or(u32::MAX),
            expected: FORMAT_VERSION,
        }),
        other => Err(StoreError::Corrupt {
            path: path.to_owned(),
            record: "meta format",
            position: 0,
            reason: format!("format is {other:?}, not an integer"),
        }),
    }
}
