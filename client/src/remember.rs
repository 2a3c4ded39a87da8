//! The server a profile is for: its address and how it is trusted,
//! remembered at `register`/`login` so that later commands in that profile
//! need neither `--server`/`CONFAB_SERVER` nor `--pin`/`CONFAB_PIN`.
//!
//! | profile `meta` key | holds |
//! | --- | --- |
//! | `server` | `HOST:PORT`, or the nodes of one service, `HOST:PORT,HOST:PORT,...` |
//! | `pin` | the pinned key (`sha256//...`), or |
//! | `ca` | the path of the PEM file trusted instead |
//! | `ca_sha256` | the SHA-256 (hex) of that file's contents |
//! | `last_node` | with a list of nodes: the node that served the last connection ([`LAST_NODE`]) |
//!
//! A command given another server, pin or CA than the profile remembers is
//! refused ([`Mismatch`]), never switched silently: a changed pin is exactly
//! what a machine in the middle looks like. So is a CA file whose contents
//! changed since they were recorded (the file replaced by another CA's): the
//! command is refused (`what`: `CA file contents`). A profile written before
//! the digest was kept (a `ca` without `ca_sha256`) records the digest of
//! what the file holds at its next command that opens a session. `--switch-server` says the
//! change is wanted (the server moved, or its operator replaced its key); the
//! new values are recorded once a session is open with them.
//!
//! Without `--profile`, the default profile directory is found from the
//! server (`<data>/confab/<user>@<host:port>`), so the server of the last
//! `register`/`login` is remembered too, in `<data>/confab/last-server`.
//!
//! A server list is one server: the same nodes in another order are the same
//! server ([`crate::connect::same_server`]; the order given is used, it only
//! says which node to try first, and the default profile directory is the
//! same, see [`crate::profile::profile_dir`]). A list that gained or lost a
//! node is another server string: refused as another server, like a server
//! that moved, until `--switch-server` records the new list (with default
//! profile directories, the new list names another directory: pass the old
//! one with `--profile` to carry it over).
//!
//! With a list, the profile also remembers which node served its last
//! connection ([`record_last_node`]): each command is a new process, and
//! the next one tries that node first ([`last_node`],
//! [`crate::connect::Connector::start_at`]) instead of going through the
//! dead or paused nodes before it in the list again. It is only a hint: a
//! recorded node that is not an element of the list used now (the list
//! changed since, or the value is foreign) is ignored. A single address
//! records none.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest as _, Sha256};

use crate::connect::Trust;
use crate::profile::{self, Profile, ProfileError};

/// What a profile remembers about its server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    /// `HOST:PORT`, or a list of them.
    pub server: Option<String>,
    /// `Trust::Pin` or `Trust::Ca` (`Unset`: nothing remembered).
    pub trust: Trust,
    /// With `Trust::Ca`: the SHA-256 (hex) of the file's contents when it was recorded.
    pub ca_sha256: Option<String>,
}

/// A server or trust other than the remembered one, without `--switch-server`.
#[derive(Debug, thiserror::Error)]
#[error("the profile at {} is for {what} {remembered}, not {given}: refusing to switch silently", .dir.display())]
pub struct Mismatch {
    /// `server`, `pin`, `CA file` or [`CA_CONTENTS`].
    pub what: &'static str,
    /// What the profile remembers.
    pub remembered: String,
    /// What the command was given.
    pub given: String,
    /// The profile directory.
    pub dir: PathBuf,
}

impl Mismatch {
    /// What to do about it.
    #[must_use]
    pub fn hint(&self) -> String {
        let flag = match self.what {
            "server" => "--server/CONFAB_SERVER",
            CA_CONTENTS => {
                return "the CA file was replaced since the profile recorded it: restore it, or, if the server's operator really replaced the CA (check the new file with them), add --switch-server to record it".into();
            }
            _ => "--pin/CONFAB_PIN and --ca",
        };
        let list = if self.what == "server" && (self.remembered.contains(',') || self.given.contains(',')) {
            " (a list of nodes that gained or lost a node is another server; the same nodes in another order are not)"
        } else {
            ""
        };
        format!(
            "leave {flag} unset (the profile remembers them), or, if the server really moved or its operator replaced its key (compare the new pin with DATA/server.pin), add --switch-server to record the new value{list}"
        )
    }
}

/// Reads what the profile in `dir` remembers (nothing if it has no profile).
/// Read-only and without the profile's lock: a running `listen` does not block it.
pub fn read(dir: &Path) -> Result<Remembered, ProfileError> {
    let path = dir.join(profile::FILE_NAME);
    if !path.is_file() {
        return Ok(Remembered::default());
    }
    let conn = open_for_reading(&path)?;
    let meta = |key: &str| -> Result<Option<String>, ProfileError> {
        let exists: Option<String> = conn
            .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    };
    let trust = match (meta("pin")?, meta("ca")?) {
        (Some(pin), _) => Trust::Pin(pin),
        (None, Some(ca)) => Trust::Ca(PathBuf::from(ca)),
        (None, None) => Trust::Unset,
    };
    Ok(Remembered { server: meta("server")?, trust, ca_sha256: meta("ca_sha256")? })
}

/// Opens the profile database at `path` to read it, without its lock.
///
/// Read-only, unless the last writer died in the middle of a transaction
/// (a `listen` killed) and left a hot journal, which SQLite must roll back
/// before anything is read and which a read-only connection cannot ("attempt
/// to write a readonly database"): then the database (never created here) is
/// opened read-write, which rolls the journal back, and kept to queries.
///
/// The connection comes back inside a read transaction, begun before the
/// first read: everything read through it is one snapshot, and a writer
/// dying after that first read cannot leave a hot journal in its way.
fn open_for_reading(path: &Path) -> Result<Connection, ProfileError> {
    let timeout = std::time::Duration::from_secs(5);
    let begin = |conn: &Connection| -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN")?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map(drop)
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(timeout)?;
    match begin(&conn) {
        Ok(()) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ReadOnly => {
            drop(conn);
            let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            conn.busy_timeout(timeout)?;
            conn.pragma_update(None, "query_only", "ON")?;
            begin(&conn)?;
            Ok(conn)
        }
        Err(e) => Err(e.into()),
    }
}

/// [`Mismatch::what`] for a CA file whose contents changed.
pub const CA_CONTENTS: &str = "CA file contents";

/// The SHA-256 (hex) of the file at `path`.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// The server and trust a command uses: the given ones (flags or
/// environment) where given, else the remembered ones. A given value that
/// differs from a remembered one is refused unless `switch` (a server list
/// differs when its set of nodes does, not its order).
pub fn merge(
    dir: &Path,
    remembered: &Remembered,
    server: Option<String>,
    trust: Trust,
    switch: bool,
) -> Result<(Option<String>, Trust), Mismatch> {
    let mismatch = |what, remembered: String, given: String| Mismatch { what, remembered, given, dir: dir.to_owned() };
    if !switch {
        if let (Some(r), Some(g)) = (&remembered.server, &server)
            && !crate::connect::same_server(r, g)
        {
            return Err(mismatch("server", r.clone(), g.clone()));
        }
        match (&remembered.trust, &trust) {
            (_, Trust::Unset | Trust::FirstUse) | (Trust::Unset | Trust::FirstUse, _) => {}
            (Trust::Pin(r), Trust::Pin(g)) if r == g => {}
            (Trust::Ca(r), Trust::Ca(g)) if same_file(r, g) => {}
            (r, g) => return Err(mismatch(trust_kind(r), trust_text(r), trust_text(g))),
        }
    }
    let server = server.or_else(|| remembered.server.clone());
    let trust = match trust {
        Trust::Unset => remembered.trust.clone(),
        // A remembered key wins over trusting a new one on first use.
        Trust::FirstUse if remembered.trust != Trust::Unset => remembered.trust.clone(),
        given => given,
    };
    if !switch
        && let (Trust::Ca(r), Trust::Ca(path), Some(recorded)) = (&remembered.trust, &trust, &remembered.ca_sha256)
        && same_file(r, path)
        // An unreadable file is refused when connecting, with its reason.
        && let Ok(now) = file_sha256(path)
        && &now != recorded
    {
        return Err(mismatch(
            CA_CONTENTS,
            format!("{} with SHA-256 {recorded}", r.display()),
            format!("SHA-256 {now} in it now"),
        ));
    }
    Ok((server, trust))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
}

fn trust_kind(trust: &Trust) -> &'static str {
    match trust {
        Trust::Ca(_) => "CA file",
        _ => "pin",
    }
}

fn trust_text(trust: &Trust) -> String {
    match trust {
        Trust::Pin(pin) => pin.clone(),
        Trust::Ca(path) => path.display().to_string(),
        Trust::Unset | Trust::FirstUse => "(none)".into(),
    }
}

/// Records `server` and `trust` in the profile (after a session was opened with them).
pub fn record(profile: &Profile, server: &str, trust: &Trust) -> Result<(), ProfileError> {
    profile.set_meta("server", server)?;
    match trust {
        Trust::Pin(pin) => {
            profile.set_meta("pin", pin)?;
            profile.delete_meta("ca")?;
            profile.delete_meta("ca_sha256")?;
        }
        Trust::Ca(path) => {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            profile.set_meta("ca", &path.display().to_string())?;
            match file_sha256(&path) {
                Ok(digest) => profile.set_meta("ca_sha256", &digest)?,
                Err(_) => profile.delete_meta("ca_sha256")?,
            }
            profile.delete_meta("pin")?;
        }
        Trust::Unset | Trust::FirstUse => {}
    }
    Ok(())
}

/// Records the digest of the remembered CA file in a profile that has none
/// (written before the digest was kept), after a session was opened with
/// `trust`: from then on, other contents are refused.
pub fn record_missing_ca_digest(profile: &Profile, trust: &Trust) -> Result<(), ProfileError> {
    if let Trust::Ca(path) = trust
        && profile.meta("ca")?.is_some()
        && profile.meta("ca_sha256")?.is_none()
        && let Ok(digest) = file_sha256(path)
    {
        profile.set_meta("ca_sha256", &digest)?;
    }
    Ok(())
}

/// The profile `meta` key of the node (one element of the server list,
/// `HOST:PORT` or a URL, as the list spells it) that served the last
/// connection.
pub const LAST_NODE: &str = "last_node";

/// Whether `node` is one of the nodes of `server`, a list of at least two
/// (a single address has no node to choose).
fn is_node_of(server: &str, node: &str) -> bool {
    let nodes: Vec<&str> = crate::connect::split_servers(server).collect();
    nodes.len() > 1 && !node.is_empty() && nodes.contains(&node)
}

/// The node of `server` that served the last connection of the profile
/// ([`LAST_NODE`]): `None` when none is recorded, when `server` is a single
/// address, or when the one recorded is not one of the nodes of `server`
/// (a list that changed since, or a foreign value).
pub fn last_node(profile: &Profile, server: &str) -> Result<Option<String>, ProfileError> {
    Ok(profile.meta(LAST_NODE)?.filter(|node| is_node_of(server, node)))
}

/// Records `node` as the node of `server` that served the last connection
/// (after a session was opened through it), when `server` is a list with
/// `node` among its nodes and the profile records another one: nothing is
/// written for a single address, nor when the node did not change. Whether
/// it was written.
pub fn record_last_node(profile: &Profile, server: &str, node: &str) -> Result<bool, ProfileError> {
    if !is_node_of(server, node) || profile.meta(LAST_NODE)?.as_deref() == Some(node) {
        return Ok(false);
    }
    profile.set_meta(LAST_NODE, node)?;
    Ok(true)
}

/// The file naming the server of the last `register`/`login` (default profiles).
fn last_server_file(base: &Path) -> PathBuf {
    base.join("confab").join("last-server")
}

/// The server of the last `register`/`login` with a default profile directory.
#[must_use]
pub fn last_server(base: &Path) -> Option<String> {
    let text = std::fs::read_to_string(last_server_file(base)).ok()?;
    let server = text.trim();
    (!server.is_empty()).then(|| server.to_owned())
}

/// Records `server` as the last one logged in to with a default profile directory.
pub fn set_last_server(base: &Path, server: &str) -> std::io::Result<()> {
    std::fs::write(last_server_file(base), format!("{server}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CONFAB_HOT_JOURNAL=DIR` makes [`hot_journal_writer`] a child that
    /// dies in the middle of a transaction on `DIR`'s profile database.
    const HOT_JOURNAL: &str = "CONFAB_HOT_JOURNAL";

    /// Not a test on its own (ignored, so a run never counts it as one):
    /// the child of [`a_profile_left_with_a_hot_journal_is_still_read`].
    #[test]
    #[ignore = "the child process of a_profile_left_with_a_hot_journal_is_still_read"]
    fn hot_journal_writer() {
        let Some(dir) = std::env::var_os(HOT_JOURNAL) else { return };
        let conn = Connection::open(Path::new(&dir).join(profile::FILE_NAME)).unwrap();
        conn.execute_batch("BEGIN; UPDATE meta SET value = 'half-written:1' WHERE key = 'server';").unwrap();
        // Enough changed pages to spill to the database file (a one-page
        // cache), as a long turn would.
        conn.execute_batch(
            "PRAGMA cache_size = 1; CREATE TABLE filler(x); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600) \
             INSERT INTO filler SELECT randomblob(4096) FROM n;",
        )
        .unwrap();
        // Dies without a rollback: the journal stays hot.
        std::process::abort();
    }

    #[test]
    fn a_profile_left_with_a_hot_journal_is_still_read() {
        let dir = std::env::temp_dir().join(format!("confab-remember-hot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join(profile::FILE_NAME)).unwrap();
            conn.execute_batch(
                "PRAGMA cache_size = 1; CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); \
                 INSERT INTO meta VALUES ('server', 'h:1'), ('pin', 'sha256//a');",
            )
            .unwrap();
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "remember::tests::hot_journal_writer", "--ignored", "--nocapture"])
            .env(HOT_JOURNAL, &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the writer was to die in its transaction");
        let journal = dir.join(format!("{}-journal", profile::FILE_NAME));
        assert!(journal.exists(), "no hot journal left: the test proves nothing");
        let r = read(&dir).expect("read despite the hot journal");
        assert_eq!(r.server.as_deref(), Some("h:1"), "the half-written transaction was rolled back");
        assert_eq!(r.trust, Trust::Pin("sha256//a".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn remembered() -> Remembered {
        Remembered { server: Some("h:1".into()), trust: Trust::Pin("sha256//a".into()), ca_sha256: None }
    }

    #[test]
    fn remembered_values_fill_in_and_other_values_are_refused_unless_switching() {
        let dir = Path::new("/p");
        let r = remembered();
        assert_eq!(merge(dir, &r, None, Trust::Unset, false).unwrap(), (Some("h:1".into()), r.trust.clone()));
        assert_eq!(
            merge(dir, &r, Some("h:1".into()), Trust::Pin("sha256//a".into()), false).unwrap(),
            (Some("h:1".into()), r.trust.clone())
        );
        assert_eq!(merge(dir, &r, None, Trust::FirstUse, false).unwrap().1, r.trust, "a pinned key wins");
        let e = merge(dir, &r, Some("h:2".into()), Trust::Unset, false).unwrap_err();
        assert_eq!((e.what, e.given.as_str()), ("server", "h:2"));
        assert!(e.to_string().contains("h:1") && e.hint().contains("--switch-server"), "{e}");
        let e = merge(dir, &r, None, Trust::Pin("sha256//b".into()), false).unwrap_err();
        assert_eq!(e.what, "pin");
        let e = merge(dir, &r, None, Trust::Ca("/ca.pem".into()), false).unwrap_err();
        assert_eq!(e.what, "pin");
        let switched = merge(dir, &r, Some("h:2".into()), Trust::Pin("sha256//b".into()), true).unwrap();
        assert_eq!(switched, (Some("h:2".into()), Trust::Pin("sha256//b".into())));
        let empty = Remembered::default();
        let ca = std::env::temp_dir().join(format!("confab-remember-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "one CA").unwrap();
        let mut r =
            Remembered { server: None, trust: Trust::Ca(ca.clone()), ca_sha256: Some(file_sha256(&ca).unwrap()) };
        assert_eq!(merge(dir, &r, None, Trust::Unset, false).unwrap().1, Trust::Ca(ca.clone()));
        std::fs::write(&ca, "another CA").unwrap();
        let e = merge(dir, &r, None, Trust::Unset, false).unwrap_err();
        assert!(e.what == CA_CONTENTS && e.hint().contains("--switch-server"), "{e}");
        assert!(merge(dir, &r, None, Trust::Ca(ca.clone()), false).is_err(), "the same path given again");
        assert!(merge(dir, &r, None, Trust::Unset, true).is_ok(), "--switch-server takes the new contents");
        r.ca_sha256 = None;
        assert!(merge(dir, &r, None, Trust::Unset, false).is_ok(), "an older profile records the digest later");
        let pdir = std::env::temp_dir().join(format!("confab-remember-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pdir);
        {
            let profile = Profile::open(&pdir).unwrap();
            profile.set_meta("ca", &ca.display().to_string()).unwrap();
            assert_eq!(read(&pdir).unwrap().ca_sha256, None);
            record_missing_ca_digest(&profile, &Trust::Ca(ca.clone())).unwrap();
        }
        assert_eq!(read(&pdir).unwrap().ca_sha256, Some(file_sha256(&ca).unwrap()));
        let _ = std::fs::remove_dir_all(&pdir);
        let _ = std::fs::remove_file(&ca);
        assert_eq!(merge(dir, &empty, None, Trust::Unset, false).unwrap(), (None, Trust::Unset));
    }

    #[test]
    fn the_node_that_served_last_is_recorded_for_a_list_and_a_foreign_one_ignored() {
        let dir = std::env::temp_dir().join(format!("confab-remember-node-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let profile = Profile::open(&dir).unwrap();
        let list = "a:1,b:2,c:3";
        assert_eq!(last_node(&profile, list).unwrap(), None, "nothing recorded yet");
        assert!(record_last_node(&profile, list, "b:2").unwrap());
        assert_eq!(last_node(&profile, list).unwrap().as_deref(), Some("b:2"));
        assert_eq!(profile.meta(LAST_NODE).unwrap().as_deref(), Some("b:2"));
        assert!(!record_last_node(&profile, list, "b:2").unwrap(), "unchanged: not written again");
        // The same nodes in another order, with white space: the same node.
        assert_eq!(last_node(&profile, "c:3, b:2 ,a:1").unwrap().as_deref(), Some("b:2"));
        // A list without that node (it changed since), or a single address: ignored.
        assert_eq!(last_node(&profile, "a:1,c:3").unwrap(), None);
        assert_eq!(last_node(&profile, "b:2").unwrap(), None);
        // A node that is not in the list, or a single address: nothing written.
        assert!(!record_last_node(&profile, list, "d:4").unwrap());
        assert!(!record_last_node(&profile, "d:4", "d:4").unwrap());
        assert!(!record_last_node(&profile, list, "").unwrap());
        assert_eq!(profile.meta(LAST_NODE).unwrap().as_deref(), Some("b:2"));
        // A changed node is written over the old one.
        assert!(record_last_node(&profile, list, "c:3").unwrap());
        assert_eq!(last_node(&profile, list).unwrap().as_deref(), Some("c:3"));
        // A foreign value (not written by this client, or of another list): ignored.
        for foreign in ["x:9", "", "a:1,b:2", "B:2", " c:3", "ws://a:1"] {
            profile.set_meta(LAST_NODE, foreign).unwrap();
            assert_eq!(last_node(&profile, list).unwrap(), None, "{foreign:?}");
        }
        drop(profile);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_list_is_the_same_server_in_any_order_and_another_once_a_node_changes() {
        let dir = Path::new("/p");
        let r = Remembered { server: Some("a:1,b:2".into()), trust: Trust::Pin("sha256//a".into()), ca_sha256: None };
        assert_eq!(merge(dir, &r, None, Trust::Unset, false).unwrap().0.as_deref(), Some("a:1,b:2"));
        // Reordered: the same server, and the order given is the one used.
        assert_eq!(merge(dir, &r, Some("b:2,a:1".into()), Trust::Unset, false).unwrap().0.as_deref(), Some("b:2,a:1"));
        for other in ["a:1", "a:1,b:2,c:3", "a:1,c:3"] {
            let e = merge(dir, &r, Some(other.into()), Trust::Unset, false).unwrap_err();
            assert_eq!((e.what, e.remembered.as_str(), e.given.as_str()), ("server", "a:1,b:2", other));
            assert!(e.hint().contains("--switch-server") && e.hint().contains("gained or lost a node"), "{}", e.hint());
            let switched = merge(dir, &r, Some(other.into()), Trust::Unset, true).unwrap();
            assert_eq!(switched.0.as_deref(), Some(other), "--switch-server takes the new list");
        }
        // A single server keeps its hint as it was.
        let single = merge(dir, &remembered(), Some("h:2".into()), Trust::Unset, false).unwrap_err();
        assert!(!single.hint().contains("gained or lost"), "{}", single.hint());
    }
}
