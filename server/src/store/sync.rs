//! The store's durability setting ([`Fsync`]) and, for
//! [`Fsync::Interval`], the thread that syncs the write-ahead log.
//!
//! - `Always` (the default): `synchronous=FULL`. A commit returns once its
//!   WAL frames are fsynced: nothing acknowledged is lost to SIGKILL or to
//!   a power loss.
//! - `Interval(d)`: `synchronous=NORMAL`. A commit returns once its WAL
//!   frames are written to the operating system (they survive the process:
//!   SIGKILL loses nothing acknowledged), and this thread fsyncs the WAL at
//!   most `d` after a commit: a power loss (or an OS crash) loses at most
//!   the commits of the last `d`, acknowledged ones included. SQLite itself
//!   fsyncs the WAL before every checkpoint, so the database file is never
//!   ahead of it. A failed fsync is reported by the next commit, which then
//!   fails (the server stops).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the store makes a commit durable (`[store] fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Every commit is fsynced before it returns (`synchronous=FULL`).
    #[default]
    Always,
    /// Commits reach the operating system before they return, the WAL is
    /// fsynced at most this long after (`synchronous=NORMAL`).
    Interval(Duration),
}

impl Fsync {
    /// The `synchronous` pragma's value in WAL mode.
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Fsync::Always => "FULL",
            Fsync::Interval(_) => "NORMAL",
        }
    }
}

/// What the store and its sync thread share.
#[derive(Default)]
struct Shared {
    /// Stop after a last sync.
    stop: bool,
    /// Why the last sync failed, until a commit reports it.
    failed: Option<String>,
}

/// The thread that fsyncs the WAL every interval when a commit made it dirty.
pub(super) struct Syncer {
    dirty: Arc<AtomicBool>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts syncing `db`'s WAL (`db` + `-wal`) every `interval`.
    pub(super) fn start(db: &std::path::Path, interval: Duration) -> std::io::Result<Syncer> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let dirty = Arc::new(AtomicBool::new(false));
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let (d, s) = (Arc::clone(&dirty), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("confab-wal-sync".into())
            .spawn(move || sync_loop(&wal, interval, &d, &s))?;
        Ok(Syncer { dirty, shared, thread: Some(thread) })
    }

    /// A commit wrote to the WAL: sync it within the interval.
    pub(super) fn dirtied(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The failure of the last sync, once.
    pub(super) fn take_failure(&self) -> Option<String> {
        self.shared.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failed.take()
    }
}

impl Drop for Syncer {
    /// Syncs what is dirty one last time and joins the thread.
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.shared;
            m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stop = true;
            cv.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync_loop(wal: &std::path::Path, interval: Duration, dirty: &AtomicBool, shared: &(Mutex<Shared>, Condvar)) {
    let (m, cv) = shared;
    loop {
        let stop = {
            let s = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (s, _) =
                cv.wait_timeout_while(s, interval, |s| !s.stop).unwrap_or_else(std::sync::PoisonError::into_inner);
            s.stop
        };
        if dirty.swap(false, Ordering::AcqRel) {
            // fsync acts on the file, whichever descriptor asks: SQLite's writes through its own are covered.
            // No WAL file: SQLite checkpointed and removed it, the database file is synced.
            let result = match std::fs::File::open(wal) {
                Ok(f) => f.sync_data(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(wal = %wal.display(), "cannot fsync the write-ahead log: {e}");
                let mut s = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                s.failed = Some(format!("cannot fsync {}: {e}", wal.display()));
            }
        }
        if stop {
            return;
        }
    }
}
