//! Why the store could not be opened, read or written.

use std::path::{Path, PathBuf};

/// What a refusal says to do about a damaged store.
const RECOVER: &str = "nothing was changed: restore the data directory from a backup (with the server stopped); \
                       or, to give up what the store held, move the file aside and start empty with \
                       `confab-server run --init`";

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
    /// Another process holds the data directory's lock (see [`DirLock`](super::DirLock)).
    #[error(
        "data directory {} is in use by another confab-server ({holder}, lock file {}): stop that server \
         first, or give this one another --data",
        dir.display(),
        lock_file.display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file.
        lock_file: PathBuf,
        /// `pid N` as the holder wrote it, or why it is not known.
        holder: String,
    },
    /// The data directory does not exist (read-only access never creates it).
    #[error("no confab data directory at {}", .0.display())]
    NoDataDir(PathBuf),
    /// The data directory has no database (read-only access never creates it).
    #[error("no confab database at {}: the server has never run with this data directory", .0.display())]
    NoDatabase(PathBuf),
    /// The database is missing or empty in a data directory that was used before.
    #[error(
        "{} is {what}, but the data directory {} was used before (it holds {evidence}): the server's store \
         was lost, and starting empty would silently drop every account, room and queued message. Nothing was \
         changed: restore confab.db from a backup (with no server running); or, to start over empty on purpose, \
         run `confab-server run --init` (the certificate and its pin stay the same)",
        path.display(),
        path.parent().unwrap_or_else(|| Path::new(".")).display()
    )]
    DatabaseLost {
        /// The database file.
        path: PathBuf,
        /// `missing` or `empty`.
        what: &'static str,
        /// The first-start files the directory holds.
        evidence: String,
    },
    /// The write-ahead log could not be fsynced ([`Fsync::Interval`](super::Fsync)):
    /// the commits since the last sync may not survive a power loss.
    #[error("database {}: {reason}; stopping: commits since the last sync may be lost on power loss", path.display())]
    Sync {
        /// The database file.
        path: PathBuf,
        /// The fsync's error.
        reason: String,
    },
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
    /// A PostgreSQL store could not be reached, or refused a statement.
    #[error("cannot {action} the store {}: {reason}", url.display())]
    Postgres {
        /// What was being done.
        action: &'static str,
        /// The store's URL, without its password.
        url: PathBuf,
        /// PostgreSQL's reason (or the client's, with its causes).
        reason: String,
        /// PostgreSQL's error.
        source: postgres::Error,
    },
    /// `[store] url` is not a PostgreSQL URL or connection string.
    #[error("[store] url is not a PostgreSQL URL (postgres://user:password@host:port/db) or connection string: {0}")]
    PostgresUrl(String),
    /// A PostgreSQL store holds nothing, though a node served it before (its lease is recorded).
    #[error(
        "the PostgreSQL store {} holds no confab store (its tables are missing), but node {holder:?} served it before (confab_lease records \
         its lease): starting empty would silently drop every account, room and queued message. Nothing was \
         changed: check the URL (host, database, user), restore the database from a backup, or, to start over \
         empty on purpose, run `confab-server run --init`",
        url.display()
    )]
    PostgresEmptied {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The node that held the lease before.
        holder: String,
    },
    /// A PostgreSQL store holds nothing, for a data directory that was used before.
    #[error(
        "the PostgreSQL store {} holds no confab store (its tables are missing), but the data directory {} was used before (it holds \
         {evidence}){}: starting empty would silently drop every account, room and queued message. Nothing was \
         changed: check the URL (host, database, user), restore the database from a backup, or, to start over \
         empty on purpose, run `confab-server run --init` (the certificate and its pin stay the same)",
        url.display(),
        data.display(),
        if *sqlite { "; its state is in its SQLite store, confab.db, which a PostgreSQL store does not read" } else { "" }
    )]
    PostgresEmpty {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The data directory.
        data: PathBuf,
        /// The first-start files the directory holds.
        evidence: String,
        /// The directory holds a SQLite store.
        sqlite: bool,
    },
    /// The PostgreSQL server would acknowledge commits it has not made durable.
    #[error(
        "the PostgreSQL store {} runs with {setting}: a commit it answers may be lost to a crash, and confab \
         acknowledges only durable commits; run PostgreSQL with fsync = on",
        url.display()
    )]
    PostgresNotDurable {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The setting at fault.
        setting: String,
    },
    /// The session of a connection lost under a commit still runs on the PostgreSQL server.
    #[error(
        "the store {}: the session of the connection lost under a commit (backend {pid}) is still running, so that \
         commit's outcome is not known yet",
        url.display()
    )]
    StaleSession {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The old session's backend process.
        pid: i32,
    },
    /// Another node wrote a PostgreSQL store under this one: its head is not the one this node committed.
    #[error(
        "the store {} was written by another confab-server (its head is not the one this node committed): this \
         node stops without acknowledging anything of its last turn",
        .0.display()
    )]
    Owned(PathBuf),
    /// Another node, alive (it renewed its lease), owns a PostgreSQL store's partition.
    #[error(
        "the store {} (partition {partition}) is owned by another confab-server, node {holder:?} (lease token \
         {token}), which is alive: \
         stop it first, give this one another database, or start this one as a standby \
         (`[cluster] standby = true` or --standby) to take over when that node is gone",
        url.display()
    )]
    LeaseHeld {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The partition whose lease it holds.
        partition: i32,
        /// The owner's node name.
        holder: String,
        /// Its lease's fencing token.
        token: i64,
    },
    /// This node lost its lease on a PostgreSQL store's partition: another node may own it now.
    #[error(
        "this node lost its lease on the store {}: {reason}; it stops serving (nothing acknowledged is lost: \
         what it committed is in the store, and it commits nothing more)",
        url.display()
    )]
    LeaseLost {
        /// The store's URL, without its password.
        url: PathBuf,
        /// What happened.
        reason: String,
    },
    /// A PostgreSQL store made for another partition count than the node's:
    /// its state is split otherwise, and there is no online path from one
    /// count to another.
    #[error(
        "the store {} was made for a state split into {found} partition(s), this node's is split into \
         {configured}: run it with the count the store was made for (a state cannot be split again in place)",
        url.display()
    )]
    PartitionCount {
        /// The store's URL, without its password.
        url: PathBuf,
        /// The count the store was made for, as written in `confab_meta`.
        found: String,
        /// The node's count.
        configured: u8,
    },
    /// A partition that is not one of the state's (`index` below `count`,
    /// `count` from 1 to 52).
    #[error("partition {index} of {count} is no partition of a state (the count is 1 to 52, the index below it)")]
    BadPartition {
        /// The partition asked for.
        index: u8,
        /// The count of partitions.
        count: u8,
    },
    /// A PostgreSQL schema this build does not know (a newer confab-server migrated it).
    #[error(
        "the store {} has schema version {found}, this confab-server knows versions up to {known}: run the          confab-server version that migrated it",
        path.display()
    )]
    SchemaTooNew {
        /// The store's URL, without its password.
        path: PathBuf,
        /// The newest version applied to the database.
        found: i32,
        /// The newest version this build has.
        known: i32,
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
        /// [`FORMAT_VERSION`](super::FORMAT_VERSION).
        expected: u32,
    },
    /// A record passed its checksum (or predates them) but does not decode.
    #[error("corrupt {record} at sequence {position} in {}: {reason}; {RECOVER}", path.display())]
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
    /// Records are missing or altered: the checks of the module docs failed.
    #[error("the store {} is damaged: {damage}; {RECOVER}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        damage: Damage,
    },
    /// A change or the state could not be encoded.
    #[error("cannot encode a store record: {0}")]
    Encode(#[source] postcard::Error),
}

/// What the load-time checks found wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The snapshot's bytes do not match its checksum.
    #[error("the snapshot (covering changes up to {upto}) does not match its checksum: its bytes were altered")]
    SnapshotAltered {
        /// The last change it covers.
        upto: i64,
    },
    /// There is no snapshot, but the log does not start at change 1, or a
    /// head was committed with no record left to reach it.
    #[error(
        "the snapshot is missing (the last committed change is {committed}, {}): the accounts, rooms and \
         messages it held were deleted",
        log_start(*first)
    )]
    SnapshotMissing {
        /// The first change in the log (0: none).
        first: i64,
        /// The last change recorded as committed.
        committed: i64,
    },
    /// A change's bytes do not match its checksum, or it does not chain to the record before it.
    #[error(
        "change {seq} does not match its checksum: its bytes were altered, or it does not follow the record \
         before it"
    )]
    ChangeAltered {
        /// Its sequence number.
        seq: i64,
    },
    /// Changes `from..=to` are missing from the middle of the log.
    #[error("{}: acknowledged changes were deleted", missing(*from, *to))]
    Gap {
        /// The first missing change.
        from: i64,
        /// The last missing change.
        to: i64,
    },
    /// The log ends before the last change recorded as committed.
    #[error("the log ends at change {last}, but change {committed} was committed: the newest changes were deleted")]
    Truncated {
        /// The last change in the log (or the snapshot's last).
        last: i64,
        /// The last change recorded as committed.
        committed: i64,
    },
    /// The log goes on past, or ends on another record than, the head recorded as committed.
    #[error(
        "the log ends at change {last}, but the last committed change is {committed} with another checksum: \
         records were added, replaced or rolled back"
    )]
    HeadMismatch {
        /// The last change in the log (or the snapshot's last).
        last: i64,
        /// The last change recorded as committed.
        committed: i64,
    },
    /// `meta` has no (or an unusable) record of the last committed change.
    #[error("meta has no usable record of the last committed change ({0})")]
    NoHead(String),
}

fn log_start(first: i64) -> String {
    if first == 0 { "the log is empty".to_owned() } else { format!("the log starts at change {first}") }
}

fn missing(from: i64, to: i64) -> String {
    if from == to { format!("change {from} is missing") } else { format!("changes {from} to {to} are missing") }
}

pub(super) fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.to_owned(), source }
}

pub(super) fn damaged(path: &Path, damage: Damage) -> StoreError {
    StoreError::Damaged { path: path.to_owned(), damage }
}
