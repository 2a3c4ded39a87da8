//! The lease on a PostgreSQL store's partition: which node may write it, and
//! the fencing token every write checks.
//!
//! Each partition of the state has its own lease (one row of
//! `confab_lease`; a state that is not split is partition 0): one node owns
//! it and serves it, the others wait as standbys and take it over when its
//! owner is gone. The row says who holds it (`holder`, a node's name),
//! until when (`expires_at`, PostgreSQL's clock: nodes' clocks play no
//! part) and under which `token` (from one sequence for all partitions).
//!
//! - **Taking it.** A node takes the partition when its lease has expired
//!   (or was released), in one statement that gives it a new token (from a
//!   sequence: never one given before). A
//!   node that finds it held waits: a standby ([`LeaseConfig::standby`])
//!   for as long as it takes; any other node until the lease expires,
//!   unless it sees the holder renew it (its token or expiry changed: a live
//!   node, refused with [`StoreError::LeaseHeld`]). A node killed without a
//!   goodbye thus blocks its own restart for at most one lease. The lease is
//!   renewed from the moment it is taken, while the node migrates and loads.
//! - **Keeping it.** The owner renews it every
//!   [`renew_every`](LeaseConfig::renew_every) on a session of its own (a
//!   thread, `Keeper`), by token: a renewal that finds another token
//!   means another node took over. Its session bounds every statement to
//!   half a renewal period (connect, `TCP_USER_TIMEOUT`, `statement_timeout`,
//!   `lock_timeout`), so no renewal hangs past the lease. The lease is lost
//!   when another node took over, or when a renewal failed and the next
//!   could not end before the lease does (another node may take over then);
//!   [`LeaseWatch`] tells the node, which stops.
//! - **Fencing.** Every commit and snapshot locks the lease row in share
//!   mode and writes only if the token is still its own. A takeover updates
//!   that row, so it waits for a commit under way to end (and then loads the
//!   state with that commit in it), and a commit after a takeover writes
//!   nothing ([`StoreError::LeaseLost`]): an old owner paused for longer
//!   than its lease, or cut off from the database, can never commit once a
//!   new owner took over.
//! - **Giving it back.** A store dropped with no failed write releases its
//!   lease (it expires at once), so the next node takes over without waiting.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;

use super::error::StoreError;
use super::pg::{lost, open_session, pg_err};

/// The default lease: a node gone is replaced within this (plus a poll).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The tables of the leases, of the schema's versions and of the nodes
/// ([`fleet`](super::fleet)), which exist before any migration runs (a node
/// must hold a lease to migrate, and they hold no state); PostgreSQL's
/// notices that they already exist are not logged at every start.
const BOOTSTRAP: &str = "SET LOCAL client_min_messages = warning;
     CREATE TABLE IF NOT EXISTS confab_schema (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE IF NOT EXISTS confab_lease (partition int PRIMARY KEY, holder text NOT NULL,
                                             token bigint NOT NULL, expires_at timestamptz NOT NULL);
     CREATE SEQUENCE IF NOT EXISTS confab_lease_token;
     CREATE TABLE IF NOT EXISTS confab_nodes (name text PRIMARY KEY, expires_at timestamptz NOT NULL);";

/// Takes partition `$1` for `$2` for `$3` milliseconds if it is free: the
/// new token (from a sequence: never one given before, even if the row was
/// deleted), or no row.
const ACQUIRE: &str = "INSERT INTO confab_lease AS l (partition, holder, token, expires_at)
     VALUES ($1, $2, nextval('confab_lease_token'), clock_timestamp() + $3::bigint * interval '1 millisecond')
     ON CONFLICT (partition) DO UPDATE SET holder = excluded.holder, token = nextval('confab_lease_token'),
                                           expires_at = excluded.expires_at
     WHERE l.expires_at <= clock_timestamp()
     RETURNING token";

/// Who holds partition `$1`, under which token, until when (microseconds
/// of PostgreSQL's clock) and for how many more milliseconds.
const HOLDER: &str = "SELECT holder, token, (extract(epoch FROM expires_at) * 1000000)::bigint,
            (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
     FROM confab_lease WHERE partition = $1";

/// Renews partition `$1`'s lease held under token `$2` for `$3` milliseconds: a row if it is still ours.
const RENEW: &str = "UPDATE confab_lease SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
     WHERE partition = $1 AND token = $2 RETURNING 1";

/// Lets partition `$1`'s lease held under token `$2` expire now.
const RELEASE: &str = "UPDATE confab_lease SET expires_at = clock_timestamp() WHERE partition = $1 AND token = $2";

/// How a node takes and keeps its lease (`[cluster]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The node's name in the lease and the logs (`[cluster] node`).
    pub node: String,
    /// How long a lease lasts without a renewal (`lease_secs`): how long a
    /// dead owner's partition waits before another node takes it.
    pub ttl: Duration,
    /// How often the owner renews it (a third of `ttl` by default).
    pub renew_every: Duration,
    /// Wait for the lease as long as another node holds it, instead of
    /// being refused once the holder is seen alive (`standby`).
    pub standby: bool,
    /// Give up waiting for the lease through a lost connection after a
    /// lease's length (a node sharing a split state taking a free
    /// partition: its membership goes on beating meanwhile), instead of
    /// waiting for the database to come back.
    pub impatient: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::new(default_node_name(), DEFAULT_LEASE, false)
    }
}

impl LeaseConfig {
    /// A lease of `ttl`, renewed every third of it.
    #[must_use]
    pub fn new(node: String, ttl: Duration, standby: bool) -> LeaseConfig {
        LeaseConfig { node, ttl, renew_every: ttl / 3, standby, impatient: false }
    }

    /// The longest a renewal may take: its session's timeouts (connect,
    /// `TCP_USER_TIMEOUT`, `statement_timeout`, `lock_timeout`), half a
    /// period, so that no renewal hangs past the lease.
    pub(super) fn renewal_bound(&self) -> Duration {
        (self.renew_every / 2).max(Duration::from_millis(100))
    }

    /// How long after its last renewal was sent a lease is in doubt
    /// ([`LeaseWatch::in_doubt`]): a quarter of a renewal period before it
    /// could expire (the database's clock and this one's may drift apart
    /// by that much). A running keeper gives the lease up before that; a
    /// process stopped for longer finds its cores in doubt when it resumes.
    pub(super) fn doubt_after(&self) -> Duration {
        self.ttl.saturating_sub(self.renew_every / 4)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX).max(1)
    }
}

/// This machine's name and this process's id: `host:pid`.
#[must_use]
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}:{}", std::process::id())
}

/// The advisory lock under which one node at a time makes the lease and
/// schema tables, or migrates the schema (the owners of several partitions
/// may start together).
pub(super) const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(7165064474730266626)";

/// Creates the lease and schema tables if they are missing (any node may:
/// they hold no state).
pub(super) fn bootstrap(client: &mut Client, label: &Path) -> Result<(), StoreError> {
    let err = pg_err("prepare", label);
    let mut tx = client.transaction().map_err(&err)?;
    tx.batch_execute(SCHEMA_LOCK).map_err(&err)?;
    tx.batch_execute(BOOTSTRAP).map_err(&err)?;
    tx.commit().map_err(&err)
}

/// Who holds a partition, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    node: String,
    token: i64,
    /// When it expires, in microseconds of PostgreSQL's clock: a renewal moves it.
    expires_us: i64,
    /// Milliseconds left on its lease (negative: expired).
    left_ms: i64,
}

fn holder(client: &mut Client, label: &Path, partition: i32) -> Result<Option<Holder>, StoreError> {
    let row = client.query_opt(HOLDER, &[&partition]).map_err(pg_err("read the lease of", label))?;
    Ok(row.map(|r| Holder { node: r.get(0), token: r.get(1), expires_us: r.get(2), left_ms: r.get(3) }))
}

/// A lease just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Taken {
    /// The partition.
    pub partition: i32,
    /// Its fencing token.
    pub token: i64,
    /// When the statement taking it was sent: the lease runs `ttl` from at least then.
    pub at: Instant,
    /// The node that held it before, if one ever did: the database served before.
    pub previous: Option<String>,
}

/// Takes `partition`'s lease, waiting as the module docs say.
/// `client` is replaced when the connection is lost while waiting.
pub(super) fn acquire(
    client: &mut Client,
    session: &mut super::pg::Session,
    connect: &postgres::Config,
    label: &Path,
    config: &LeaseConfig,
    partition: i32,
) -> Result<Taken, StoreError> {
    let started = Instant::now();
    // The holder seen last (its token and expiry: a renewal or a takeover changes them).
    let mut seen: Option<Holder> = None;
    let mut wait = Duration::from_millis(50);
    loop {
        match try_acquire(client, label, config, partition) {
            Ok(Ok(taken)) => {
                tracing::info!(
                    store = %label.display(), node = %config.node, partition, token = taken.token,
                    previous = taken.previous.as_deref().unwrap_or("none"),
                    waited_ms = started.elapsed().as_millis() as u64, "partition taken: this node owns it"
                );
                return Ok(taken);
            }
            Ok(Err(None)) => {}
            Ok(Err(Some(now))) => {
                let alive = seen.as_ref().is_some_and(|s| s.token != now.token || s.expires_us != now.expires_us);
                if alive && !config.standby {
                    return Err(StoreError::LeaseHeld {
                        url: label.to_owned(),
                        partition,
                        holder: now.node,
                        token: now.token,
                    });
                }
                if seen.as_ref().is_none_or(|s| s.token != now.token) {
                    tracing::info!(
                        store = %label.display(), node = %config.node, partition, holder = %now.node,
                        token = now.token, expires_in_ms = now.left_ms,
                        "{}", if config.standby {
                            "partition held by another node: standing by until its lease expires"
                        } else {
                            "partition held: waiting for its lease to expire (a node gone) or be renewed (a node alive)"
                        }
                    );
                }
                // Until just after it would end, but often enough to see a renewal.
                let until = Duration::from_millis(now.left_ms.max(0) as u64 + 10);
                std::thread::sleep(until.min(config.renew_every.max(Duration::from_millis(10))));
                seen = Some(now);
                wait = Duration::from_millis(50);
            }
            // A node sharing a split state takes free partitions only: it does not wait out an outage
            // here (its membership beats on, and another node may take the partition meanwhile).
            Err(e @ StoreError::Postgres { .. }) if config.impatient && started.elapsed() > config.ttl => {
                return Err(e);
            }
            Err(StoreError::Postgres { source, .. }) if lost(&source) => {
                tracing::warn!(store = %label.display(), "connection lost while waiting for the lease: reconnecting");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
                if let Ok((fresh, fresh_session)) = open_session(connect, label) {
                    *client = fresh;
                    *session = fresh_session;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: the lease taken, or who holds it (`None`: nobody any more).
fn try_acquire(
    client: &mut Client,
    label: &Path,
    config: &LeaseConfig,
    partition: i32,
) -> Result<Result<Taken, Option<Holder>>, StoreError> {
    let before = holder(client, label, partition)?;
    let at = Instant::now();
    let row = client
        .query_opt(ACQUIRE, &[&partition, &config.node, &config.ttl_ms()])
        .map_err(pg_err("take the lease of", label))?;
    match row {
        Some(r) => Ok(Ok(Taken { partition, token: r.get(0), at, previous: before.map(|h| h.node) })),
        None => Ok(Err(holder(client, label, partition)?)),
    }
}

/// Lets `partition`'s lease expire now (a clean stop), if it is still `token`'s.
pub(super) fn release(client: &mut Client, partition: i32, token: i64) -> Result<u64, postgres::Error> {
    client.execute(RELEASE, &[&partition, &token])
}

/// What a node learns of its lease: whether it was lost, and why.
#[derive(Clone, Default)]
pub struct LeaseWatch(Arc<(Mutex<Watched>, Condvar)>);

/// Whether the lease was lost, and who is to be told when it is.
#[derive(Default)]
struct Watched {
    lost: Option<String>,
    hooks: Vec<Box<dyn FnOnce(String) + Send>>,
    /// When its last renewal that succeeded was sent, and how long after
    /// that the lease is in doubt ([`LeaseWatch::in_doubt`]).
    renewed: Option<(Instant, Duration)>,
}

impl std::fmt::Debug for LeaseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWatch").field("lost", &self.lost()).finish_non_exhaustive()
    }
}

impl LeaseWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.0.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Blocks until the lease is lost: why.
    #[must_use]
    pub fn wait_lost(&self) -> String {
        let mut watched = self.lock();
        loop {
            if let Some(reason) = watched.lost.as_ref() {
                return reason.clone();
            }
            watched = self.0.1.wait(watched).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Why the lease was lost, if it was.
    #[must_use]
    pub fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    /// A renewal sent at `at` succeeded (the lease keeper tells it, and
    /// the take before it): the lease is held until at least a lease after
    /// `at`, and in doubt from `doubt_after` after `at` unless a later
    /// renewal succeeds.
    pub fn renewed(&self, at: Instant, doubt_after: Duration) {
        let mut watched = self.lock();
        if watched.renewed.is_none_or(|(last, _)| last <= at) {
            watched.renewed = Some((at, doubt_after));
        }
    }

    /// Whether the lease may have been taken by another node since this
    /// one last knew it held it: its last renewal that succeeded was sent
    /// nearly a lease ago (the process was stopped, and its keeper has not
    /// renewed since), or it was lost. A core in doubt must not answer from
    /// its state, which may be older than the partition's: another node may
    /// have served it meanwhile. A watch never renewed is never in doubt
    /// (a store without a lease). It reads the monotonic clock, which a
    /// stopped process sees move on; a machine whose monotonic clock stops
    /// with it (a suspended host) is not seen.
    #[must_use]
    pub fn in_doubt(&self, now: Instant) -> bool {
        let watched = self.lock();
        watched.lost.is_some() || watched.renewed.is_some_and(|(at, doubt)| now >= at + doubt)
    }

    /// Calls `hook` with the reason once the lease is lost (at once if it
    /// was already), on the thread that finds it lost: a node sharing a
    /// split state stops that partition's core at once, whatever its
    /// membership's thread is doing.
    pub fn on_lost(&self, hook: impl FnOnce(String) + Send + 'static) {
        let mut watched = self.lock();
        match watched.lost.clone() {
            Some(reason) => {
                drop(watched);
                hook(reason);
            }
            None => watched.hooks.push(Box::new(hook)),
        }
    }

    pub(super) fn set_lost(&self, reason: String) {
        let hooks = {
            let mut watched = self.lock();
            if watched.lost.is_some() {
                return;
            }
            watched.lost = Some(reason.clone());
            self.0.1.notify_all();
            std::mem::take(&mut watched.hooks)
        };
        for hook in hooks {
            hook(reason.clone());
        }
    }
}

/// The thread renewing a lease (see the module docs). Dropping it stops it.
#[derive(Debug)]
pub(super) struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// Renews `taken`'s lease from now on; `watch` learns when it is lost.
    pub(super) fn start(
        connect: &postgres::Config,
        label: PathBuf,
        taken: &Taken,
        config: LeaseConfig,
        watch: LeaseWatch,
    ) -> Result<Keeper, StoreError> {
        let bound = config.renewal_bound();
        let mut connect = connect.clone();
        connect.connect_timeout(bound).tcp_user_timeout(bound).options(&format!(
            "-c statement_timeout={} -c lock_timeout={}",
            bound.as_millis(),
            bound.as_millis()
        ));
        let (lease, renewed_at) = ((taken.partition, taken.token), taken.at);
        watch.renewed(renewed_at, config.doubt_after());
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let url = label.clone();
        let thread = std::thread::Builder::new()
            .name("confab-lease".into())
            .spawn(move || renew_loop(&connect, &label, (lease, renewed_at), &config, &watch, &flag))
            .map_err(|e| StoreError::LeaseLost { url, reason: format!("cannot start its renewing thread: {e}") })?;
        Ok(Keeper { stop, thread: Some(thread) })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn renew_loop(
    connect: &postgres::Config,
    label: &Path,
    ((partition, token), mut renewed_at): ((i32, i64), Instant),
    config: &LeaseConfig,
    watch: &LeaseWatch,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut session: Option<Client> = None;
    let bound = config.renewal_bound();
    // `renewed_at`: a renewal counts from when it was sent: the lease runs at least `ttl` from then.
    let mut pause = config.renew_every;
    loop {
        {
            let (lock, cv) = stop;
            let stopped = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (stopped, _) =
                cv.wait_timeout_while(stopped, pause, |s| !*s).unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        let sent = Instant::now();
        match renew(&mut session, connect, label, (partition, token), config) {
            Ok(true) => {
                renewed_at = sent;
                watch.renewed(sent, config.doubt_after());
                // A renewal sent before a stop and answered after it leaves the lease
                // in doubt: the next one goes at once.
                let late = Instant::now() >= sent + config.doubt_after();
                pause = if late { Duration::ZERO } else { config.renew_every };
            }
            Ok(false) => {
                let now = session.as_mut().and_then(|c| holder(c, label, partition).ok().flatten());
                let by = now.map_or_else(String::new, |h| format!(" (now held by {} under token {})", h.node, h.token));
                let reason = format!("another node took partition {partition} from token {token}{by}");
                tracing::error!(store = %label.display(), node = %config.node, partition, "lease lost: {reason}");
                watch.set_lost(reason);
                return;
            }
            // The next attempt could not end before the lease does: another node may take it.
            Err(e)
                if Instant::now() + (config.renew_every / 4).max(Duration::from_millis(20)) + bound
                    >= renewed_at + config.ttl =>
            {
                let reason = format!(
                    "no renewal succeeded for a whole lease ({} ms; last error: {e}): another node may own \
                     partition {partition} now",
                    config.ttl.as_millis()
                );
                tracing::error!(store = %label.display(), node = %config.node, partition, "lease lost: {reason}");
                watch.set_lost(reason);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    store = %label.display(), node = %config.node, partition, "lease renewal failed ({e}): retrying"
                );
                session = None;
                pause = (config.renew_every / 4).max(Duration::from_millis(20));
            }
        }
    }
}

/// One renewal, on `session` (opened first if there is none): whether the lease is still ours.
fn renew(
    session: &mut Option<Client>,
    connect: &postgres::Config,
    label: &Path,
    (partition, token): (i32, i64),
    config: &LeaseConfig,
) -> Result<bool, String> {
    if session.is_none() {
        *session = Some(open_session(connect, label).map_err(|e| e.to_string())?.0);
    }
    let client = session.as_mut().ok_or("no session")?;
    let row = client.query_opt(RENEW, &[&partition, &token, &config.ttl_ms()]).map_err(|e| super::pg::describe(&e))?;
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::LeaseWatch;

    /// A hook learns of the loss once, at once if the lease was already
    /// lost, and never before; the first reason is the one kept.
    #[test]
    fn a_lost_lease_calls_each_hook_once_with_the_first_reason() {
        let watch = LeaseWatch::default();
        let told = Arc::new(Mutex::new(Vec::new()));
        let hook = |n: u8| {
            let told = Arc::clone(&told);
            move |reason: String| told.lock().unwrap().push((n, reason))
        };
        watch.on_lost(hook(1));
        assert!(told.lock().unwrap().is_empty(), "not lost yet");
        watch.set_lost("taken by b".into());
        watch.set_lost("renewal failed".into());
        watch.clone().on_lost(hook(2));
        assert_eq!(watch.wait_lost(), "taken by b");
        assert_eq!(*told.lock().unwrap(), [(1, "taken by b".to_owned()), (2, "taken by b".to_owned())]);
    }

    /// A lease is in doubt once no renewal succeeded for its doubt period
    /// (a renewal reported late, sent before the last, changes nothing),
    /// and once it is lost; a watch never renewed (no lease) never is.
    #[test]
    fn a_lease_is_in_doubt_after_its_last_renewal_and_once_lost() {
        use std::time::{Duration, Instant};
        let (watch, t0, d) = (LeaseWatch::default(), Instant::now(), Duration::from_secs(2));
        assert!(!watch.in_doubt(t0 + Duration::from_secs(3600)), "no lease: never in doubt");
        watch.renewed(t0, d);
        assert!(!watch.in_doubt(t0 + Duration::from_millis(1999)));
        assert!(watch.in_doubt(t0 + d));
        watch.renewed(t0 + Duration::from_secs(1), d);
        watch.renewed(t0, d);
        assert!(!watch.in_doubt(t0 + Duration::from_millis(2999)), "the latest renewal counts");
        assert!(watch.in_doubt(t0 + Duration::from_secs(3)));
        watch.set_lost("taken".into());
        assert!(watch.in_doubt(t0 + Duration::from_secs(1)), "lost: in doubt whatever the time");
    }

    /// The doubt comes before the lease could expire, after a running
    /// keeper would have given it up (so a live node never refuses frames
    /// for a slow renewal it still waits for).
    #[test]
    fn a_lease_is_in_doubt_before_it_could_expire() {
        use std::time::Duration;
        let config = super::LeaseConfig::new("n".into(), Duration::from_secs(3), false);
        assert_eq!(config.doubt_after(), Duration::from_millis(2750));
        let give_up = config.ttl - (config.renew_every / 4) - config.renewal_bound();
        assert!(give_up < config.doubt_after() && config.doubt_after() < config.ttl, "{give_up:?}");
    }
}
