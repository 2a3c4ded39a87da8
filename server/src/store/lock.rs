//! The data directory's lock: one server process per data directory.
//!
//! [`DirLock::acquire`] takes an exclusive OS lock (`flock(2)` through std's
//! [`File::try_lock`]) on `DATA/confab.lock` and writes the holder's pid in
//! it. The lock belongs to the open file, so it is released when the
//! process exits however it exits (SIGKILL included): the file a dead
//! server leaves behind, with its pid, does not block the next start. A
//! second process finds the lock taken and is refused with
//! [`StoreError::Locked`], naming the holder's pid. The lock needs a local
//! file system (`flock` over NFS is not to be relied on).

use std::fs::{File, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "confab.lock";

/// The exclusive lock on a data directory, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DirLock {
    /// Open for the lock's life: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks the data directory `dir` (which must exist), or fails with
    /// [`StoreError::Locked`] at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |action| {
            let path = path.clone();
            move |source| StoreError::Io { action, path, source }
        };
        super::fs::create_private(&path).map_err(io("create the lock file"))?;
        // Not truncated on open: the holder's pid is in it.
        let mut file = File::options().read(true).write(true).open(&path).map_err(io("open the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text).map(|_| text.trim().parse::<u32>()) {
                    Ok(Ok(pid)) => format!("pid {pid}"),
                    // Between its lock and its write.
                    _ => "its pid is not written yet".to_owned(),
                };
                return Err(StoreError::Locked { dir: dir.to_owned(), lock_file: path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
        file.set_len(0).map_err(io("write the lock file"))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io("write the lock file"))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
