//! Whose listener socket it is: the checks made before a command hands an
//! operation (a room password, a message) to `DIR/listen.sock`, and by the
//! listener before it serves a caller.
//!
//! A command uses the socket only if the profile directory is a real
//! directory (not a symbolic link) owned by the user running the command,
//! with no permission for group or others (`mode & 0o077 == 0`), the socket
//! is a socket owned by that user, and the process at the other end runs as
//! that user (`SO_PEERCRED`). Otherwise anyone who could write the directory
//! (or created it first, in `/tmp`) could have bound a socket there to
//! receive what the command forwards and answer it whatever it likes. The
//! listener serves only callers running as its own user.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a listener socket is not used.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The profile directory is a symbolic link.
    #[error("profile directory {} is a symbolic link: refusing to use its listener socket", .0.display())]
    DirLink(PathBuf),
    /// The profile directory is not a directory.
    #[error("profile directory {} is not a directory: refusing to use its listener socket", .0.display())]
    NotDir(PathBuf),
    /// The profile directory belongs to another user.
    #[error("profile directory {} belongs to uid {owner}, not to you (uid {me}): refusing to use its listener socket", .dir.display())]
    DirOwner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user running the command.
        me: u32,
    },
    /// Group or others may write the profile directory.
    #[error("profile directory {} is writable by others (mode {mode:03o}): refusing to use its listener socket", .dir.display())]
    DirWritable {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Group or others may read or search the profile directory.
    #[error("profile directory {} is open to others (mode {mode:03o}, not 700): refusing to use its listener socket", .dir.display())]
    DirOpen {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `listen.sock` is not a socket.
    #[error("{} is not a socket: refusing to use it", .0.display())]
    NotSocket(PathBuf),
    /// `listen.sock` belongs to another user.
    #[error("{} belongs to uid {owner}, not to you (uid {me}): refusing to use it", .path.display())]
    SocketOwner {
        /// The socket.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user running the command.
        me: u32,
    },
    /// The process serving the socket runs as another user.
    #[error("the process serving {} runs as uid {peer}, not as you (uid {me}): refusing to use it", .path.display())]
    Peer {
        /// The socket.
        path: PathBuf,
        /// The peer's user.
        peer: u32,
        /// The user running the command.
        me: u32,
    },
    /// A check could not be made.
    #[error("cannot check the listener socket {}: {source}", .path.display())]
    Io {
        /// What was checked.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl Refused {
    /// Whether the command may go on without the listener, opening the
    /// profile itself: only if nobody else could have written into the
    /// directory (it is ours and not writable by group or others, following
    /// a link), since opening the profile makes it `0700` and then trusts
    /// what it holds.
    #[must_use]
    pub fn may_fall_back(&self, dir: &Path) -> bool {
        match self {
            Refused::DirOwner { .. } | Refused::DirWritable { .. } | Refused::NotDir(_) => false,
            _ => std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == me() && m.mode() & 0o022 == 0),
        }
    }

    /// What to do about it.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            Refused::DirOwner { .. } | Refused::NotDir(_) => {
                "use a profile directory of your own (--profile DIR, or the default one)".into()
            }
            _ => "check who made the directory and what it holds; if it is yours, `chmod 700` it and remove any listen.sock no `confab listen` of yours serves".into(),
        }
    }
}

/// The user running this process.
#[must_use]
pub fn me() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Checks the profile directory and the socket at `path` in it (before connecting).
pub fn check_socket(dir: &Path, path: &Path) -> Result<(), Refused> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Refused::Io { path, source }
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    let me = me();
    if meta.file_type().is_symlink() {
        return Err(Refused::DirLink(dir.to_owned()));
    }
    if !meta.is_dir() {
        return Err(Refused::NotDir(dir.to_owned()));
    }
    if meta.uid() != me {
        return Err(Refused::DirOwner { dir: dir.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(Refused::DirWritable { dir: dir.to_owned(), mode });
    }
    if mode & 0o077 != 0 {
        return Err(Refused::DirOpen { dir: dir.to_owned(), mode });
    }
    let socket = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !socket.file_type().is_socket() {
        return Err(Refused::NotSocket(path.to_owned()));
    }
    if socket.uid() != me {
        return Err(Refused::SocketOwner { path: path.to_owned(), owner: socket.uid(), me });
    }
    Ok(())
}

/// The user of the process at the other end of `stream` (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// Checks that the process at the other end of `stream` (connected to `path`) runs as this user.
pub fn check_peer(stream: &UnixStream, path: &Path) -> Result<(), Refused> {
    let peer = peer_uid(stream).map_err(|source| Refused::Io { path: path.to_owned(), source })?;
    let me = me();
    if peer != me {
        return Err(Refused::Peer { path: path.to_owned(), peer, me });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::net::UnixListener;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("confab-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn only_a_private_directory_of_ours_and_our_own_socket_pass() {
        let dir = temp("private");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let chmod = |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        chmod(0o700);
        check_socket(&dir, &path).unwrap();
        let stream = UnixStream::connect(&path).unwrap();
        check_peer(&stream, &path).unwrap();
        assert_eq!(peer_uid(&listener.accept().unwrap().0).unwrap(), me());
        chmod(0o777);
        let e = check_socket(&dir, &path).unwrap_err();
        assert!(matches!(e, Refused::DirWritable { mode: 0o777, .. }), "{e}");
        assert!(e.to_string().contains("writable by others") && !e.may_fall_back(&dir), "{e}");
        chmod(0o750);
        let e = check_socket(&dir, &path).unwrap_err();
        assert!(matches!(e, Refused::DirOpen { .. }) && e.may_fall_back(&dir), "{e}");
        chmod(0o700);
        let link = temp("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = check_socket(&link, &link.join("s.sock")).unwrap_err();
        assert!(matches!(e, Refused::DirLink(_)) && e.may_fall_back(&link), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        assert!(matches!(check_socket(&dir, &path), Err(Refused::NotSocket(_))));
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
