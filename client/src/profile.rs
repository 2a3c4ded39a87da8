//! The profile: one SQLite file per user and server, holding everything a
//! client must remember between runs.
//!
//! Created `0600` in a `0700` directory (seed 001's restricted folder),
//! with `secure_delete` on so erased rows are overwritten on disk.
//!
//! | table | holds |
//! | --- | --- |
//! | `meta` | `schema_version`, `owner` (the one user this profile is for, kept across logout), `username` (while logged in), `refresh_token`, `next_request_id`; the server, its trust and, for a list of nodes, the node that served last ([`crate::remember`]) |
//! | `identity` | the identity key: `at_rest` (encrypted under the account password, [`IdentityKey::encrypt_at_rest`]) and `session` (PKCS#8, protected by file permissions only, present while logged in; see docs/SECURITY.md) |
//! | `contacts` | the contact book: pinned identity keys, fingerprint, a changed key awaiting acceptance |
//! | `outbox` | requests not answered yet, as their exact frames (re-sent with the same id after a restart) |
//! | `pending` | what each unanswered send is (command, peer or room, SHA-256 of the text), for `confab outbox` and so that re-running it does not send it twice |
//! | `received` | received MPs with `expires_ms` = receipt + 1 h; expired rows are deleted |
//! | `expired` | per peer, how many received MPs expired since `dm read` last said so |
//! | `state` | the rest of the [`SecureSnapshot`] as JSON: MP stream keys and what was accepted on them, room descriptors and secrets, replay memories, handshakes in flight (no sending epoch or counter: a new process seals in a new epoch) |
//!
//! [`Profile::save`] writes a whole snapshot in one transaction; the session
//! loop calls it before writing any frame the snapshot describes.
//!
//! [`IdentityKey::encrypt_at_rest`]: confab_proto::e2e::IdentityKey::encrypt_at_rest

mod expired;
mod pending;

pub use pending::PendingSend;

use std::path::{Path, PathBuf};

use confab_proto::client::OutboxSnapshot;
use confab_proto::e2e::PublicIdentity;
use confab_proto::e2e::secure::{ContactSnapshot, ReceivedMp, SecureSnapshot};
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

/// The schema this build writes (and the only one it reads).
/// Version 2: the end-to-end format of sealed messages and rooms changed
/// (sender epochs, room descriptors); a version 1 profile's sessions and
/// room keys cannot be carried over.
pub const SCHEMA_VERSION: i64 = 2;
/// The file name inside a profile directory.
pub const FILE_NAME: &str = "profile.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity (id INTEGER PRIMARY KEY CHECK (id = 1), public BLOB NOT NULL,
    at_rest BLOB NOT NULL, session BLOB);
CREATE TABLE IF NOT EXISTS contacts (user TEXT PRIMARY KEY, pinned BLOB NOT NULL, fingerprint TEXT NOT NULL,
    presented BLOB);
CREATE TABLE IF NOT EXISTS outbox (request_id INTEGER PRIMARY KEY, opcode INTEGER NOT NULL, frame BLOB NOT NULL,
    written INTEGER NOT NULL, ack INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS received (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, text TEXT NOT NULL,
    received_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), snapshot TEXT NOT NULL);
";

/// Why the profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The directory or file could not be created or given its permissions.
    #[error("cannot prepare the profile at {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused (corrupt file, disk full, locked).
    #[error("profile database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// A different schema version: a newer `confab` wrote it, or an older
    /// one whose end-to-end sessions cannot be carried over.
    #[error(
        "the profile has schema version {found}, this confab reads version {SCHEMA_VERSION}{}",
        if *found < SCHEMA_VERSION {
            " (an older confab wrote it: its sessions and room keys use an end-to-end format this version no longer reads; move the profile directory aside and log in again)"
        } else {
            " (a newer confab wrote it)"
        }
    )]
    Schema {
        /// The version found.
        found: i64,
    },
    /// Another `confab` process (a `listen`?) holds this profile.
    #[error("another confab process is using the profile at {0}")]
    Busy(PathBuf),
    /// Stored state that does not parse.
    #[error("the stored state is damaged: {0}")]
    Damaged(String),
}

/// An open profile.
#[derive(Debug)]
pub struct Profile {
    conn: Connection,
    dir: PathBuf,
    /// Held (locked) while the profile is open: one process per profile, or
    /// two would rotate the refresh token behind each other's back.
    _lock: std::fs::File,
    /// Checkpoints are skipped until the client holds a session
    /// ([`Profile::hold_until_logged_in`]): a `login` that fails writes nothing.
    hold: bool,
}

/// The identity key as stored.
#[derive(Debug)]
pub struct StoredIdentity {
    /// The public key (SPKI DER).
    pub public: Vec<u8>,
    /// The private key encrypted under the password.
    pub at_rest: Vec<u8>,
    /// The private key (PKCS#8) while logged in.
    pub session: Option<Zeroizing<Vec<u8>>>,
}

impl Profile {
    /// Opens (creating it if needed) the profile in `dir`.
    pub fn open(dir: &Path) -> Result<Profile, ProfileError> {
        let io = |source| ProfileError::Io { path: dir.to_owned(), source };
        create_private_dir(dir).map_err(io)?;
        let lock_path = dir.join("lock");
        create_private_file(&lock_path).map_err(|source| ProfileError::Io { path: lock_path.clone(), source })?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .open(&lock_path)
            .map_err(|source| ProfileError::Io { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(ProfileError::Busy(dir.to_owned())),
            Err(std::fs::TryLockError::Error(source)) => return Err(ProfileError::Io { path: lock_path, source }),
        }
        let path = dir.join(FILE_NAME);
        create_private_file(&path).map_err(|source| ProfileError::Io { path: path.clone(), source })?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(pending::SCHEMA)?;
        conn.execute_batch(expired::SCHEMA)?;
        let profile = Profile { conn, dir: dir.to_owned(), _lock: lock, hold: false };
        match profile.meta("schema_version")? {
            None => profile.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) => {
                let found = v.parse().unwrap_or(-1);
                if found != SCHEMA_VERSION {
                    return Err(ProfileError::Schema { found });
                }
            }
        }
        Ok(profile)
    }

    /// The profile's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now on, checkpoints of a client without a session write nothing:
    /// the profile keeps what it held until a login succeeds, so a refused
    /// login (401, 429), one without an answer, or one cut short changes
    /// nothing. The first checkpoint with a session writes the whole state.
    pub fn hold_until_logged_in(&mut self) {
        self.hold = true;
    }

    /// Whether a checkpoint of a client in this state is written (see
    /// [`Profile::hold_until_logged_in`]).
    #[must_use]
    pub fn writes_checkpoint(&self, logged_in: bool) -> bool {
        !self.hold || logged_in
    }

    /// The user this profile belongs to: set by the first `register` or
    /// `login` in it and kept across `logout` (a profile holds one user's
    /// identity key, contacts and sessions; another user needs another profile).
    pub fn owner(&self) -> Result<Option<String>, ProfileError> {
        match self.meta("owner")? {
            Some(owner) => Ok(Some(owner)),
            None => self.meta("username"),
        }
    }

    /// A `meta` value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, ProfileError> {
        let value = self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        Ok(value)
    }

    /// Sets a `meta` value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), ProfileError> {
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, value])?;
        Ok(())
    }

    /// Deletes a `meta` value.
    pub fn delete_meta(&self, key: &str) -> Result<(), ProfileError> {
        self.conn.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// The stored identity key, if any.
    pub fn identity(&self) -> Result<Option<StoredIdentity>, ProfileError> {
        let row = self
            .conn
            .query_row("SELECT public, at_rest, session FROM identity WHERE id = 1", [], |r| {
                Ok(StoredIdentity {
                    public: r.get(0)?,
                    at_rest: r.get(1)?,
                    session: r.get::<_, Option<Vec<u8>>>(2)?.map(Zeroizing::new),
                })
            })
            .optional()?;
        Ok(row)
    }

    /// Stores the identity key: encrypted under the password, and the session copy.
    pub fn set_identity(&self, public: &[u8], at_rest: &[u8], session: Option<&[u8]>) -> Result<(), ProfileError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO identity (id, public, at_rest, session) VALUES (1, ?1, ?2, ?3)",
            params![public, at_rest, session],
        )?;
        Ok(())
    }

    /// Forgets the identity key (a registration the server refused).
    pub fn delete_identity(&self) -> Result<(), ProfileError> {
        self.conn.execute("DELETE FROM identity", [])?;
        Ok(())
    }

    /// The stored snapshot (`None`: nothing stored yet, or logged out).
    /// Received MPs past their expiry at `now_ms` are deleted first.
    pub fn load(&self, now_ms: u64) -> Result<Option<SecureSnapshot>, ProfileError> {
        self.purge_expired(now_ms)?;
        let Some(json) =
            self.conn.query_row("SELECT snapshot FROM state WHERE id = 1", [], |r| r.get::<_, String>(0)).optional()?
        else {
            return Ok(None);
        };
        let json = Zeroizing::new(json);
        let mut snapshot: SecureSnapshot =
            serde_json::from_str(&json).map_err(|e| ProfileError::Damaged(e.to_string()))?;
        snapshot.contacts = self.contacts()?;
        snapshot.client.outbox = self.outbox()?;
        snapshot.client.refresh_token = self.meta("refresh_token")?;
        snapshot.client.retry_key = match self.meta("retry_key")? {
            None => None,
            Some(text) => Some(
                hex::decode(text.as_bytes())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| ProfileError::Damaged("the stored retry key is not 32 bytes of hex".into()))?,
            ),
        };
        snapshot.client.retry_attempt = match self.meta("retry_attempt")? {
            None => 0,
            Some(n) => n.parse().map_err(|_| ProfileError::Damaged(format!("the stored retry attempt {n:?}")))?,
        };
        snapshot.client.username = self.meta("username")?;
        snapshot.inbox = self.received(None)?;
        Ok(Some(snapshot))
    }

    /// Replaces the stored state with `snapshot`, in one transaction.
    pub fn save(&mut self, snapshot: &SecureSnapshot) -> Result<(), ProfileError> {
        let tx = self.conn.transaction()?;
        // The JSON part holds what has no table of its own.
        let mut rest = snapshot.clone();
        rest.client.username = None;
        rest.client.refresh_token = None;
        rest.client.retry_key = None;
        rest.client.retry_attempt = 0;
        rest.client.outbox.clear();
        rest.contacts.clear();
        rest.inbox.clear();
        let json = Zeroizing::new(serde_json::to_string(&rest).map_err(|e| ProfileError::Damaged(e.to_string()))?);
        tx.execute("INSERT OR REPLACE INTO state (id, snapshot) VALUES (1, ?1)", [json.as_str()])?;
        tx.execute("DELETE FROM contacts", [])?;
        for c in &snapshot.contacts {
            let fingerprint = PublicIdentity::from_spki_der(&c.pinned).map(|k| k.fingerprint().to_string());
            tx.execute(
                "INSERT INTO contacts (user, pinned, fingerprint, presented) VALUES (?1, ?2, ?3, ?4)",
                params![c.user, c.pinned, fingerprint.unwrap_or_default(), c.presented],
            )?;
        }
        tx.execute("DELETE FROM outbox", [])?;
        for o in &snapshot.client.outbox {
            tx.execute(
                "INSERT INTO outbox (request_id, opcode, frame, written, ack) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![o.request_id, o.opcode, o.frame, o.written, o.ack],
            )?;
        }
        expired::count_dropped(&tx, &snapshot.inbox)?;
        tx.execute("DELETE FROM received", [])?;
        for m in &snapshot.inbox {
            tx.execute(
                "INSERT INTO received (peer, text, received_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![m.from, m.text, to_i64(m.received_ms), to_i64(m.expires_ms)],
            )?;
        }
        let next_id = snapshot.client.next_request_id.map(|n| n.to_string());
        let retry_key = Zeroizing::new(snapshot.client.retry_key.map(hex::encode));
        let retry_attempt = snapshot.client.retry_key.map(|_| snapshot.client.retry_attempt.to_string());
        for (key, value) in [
            ("refresh_token", &snapshot.client.refresh_token),
            ("retry_key", &*retry_key),
            ("retry_attempt", &retry_attempt),
            ("username", &snapshot.client.username),
            // Kept across logout: request ids must never repeat for a user.
            ("next_request_id", &next_id),
        ] {
            match value {
                Some(v) => tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, v])?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [key])?,
            };
        }
        tx.commit()?;
        Ok(())
    }

    /// The contact book.
    pub fn contacts(&self) -> Result<Vec<ContactSnapshot>, ProfileError> {
        let mut stmt = self.conn.prepare("SELECT user, pinned, presented FROM contacts ORDER BY user")?;
        let rows =
            stmt.query_map([], |r| Ok(ContactSnapshot { user: r.get(0)?, pinned: r.get(1)?, presented: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxSnapshot>, ProfileError> {
        let mut stmt =
            self.conn.prepare("SELECT request_id, opcode, frame, written, ack FROM outbox ORDER BY request_id")?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxSnapshot {
                request_id: r.get(0)?,
                opcode: r.get(1)?,
                frame: r.get(2)?,
                written: r.get(3)?,
                ack: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Received MPs still held (from `peer`, or everyone), oldest first.
    pub fn received(&self, peer: Option<&str>) -> Result<Vec<ReceivedMp>, ProfileError> {
        let mut stmt = self.conn.prepare(
            "SELECT peer, text, received_ms, expires_ms FROM received WHERE ?1 IS NULL OR peer = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([peer], |r| {
            Ok(ReceivedMp {
                from: r.get(0)?,
                text: r.get(1)?,
                received_ms: r.get::<_, i64>(2)?.max(0) as u64,
                expires_ms: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Logout: erases every secret but the password-encrypted identity key
    /// (the refresh token, the session copy of the key, MP and room keys,
    /// handshakes, the outbox and received MPs). The contact book stays: pinned
    /// keys are not secret, and keeping them is what detects a changed key later.
    pub fn erase_secrets(&mut self) -> Result<(), ProfileError> {
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE identity SET session = NULL", [])?;
        tx.execute("DELETE FROM meta WHERE key IN ('refresh_token', 'retry_key', 'retry_attempt', 'username')", [])?;
        for table in ["state", "outbox", "received", "pending", "expired"] {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        tx.commit()?;
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Creates `dir` (and parents) and makes it `0700`.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates `path` if missing, `0600` from the start, and makes it `0600` if it existed.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options.open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    options.open(path)?;
    Ok(())
}

/// Whether a profile was ever created in `dir`.
#[must_use]
pub fn exists(dir: &Path) -> bool {
    dir.join(FILE_NAME).is_file()
}

/// The user's data directory: `$XDG_DATA_HOME`, else `$HOME/.local/share`.
#[must_use]
pub fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local/share")),
    }
}

/// `<base>/confab/<user>@<host_port>` (`:` kept; `/` and `\` replaced).
///
/// A list of nodes (`HOST:PORT,HOST:PORT`, see [`crate::connect::server_list`])
/// names its directory after [`server_key`]:
/// `<user>@<first node>+<how many more>-<digest>`, for example
/// `alice@a.example:7700+2-3f9c0e1a22b4`, where the first node and the
/// digest are those of the nodes in sorted order: the same nodes in another
/// order are the same server, and the same directory; the name stays short
/// (`confab listen` binds a Unix socket in the directory, whose path may
/// not exceed 107 bytes). Adding or removing a node makes another server
/// string, so another directory (as for a server that moved): `--profile`
/// with the old directory and `--switch-server` carry a profile over.
#[must_use]
pub fn profile_dir(base: &Path, user: &str, server: &str) -> PathBuf {
    base.join("confab").join(format!("{user}@{}", server_key(server)))
}

/// The file that names the user of the last `login`/`register` against `server`.
fn last_user_file(base: &Path, server: &str) -> PathBuf {
    base.join("confab").join(format!("last-user@{}", server_key(server)))
}

/// The server's part of a profile's file names: one address as it is,
/// sanitized (`/`, `\` and control characters replaced); a list of nodes,
/// `<first node>+<more>-<12 hex digits>`: the first of its nodes in sorted
/// order, how many others there are, and the start of the SHA-256 of the
/// sorted nodes joined by commas.
#[must_use]
pub fn server_key(server: &str) -> String {
    let mut nodes: Vec<&str> = crate::connect::split_servers(server).collect();
    if nodes.len() == 1 {
        return sanitize(nodes[0]);
    }
    nodes.sort_unstable();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(nodes.join(",").as_bytes()));
    format!("{}+{}-{}", sanitize(nodes[0]), nodes.len() - 1, &digest[..12])
}

/// The user of the last `login`/`register` against `server`.
#[must_use]
pub fn last_user(base: &Path, server: &str) -> Option<String> {
    let text = std::fs::read_to_string(last_user_file(base, server)).ok()?;
    let user = text.trim();
    (!user.is_empty()).then(|| user.to_owned())
}

/// Records `user` as the last to log in against `server`.
pub fn set_last_user(base: &Path, server: &str, user: &str) -> std::io::Result<()> {
    create_private_dir(&base.join("confab"))?;
    std::fs::write(last_user_file(base, server), format!("{user}\n"))
}

fn sanitize(server: &str) -> String {
    server.chars().map(|c| if matches!(c, '/' | '\\') || c.is_control() { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::e2e::secure::ReceivedMp;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("confab-profile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn snapshots_round_trip_and_expired_mps_are_purged() {
        let dir = temp("roundtrip");
        let mut profile = Profile::open(&dir).unwrap();
        assert!(profile.load(0).unwrap().is_none());
        let mut snapshot = SecureSnapshot::default();
        snapshot.client.username = Some("alice".into());
        snapshot.client.refresh_token = Some("cfr_token".into());
        snapshot.client.retry_key = Some([7; 32]);
        snapshot.client.retry_attempt = 3;
        snapshot.client.next_request_id = Some(42);
        snapshot.client.seen_peers = vec![("bob".into(), 7)];
        snapshot.inbox = vec![
            ReceivedMp { from: "bob".into(), text: "old".into(), received_ms: 0, expires_ms: 1000 },
            ReceivedMp { from: "bob".into(), text: "new".into(), received_ms: 500, expires_ms: 5000 },
        ];
        profile.save(&snapshot).unwrap();
        drop(profile);
        let profile = Profile::open(&dir).unwrap();
        let loaded = profile.load(2000).unwrap().unwrap();
        assert_eq!(loaded.client, snapshot.client);
        assert_eq!(loaded.inbox.len(), 1);
        assert_eq!(loaded.inbox[0].text, "new");
        assert_eq!(profile.received(Some("bob")).unwrap().len(), 1);
        // The retry key lives in `meta` with the token; a damaged one is said so.
        profile.set_meta("retry_key", "not hex").unwrap();
        assert!(matches!(profile.load(2000), Err(ProfileError::Damaged(m)) if m.contains("retry key")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_schema_version_and_damaged_state_are_refused() {
        let dir = temp("schema");
        let profile = Profile::open(&dir).unwrap();
        profile.set_meta("schema_version", "99").unwrap();
        drop(profile);
        assert!(matches!(Profile::open(&dir), Err(ProfileError::Schema { found: 99 })));
        // A profile of the previous end-to-end format is refused with advice.
        {
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'", []).unwrap();
        }
        let Err(old) = Profile::open(&dir) else { panic!("a version 1 profile is refused") };
        assert!(matches!(old, ProfileError::Schema { found: 1 }));
        assert!(old.to_string().contains("log in again"), "{old}");
        let profile = {
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", []).unwrap();
            conn.execute("INSERT INTO state (id, snapshot) VALUES (1, 'not json')", []).unwrap();
            drop(conn);
            Profile::open(&dir).unwrap()
        };
        assert!(matches!(profile.load(0), Err(ProfileError::Damaged(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_paths() {
        let base = Path::new("/data");
        assert_eq!(profile_dir(base, "alice", "host:7700"), Path::new("/data/confab/alice@host:7700"));
        assert_eq!(profile_dir(base, "alice", "a/b:1"), Path::new("/data/confab/alice@a_b:1"));
        // A list: named by its first node in sorted order, how many more, and a digest of all.
        let list = profile_dir(base, "alice", "b.example:7700,a.example:7700");
        let name = list.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("alice@a.example:7700+1-") && name.len() == "alice@a.example:7700+1-".len() + 12,
            "{name}"
        );
        assert_eq!(profile_dir(base, "alice", "a.example:7700, b.example:7700"), list, "the order does not matter");
        assert_ne!(profile_dir(base, "alice", "a.example:7700,c.example:7700"), list, "another node");
        assert_ne!(profile_dir(base, "alice", "a.example:7700,b.example:7700,c.example:7700"), list, "one more");
        let ws = server_key("wss://b:443/confab,wss://a:443/confab");
        assert!(ws.starts_with("wss:__a:443_confab+1-"), "{ws}");
        // However many nodes, the name stays short.
        let nodes: Vec<String> = (0..12).map(|i| format!("node-{i}.chat.example.org:7700")).collect();
        let long = server_key(&nodes.join(","));
        assert!(long.starts_with("node-0.chat.example.org:7700+11-") && long.len() < 50, "{long}");
        assert_eq!(server_key("h:1"), "h:1");
        let dir = temp("last");
        assert_eq!(last_user(&dir, "h:1"), None);
        set_last_user(&dir, "h:1", "bob").unwrap();
        assert_eq!(last_user(&dir, "h:1").as_deref(), Some("bob"));
        assert_eq!(last_user(&dir, "h:2"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
