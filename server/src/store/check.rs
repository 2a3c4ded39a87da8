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
/// The [`State`] fields added in format 5 (`retry_keys`, a map, empty when migrated).
const FIELDS_ADDED_IN_5: usize = 1;
/// The [`State`] fields added in format 6 (`mail_next`, `mail_applied`: maps, empty when migrated).
const FIELDS_ADDED_IN_6: usize = 2;
/// The [`State`] fields added in format 7 (`mail_pending`: a map, empty when migrated).
const FIELDS_ADDED_IN_7: usize = 1;

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
/// checksums and the head are skipped for older formats, which have none,
/// but the log must still be contiguous). Changes the snapshot covers are
/// not read: the commits after a compaction delete them a few at a time.
/// Run in one read transaction, so that a concurrent compaction cannot show
/// a torn store.
pub(super) fn load(conn: &Connection, path: &Path, config: &ServerConfig, format: u32) -> Result<Loaded, StoreError> {
    let checked = format >= 4;
    let committed = if checked { Some(schema::head(conn, path)?) } else { None };
    let sum_column = if checked { "sum" } else { "NULL" };
    let snapshot: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = conn
        .query_row(&format!("SELECT upto, state, {sum_column} FROM snapshot WHERE id = 1"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(sql(path))?;
    let mut replay = Replay::start(path, config, format, snapshot, committed)?;
    let upto = replay.upto;
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
        replay.push(seq, &bytes, stored)?;
    }
    replay.finish(covered_from)
}

/// The checks of a load, whatever the rows come from: the snapshot first
/// ([`Replay::start`]), then each change after it in order
/// ([`Replay::push`]), then the head recorded as committed ([`Replay::finish`]).
pub(super) struct Replay<'p> {
    path: &'p Path,
    checked: bool,
    has_snapshot: bool,
    /// The last change the snapshot covers (0: none).
    pub(super) upto: i64,
    /// The head recorded as committed (none before format 4).
    committed: Option<Head>,
    state: State,
    head: Head,
    log_len: u64,
}

impl<'p> Replay<'p> {
    /// Checks and decodes the snapshot (`upto`, its bytes, its stored sum).
    pub(super) fn start(
        path: &'p Path,
        config: &ServerConfig,
        format: u32,
        snapshot: Option<(i64, Vec<u8>, Option<Vec<u8>>)>,
        committed: Option<Head>,
    ) -> Result<Replay<'p>, StoreError> {
        let checked = format >= 4;
        let has_snapshot = snapshot.is_some();
        let (mut state, head) = match snapshot {
            Some((upto, mut bytes, stored)) => {
                let sum = snapshot_sum(upto, &bytes);
                if checked && stored != Some(sum.to_vec()) {
                    return Err(damaged(path, Damage::SnapshotAltered { upto }));
                }
                if format < 3 {
                    // The fields format 3 appended to `State`, empty (see `OLDEST_MIGRATED_FORMAT`).
                    bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_3));
                }
                if format < 5 {
                    // And those format 5 appended.
                    bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_5));
                }
                if format < 6 {
                    // And those format 6 appended.
                    bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_6));
                }
                if format < 7 {
                    // And the one format 7 appended.
                    bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_7));
                }
                let state = postcard::from_bytes::<State>(&bytes).map_err(|e| corrupt(path, "snapshot", upto, &e))?;
                (state, Head { seq: upto, sum })
            }
            None => (State::new(config.room_history, config.dedup_window), Head { seq: 0, sum: GENESIS }),
        };
        // As `Server::restore` does: the caps come from the configuration.
        state.set_caps(config.room_history, config.dedup_window);
        Ok(Replay { path, checked, has_snapshot, upto: head.seq, committed, state, head, log_len: 0 })
    }

    /// The next change after the snapshot: it must follow the last one and
    /// match its stored sum.
    pub(super) fn push(&mut self, seq: i64, bytes: &[u8], stored: Option<Vec<u8>>) -> Result<(), StoreError> {
        let head = self.head;
        if seq != head.seq + 1 {
            return Err(damaged(
                self.path,
                if !self.has_snapshot && self.log_len == 0 {
                    Damage::SnapshotMissing { first: seq, committed: self.committed.map_or(0, |h| h.seq) }
                } else {
                    Damage::Gap { from: head.seq + 1, to: seq - 1 }
                },
            ));
        }
        let sum = change_sum(seq, &head.sum, bytes);
        if self.checked && stored != Some(sum.to_vec()) {
            return Err(damaged(self.path, Damage::ChangeAltered { seq }));
        }
        let change: Change = postcard::from_bytes(bytes).map_err(|e| corrupt(self.path, "change", seq, &e))?;
        self.state.apply(&change);
        self.head = Head { seq, sum };
        self.log_len += 1;
        Ok(())
    }

    /// The log ended: it must end on the head recorded as committed (when one is);
    /// `covered_from` is the oldest covered change still in the log.
    pub(super) fn finish(self, covered_from: Option<i64>) -> Result<Loaded, StoreError> {
        let Replay { path, has_snapshot, committed, state, head, log_len, .. } = self;
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
}

fn corrupt(path: &Path, record: &'static str, position: i64, e: &postcard::Error) -> StoreError {
    StoreError::Corrupt { path: path.to_owned(), record, position, reason: e.to_string() }
}
