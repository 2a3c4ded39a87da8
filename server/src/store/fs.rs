//! The data directory and the permissions of what it holds.
//!
//! The store holds password hashes, token hashes and the phantom-token signing
//! keys, so the directory is private to its owner (0700) and every file in it
//! is 0600 (seed 001's restricted folder). Modes are set explicitly, whatever
//! the process umask.

use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// The mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Makes sure `path` is a private data directory, creating it (and its
/// missing parents) if needed.
///
/// A new directory is created with mode 0700. An existing one must be a
/// directory that its group and others cannot access: one that is refused
/// with [`io::ErrorKind::PermissionDenied`] and a message saying to run
/// `chmod 700 DIR`, rather than silently narrowed, since its files may
/// already have been exposed and the operator should know.
pub fn ensure_data_dir(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => check_existing(path, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            builder.mode(DIR_MODE);
            match builder.create(path) {
                Ok(()) => set_mode(path, DIR_MODE),
                // Created concurrently: judge what is there now.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_existing(path, &std::fs::metadata(path)?),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn check_existing(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} exists and is not a directory: choose another data directory", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "data directory {dir} is accessible to its group or others (mode {mode:03o}); it holds \
                     password hashes and signing keys: run `chmod 700 {dir}` and check who could read it",
                    dir = path.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Creates `file` with mode 0600 if it does not exist, and sets an existing
/// one to 0600.
pub(super) fn create_private(file: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    drop(options.open(file)?);
    set_mode(file, FILE_MODE)
}

/// The database file and the files SQLite keeps beside it.
pub(super) fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
}

/// Sets the database file and the `-wal`, `-shm` and `-journal` files beside
/// it, those that exist, to 0600. SQLite already creates them with the mode
/// of the database file; this makes sure of it.
pub(super) fn restrict(db: &Path) -> io::Result<()> {
    for file in database_files(db) {
        match set_mode(&file, FILE_MODE) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Removes the `-wal`, `-shm` and `-journal` files beside a database that is
/// missing or empty: SQLite would otherwise replay a lost database's pages
/// into the new one.
pub(super) fn remove_sidecars(db: &Path) -> io::Result<()> {
    for file in database_files(db).into_iter().skip(1) {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}
