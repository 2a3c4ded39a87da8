//! The server a profile is for: its address and how it is trusted,
//! remembered at `register`/`login` so that later commands in that profile
//! need neither `--server`/`CONFAB_SERVER` nor `--pin`/`CONFAB_PIN`.
//!
//! | profile `meta` key | holds |
//! | --- | --- |
//! | `server` | `HOST:PORT` |
//! | `pin` | the pinned key (`sha256//...`), or |
//! | `ca` | the path of the PEM file trusted instead |
//!
//! A command given another server, pin or CA than the profile remembers is
//! refused ([`Mismatch`]), never switched silently: a changed pin is exactly
//! what a machine in the middle looks like. `--switch-server` says the
//! change is wanted (the server moved, or its operator replaced its key); the
//! new values are recorded once a session is open with them.
//!
//! Without `--profile`, the default profile directory is found from the
//! server (`<data>/confab/<user>@<host:port>`), so the server of the last
//! `register`/`login` is remembered too, in `<data>/confab/last-server`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::connect::Trust;
use crate::profile::{self, Profile, ProfileError};

/// What a profile remembers about its server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    /// `HOST:PORT`.
    pub server: Option<String>,
    /// `Trust::Pin` or `Trust::Ca` (`Unset`: nothing remembered).
    pub trust: Trust,
}

/// A server or trust other than the remembered one, without `--switch-server`.
#[derive(Debug, thiserror::Error)]
#[error("the profile at {} is for {what} {remembered}, not {given}: refusing to switch silently", .dir.display())]
pub struct Mismatch {
    /// `server`, `pin` or `CA file`.
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
            _ => "--pin/CONFAB_PIN and --ca",
        };
        format!(
            "leave {flag} unset (the profile remembers them), or, if the server really moved or its operator replaced its key (compare the new pin with DATA/server.pin), add --switch-server to record the new value"
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
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
    Ok(Remembered { server: meta("server")?, trust })
}

/// The server and trust a command uses: the given ones (flags or
/// environment) where given, else the remembered ones. A given value that
/// differs from a remembered one is refused unless `switch`.
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
            && r != g
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
        }
        Trust::Ca(path) => {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            profile.set_meta("ca", &path.display().to_string())?;
            profile.delete_meta("pin")?;
        }
        Trust::Unset | Trust::FirstUse => {}
    }
    Ok(())
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

    fn remembered() -> Remembered {
        Remembered { server: Some("h:1".into()), trust: Trust::Pin("sha256//a".into()) }
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
        assert_eq!(merge(dir, &empty, None, Trust::Unset, false).unwrap(), (None, Trust::Unset));
    }
}
