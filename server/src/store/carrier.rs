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
//! Per source and target it hands items in sequence order from a cursor
//! that starts at the core's (`own`), and goes back to a cursor the node
//! names ([`Carrier::rewind`]: the core answered `MailOutcome::Gap`, or a
//! commit failed). Handing an item twice is harmless (the core ignores a
//! duplicate). At most [`BATCH`] items per partition are read per round;
//! a full batch is followed by another round at once.
//!
//! A lost session is opened again at the next round (a round that fails is
//! logged and retried after `poll`); nothing is handed that the store did
//! not commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postgres::Client;

use super::error::StoreError;
use super::pg::{MAIL_WAITING, client_config, label_of, open_session, pg_err};

/// Items read per owned partition per round.
pub const BATCH: i64 = 512;

/// The items to partition `$1` from the sources `$2` after their cursors
/// `$3`, in order per source, at most `$4`.
const ITEMS: &str = "SELECT o.source, o.seq, o.item FROM confab_outbox o
     JOIN unnest($2::int[], $3::bigint[]) AS c(source, after) ON o.source = c.source AND o.seq > c.after
     WHERE o.target = $1 ORDER BY o.source, o.seq LIMIT $4";

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
}

enum Cmd {
    Own { partition: u8, cursors: Vec<(u8, u64)> },
    Disown(u8),
    Rewind { to: u8, from: u8, after: u64 },
    Ring,
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
        let connect = client_config(url)?;
        let label = PathBuf::from(label_of(&connect));
        let (tx, rx) = mpsc::channel();
        let mut reader = Reader { connect, label, count, poll, client: None, owned: BTreeMap::new() };
        let thread = std::thread::Builder::new()
            .name("confab-mail".into())
            .spawn(move || reader.run(&rx, deliver))
            .map_err(|e| StoreError::LeaseLost { url: PathBuf::from(url), reason: format!("no mail thread: {e}") })?;
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
    /// cursor): the core answered a gap, or what was handed was not applied.
    pub fn rewind(&self, to: u8, from: u8, after: u64) {
        self.send(Cmd::Rewind { to, from, after });
    }

    /// Reads now: something was committed for an owned partition.
    pub fn ring(&self) {
        self.send(Cmd::Ring);
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
    /// Per owned partition, the cursor of each source (the last item handed).
    owned: BTreeMap<u8, BTreeMap<u8, u64>>,
}

impl Reader {
    fn run(&mut self, rx: &Receiver<Cmd>, mut deliver: impl FnMut(Delivery)) {
        let mut next_poll = Instant::now();
        let mut again = false;
        loop {
            let wait = if again { Duration::ZERO } else { next_poll.saturating_duration_since(Instant::now()) };
            match rx.recv_timeout(wait) {
                Ok(cmd) => self.apply(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(cmd) = rx.try_recv() {
                self.apply(cmd);
            }
            let polling = Instant::now() >= next_poll;
            match self.round(polling, &mut deliver) {
                Ok(full) => again = full,
                Err(e) => {
                    tracing::warn!(store = %self.label.display(), "mail not read ({e}): trying again");
                    self.client = None;
                    again = false;
                    next_poll = Instant::now() + self.poll;
                    continue;
                }
            }
            if polling {
                next_poll = Instant::now() + self.poll;
            }
        }
    }

    fn apply(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Own { partition, cursors } => {
                let mut all: BTreeMap<u8, u64> = (0..self.count).filter(|s| *s != partition).map(|s| (s, 0)).collect();
                for (source, after) in cursors {
                    if let Some(c) = all.get_mut(&source) {
                        *c = after;
                    }
                }
                self.owned.insert(partition, all);
            }
            Cmd::Disown(partition) => {
                self.owned.remove(&partition);
            }
            Cmd::Rewind { to, from, after } => {
                if let Some(c) = self.owned.get_mut(&to).and_then(|c| c.get_mut(&from)) {
                    *c = after;
                }
            }
            Cmd::Ring => {}
        }
    }

    /// Reads every owned partition's items (and, when `polling`, the
    /// backlogs); whether a batch came back full.
    fn round(&mut self, polling: bool, deliver: &mut impl FnMut(Delivery)) -> Result<bool, StoreError> {
        if self.owned.is_empty() {
            return Ok(false);
        }
        if self.client.is_none() {
            self.client = Some(open_session(&self.connect, &self.label)?.0);
        }
        let Some(client) = self.client.as_mut() else { return Ok(false) };
        let read = pg_err("read the mail in", &self.label);
        let mut full = false;
        for (&to, cursors) in &mut self.owned {
            let (sources, afters): (Vec<i32>, Vec<i64>) =
                cursors.iter().map(|(s, a)| (i32::from(*s), i64::try_from(*a).unwrap_or(i64::MAX))).unzip();
            let rows = client.query(ITEMS, &[&i32::from(to), &sources, &afters, &BATCH]).map_err(&read)?;
            full |= rows.len() as i64 >= BATCH;
            for row in rows {
                let (Ok(from), Ok(seq)) = (u8::try_from(row.get::<_, i32>(0)), u64::try_from(row.get::<_, i64>(1)))
                else {
                    continue;
                };
                let item: Vec<u8> = row.get(2);
                if let Some(c) = cursors.get_mut(&from) {
                    *c = (*c).max(seq);
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
        Ok(full)
    }
}
