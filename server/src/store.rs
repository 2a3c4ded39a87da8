//! The server's durable store: an SQLite database in the data directory.
//!
//! The server machine records every durable fact as a [`Change`]. Each
//! drained turn (`confab_proto::server::Turn`) commits its changes through
//! the store's [`Durable`] implementation, [`Store::commit`], which appends
//! them to a log in **one** transaction (group commit) before the turn's
//! frames can be written; with
//! `synchronous=FULL` in WAL mode a commit that returned is on disk, so no
//! acknowledgement precedes durability.
//!
//! ## Layout of `DATA/confab.db`
//!
//! | table      | rows                                                                 |
//! |------------|----------------------------------------------------------------------|
//! | `meta`     | `application = 'confab-server'`, `format = FORMAT_VERSION`            |
//! | `snapshot` | at most one: `upto` (last change sequence it covers), `state` (a [`State`]) |
//! | `changes`  | `seq` (increasing), `change` (one [`Change`])                          |
//!
//! Records are [postcard](https://docs.rs/postcard) encodings of the serde
//! form of the proto types. That form is positional (enum variants by index,
//! struct fields in order), so any change to `Change`, `State` or a type they
//! hold changes the format: bump [`FORMAT_VERSION`] with it (a test pins an
//! encoding to catch that). A store of an older format this build knows
//! ([`OLDEST_MIGRATED_FORMAT`]) is migrated when opened; any other is
//! refused, never misread.
//!
//! Loading reads the snapshot, then replays the changes after it with
//! [`State::apply`]. Every [`Store::compact_every`] changes the store writes a
//! fresh snapshot of its own copy of the state (fed by the same changes, like
//! `confab_proto::server::MemoryStore`) and deletes the log it covers, in one
//! transaction.

mod fs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_proto::server::{Change, State};
use confab_proto::{Durable, ServerConfig};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use fs::{DIR_MODE, FILE_MODE, ensure_data_dir};

/// The database file's name in the data directory.
pub const DB_FILE: &str = "confab.db";
/// The record format this build reads and writes (see the module docs).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build migrates from when it opens a store.
///
/// Format 2 -> 3: [`State`] gained fields at its end (every one a map, empty
/// in a format-2 state) and [`Change`] gained variants at its end (so a
/// format-2 log decodes as is). A format-2 snapshot is read by appending one
/// zero byte per new field (postcard's encoding of an empty map); the store
/// then writes a format-3 snapshot and its format in one transaction.
pub const OLDEST_MIGRATED_FORMAT: u32 = 2;
/// The [`State`] fields added in format 3 (all maps, empty when migrated).
const FIELDS_ADDED_IN_3: usize = 3;
/// Changes between two snapshots, by default.
pub const DEFAULT_COMPACT_EVERY: u64 = 10_000;
/// The `application` value in `meta`: tells a confab store from another SQLite file.
const APPLICATION: &str = "confab-server";

/// How long a connection waits for another one's lock (an admin command
/// reading while the server writes) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create the data directory", ...).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory does not exist (read-only access never creates it).
    #[error("no confab data directory at {}", .0.display())]
    NoDataDir(PathBuf),
    /// The data directory has no database (read-only access never creates it).
    #[error("no confab database at {}: the server has never run with this data directory", .0.display())]
    NoDatabase(PathBuf),
    /// SQLite failed.
    #[error("database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is an SQLite database, but not a confab store.
    #[error("{} is not a confab store (no confab meta table): point --data at a confab data directory", path.display())]
    NotAStore {
        /// The database file.
        path: PathBuf,
    },
    /// The store was written in another record format.
    #[error(
        "{} has store format {found}, this confab-server reads format {expected}: run the confab-server \
         version that wrote it",
        path.display()
    )]
    VersionMismatch {
        /// The database file.
        path: PathBuf,
        /// The format in the file.
        found: u32,
        /// [`FORMAT_VERSION`].
        expected: u32,
    },
    /// A record does not decode.
    #[error(
        "corrupt {record} at sequence {position} in {}: {reason}; restore the data directory from a backup",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// `snapshot` or `change`.
        record: &'static str,
        /// The change's sequence number, or the last one the snapshot covers.
        position: i64,
        /// What the decoder said.
        reason: String,
    },
    /// A change or the state could not be encoded.
    #[error("cannot encode a store record: {0}")]
    Encode(#[source] postcard::Error),
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.to_owned(), source }
}

/// The SQLite store of one data directory. Not shared: one server process
/// owns it (SQLite's locks keep a second writer out).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    state: State,
    /// The sequence number the next change gets.
    next_seq: i64,
    /// Changes in the log after the snapshot.
    log_len: u64,
    compact_every: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .field("log_len", &self.log_len)
            .field("compact_every", &self.compact_every)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store of `data_dir`, creating the directory (0700, see
    /// [`ensure_data_dir`]) and the database (0600) if needed, and loads the
    /// state: what [`Server::restore`](confab_proto::Server::restore) is given.
    /// `config` gives the room history and dedup caps, as it does to the server.
    pub fn open(data_dir: &Path, config: &ServerConfig) -> Result<(Store, State), StoreError> {
        ensure_data_dir(data_dir).map_err(|source| StoreError::Io {
            action: "use the data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        fs::create_private(&path).map_err(|source| StoreError::Io {
            action: "create the database file",
            path: path.clone(),
            source,
        })?;
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql(&path))?;
        let store = Store::start(conn, path, config, true)?;
        fs::restrict(&store.path).map_err(|source| StoreError::Io {
            action: "restrict the permissions of",
            path: store.path.clone(),
            source,
        })?;
        let state = store.state.clone();
        Ok((store, state))
    }

    /// Loads the state of an existing store without creating anything: for
    /// admin commands. Fails with [`StoreError::NoDataDir`] or
    /// [`StoreError::NoDatabase`] when there is nothing to read.
    pub fn read(data_dir: &Path, config: &ServerConfig) -> Result<State, StoreError> {
        if !data_dir.is_dir() {
            return Err(StoreError::NoDataDir(data_dir.to_owned()));
        }
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NoDatabase(path));
        }
        // Read-write without create: a reader of a WAL database may need to
        // recover the `-shm` index, and SQLite creates it with the database's mode.
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql(&path))?;
        Ok(Store::start(conn, path, config, false)?.state)
    }

    fn start(conn: Connection, path: PathBuf, config: &ServerConfig, create: bool) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(&path))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql(&path))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql(&path))?;
        let format = check_schema(&conn, &path, create)?;
        let (state, next_seq, log_len) = load(&conn, &path, config, format)?;
        let mut store = Store { conn, path, state, next_seq, log_len, compact_every: DEFAULT_COMPACT_EVERY };
        if format < FORMAT_VERSION && create {
            store.migrate()?;
        }
        Ok(store)
    }

    /// Rewrites a store of an older format: a snapshot of the loaded state
    /// in this format, the log it covers deleted, and the new format in
    /// `meta`, in one transaction.
    fn migrate(&mut self) -> Result<(), StoreError> {
        self.write_snapshot(true)
    }

    /// Appends one loop turn's changes to the log in one transaction, then
    /// applies them to the store's own state; writes a snapshot when
    /// [`compact_every`](Self::compact_every) changes have piled up since the
    /// last. When this returns `Ok`, the changes are on disk. On an error
    /// before the log commit nothing was written; an error while compacting
    /// is returned too, but the changes were already committed.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let records =
            changes.iter().map(postcard::to_stdvec).collect::<Result<Vec<_>, _>>().map_err(StoreError::Encode)?;
        let path = &self.path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO changes (seq, change) VALUES (?1, ?2)").map_err(sql(path))?;
            for (seq, record) in (self.next_seq..).zip(&records) {
                insert.execute(params![seq, record]).map_err(sql(path))?;
            }
        }
        tx.commit().map_err(sql(path))?;
        self.next_seq += records.len() as i64;
        self.log_len += records.len() as u64;
        for change in changes {
            self.state.apply(change);
        }
        if self.log_len >= self.compact_every {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes a snapshot of the current state and deletes the log it covers,
    /// in one transaction. [`commit`](Self::commit) calls it on its own.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.write_snapshot(false)
    }

    /// A snapshot of the loaded state, the log it covers deleted and, with
    /// `set_format`, this format in `meta`: one transaction.
    fn write_snapshot(&mut self, set_format: bool) -> Result<(), StoreError> {
        let state = postcard::to_stdvec(&self.state).map_err(StoreError::Encode)?;
        let upto = self.next_seq - 1;
        let path = &self.path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        tx.execute(
            "INSERT INTO snapshot (id, upto, state) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET upto = excluded.upto, state = excluded.state",
            params![upto, state],
        )
        .map_err(sql(path))?;
        tx.execute("DELETE FROM changes WHERE seq <= ?1", params![upto]).map_err(sql(path))?;
        if set_format {
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", params![FORMAT_VERSION])
                .map_err(sql(path))?;
        }
        tx.commit().map_err(sql(path))?;
        self.log_len = 0;
        Ok(())
    }

    /// Sets how many logged changes trigger a snapshot (at least 1).
    pub fn set_compact_every(&mut self, changes: u64) {
        self.compact_every = changes.max(1);
    }

    /// How many logged changes trigger a snapshot.
    #[must_use]
    pub fn compact_every(&self) -> u64 {
        self.compact_every
    }

    /// Changes in the log after the last snapshot.
    #[must_use]
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Everything committed so far.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The loop commits each turn's changes here: [`Store::commit`] (an empty
/// batch writes nothing).
impl Durable<[Change]> for Store {
    type Error = StoreError;

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        Store::commit(self, changes)
    }
}

/// Creates the tables of a new store, or checks an existing one is a confab
/// store of this format or one it migrates from. Returns the store's format.
fn check_schema(conn: &Connection, path: &Path, create: bool) -> Result<u32, StoreError> {
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
        .map_err(sql(path))?;
    if !has_meta {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(sql(path))?;
        if tables > 0 || !create {
            return Err(StoreError::NotAStore { path: path.to_owned() });
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
             CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL,
                                    state BLOB NOT NULL) STRICT;
             CREATE TABLE changes (seq INTEGER PRIMARY KEY, change BLOB NOT NULL) STRICT;
             INSERT INTO meta (key, value) VALUES ('application', '{APPLICATION}'), ('format', {FORMAT_VERSION});
             COMMIT;"
        ))
        .map_err(sql(path))?;
        return Ok(FORMAT_VERSION);
    }
    let meta = |key: &str| -> Result<Option<rusqlite::types::Value>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sql(path))
    };
    use rusqlite::types::Value;
    if meta("application")? != Some(Value::Text(APPLICATION.into())) {
        return Err(StoreError::NotAStore { path: path.to_owned() });
    }
    match meta("format")? {
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

/// The snapshot, then every change after it: the state, the next sequence number, the log length.
fn load(conn: &Connection, path: &Path, config: &ServerConfig, format: u32) -> Result<(State, i64, u64), StoreError> {
    let corrupt = |record, position, e: postcard::Error| StoreError::Corrupt {
        path: path.to_owned(),
        record,
        position,
        reason: e.to_string(),
    };
    let snapshot: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT upto, state FROM snapshot WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql(path))?;
    let (mut state, upto) = match snapshot {
        Some((upto, mut bytes)) => {
            if format < 3 {
                // The fields format 3 appended to `State`, empty (see `OLDEST_MIGRATED_FORMAT`).
                bytes.extend(std::iter::repeat_n(0u8, FIELDS_ADDED_IN_3));
            }
            (postcard::from_bytes::<State>(&bytes).map_err(|e| corrupt("snapshot", upto, e))?, upto)
        }
        None => (State::new(config.room_history, config.dedup_window), 0),
    };
    // As `Server::restore` does: the caps come from the configuration.
    state.set_caps(config.room_history, config.dedup_window);
    let mut next_seq = upto + 1;
    let mut log_len = 0;
    let mut select = conn.prepare("SELECT seq, change FROM changes WHERE seq > ?1 ORDER BY seq").map_err(sql(path))?;
    let mut rows = select.query(params![upto]).map_err(sql(path))?;
    while let Some(row) = rows.next().map_err(sql(path))? {
        let seq: i64 = row.get(0).map_err(sql(path))?;
        let bytes: Vec<u8> = row.get(1).map_err(sql(path))?;
        let change: Change = postcard::from_bytes(&bytes).map_err(|e| corrupt("change", seq, e))?;
        state.apply(&change);
        next_seq = seq + 1;
        log_len += 1;
    }
    Ok((state, next_seq, log_len))
}
