//! The OIDC provider's JWK Set file, reread while the server runs so that
//! a key rotation is followed without a restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use confab_proto::{Now, Server};
use tracing::{info, warn};

/// The file, what it held when last read, and when to reread it.
#[derive(Debug)]
pub(super) struct JwksFile {
    path: PathBuf,
    /// Its bytes when last read (at start: what the configuration loaded).
    last: Vec<u8>,
    every: Duration,
    next: Instant,
}

impl JwksFile {
    /// `path`, whose content `loaded` the core already has, reread every `every` from `now`.
    pub(super) fn new(path: PathBuf, loaded: &[u8], every: Duration, now: Instant) -> JwksFile {
        JwksFile { path, last: loaded.to_vec(), every, next: now + every }
    }

    /// When the next reread is due.
    pub(super) fn next(&self) -> Instant {
        self.next
    }

    /// Rereads the file when due; a changed, usable document replaces the
    /// core's keys, anything else keeps them (and is logged).
    pub(super) fn reread_if_due(&mut self, now: Now, core: &mut Server) {
        if now.instant < self.next {
            return;
        }
        self.next = now.instant + self.every;
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                warn!(file = %self.path.display(), "cannot reread the OIDC JWK Set, keeping the keys in use: {e}");
                return;
            }
        };
        if bytes == self.last {
            return;
        }
        match core.set_oidc_jwks(now, &bytes) {
            Ok(keys) => info!(file = %self.path.display(), keys, "OIDC JWK Set reloaded"),
            Err(e) => {
                warn!(file = %self.path.display(), "the OIDC JWK Set file is unusable, keeping the keys in use: {e}");
            }
        }
        self.last = bytes;
    }
}
