//! Loading with the damage checks: record checksums chained by sequence
//! number, a contiguous log from the snapshot on, and the head recorded in
//! `meta` (see the module docs of [`store`](super) for what each one catches).

use std::path::Path;

use confab_proto::ServerConfig;
use confab_proto::server::{Change, State};
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::error::{Damage, StoreError, damaged, sql};
use super::schema;

/// A record's checksum: SHA-256 (see [`change_sum`] and [`snapshot_sum`]).
pub(super) type Sum = [u8; 32];

/// The checksum the chain starts from when there is no snapshot.
pub(super) const GENESIS: Sum = [0; 32];

/// The [`State`] fields added in format 3 (all maps, empty when migrated).
const FIELDS_ADDED_IN_3: usize = 3;

/// The last record of the log: its sequence number and checksum (the
/// snapshot's when the log after it is empty; 0 and [`GENESIS`] for a new store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) seq: i64,
    pub(super) sum: Sum,
}

/// The checksum of change `seq` with encoding `record`, chained to `prev`,
/// the checksum of the record before it (change `seq - 1`, or the snapshot).
pub(super) fn change_sum(seq: i64, prev: &Sum, record: &[u8]) -> Sum {
    Sha256::new()
        .chain_update(b"confab-store change\0")
        .chain_update(seq.to_be_bytes())
        .chain_update(prev)
        .chain_update(record)
        .finalize()
        .into()
}

/// The checksum of a snapshot covering changes up to `upto`, encoding `state`.
pub(super) fn snapshot_sum(upto: i64, state: &[u8]) -> Sum {
    Sha256::new()
        .chain_update(b"confab-store snapshot\0")
        .chain_update(upto.to_be_bytes())
        .chain_update(state)
        .finalize()
        .into()
}

/// What a load found.
pub(super) struct Loaded {
    pub(super) state: State,
    pub(super) head: Head,
    /// Changes in the log after the snapshot.
    pub(super) log_len: u64,
    /// The oldest change the snapshot covers and compaction has not deleted
    /// yet (later commits delete them, a few at a time).
    pub(super) covered_from: Option<i64>,
}

/// The snapshot, then every change after it, checked (format 4; the
/// changes the snapshot covers are not read: they are deleted a few at a
/// time by the commits after a compaction; the
/// checksums and the head are skipped for older formats, which have none,
/// but the log must still be contiguous). Run in one read transaction, so
/// that a concurrent compaction cannot show a torn store.
pub(super) fn load(conn: &Connection, path: &Path, config: &ServerConfig, format: u32) -> Result<Loaded, StoreError> {
    let checked = format >= 4;
    let corrupt = |record, position, e: postcard::Error| StoreError::Corrupt {
        path: path.to_owned(),
        record,
        position,
        reason: e.to_string(),
    };
    let committed = if checked { Some(schema::head(conn, path)?) } else { None };
    let sum_column = if checked { "sum" } else { "NULL" };
    let snapshot: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = conn
        .query_row(&format!("SELECT upto, state, {sum_column} FROM snapshot WHERE id = 1"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(sql(path))?;
    let has_snapshot = snapshot.is_some();
    let (mut state, mut head) = match snapshot {
        Some((upto, mut bytes, stored)) => {
            let sum = snapshot_sum(upto, &bytes);
            if checked && stored != Some(sum.to_vec()) {
                return Err(damaged(path, Damage::SnapshotAltered { upto }));
            }
            if format < 3 {
                // The fields format 3 appended to `State`, empty (see `OLDEST_MIGRATED_FORMAT`).
                bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_3));
            }
            let state = postcard::from_bytes::<State>(&bytes).map_err(|e| corrupt("snapshot", upto, e))?;
            (state, Head { seq: upto, sum })
        }
        None => (State::new(config.room_history, config.dedup_window), Head { seq: 0, sum: GENESIS }),
    };
    let upto = head.seq;
    // As `Server::restore` does: the caps come from the configuration.
    state.set_caps(config.room_history, config.dedup_window);
    let mut log_len = 0;
    let covered_from: Option<i64> =
        conn.query_row("SELECT min(seq) FROM changes WHERE seq <= ?1", [upto], |r| r.get(0)).map_err(sql(path))?;
    let mut select = conn
        .prepare(&format!("SELECT seq, change, {sum_column} FROM changes WHERE seq > ?1 ORDER BY seq"))
        .map_err(sql(path))?;
    let mut rows = select.query([upto]).map_err(sql(path))?;
    while let Some(row) = rows.next().map_err(sql(path))? {
        let seq: i64 = row.get(0).map_err(sql(path))?;
        let bytes: Vec<u8> = row.get(1).map_err(sql(path))?;
        let stored: Option<Vec<u8>> = row.get(2).map_err(sql(path))?;
        if seq != head.seq + 1 {
            return Err(damaged(
                path,
                if !has_snapshot && log_len == 0 {
                    Damage::SnapshotMissing { first: seq, committed: committed.map_or(0, |h| h.seq) }
                } else {
                    Damage::Gap { from: head.seq + 1, to: seq - 1 }
                },
            ));
        }
        let sum = change_sum(seq, &head.sum, &bytes);
        if checked && stored != Some(sum.to_vec()) {
            return Err(damaged(path, Damage::ChangeAltered { seq }));
        }
        let change: Change = postcard::from_bytes(&bytes).map_err(|e| corrupt("change", seq, e))?;
        state.apply(&change);
        head = Head { seq, sum };
        log_len += 1;
    }
    if let Some(committed) = committed
        && committed != head
    {
        let (last, committed) = (head.seq, committed.seq);
        return Err(damaged(
            path,
            if !has_snapshot && log_len == 0 {
                Damage::SnapshotMissing { first: 0, committed }
            } else if last < committed {
                Damage::Truncated { last, committed }
            } else {
                Damage::HeadMismatch { last, committed }
            },
        ));
    }
    Ok(Loaded { state, head, log_len, covered_from })
}
