//! The PostgreSQL store (`[store] url = "postgres://..."`, `--store`): the
//! SQLite store's contract on a PostgreSQL database, for a node whose state
//! must live outside its machine.
//!
//! The same records (format [`FORMAT_VERSION`]: postcard changes with
//! chained SHA-256 sums, a snapshot, the head) in four tables (and a fifth,
//! `confab_outbox`, for the mail between the partitions of a split state,
//! written in the same statement as the turn that sends or applies it), created and
//! upgraded by numbered migrations at start ([`MIGRATIONS`], recorded in
//! `confab_schema`, run by a node that holds a lease, under an advisory
//! lock, so that nodes starting together migrate once). Each partition of
//! a split state (docs/PARTITIONS.md) has its own log, snapshot, head,
//! record format and lease in them; a store is opened for the partition
//! its [`ServerConfig`] names, and refused to a node whose partition count
//! is not the one the store was made for ([`StoreError::PartitionCount`]).
//! Loading runs the SQLite store's checks
//! ([`Replay`](super::check::Replay)) in one repeatable-read transaction.
//!
//! - **Durability.** A commit is one statement, so one transaction:
//!   PostgreSQL's commit (with its default `synchronous_commit = on`, the
//!   WAL flushed before it answers) returns before the turn's frames are
//!   written, as SQLite's `fsync = "always"` does.
//! - **One writer.** The node holds the lease on its partition
//!   (see [`lease`](super::lease): a standby waits for it, a renewing thread
//!   keeps it), and every commit is fenced three times: by the lease's
//!   token (a commit after another node took over writes nothing:
//!   [`StoreError::LeaseLost`]), by the head it expects (a commit that
//!   finds another head writes nothing: [`StoreError::Owned`]) and by the
//!   schema's version (a newer build that owns another partition migrated
//!   the database: [`StoreError::SchemaTooNew`]).
//! - **Connection loss.** A commit whose answer was lost may or may not have
//!   happened. The store reconnects (every 50 ms to 2 s, for at most
//!   [`PgStore::set_reconnect_for`], by default 60 s), ends the old session
//!   (and waits until it is gone, so that a commit still running in it has
//!   landed or never will), and reads the head and the lease's token: the
//!   new head means it committed, the old one that it did not (it is sent
//!   again, fenced as ever). Meanwhile the loop waits: nothing is
//!   acknowledged, nothing half-committed is acted on. Past the deadline
//!   the commit fails and the server stops; nothing acknowledged is lost.
//! - **Compaction** as in SQLite: a snapshot every
//!   [`compact_every`](PgStore::compact_every) changes, and the changes it
//!   covers deleted by the commits after it, twice as many per commit as
//!   they log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use confab_proto::server::{Change, MAX_PARTITIONS, Partitions, State};
use confab_proto::{Durable, ServerConfig};
use postgres::{Client, IsolationLevel, NoTls};

use super::check::{Head, Loaded, Replay, change_sum, snapshot_sum};
use super::error::{Damage, StoreError, damaged};
use super::lease::{self, Keeper, LeaseConfig, LeaseWatch};
use super::tally::Tally;
use super::{FORMAT_VERSION, Init, log_records, trim};

/// The schema, one migration per version (`confab_schema` records the
/// versions applied). Never edit one that shipped: add the next.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE confab_meta (key text PRIMARY KEY, value text NOT NULL);
     INSERT INTO confab_meta (key, value) VALUES ('application', 'confab-server'), ('format', '4');
     CREATE TABLE confab_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, sum bytea NOT NULL);
     INSERT INTO confab_head (id, seq, sum) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
     CREATE TABLE confab_snapshot (id int PRIMARY KEY CHECK (id = 1), upto bigint NOT NULL,
                                   state bytea NOT NULL, sum bytea NOT NULL);
     CREATE TABLE confab_changes (seq bigint PRIMARY KEY, change bytea NOT NULL, sum bytea NOT NULL);",
    // 2: the mail between the partitions of a split state (docs/PARTITIONS.md): each item
    // until its target applied it.
    "CREATE TABLE confab_outbox (source int NOT NULL, target int NOT NULL, seq bigint NOT NULL,
                                 item bytea NOT NULL, PRIMARY KEY (target, source, seq));",
    // 3: a log, a snapshot and a head per partition (docs/PARTITIONS.md), each head with its own
    // record format (the owners of two partitions migrate their records apart, in a rolling
    // upgrade too); the partition count the store was made for. What was there is partition 0
    // of one.
    "ALTER TABLE confab_head DROP CONSTRAINT confab_head_id_check;
     ALTER TABLE confab_head RENAME COLUMN id TO partition;
     ALTER TABLE confab_head ADD COLUMN format int;
     UPDATE confab_head SET partition = 0, format = (SELECT value::int FROM confab_meta WHERE key = 'format');
     ALTER TABLE confab_head ALTER COLUMN format SET NOT NULL;
     ALTER TABLE confab_head ADD CONSTRAINT confab_head_partition_check CHECK (partition BETWEEN 0 AND 51);
     ALTER TABLE confab_snapshot DROP CONSTRAINT confab_snapshot_id_check;
     ALTER TABLE confab_snapshot RENAME COLUMN id TO partition;
     UPDATE confab_snapshot SET partition = 0;
     ALTER TABLE confab_snapshot ADD CONSTRAINT confab_snapshot_partition_check CHECK (partition BETWEEN 0 AND 51);
     ALTER TABLE confab_changes ADD COLUMN partition int NOT NULL DEFAULT 0;
     ALTER TABLE confab_changes DROP CONSTRAINT confab_changes_pkey;
     ALTER TABLE confab_changes ADD PRIMARY KEY (partition, seq);
     ALTER TABLE confab_changes ALTER COLUMN partition DROP DEFAULT;
     DELETE FROM confab_meta WHERE key = 'format';
     INSERT INTO confab_meta (key, value) VALUES ('partitions', '1');
     CREATE TABLE confab_oidc_subjects (subject bytea PRIMARY KEY, username text NOT NULL);
     CREATE INDEX confab_outbox_by_source ON confab_outbox (source, target);",
];

/// The schema version of this build: every write checks that the database is still at it.
const SCHEMA: i32 = MIGRATIONS.len() as i32;

/// A turn's records, the covered changes it deletes, and the head moved
/// from the expected one, all or nothing, if the lease (partition `$10`) is
/// still under token `$11` (its row locked in share mode until the commit:
/// a takeover waits for it): whether the token was ours, and 1 if it
/// committed, 0 if the head was not the expected one (nothing written).
/// With them, the turn's mail: the items it sends (`Change::MailOut`:
/// targets `$12`, numbers `$13`, items `$14`) into `confab_outbox`, and the
/// items it applied (`Change::MailIn`: sources `$15`, numbers `$16`) out of
/// it, so that an item leaves the table in the transaction that applied it;
/// and the OIDC subjects it bound to accounts (`Change::OidcSubjectBound`:
/// subjects `$17`, names `$18`) into `confab_oidc_subjects`, where the first
/// binding of a subject stays (the router reads it). Nothing is written
/// unless the schema is still this build's, `$19` ([`MIGRATIONS`]' count: a
/// newer build that took another partition may have migrated it, and this
/// statement would mean something else); the schema's version is the
/// third answer.
const COMMIT: &str = "WITH l AS (SELECT 1 FROM confab_lease WHERE partition = $10 AND token = $11 FOR SHARE),
     v AS (SELECT max(version) AS v FROM confab_schema),
     h AS (UPDATE confab_head SET seq = $1, sum = $2 WHERE partition = $10 AND seq = $3 AND sum = $4 \
           AND EXISTS (SELECT 1 FROM l) AND (SELECT v FROM v) = $19 RETURNING 1),
     ins AS (INSERT INTO confab_changes (partition, seq, change, sum)
             SELECT $10, s, c, m FROM unnest($5::bigint[], $6::bytea[], $7::bytea[]) AS u(s, c, m)
             WHERE EXISTS (SELECT 1 FROM h)),
     del AS (DELETE FROM confab_changes WHERE partition = $10 AND seq BETWEEN $8 AND $9 AND EXISTS (SELECT 1 FROM h)),
     mo AS (INSERT INTO confab_outbox (source, target, seq, item)
            SELECT $10, t, s, i FROM unnest($12::int[], $13::bigint[], $14::bytea[]) AS u(t, s, i)
            WHERE EXISTS (SELECT 1 FROM h)),
     mi AS (DELETE FROM confab_outbox o USING unnest($15::int[], $16::bigint[]) AS d(f, s)
            WHERE o.target = $10 AND o.source = d.f AND o.seq = d.s AND EXISTS (SELECT 1 FROM h)),
     os AS (INSERT INTO confab_oidc_subjects (subject, username)
            SELECT k, n FROM unnest($17::bytea[], $18::text[]) AS u(k, n) WHERE EXISTS (SELECT 1 FROM h)
            ON CONFLICT (subject) DO NOTHING)
SELECT EXISTS (SELECT 1 FROM l), (SELECT count(*) FROM h), (SELECT v FROM v)";

/// The name of the account the OIDC subject `$1` is bound to.
pub(super) const OIDC_SUBJECT: &str = "SELECT username FROM confab_oidc_subjects WHERE subject = $1";

/// The items of partition `$1`'s mail waiting at each target (not applied there yet).
pub(super) const MAIL_WAITING: &str =
    "SELECT target, count(*) FROM confab_outbox WHERE source = $1 GROUP BY target ORDER BY target";

/// The items of the mail from partition `$2` to partition `$1` numbered
/// above `$3`, in order, at most `$4`.
const MAIL_TO: &str = "SELECT seq, item FROM confab_outbox WHERE target = $1 AND source = $2 AND seq > $3 \
                       ORDER BY seq LIMIT $4";

/// The snapshot of partition `$5` and the head it becomes, fenced like [`COMMIT`] (the lease's
/// token: `$6`; the schema's version: `$8`), with the partition's record format, `$7` (the
/// snapshot is in this build's format: after it, so is the partition, which is how a store of
/// an older format is migrated).
const SNAPSHOT: &str = "WITH l AS (SELECT 1 FROM confab_lease WHERE partition = $5 AND token = $6 FOR SHARE),
     v AS (SELECT max(version) AS v FROM confab_schema),
     h AS (UPDATE confab_head SET sum = $2, format = $7 WHERE partition = $5 AND seq = $1 AND sum = $3 \
           AND EXISTS (SELECT 1 FROM l) AND (SELECT v FROM v) = $8 RETURNING 1),
     snap AS (INSERT INTO confab_snapshot (partition, upto, state, sum) SELECT $5, $1, $4, $2
              WHERE EXISTS (SELECT 1 FROM h)
              ON CONFLICT (partition) DO UPDATE SET upto = excluded.upto, state = excluded.state, sum = excluded.sum)
SELECT EXISTS (SELECT 1 FROM l), (SELECT count(*) FROM h), (SELECT v FROM v)";

/// A turn's mail and OIDC bindings, as the commit statement's arrays.
#[derive(Default)]
struct Mail {
    targets: Vec<i32>,
    out_seqs: Vec<i64>,
    items: Vec<Vec<u8>>,
    sources: Vec<i32>,
    in_seqs: Vec<i64>,
    subjects: Vec<Vec<u8>>,
    usernames: Vec<String>,
}

impl Mail {
    fn of(changes: &[Change]) -> Mail {
        let mut m = Mail::default();
        // Sequence numbers start at 1 and only grow: far below i64::MAX.
        let number = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
        for change in changes {
            match change {
                Change::MailOut { to, seq, item } => {
                    m.targets.push(i32::from(*to));
                    m.out_seqs.push(number(*seq));
                    m.items.push(item.to_vec());
                }
                Change::MailIn { from, seq } => {
                    m.sources.push(i32::from(*from));
                    m.in_seqs.push(number(*seq));
                }
                Change::OidcSubjectBound { subject, username } => {
                    m.subjects.push(subject.to_vec());
                    m.usernames.push(username.clone());
                }
                _ => {}
            }
        }
        m
    }
}

/// One attempt at getting the connection back.
enum Attempt {
    /// Connected, the old session gone: the head, and the lease's token, as they are.
    Back(Head, Option<i64>),
    /// Not yet: why (the last one is returned at the deadline).
    Retry(StoreError),
}

/// The PostgreSQL store of one node's partition (see the module docs of `store::pg`).
pub struct PgStore {
    client: Client,
    /// `client`'s session on the server.
    session: Session,
    /// How to connect again (with the timeouts of [`client_config`]).
    connect: postgres::Config,
    /// The URL without its password, for messages and errors.
    label: PathBuf,
    /// The state, the head and the log's bookkeeping.
    tally: Tally,
    reconnect_for: Duration,
    /// The partition whose log, snapshot, head and lease this store holds
    /// (`ServerConfig::partitions`' index).
    partition: i32,
    /// The lease's fencing token.
    token: i64,
    /// The thread renewing the lease (stopped before the lease is released).
    keeper: Option<Keeper>,
    /// Whether the lease was lost.
    watch: LeaseWatch,
    /// A write failed: the store gives nothing back when dropped.
    failed: bool,
}

/// A session on the PostgreSQL server: its backend's process id and start
/// time (a process id alone may name another session after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pid: i32,
    started: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.label)
            .field("head", &self.tally.head.seq)
            .field("log_len", &self.tally.log_len)
            .field("compact_every", &self.tally.compact_every)
            .field("partition", &self.partition)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, takes the lease (waiting for a node gone to let
    /// it expire, see [`lease`](super::lease)), runs the migrations this
    /// build knows and the database lacks, and loads the state (checked as
    /// the SQLite store's is). `config` gives the room history and dedup
    /// caps, as it does to the server.
    ///
    /// # Errors
    /// The database cannot be reached ([`StoreError::Postgres`]), is newer
    /// than this build ([`StoreError::SchemaTooNew`], [`StoreError::VersionMismatch`]), another node owns it and is
    /// alive ([`StoreError::LeaseHeld`]), or it fails a check ([`StoreError::Damaged`]).
    pub fn open(url: &str, config: &ServerConfig) -> Result<(PgStore, State), StoreError> {
        PgStore::open_with(url, config, Init::Allow, None)
    }

    /// [`open`](Self::open), refusing to start an empty store for a data
    /// directory that was used before (`data`, the server's), unless `init`
    /// is [`Init::Allow`]: a wrong URL, a recreated database or a directory
    /// whose state is in its SQLite store must not start with no accounts
    /// ([`StoreError::PostgresEmpty`]; nothing is changed then).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(
        url: &str,
        config: &ServerConfig,
        init: Init,
        data: Option<&Path>,
    ) -> Result<(PgStore, State), StoreError> {
        PgStore::open_leased(url, config, init, data, LeaseConfig::default())
    }

    /// [`open_with`](Self::open_with), as the node and with the lease
    /// `lease` says (a standby waits here until the partition is its own).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_leased(
        url: &str,
        config: &ServerConfig,
        init: Init,
        data: Option<&Path>,
        lease: LeaseConfig,
    ) -> Result<(PgStore, State), StoreError> {
        let connect = client_config(url)?;
        let label = PathBuf::from(label_of(&connect));
        let Partitions { index, count } = config.partitions;
        if count == 0 || count > MAX_PARTITIONS || index >= count {
            return Err(StoreError::BadPartition { index, count });
        }
        let (mut client, mut session) = open_session(&connect, &label)?;
        let partition = i32::from(index);
        lease::bootstrap(&mut client, &label)?;
        // A node split otherwise takes no lease (it would fence an owner, or outrun a standby).
        check_count(&mut client, &label, count)?;
        // The lease next: a node that owns no partition migrates nothing (a migration changes
        // every partition's tables: it is also fenced by the schema's version, see `COMMIT`).
        let taken = lease::acquire(&mut client, &mut session, &connect, &label, &lease, partition)?;
        let token = taken.token;
        // Renewed from now on, however long the load takes.
        let watch = LeaseWatch::default();
        let keeper = Keeper::start(&connect, label.clone(), &taken, lease.clone(), watch.clone())?;
        let loaded = prepare(
            &mut client,
            &label,
            config,
            (partition, token, lease.renewal_bound()),
            (init, data, taken.previous.as_deref()),
        );
        let (loaded, format) = match loaded.and_then(|l| match watch.lost() {
            None => Ok(l),
            Some(reason) => Err(StoreError::LeaseLost { url: label.clone(), reason }),
        }) {
            Ok(loaded) => loaded,
            Err(e) => {
                drop(keeper);
                // Nothing was served: the next node need not wait for this lease to expire.
                if watch.lost().is_none() {
                    let _ = lease::release(&mut client, partition, token);
                }
                return Err(e);
            }
        };
        let tally = Tally::loaded(loaded);
        let state = tally.state.clone();
        let mut store = PgStore {
            client,
            session,
            connect,
            label,
            tally,
            reconnect_for: Duration::from_secs(60),
            partition,
            token,
            keeper: Some(keeper),
            watch,
            failed: false,
        };
        if format < FORMAT_VERSION {
            // A store of an older format: this build's snapshot makes it this format's.
            store.compact()?;
            tracing::info!(
                store = %store.label.display(), partition, from = format, to = FORMAT_VERSION, "store format migrated"
            );
        }
        Ok((store, state))
    }

    /// Stops renewing the lease and drops the store without releasing it,
    /// as a node killed would (its lease expires on its own).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        drop(self.keeper.take());
        self.failed = true;
    }

    /// What the node learns of its lease: it stops serving when it is lost.
    #[must_use]
    pub fn lease_watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// The partition this store holds.
    #[must_use]
    pub fn partition(&self) -> u8 {
        u8::try_from(self.partition).unwrap_or(u8::MAX)
    }

    /// The lease's fencing token (raised by one at every takeover).
    #[must_use]
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Appends one turn's changes and moves the head, in one transaction,
    /// then applies them to the store's own state; writes a snapshot every
    /// [`compact_every`](Self::compact_every) changes. Waits out a lost
    /// connection (see the module docs).
    ///
    /// # Errors
    /// PostgreSQL refused the commit, the connection stayed lost past
    /// [`set_reconnect_for`](Self::set_reconnect_for), or another writer
    /// moved the head.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let records = log_records(changes)?;
        let before = self.tally.head;
        let mut head = before;
        let (mut seqs, mut sums) = (Vec::with_capacity(records.len()), Vec::with_capacity(records.len()));
        for record in &records {
            let seq = head.seq + 1;
            head = Head { seq, sum: change_sum(seq, &head.sum, record) };
            seqs.push(seq);
            sums.push(head.sum.to_vec());
        }
        let ((trim_from, trim_to), covered) = trim(self.tally.covered, records.len()).unwrap_or(((1, 0), None));
        let token = self.token;
        let mail = Mail::of(changes);
        let partition = self.partition;
        self.write("commit a turn to", before, head, |client| {
            let params: [&(dyn postgres::types::ToSql + Sync); 19] = [
                &head.seq,
                &&head.sum[..],
                &before.seq,
                &&before.sum[..],
                &seqs,
                &records,
                &sums,
                &trim_from,
                &trim_to,
                &partition,
                &token,
                &mail.targets,
                &mail.out_seqs,
                &mail.items,
                &mail.sources,
                &mail.in_seqs,
                &mail.subjects,
                &mail.usernames,
                &SCHEMA,
            ];
            client.query_one(COMMIT, &params)
        })?;
        if self.tally.committed(head, covered, records.len(), changes) {
            self.compact()?;
        }
        Ok(())
    }

    /// The items of the mail from partition `from` to this store's
    /// partition numbered above `after`, in order, at most `limit`: what its
    /// core is given next ([`Server::handle_mail`](confab_proto::Server::handle_mail)).
    ///
    /// # Errors
    /// PostgreSQL refused the query (the connection is not recovered here:
    /// the next commit does that).
    pub fn mail_from(&mut self, from: u8, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(MAIL_TO, &[&self.partition, &i32::from(from), &after, &limit])
            .map_err(pg_err("read the mail in", &self.label))?;
        Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))).collect())
    }

    /// The items of this partition's mail waiting at each target (not
    /// applied there yet), for the core's bound
    /// ([`Server::handle_mail_backlog`](confab_proto::Server::handle_mail_backlog)).
    ///
    /// # Errors
    /// PostgreSQL refused the query (the connection is not recovered here).
    pub fn mail_backlog(&mut self) -> Result<Vec<(u8, u64)>, StoreError> {
        let rows =
            self.client.query(MAIL_WAITING, &[&self.partition]).map_err(pg_err("count the mail in", &self.label))?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((u8::try_from(r.get::<_, i32>(0)).ok()?, u64::try_from(r.get::<_, i64>(1)).ok()?)))
            .collect())
    }

    /// The account an OIDC subject (its
    /// [`oidc_subject_key`](confab_proto::server::oidc_subject_key)) was
    /// first bound to, by any partition of the store (since schema 3): the
    /// name that decides its home, whatever `preferred_username` says now.
    ///
    /// # Errors
    /// PostgreSQL refused the query (the connection is not recovered here).
    pub fn oidc_subject(&mut self, subject: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let row = self
            .client
            .query_opt(OIDC_SUBJECT, &[&&subject[..]])
            .map_err(pg_err("read an OIDC subject in", &self.label))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Writes a snapshot of the current state (the changes it covers are
    /// deleted by the commits after it). [`commit`](Self::commit) calls it
    /// on its own.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let state = postcard::to_stdvec(&self.tally.state).map_err(StoreError::Encode)?;
        let before = self.tally.head;
        let head = Head { seq: before.seq, sum: snapshot_sum(before.seq, &state) };
        let (partition, token, format) = (self.partition, self.token, FORMAT_VERSION as i32);
        self.write("write a snapshot to", before, head, |client| {
            client.query_one(
                SNAPSHOT,
                &[&head.seq, &&head.sum[..], &&before.sum[..], &state.as_slice(), &partition, &token, &format, &SCHEMA],
            )
        })?;
        self.tally.snapshotted(head, false);
        Ok(())
    }

    /// Runs a fenced write (`statement` answers whether the lease's token
    /// was ours, and 1 if it moved the head from `before` to `after`, 0 if
    /// the head was not `before`) until it is known to have landed, across
    /// lost connections.
    fn write(
        &mut self,
        action: &'static str,
        before: Head,
        after: Head,
        statement: impl FnMut(&mut Client) -> Result<postgres::Row, postgres::Error>,
    ) -> Result<(), StoreError> {
        let result = self.try_write(action, before, after, statement);
        self.failed |= result.is_err();
        result
    }

    fn try_write(
        &mut self,
        action: &'static str,
        before: Head,
        after: Head,
        mut statement: impl FnMut(&mut Client) -> Result<postgres::Row, postgres::Error>,
    ) -> Result<(), StoreError> {
        loop {
            match statement(&mut self.client) {
                Ok(row) if row.get::<_, Option<i32>>(2) != Some(SCHEMA) => {
                    let found = row.get::<_, Option<i32>>(2).unwrap_or(0);
                    return Err(StoreError::SchemaTooNew { path: self.label.clone(), found, known: SCHEMA });
                }
                Ok(row) if !row.get::<_, bool>(0) => return Err(self.fenced()),
                Ok(row) if row.get::<_, i64>(1) == 1 => return Ok(()),
                Ok(_) => return Err(self.moved()),
                Err(e) if lost(&e) => {
                    if self.recover(&e, before, after)? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(self.pg(action)(e)),
            }
        }
    }

    /// The connection broke under a write whose outcome is unknown:
    /// reconnect, end the old session and read the head. True if the write
    /// committed (`after`), false if it did not (`before`, and the lease
    /// still ours).
    fn recover(&mut self, error: &postgres::Error, before: Head, after: Head) -> Result<bool, StoreError> {
        tracing::warn!(store = %self.label.display(), "connection to the store lost ({error}): reconnecting");
        let deadline = Instant::now() + self.reconnect_for;
        let mut wait = Duration::from_millis(50);
        let mut swapped = false;
        let old = self.session.clone();
        loop {
            match self.resume(&mut swapped, &old) {
                Ok(Attempt::Back(current, token)) => {
                    tracing::info!(store = %self.label.display(), head = current.seq, "store connection restored");
                    return if current == after {
                        Ok(true)
                    } else if token != Some(self.token) {
                        Err(self.fenced())
                    } else if current == before {
                        Ok(false)
                    } else {
                        Err(self.moved())
                    };
                }
                Ok(Attempt::Retry(e)) if Instant::now() + wait < deadline => {
                    tracing::warn!(store = %self.label.display(), "store not back yet: {e}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Ok(Attempt::Retry(e)) | Err(e) => return Err(e),
            }
        }
    }

    /// One attempt of [`recover`](Self::recover): a new session replaces the
    /// old one (dropped, and ended on the server: `old`, its backend), which
    /// must be gone before the head is read: a commit still running in it
    /// has then landed or never will.
    fn resume(&mut self, swapped: &mut bool, old: &Session) -> Result<Attempt, StoreError> {
        if !*swapped || self.client.is_closed() {
            match open_session(&self.connect, &self.label) {
                Ok((client, session)) => {
                    drop(std::mem::replace(&mut self.client, client));
                    self.session = session;
                    *swapped = true;
                }
                Err(e) => return Ok(Attempt::Retry(e)),
            }
        }
        match end_session(&mut self.client, &self.label, old) {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Attempt::Retry(StoreError::StaleSession { url: self.label.clone(), pid: old.pid }));
            }
            Err(e) => return Ok(Attempt::Retry(e)),
        }
        match read_head(&mut self.client, &self.label, self.partition).and_then(|head| {
            let token = lease_token(&mut self.client, &self.label, self.partition)?;
            Ok((head, token))
        }) {
            Ok((head, token)) => Ok(Attempt::Back(head, token)),
            Err(e) => Ok(Attempt::Retry(e)),
        }
    }

    /// Another writer moved the head.
    fn moved(&self) -> StoreError {
        StoreError::Owned(self.label.clone())
    }

    /// Another node took the lease: nothing was written.
    fn fenced(&self) -> StoreError {
        let reason = format!(
            "another node took partition {} (this node's token {} is no longer the lease's), so its last write \
             was refused",
            self.partition, self.token
        );
        tracing::error!(store = %self.label.display(), partition = self.partition, "lease lost: {reason}");
        self.watch.set_lost(reason.clone());
        StoreError::LeaseLost { url: self.label.clone(), reason }
    }

    fn pg(&self, action: &'static str) -> impl Fn(postgres::Error) -> StoreError + '_ {
        pg_err(action, &self.label)
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

    /// How long a commit waits for a lost connection to come back before it fails.
    pub fn set_reconnect_for(&mut self, wait: Duration) {
        self.reconnect_for = wait;
    }

    /// Changes in the log after the last snapshot.
    #[must_use]
    pub fn log_len(&self) -> u64 {
        self.tally.log_len
    }

    /// Changes the snapshot covers that the log still holds.
    #[must_use]
    pub fn covered_len(&self) -> u64 {
        self.tally.covered_len()
    }

    /// Everything committed so far.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.tally.state
    }

    /// The database's URL without its password.
    #[must_use]
    pub fn label(&self) -> &Path {
        &self.label
    }
}

/// The loop commits each turn's changes here: [`PgStore::commit`].
impl Durable<[Change]> for PgStore {
    type Error = StoreError;

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        PgStore::commit(self, changes)
    }
}

/// A store dropped after no failed write gives its lease back (it expires
/// at once), once its renewing thread has stopped: the next node need not
/// wait for it.
impl Drop for PgStore {
    fn drop(&mut self) {
        drop(self.keeper.take());
        if !self.failed && self.watch.lost().is_none() && !self.client.is_closed() {
            match lease::release(&mut self.client, self.partition, self.token) {
                Ok(1) => tracing::info!(
                    store = %self.label.display(), partition = self.partition, token = self.token,
                    "partition released: another node may take it at once"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(store = %self.label.display(), "could not release the lease ({}): it expires on its own", describe(&e))
                }
            }
        }
    }
}

/// Parses `url` (a `postgres://` URL or a key-value connection string)
/// and sets the timeouts that bound a lost or silent database: 5 s to
/// connect, TCP keepalives after 10 s idle, and 30 s for sent data to be
/// acknowledged by the peer's TCP (`TCP_USER_TIMEOUT`), so that a commit on
/// a dead connection fails within [`PgStore::set_reconnect_for`] plus that.
pub(super) fn client_config(url: &str) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config =
        url.parse().map_err(|e: postgres::Error| StoreError::PostgresUrl(describe(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30))
        .application_name("confab-server");
    Ok(config)
}

/// What messages name the store by: user, hosts, ports and database, never the password.
pub(super) fn label_of(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let mut ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if ports.is_empty() {
        ports.push("5432".into());
    }
    format!(
        "postgres://{}@{}:{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// PostgreSQL's own reason (its severity, message, detail and hint), or the
/// client's error with its causes: "db error" alone names nothing.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether the error means the connection is gone, so that the outcome of
/// the statement under way is unknown: a closed connection, an I/O error,
/// a connection exception (class 08) or the server shutting down (57P01-03).
/// Anything else was refused by a live session (the statement rolled back).
pub(super) fn lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => code.code().starts_with("08") || matches!(code.code(), "57P01" | "57P02" | "57P03"),
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// A session with this store's settings: `synchronous_commit = on` whatever
/// the role's or the database's default (a commit must be durable before it
/// answers), on a server that fsyncs at all.
pub(super) fn open_session(config: &postgres::Config, label: &Path) -> Result<(Client, Session), StoreError> {
    let mut client = config.connect(NoTls).map_err(pg_err("connect to", label))?;
    client.batch_execute("SET synchronous_commit = on").map_err(pg_err("configure a session of", label))?;
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), pg_backend_pid(), \
             (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid())",
            &[],
        )
        .map_err(pg_err("read the settings of", label))?;
    let fsync: String = row.get(0);
    if fsync != "on" {
        return Err(StoreError::PostgresNotDurable { url: label.to_owned(), setting: format!("fsync = {fsync}") });
    }
    let started: Option<String> = row.get(2);
    Ok((client, Session { pid: row.get(1), started: started.unwrap_or_default() }))
}

/// Ends the session `old` (a connection this store lost) and says whether
/// it is gone. Ending one's own role's sessions needs no privilege. The
/// backend's start time tells it from another that got its process id
/// after a restart of PostgreSQL.
fn end_session(client: &mut Client, label: &Path, old: &Session) -> Result<bool, StoreError> {
    let err = pg_err("end the lost session of", label);
    let same = "FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2 AND pid <> pg_backend_pid()";
    client
        .query_one(&format!("SELECT count(pg_terminate_backend(pid)) {same}"), &[&old.pid, &old.started])
        .map_err(&err)?;
    let alive: bool =
        client.query_one(&format!("SELECT EXISTS (SELECT 1 {same})"), &[&old.pid, &old.started]).map_err(&err)?.get(0);
    Ok(!alive)
}

/// The token of the partition's lease, if there is one.
fn lease_token(client: &mut Client, label: &Path, partition: i32) -> Result<Option<i64>, StoreError> {
    let row = client
        .query_opt("SELECT token FROM confab_lease WHERE partition = $1", &[&partition])
        .map_err(pg_err("read the lease of", label))?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) fn pg_err<'a>(action: &'static str, label: &'a Path) -> impl Fn(postgres::Error) -> StoreError + 'a {
    move |source| StoreError::Postgres { action, url: label.to_owned(), reason: describe(&source), source }
}

/// What a node does once it holds the lease on `partition` (under
/// `token`): refuses an empty database for a used data directory or one
/// another node served before (`previous`, unless `init` allows it),
/// migrates, loads.
fn prepare(
    client: &mut Client,
    label: &Path,
    config: &ServerConfig,
    (partition, token, wait): (i32, i64, Duration),
    (init, data, previous): (Init, Option<&Path>, Option<&str>),
) -> Result<(Loaded, u32), StoreError> {
    if init != Init::Allow {
        // Under the schema's lock: a node making the store meanwhile has made it whole or not at all.
        let err = pg_err("inspect", label);
        let mut tx = client.transaction().map_err(&err)?;
        tx.batch_execute(lease::SCHEMA_LOCK).map_err(&err)?;
        let empty = is_empty(&mut tx, label)?;
        // The store is the database's, not a partition's: any node that held any lease served it.
        let other = "SELECT holder FROM confab_lease WHERE partition <> $1 ORDER BY partition LIMIT 1";
        let served: Option<String> = tx.query_opt(other, &[&partition]).map_err(&err)?.map(|r| r.get(0));
        tx.commit().map_err(&err)?;
        if empty {
            if let Some(data) = data
                && let Some(evidence) = super::used_before(data)
            {
                let sqlite = data.join(super::DB_FILE).exists();
                return Err(StoreError::PostgresEmpty {
                    url: label.to_owned(),
                    data: data.to_owned(),
                    evidence,
                    sqlite,
                });
            }
            if let Some(holder) = previous.map(str::to_owned).or(served) {
                return Err(StoreError::PostgresEmptied { url: label.to_owned(), holder });
            }
        }
    }
    migrate(client, label, config.partitions.count, (partition, token, wait))?;
    // A partition never served before starts empty, in this build's format. Not in the
    // migration's transaction, which holds the lease's row (a renewal waits for it): this may
    // wait for a lock on the table as long as a load may. Any node may insert it: it is the same row.
    let empty = "INSERT INTO confab_head (partition, seq, sum, format) \
                 VALUES ($1, 0, decode(repeat('00', 32), 'hex'), $2) ON CONFLICT (partition) DO NOTHING";
    client.execute(empty, &[&partition, &(FORMAT_VERSION as i32)]).map_err(pg_err("prepare a partition of", label))?;
    load(client, label, config, partition)
}

/// The first record format of the PostgreSQL store; a store of a format
/// from it to [`FORMAT_VERSION`] is read, and rewritten in this build's
/// format (a snapshot) once loaded.
const OLDEST_PG_FORMAT: u32 = 4;

/// Applies the migrations the database lacks (the caller holds the lease
/// on `partition`) and checks that the store was made for `count` partitions.
fn migrate(
    client: &mut Client,
    label: &Path,
    count: u8,
    (partition, token, wait): (i32, i64, Duration),
) -> Result<(), StoreError> {
    let err = pg_err("migrate the schema of", label);
    let mut tx = client.transaction().map_err(&err)?;
    tx.batch_execute(lease::SCHEMA_LOCK).map_err(&err)?;
    // It holds its lease's row (a renewal waits for it): no lock is waited for longer than a
    // renewal may take (the node fails to start instead, and may try again).
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", wait.as_millis().max(1))).map_err(&err)?;
    // Fenced as a commit is: a node whose lease was taken meanwhile migrates nothing.
    let ours = tx
        .query_opt("SELECT 1 FROM confab_lease WHERE partition = $1 AND token = $2 FOR SHARE", &[&partition, &token])
        .map_err(&err)?;
    if ours.is_none() {
        let reason = format!("another node took partition {partition} before this one migrated the schema");
        return Err(StoreError::LeaseLost { url: label.to_owned(), reason });
    }
    // `confab_schema` exists: the lease's bootstrap made it (`lease::bootstrap`).
    let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM confab_schema", &[]).map_err(&err)?.get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::SchemaTooNew { path: label.to_owned(), found: current, known });
    }
    for (version, migration) in (1..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(migration).map_err(&err)?;
        tx.execute("INSERT INTO confab_schema (version) VALUES ($1)", &[&version]).map_err(&err)?;
        tracing::info!(store = %label.display(), version, "store schema migrated");
    }
    if current == 0 {
        // Made just now, with no record yet: for this node's partition count (the third
        // migration says 1), and with no head (the first made one): each partition's owner
        // makes its own, in its own build's format.
        tx.execute("DELETE FROM confab_head", &[]).map_err(&err)?;
        tx.execute("UPDATE confab_meta SET value = $1 WHERE key = 'partitions'", &[&count.to_string()])
            .map_err(&err)?;
    }
    let mut meta = |key: &str| -> Result<Option<String>, StoreError> {
        Ok(tx.query_opt("SELECT value FROM confab_meta WHERE key = $1", &[&key]).map_err(&err)?.map(|r| r.get(0)))
    };
    if meta("application")?.as_deref() != Some("confab-server") {
        return Err(StoreError::NotAStore { path: label.to_owned() });
    }
    let made_for = meta("partitions")?.unwrap_or_default();
    if made_for.parse() != Ok(count) {
        return Err(StoreError::PartitionCount { url: label.to_owned(), found: made_for, configured: count });
    }
    tx.commit().map_err(&err)
}

/// Refuses a node split into `count` partitions if the store was made for
/// another count (a store of schema 2 was made for one); a database with
/// no store yet is any count's.
pub(super) fn check_count(client: &mut Client, label: &Path, count: u8) -> Result<(), StoreError> {
    let err = pg_err("inspect", label);
    let exists = |client: &mut Client, table: &str| -> Result<bool, StoreError> {
        Ok(client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).map_err(&err)?.get(0))
    };
    if !exists(client, "confab_meta")? {
        return Ok(());
    }
    let row = client.query_opt("SELECT value FROM confab_meta WHERE key = 'partitions'", &[]).map_err(&err)?;
    let made_for: String = row.map_or_else(|| "1".to_owned(), |r| r.get(0));
    if made_for.parse() != Ok(count) {
        return Err(StoreError::PartitionCount { url: label.to_owned(), found: made_for, configured: count });
    }
    Ok(())
}

/// Refuses a build that does not know the store's schema (a newer one
/// migrated it): it could open no partition.
pub(super) fn check_schema(client: &mut Client, label: &Path) -> Result<(), StoreError> {
    let err = pg_err("inspect", label);
    let current: i32 =
        client.query_one("SELECT coalesce(max(version), 0) FROM confab_schema", &[]).map_err(&err)?.get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::SchemaTooNew { path: label.to_owned(), found: current, known });
    }
    Ok(())
}

/// Whether the database holds no confab store at all: its tables were
/// never made (a wrong URL, a recreated or restored-empty database). A
/// store that was made and never committed to is not empty: a node that
/// started and stopped before anyone registered starts again.
fn is_empty(client: &mut impl postgres::GenericClient, label: &Path) -> Result<bool, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('confab_head') IS NOT NULL", &[])
        .map_err(pg_err("inspect", label))?
        .get(0);
    Ok(!exists)
}

fn read_head(client: &mut Client, label: &Path, partition: i32) -> Result<Head, StoreError> {
    let row = client
        .query_one("SELECT seq, sum FROM confab_head WHERE partition = $1", &[&partition])
        .map_err(pg_err("read the head of", label))?;
    head_of(row.get(0), row.get(1), label)
}

fn head_of(seq: i64, sum: Vec<u8>, label: &Path) -> Result<Head, StoreError> {
    match <[u8; 32]>::try_from(sum.as_slice()) {
        Ok(sum) if seq >= 0 => Ok(Head { seq, sum }),
        _ => Err(damaged(label, Damage::NoHead(format!("head seq {seq}, a head sum of {} bytes", sum.len())))),
    }
}

/// The partition's head, snapshot and log after it, in one repeatable-read
/// transaction, through the SQLite store's checks, and the partition's
/// record format (from [`OLDEST_PG_FORMAT`] to this build's).
fn load(client: &mut Client, label: &Path, config: &ServerConfig, partition: i32) -> Result<(Loaded, u32), StoreError> {
    let err = pg_err("load", label);
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(&err)?;
    let row =
        tx.query_one("SELECT seq, sum, format FROM confab_head WHERE partition = $1", &[&partition]).map_err(&err)?;
    let committed = head_of(row.get(0), row.get(1), label)?;
    let format = u32::try_from(row.get::<_, i32>(2)).unwrap_or(0);
    if !(OLDEST_PG_FORMAT..=FORMAT_VERSION).contains(&format) {
        return Err(StoreError::VersionMismatch { path: label.to_owned(), found: format, expected: FORMAT_VERSION });
    }
    let snapshot = tx
        .query_opt("SELECT upto, state, sum FROM confab_snapshot WHERE partition = $1", &[&partition])
        .map_err(&err)?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1), Some(r.get::<_, Vec<u8>>(2))));
    let mut replay = Replay::start(label, config, format, snapshot, Some(committed))?;
    let upto = replay.upto;
    let covered_from: Option<i64> = tx
        .query_one("SELECT min(seq) FROM confab_changes WHERE partition = $1 AND seq <= $2", &[&partition, &upto])
        .map_err(&err)?
        .get(0);
    let log = "SELECT seq, change, sum FROM confab_changes WHERE partition = $1 AND seq > $2 ORDER BY seq";
    for row in tx.query(log, &[&partition, &upto]).map_err(&err)? {
        let bytes: Vec<u8> = row.get(1);
        replay.push(row.get(0), &bytes, Some(row.get(2)))?;
    }
    tx.commit().map_err(&err)?;
    Ok((replay.finish(covered_from)?, format))
}

#[cfg(test)]
mod tests {
    use super::{client_config, label_of};

    fn label(url: &str) -> String {
        label_of(&client_config(url).unwrap())
    }

    #[test]
    fn the_password_never_reaches_a_message() {
        assert_eq!(
            label("postgres://confab:s3cret@db.example:5432/confab"),
            "postgres://confab@db.example:5432/confab"
        );
        assert_eq!(label("postgres://u:pa/ss@h/db"), "postgres://u@h:5432/db");
        assert_eq!(label("postgres://u@h/db?password=secret"), "postgres://u@h:5432/db");
        assert_eq!(label("host=db user=x password=hunter2 dbname=c"), "postgres://x@db:5432/c");
        assert_eq!(label("host=db user=x password='a b' dbname=c"), "postgres://x@db:5432/c");
        let bad = client_config("postgres://u:hunter2@h:notaport/db").unwrap_err().to_string();
        assert!(!bad.contains("hunter2"), "{bad}");
    }
}
