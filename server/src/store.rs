//! The server's durable store: an SQLite database in the data directory.
//!
//! The server machine records every durable fact as a [`Change`]. Each
//! drained turn (`confab_proto::server::Turn`) commits its changes through
//! the store's [`Durable`] implementation, [`Store::commit`], which appends
//! them to a log in **one** transaction (group commit) before the turn's
//! frames can be written; with
//! `synchronous=FULL` in WAL mode (the default, [`Fsync::Always`]) a
//! commit that returned is on disk, so no acknowledgement precedes
//! durability. [`Fsync::Interval`] trades that for throughput as Redis's
//! `appendfsync everysec` does: see [`Store::set_fsync`].
//!
//! ## One writer per data directory
//!
//! [`Store::open`] first takes the data directory's lock ([`DirLock`]: an
//! exclusive OS lock on `DATA/confab.lock`, the holder's pid written in it)
//! and holds it as long as the [`Store`] lives: a second server on the same
//! directory is refused at start, naming the holder's pid. The lock dies
//! with its process, so a killed server's lock file blocks nothing. The rule
//! for every command: what writes the store (`confab-server run`) holds the
//! lock; what only reads it ([`Store::read`], `confab-server jwt jwks`) takes
//! no lock, reads the whole store in one SQLite read transaction (a
//! consistent state even while a server commits and compacts) and never
//! writes (no migration).
//!
//! ## Layout of `DATA/confab.db` (format 7; the tables of format 4)
//!
//! | table      | rows                                                                 |
//! |------------|----------------------------------------------------------------------|
//! | `meta`     | `application = 'confab-server'`, `format = FORMAT_VERSION`, `head_seq`, `head_sum` |
//! | `snapshot` | at most one: `upto` (last change sequence it covers), `state` (a [`State`]), `sum` |
//! | `changes`  | `seq` (contiguous from `upto + 1`), `change` (one [`Change`]), `sum`   |
//!
//! Records are [postcard](https://docs.rs/postcard) encodings of the serde
//! form of the proto types. That form is positional (enum variants by index,
//! struct fields in order), so any change to `Change`, `State` or a type they
//! hold changes the format: bump [`FORMAT_VERSION`] with it (a test pins an
//! encoding to catch that). A store of an older format this build knows
//! ([`OLDEST_MIGRATED_FORMAT`]) is migrated when opened; any other is
//! refused, never misread.
//!
//! ## Damage detection
//!
//! Every record carries a SHA-256 `sum`: the snapshot's over
//! `"confab-store snapshot\0" || upto || state`, a change's over
//! `"confab-store change\0" || seq || previous sum || change`, the previous
//! sum being change `seq - 1`'s, or the snapshot's for change `upto + 1`
//! (zeros without a snapshot). `meta` holds the last committed record's
//! `seq` and `sum` (the head), updated in the transaction that commits it. A
//! load checks, and refuses the store with [`StoreError::Damaged`] saying
//! what is wrong and how to recover:
//!
//! - each record against its sum: altered bytes, even ones postcard still
//!   decodes (a zeroed hash or key), and a record moved to another `seq`;
//! - the log is contiguous from `upto + 1`: a change deleted from the middle
//!   or the start, a deleted snapshot (the log then starts after 1), a
//!   snapshot replaced by an older one (changes it should cover remain);
//! - the last record against the head: a deleted newest change (or several),
//!   which nothing left in the log can reveal: the chain only links a record
//!   to the one *before* it, so cutting the log's end leaves a valid chain,
//!   and only a record kept elsewhere (the head) knows where the end was.
//!
//! The chain adds what per-record sums and the sequence check do not catch:
//! a record taken from another store (or an earlier life of this one) under
//! the same `seq`. The sums detect damage (disk, tools, hands), not an
//! attacker who can write the file and recompute them: there is no key
//! that would not live beside the database.
//!
//! A missing or empty `confab.db` is a new store only in a new data
//! directory. Once a directory holds any of [`FIRST_START_FILES`] (every
//! first start writes them), a lost database is refused
//! ([`StoreError::DatabaseLost`]) unless the operator asks for an empty one
//! with [`Init::Allow`] (`confab-server run --init`).
//!
//! Loading reads the snapshot, then replays the changes after it with
//! [`State::apply`]. Every [`Store::compact_every`] changes the store writes a
//! fresh snapshot of its own copy of the state (fed by the same changes, like
//! `confab_proto::server::MemoryStore`) in one transaction. The log it
//! covers is deleted by the commits after it, twice as many rows per commit
//! as they log, so no commit waits for thousands of deletions; loading skips
//! what the snapshot covers and is not deleted yet.

pub mod carrier;
mod check;
mod error;
pub mod fleet;
mod fs;
pub mod lease;
mod lock;
mod pg;
mod schema;
mod sync;
mod tally;

use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_proto::server::{Change, State};
use confab_proto::{Durable, ServerConfig};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

pub use carrier::{Carrier, Delivery, Ringer, WINDOW};
use check::{Head, Loaded, change_sum, snapshot_sum};
use error::sql;
pub use error::{Damage, StoreError};
pub use fleet::{Fleet, Plan, View};
pub use fs::{DIR_MODE, FILE_MODE, ensure_data_dir};
pub use lease::{LeaseConfig, LeaseWatch};
pub use lock::{DirLock, LOCK_FILE};
pub use pg::{MIGRATIONS, PgStore};
pub use sync::Fsync;
use sync::Syncer;
use tally::Tally;

/// The database file's name in the data directory.
pub const DB_FILE: &str = "confab.db";
/// The record format this build reads and writes (see the module docs).
pub const FORMAT_VERSION: u32 = 7;
/// The oldest format this build migrates from when it opens a store.
///
/// Format 6 -> 7: [`State`] gained a map at its end (the requests mailed to
/// other partitions and not answered yet, `mail_pending`), [`Change`] two
/// variants at its end (`RequestMailed`, `RequestAnswered`) and the
/// conversation state two variants at its end (`Requesting`, `Accepting`),
/// read as format 6's were (one zero byte appended to a format-6
/// snapshot). Format 5 -> 6: [`State`] gained two maps at its end (the numbers of the
/// mail between partitions, `mail_next` and `mail_applied`) and [`Change`]
/// two variants at its end (`MailOut`, `MailIn`), read as format 5's were
/// (two zero bytes appended to a format-5 snapshot). Format 4 -> 5: [`State`] gained a field at its end (`retry_keys`, a map)
/// and [`Change`] two variants at its end (`TokenRotatedKeyed`,
/// `ExchangeAnswered`), read as format 3's were (one zero byte appended to
/// a format-4 snapshot). Format 3 -> 4: checksums and the head (the record encodings are
/// unchanged). Format 2 -> 3: [`State`] gained fields at its end (every one
/// a map, empty in a format-2 state) and [`Change`] gained variants at its
/// end (so a format-2 log decodes as is); a format-2 snapshot is read by
/// appending one zero byte per new field (postcard's encoding of an empty
/// map). Either is loaded (its log checked for gaps), then rewritten in one
/// transaction: this format's tables, a snapshot of the loaded state with
/// its sum, the head, and the format.
pub const OLDEST_MIGRATED_FORMAT: u32 = 2;
/// Changes between two snapshots, by default.
pub const DEFAULT_COMPACT_EVERY: u64 = 10_000;
/// The `application` value in `meta`: tells a confab store from another SQLite file.
const APPLICATION: &str = "confab-server";
/// The files a first start leaves in the data directory (`confab-server run`
/// writes the pin at every start, and the self-signed pair unless given a
/// certificate): a directory holding any of them was used before.
pub const FIRST_START_FILES: [&str; 3] = ["server.pin", "server.crt", "server.key"];

/// How long a connection waits for another one's lock (an admin command
/// reading while the server writes) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether [`Store::open_with`] may create a new, empty database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// Only in a new data directory (one holding none of
    /// [`FIRST_START_FILES`]); a used one whose database is missing or empty
    /// is refused with [`StoreError::DatabaseLost`].
    #[default]
    IfNew,
    /// Also in a used data directory whose database is missing or empty
    /// (`confab-server run --init`): the operator starts over on purpose. An
    /// existing store is opened as it is, never replaced.
    Allow,
}

/// The first-start files `dir` holds, if any: evidence it was used before.
fn used_before(dir: &Path) -> Option<String> {
    let found: Vec<&str> = FIRST_START_FILES.into_iter().filter(|f| dir.join(f).exists()).collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// The SQLite store of one data directory, holding the directory's lock
/// ([`DirLock`]) as long as it lives: one server process owns it.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The state, the head (as `meta` records it) and the log's bookkeeping.
    tally: Tally,
    /// How commits are made durable.
    fsync: Fsync,
    /// Syncs the WAL every interval ([`Fsync::Interval`] only).
    syncer: Option<Syncer>,
    lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("head_seq", &self.tally.head.seq)
            .field("log_len", &self.tally.log_len)
            .field("compact_every", &self.tally.compact_every)
            .field("fsync", &self.fsync)
            .field("lock", &self.lock.path())
            .finish_non_exhaustive()
    }
}

/// How a database is being opened.
#[derive(Debug, Clone, Copy)]
struct Opening {
    /// By the server: migrates an older format.
    write: bool,
    /// An empty database may be given the tables of a new store.
    may_create: bool,
}

impl Store {
    /// [`open_with`](Self::open_with) [`Init::IfNew`]: what the server does
    /// without `--init`.
    pub fn open(data_dir: &Path, config: &ServerConfig) -> Result<(Store, State), StoreError> {
        Store::open_with(data_dir, config, Init::IfNew)
    }

    /// Opens the store of `data_dir` for writing and loads the state: what
    /// [`Server::restore`](confab_proto::Server::restore) is given. `config`
    /// gives the room history and dedup caps, as it does to the server.
    ///
    /// Creates the directory (0700, see [`ensure_data_dir`]) if needed, takes
    /// its lock ([`StoreError::Locked`] if another process holds it), then
    /// opens the database (0600), creating it only as `init` allows
    /// ([`StoreError::DatabaseLost`] otherwise), checks it (see the module
    /// docs; [`StoreError::Damaged`]) and migrates an older format.
    pub fn open_with(data_dir: &Path, config: &ServerConfig, init: Init) -> Result<(Store, State), StoreError> {
        ensure_data_dir(data_dir).map_err(|source| StoreError::Io {
            action: "use the data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let lock = DirLock::acquire(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let used = used_before(data_dir);
        let may_create = init == Init::Allow || used.is_none();
        let lost =
            |what| StoreError::DatabaseLost { path: path.clone(), what, evidence: used.clone().unwrap_or_default() };
        let size = std::fs::metadata(&path).map(|m| m.len());
        if !may_create && size.is_err() {
            return Err(lost("missing"));
        }
        if may_create && size.as_ref().map_or(true, |len| *len == 0) {
            // What SQLite kept beside a lost database belongs to no store now.
            fs::remove_sidecars(&path).map_err(|source| StoreError::Io {
                action: "remove the files of a lost database beside",
                path: path.clone(),
                source,
            })?;
        }
        fs::create_private(&path).map_err(|source| StoreError::Io {
            action: "create the database file",
            path: path.clone(),
            source,
        })?;
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql(&path))?;
        if !may_create && schema::is_empty(&conn, &path)? {
            return Err(lost("empty"));
        }
        let (format, loaded) = Store::start(&conn, &path, config, Opening { write: true, may_create })?;
        let mut store = Store { conn, path, tally: Tally::loaded(loaded), fsync: Fsync::Always, syncer: None, lock };
        if format < FORMAT_VERSION {
            store.write_snapshot(true)?;
        }
        fs::restrict(&store.path).map_err(|source| StoreError::Io {
            action: "restrict the permissions of",
            path: store.path.clone(),
            source,
        })?;
        let state = store.tally.state.clone();
        Ok((store, state))
    }

    /// Loads the state of an existing store without creating or writing
    /// anything, and without the lock: for admin commands, also while the
    /// server runs (one read transaction). Fails with
    /// [`StoreError::NoDataDir`] or [`StoreError::NoDatabase`] when there is
    /// nothing to read, and checks the store as the server does.
    pub fn read(data_dir: &Path, config: &ServerConfig) -> Result<State, StoreError> {
        if !data_dir.is_dir() {
            return Err(StoreError::NoDataDir(data_dir.to_owned()));
        }
        let path = data_dir.join(DB_FILE);
        let used = used_before(data_dir);
        let nothing = |what| match &used {
            Some(evidence) => StoreError::DatabaseLost { path: path.clone(), what, evidence: evidence.clone() },
            None => StoreError::NoDatabase(path.clone()),
        };
        if !path.is_file() {
            return Err(nothing("missing"));
        }
        // Read-write without create: a reader of a WAL database may need to
        // recover the `-shm` index, and SQLite creates it with the database's mode.
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql(&path))?;
        if schema::is_empty(&conn, &path)? {
            return Err(nothing("empty"));
        }
        Ok(Store::start(&conn, &path, config, Opening { write: false, may_create: false })?.1.state)
    }

    /// Sets up the connection, creates the tables of an empty database when
    /// allowed, and loads the store in one read transaction: its format and
    /// what it holds.
    fn start(
        conn: &Connection,
        path: &Path,
        config: &ServerConfig,
        opening: Opening,
    ) -> Result<(u32, Loaded), StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(path))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql(path))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql(path))?;
        if opening.write && opening.may_create && schema::is_empty(conn, path)? {
            schema::create(conn, path)?;
        }
        let tx = conn.unchecked_transaction().map_err(sql(path))?;
        let format = schema::check(&tx, path)?;
        let loaded = check::load(&tx, path, config, format)?;
        tx.commit().map_err(sql(path))?;
        Ok((format, loaded))
    }

    /// Appends one loop turn's changes to the log, each with its chained
    /// sum, and records the new head, in one transaction, then applies them
    /// to the store's own state; writes a snapshot when
    /// [`compact_every`](Self::compact_every) changes have piled up since the
    /// last. When this returns `Ok`, the changes are on disk. On an error
    /// before the log commit nothing was written; an error while compacting
    /// is returned too, but the changes were already committed.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(reason) = self.syncer.as_ref().and_then(Syncer::take_failure) {
            return Err(StoreError::Sync { path: self.path.clone(), reason });
        }
        let records = log_records(changes)?;
        let path = &self.path;
        let mut head = self.tally.head;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO changes (seq, change, sum) VALUES (?1, ?2, ?3)").map_err(sql(path))?;
            for record in &records {
                let seq = head.seq + 1;
                head = Head { seq, sum: change_sum(seq, &head.sum, record) };
                insert.execute(params![seq, record, head.sum.as_slice()]).map_err(sql(path))?;
            }
        }
        // Twice as many covered changes deleted as logged: the log shrinks back to
        // what the snapshot does not cover well before the next compaction.
        let covered = match trim(self.tally.covered, records.len()) {
            Some(((from, end), left)) => {
                tx.prepare_cached("DELETE FROM changes WHERE seq BETWEEN ?1 AND ?2")
                    .and_then(|mut delete| delete.execute(params![from, end]))
                    .map_err(sql(path))?;
                left
            }
            None => None,
        };
        schema::set_head(&tx, path, &head)?;
        tx.commit().map_err(sql(path))?;
        if let Some(syncer) = &self.syncer {
            syncer.dirtied();
        }
        if self.tally.committed(head, covered, records.len(), changes) {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes a snapshot of the current state in one transaction; the
    /// commits after it delete the changes it covers, twice as many per
    /// commit as they log ([`covered_len`](Self::covered_len) tells how many
    /// are left). [`commit`](Self::commit) calls it on its own.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.write_snapshot(false)
    }

    /// A snapshot of the state with its sum, and the snapshot as the head;
    /// with `migrate`, first this format's tables in place of an older
    /// format's and the log it covers deleted: one transaction.
    fn write_snapshot(&mut self, migrate: bool) -> Result<(), StoreError> {
        let state = postcard::to_stdvec(&self.tally.state).map_err(StoreError::Encode)?;
        let upto = self.tally.head.seq;
        let head = Head { seq: upto, sum: snapshot_sum(upto, &state) };
        let path = &self.path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        if migrate {
            schema::recreate_record_tables(&tx, path)?;
        }
        tx.execute(
            "INSERT INTO snapshot (id, upto, state, sum) VALUES (1, ?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET upto = excluded.upto, state = excluded.state, sum = excluded.sum",
            params![upto, state, head.sum.as_slice()],
        )
        .map_err(sql(path))?;
        if migrate {
            tx.execute("DELETE FROM changes WHERE seq <= ?1", params![upto]).map_err(sql(path))?;
        }
        schema::set_head(&tx, path, &head)?;
        tx.commit().map_err(sql(path))?;
        // Outside a migration, the changes the snapshot covers go a few per commit, not all in this one.
        self.tally.snapshotted(head, migrate);
        Ok(())
    }

    /// Sets how commits are made durable. [`Fsync::Always`] (the default):
    /// `synchronous=FULL`, a commit that returned is on disk. [`Fsync::Interval`]:
    /// `synchronous=NORMAL` and a thread fsyncing the WAL at most the
    /// interval after a commit: a commit that returned survives the process
    /// (SIGKILL), and a power loss loses at most the interval's commits.
    /// A failed fsync fails the next commit.
    ///
    /// # Errors
    /// SQLite refuses the pragma, or the sync thread cannot start.
    pub fn set_fsync(&mut self, fsync: Fsync) -> Result<(), StoreError> {
        // Stop (and last-sync) a running syncer before the pragma goes back to FULL.
        self.syncer = None;
        self.conn.pragma_update(None, "synchronous", fsync.pragma()).map_err(sql(&self.path))?;
        if let Fsync::Interval(interval) = fsync {
            let syncer = Syncer::start(&self.path, interval).map_err(|source| StoreError::Io {
                action: "start the WAL sync thread for",
                path: self.path.clone(),
                source,
            })?;
            self.syncer = Some(syncer);
        }
        self.fsync = fsync;
        Ok(())
    }

    /// How commits are made durable.
    #[must_use]
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Sets how many logged changes trigger a snapshot (at least 1).
    pub fn set_compact_every(&mut self, changes: u64) {
        self.tally.compact_every = changes.max(1);
    }

    /// How many logged changes trigger a snapshot.
    #[must_use]
    pub fn compact_every(&self) -> u64 {
        self.tally.compact_every
    }

    /// Changes in the log after the last snapshot.
    #[must_use]
    pub fn log_len(&self) -> u64 {
        self.tally.log_len
    }

    /// Changes the snapshot covers that the log still holds (compaction
    /// leaves them to the commits after it).
    #[must_use]
    pub fn covered_len(&self) -> u64 {
        self.tally.covered_len()
    }

    /// Everything committed so far.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.tally.state
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data directory's lock, held as long as the store lives.
    #[must_use]
    pub fn lock(&self) -> &DirLock {
        &self.lock
    }
}

/// Changes the snapshot covers deleted per change logged, in one commit.
const TRIM_PER_RECORD: i64 = 2;

/// A range of change sequence numbers, first and last.
pub(crate) type Seqs = (i64, i64);

/// The covered changes a commit logging `records` deletes (`from..=to`),
/// and what is left covered after it; `None`: nothing is covered.
pub(crate) fn trim(covered: Option<Seqs>, records: usize) -> Option<(Seqs, Option<Seqs>)> {
    let (from, to) = covered?;
    let end = to.min(from.saturating_add(TRIM_PER_RECORD * records.max(8) as i64) - 1);
    Some(((from, end), (end < to).then_some((end + 1, to))))
}

/// What is covered once a snapshot at `upto` is written, `log_len` changes
/// after the previous one: the rows still covered before, and the log.
pub(crate) fn covered_by_snapshot(covered: Option<Seqs>, upto: i64, log_len: u64) -> Option<Seqs> {
    let first = covered.map_or(upto - log_len as i64 + 1, |(from, _)| from);
    (first <= upto).then_some((first, upto))
}

/// The log records of a turn's changes, one per change, except a
/// [`Change::MessageSent`], which is logged as the `Enqueued` and `Recorded`
/// records it stands for ([`Change::unfold`]): the log's format stays that
/// of format 4, and replaying it gives the same state.
pub(crate) fn log_records(changes: &[Change]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut records = Vec::with_capacity(changes.len());
    for change in changes {
        match change.unfold() {
            Some(parts) => {
                for part in &parts {
                    records.push(postcard::to_stdvec(part).map_err(StoreError::Encode)?);
                }
            }
            None => records.push(postcard::to_stdvec(change).map_err(StoreError::Encode)?),
        }
    }
    Ok(records)
}

/// The loop commits each turn's changes here: [`Store::commit`] (an empty
/// batch writes nothing).
impl Durable<[Change]> for Store {
    type Error = StoreError;

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        Store::commit(self, changes)
    }
}
