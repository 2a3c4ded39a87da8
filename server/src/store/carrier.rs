//! The mail carrier of a node serving a split state (docs/PARTITIONS.md,
//! "Mail"): for each partition the node owns, the items its sources
//! committed to `confab_outbox` and it has not applied yet, read and handed
//! to the node in order; and, for each, how many of its own items wait at
//! each target (the count behind `MAIL_PER_TARGET`).
//!
//! A thread with its own session on the store. It reads when rung
//! ([`Carrier::ring`]: a commit mailed an owned partition, or a doorbell
//! came) and every `poll` without: that catch-up is the only path when
//! nothing rings, so a lost doorbell delays an item by one `poll` at most.
//! Per source and target it hands items in sequence order after the
//! last one handed, starting from the core's cursor (`own`), and at most
//! [`WINDOW`] beyond the last one the node says its core applied
//! ([`Carrier::applied`]): the node's queue is bounded. An item handed and
//! not applied by the next poll but one (lost on its way, or refused as
//! past a gap) is handed again from the core's cursor, and
//! [`Carrier::rewind`] does so at once (the core answered
//! `MailOutcome::Gap`: rewind once per gap). Handing an item twice is
//! harmless (the core ignores a duplicate). This rests on one commit in
//! flight per source partition (its store's one committer), so that each
//! source's items become visible in sequence order.
//!
//! Its session bounds every statement (10 s) and asks for a read-write
//! server; a lost session is opened again at the next poll (a round that
//! fails is logged, and rings are not answered until then); nothing is
//! handed that the store did not commit. A round under way when a
//! partition is given back may still hand its items: the node drops
//! deliveries for partitions it does not own. The callback runs on the
//! carrier's thread and must not block (hand the item to the node's loop):
//! dropping the carrier waits for the round under way.
//!
//! The same session answers the router's one question to the store
//! ([`Carrier::subject`]): which account an OIDC subject is bound to. A
//! lookup is answered at the next round, with the store's error if the
//! round fails, so no frame waits for the store to come back.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postgres::Client;

use super::error::StoreError;
use super::pg::{MAIL_WAITING, OIDC_SUBJECT, client_config, label_of, open_session, pg_err};

/// Items of one source handed and not applied yet, at most.
pub const WINDOW: u64 = 512;

/// How long one of the carrier's statements may run (or wait for a lock).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The items to partition `$1` from each source `$2` after its cursor `$3`,
/// at most `$4` of it, in order per source (each source read on the
/// outbox's primary key: a round costs what it hands, not the backlog).
const ITEMS: &str = "SELECT c.source, o.seq, o.item
     FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS c(source, after, n)
     CROSS JOIN LATERAL (SELECT seq, item FROM confab_outbox
                         WHERE target = $1 AND source = c.source AND seq > c.after ORDER BY seq LIMIT c.n) o
     ORDER BY c.source, o.seq";

/// What the carrier hands the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Item `seq` of the mail from `from` to `to` (an owned partition):
    /// give it to `to`'s core (`Server::handle_mail`).
    Mail {
        /// The owned partition.
        to: u8,
        /// Its source.
        from: u8,
        /// The item's number.
        seq: u64,
        /// The item.
        item: Bytes,
    },
    /// The items of owned partition `from` waiting at each target (the
    /// targets not named have none): give them to its core
    /// (`Server::handle_mail_backlog`).
    Backlog {
        /// The owned partition.
        from: u8,
        /// `(target, items)`.
        waiting: Vec<(u8, u64)>,
    },
    /// The answer to [`Carrier::subject`] `tag`: the name of the account
    /// the OIDC subject is bound to (`confab_oidc_subjects`), `None` when
    /// it is bound to none.
    Subject {
        /// The lookup's tag.
        tag: u64,
        /// The account's name, or why the store could not say (then the
        /// frame must not be routed by the name in its token: a subject
        /// bound under another name would be given a second account).
        bound: Result<Option<String>, String>,
    },
}

enum Cmd {
    Own { partition: u8, cursors: Vec<(u8, u64)> },
    Disown(u8),
    Rewind { to: u8, from: u8, after: u64 },
    Applied { to: u8, from: u8, upto: u64 },
    Subject { tag: u64, key: [u8; 32] },
    Ring,
}

/// Rings a [`Carrier`] from any thread ([`Carrier::ringer`]).
#[derive(Debug, Clone)]
pub struct Ringer(Option<Sender<Cmd>>);

impl Ringer {
    /// As [`Carrier::ring`].
    pub fn ring(&self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Cmd::Ring);
        }
    }
}

/// The node's mail carrier. See the [module docs](self). Dropping it stops
/// its thread.
#[derive(Debug)]
pub struct Carrier {
    tx: Option<Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Carrier {
    /// Starts carrying the mail of a state split into `count` partitions,
    /// stored at `url`, reading every `poll` at least; `deliver` gets what
    /// it reads (on the carrier's thread: hand it to the node's loop).
    ///
    /// # Errors
    /// The URL does not parse, or the thread cannot be started.
    pub fn start(
        url: &str,
        count: u8,
        poll: Duration,
        deliver: impl FnMut(Delivery) + Send + 'static,
    ) -> Result<Carrier, StoreError> {
        let mut connect = client_config(url)?;
        let bound = STATEMENT_TIMEOUT.as_millis();
        connect
            .options(&format!("-c statement_timeout={bound} -c lock_timeout={bound}"))
            .target_session_attrs(postgres::config::TargetSessionAttrs::ReadWrite);
        let label = PathBuf::from(label_of(&connect));
        let (tx, rx) = mpsc::channel();
        let poll = poll.max(Duration::from_millis(10));
        let mut reader = Reader {
            connect,
            label: label.clone(),
            count,
            poll,
            client: None,
            owned: BTreeMap::new(),
            subjects: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("confab-mail".into())
            .spawn(move || reader.run(&rx, deliver))
            .map_err(|source| StoreError::Io { action: "start the mail thread of", path: label, source })?;
        Ok(Carrier { tx: Some(tx), thread: Some(thread) })
    }

    /// Carries the mail to `partition` (now owned) from the cursors of its
    /// core (`(source, last applied)`, `Server::mail_applied_from`; a source
    /// not named starts at 0), and counts its own mail's backlog.
    pub fn own(&self, partition: u8, cursors: Vec<(u8, u64)>) {
        self.send(Cmd::Own { partition, cursors });
    }

    /// Stops carrying the mail to `partition` (given back or lost).
    pub fn disown(&self, partition: u8) {
        self.send(Cmd::Disown(partition));
    }

    /// Hands the mail from `from` to `to` again after `after` (the core's
    /// cursor) at once: the core answered a gap (rewind once per gap: the
    /// items after it handed meanwhile come again). Never moves forward.
    pub fn rewind(&self, to: u8, from: u8, after: u64) {
        self.send(Cmd::Rewind { to, from, after });
    }

    /// `to`'s core applied the mail from `from` up to `upto`
    /// (`Server::mail_applied_from` after `handle_mail`): up to [`WINDOW`]
    /// items after it may be handed.
    pub fn applied(&self, to: u8, from: u8, upto: u64) {
        self.send(Cmd::Applied { to, from, upto });
    }

    /// Reads now: something was committed for an owned partition.
    pub fn ring(&self) {
        self.send(Cmd::Ring);
    }

    /// What rings the carrier from another thread (a doorbell heard).
    #[must_use]
    pub fn ringer(&self) -> Ringer {
        Ringer(self.tx.clone())
    }

    /// Looks up the account an OIDC subject is bound to (`key`,
    /// `confab_proto::server::oidc_subject_key`), for the router: answered
    /// with [`Delivery::Subject`] and `tag`, at the next round (at the next
    /// poll while the store is unreachable).
    pub fn subject(&self, tag: u64, key: [u8; 32]) {
        self.send(Cmd::Subject { tag, key });
    }

    fn send(&self, cmd: Cmd) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(cmd);
        }
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Reader {
    connect: postgres::Config,
    label: PathBuf,
    count: u8,
    poll: Duration,
    client: Option<Client>,
    /// Per owned partition, each source's cursors.
    owned: BTreeMap<u8, BTreeMap<u8, Cursor>>,
    /// OIDC subjects to look up, with their tags, in the order asked.
    subjects: VecDeque<(u64, [u8; 32])>,
}

/// The mail of one source to one owned partition.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// The last item handed.
    handed: u64,
    /// The last item the core applied (as the node said).
    applied: u64,
    /// `applied` at the last poll: an item handed and still not applied a
    /// poll later is handed again.
    polled: u64,
}

impl Reader {
    fn run(&mut self, rx: &Receiver<Cmd>, mut deliver: impl FnMut(Delivery)) {
        let mut next_poll = Instant::now();
        // After a failed round, nothing is read before the next poll.
        let mut failed = false;
        loop {
            // Whether a command asks for the items (a lookup alone does not).
            let mut items = false;
            match rx.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
                Ok(cmd) => items |= self.apply(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(cmd) = rx.try_recv() {
                items |= self.apply(cmd);
            }
            let polling = Instant::now() >= next_poll;
            if failed && !polling {
                continue;
            }
            if polling {
                next_poll = Instant::now() + self.poll;
                self.heal();
            }
            match self.round(polling, items || polling, &mut deliver) {
                Ok(()) => failed = false,
                Err(e) => {
                    tracing::warn!(store = %self.label.display(), "mail not read ({e}): trying again at the next poll");
                    self.client = None;
                    failed = true;
                }
            }
        }
    }

    /// Items handed and still not applied since the last poll are handed again.
    fn heal(&mut self) {
        for cursor in self.owned.values_mut().flat_map(|c| c.values_mut()) {
            if cursor.handed > cursor.applied && cursor.applied == cursor.polled {
                cursor.handed = cursor.applied;
            }
            cursor.polled = cursor.applied;
        }
    }

    /// Whether the command asks for a read of the items.
    fn apply(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Own { partition, cursors } if partition < self.count => {
                let mut all: BTreeMap<u8, Cursor> =
                    (0..self.count).filter(|s| *s != partition).map(|s| (s, Cursor::default())).collect();
                for (source, after) in cursors {
                    if let Some(c) = all.get_mut(&source) {
                        *c = Cursor { handed: after, applied: after, polled: after };
                    }
                }
                self.owned.insert(partition, all);
            }
            Cmd::Own { .. } => return false,
            Cmd::Disown(partition) => {
                self.owned.remove(&partition);
                return false;
            }
            Cmd::Rewind { to, from, after } => {
                if let Some(c) = self.owned.get_mut(&to).and_then(|c| c.get_mut(&from)) {
                    c.handed = c.handed.min(after);
                }
            }
            Cmd::Applied { to, from, upto } => {
                if let Some(c) = self.owned.get_mut(&to).and_then(|c| c.get_mut(&from)) {
                    c.applied = c.applied.max(upto);
                    c.handed = c.handed.max(c.applied);
                }
            }
            Cmd::Subject { tag, key } => {
                self.subjects.push_back((tag, key));
                return false;
            }
            Cmd::Ring => {}
        }
        true
    }

    /// Answers the lookups waiting, then (with `items`) reads every owned
    /// partition's items and (when `polling`) the backlogs. A source whose
    /// window filled is read again once the node says its core applied
    /// some (an `applied` wakes the thread).
    fn round(&mut self, polling: bool, items: bool, deliver: &mut impl FnMut(Delivery)) -> Result<(), StoreError> {
        if self.owned.is_empty() && self.subjects.is_empty() {
            return Ok(());
        }
        let opened = match self.client.take() {
            Some(client) => Ok(client),
            None => open_session(&self.connect, &self.label).map(|(client, _)| client),
        };
        let mut client = match opened {
            Ok(client) => client,
            Err(e) => {
                self.unknown_subjects(deliver, &e);
                return Err(e);
            }
        };
        let result = self.read(&mut client, polling, items, deliver);
        match &result {
            Ok(()) => self.client = Some(client),
            Err(e) => self.unknown_subjects(deliver, e),
        }
        result
    }

    /// Answers every lookup waiting with the store's failure: a frame
    /// waits on no recovery (its connection is refused for now).
    fn unknown_subjects(&mut self, deliver: &mut impl FnMut(Delivery), why: &StoreError) {
        for (tag, _) in self.subjects.drain(..) {
            deliver(Delivery::Subject { tag, bound: Err(why.to_string()) });
        }
    }

    fn read(
        &mut self,
        client: &mut Client,
        polling: bool,
        items: bool,
        deliver: &mut impl FnMut(Delivery),
    ) -> Result<(), StoreError> {
        let read = pg_err("read the mail in", &self.label);
        while let Some(&(tag, key)) = self.subjects.front() {
            let row =
                client.query_opt(OIDC_SUBJECT, &[&&key[..]]).map_err(pg_err("read an OIDC subject in", &self.label))?;
            self.subjects.pop_front();
            deliver(Delivery::Subject { tag, bound: Ok(row.map(|r| r.get(0))) });
        }
        if !items {
            return Ok(());
        }
        let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (&to, cursors) in &mut self.owned {
            let (mut sources, mut afters, mut room) = (Vec::new(), Vec::new(), Vec::new());
            for (source, c) in cursors.iter() {
                let n = WINDOW.saturating_sub(c.handed.saturating_sub(c.applied));
                if n > 0 {
                    sources.push(i32::from(*source));
                    afters.push(number(c.handed));
                    room.push(number(n));
                }
            }
            let rows = if sources.is_empty() {
                Vec::new()
            } else {
                client.query(ITEMS, &[&i32::from(to), &sources, &afters, &room]).map_err(&read)?
            };
            for row in rows {
                let (Ok(from), Ok(seq)) = (u8::try_from(row.get::<_, i32>(0)), u64::try_from(row.get::<_, i64>(1)))
                else {
                    continue;
                };
                let item: Vec<u8> = row.get(2);
                if let Some(c) = cursors.get_mut(&from) {
                    c.handed = c.handed.max(seq);
                }
                deliver(Delivery::Mail { to, from, seq, item: Bytes::from(item) });
            }
            if polling {
                let waiting = client.query(MAIL_WAITING, &[&i32::from(to)]).map_err(&read)?;
                let waiting = waiting
                    .iter()
                    .filter_map(|r| {
                        Some((u8::try_from(r.get::<_, i32>(0)).ok()?, u64::try_from(r.get::<_, i64>(1)).ok()?))
                    })
                    .collect();
                deliver(Delivery::Backlog { from: to, waiting });
            }
        }
        Ok(())
    }
}
