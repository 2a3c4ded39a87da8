//! The OIDC provider's JWK Set file, read again whenever the core asks for
//! the set, so that a key rotation is followed without a restart.
//!
//! The refresh policy (how often, and a refetch when a token names an
//! unknown `kid`, at most once per `jwks_min_interval`) is the core's
//! validator's: this only answers its requests.

use std::path::PathBuf;

use confab_proto::{Now, Server};
use tracing::{debug, info, warn};

/// The file, and what it held when last read.
#[derive(Debug)]
pub(super) struct JwksFile {
    path: PathBuf,
    /// Its bytes when last read (at start: what the configuration loaded).
    last: Vec<u8>,
}

impl JwksFile {
    /// `path`, whose content `loaded` the core already has.
    pub(super) fn new(path: PathBuf, loaded: &[u8]) -> JwksFile {
        JwksFile { path, last: loaded.to_vec() }
    }

    /// Answers the core's request for the JWK Set, if it has one: the file's
    /// content, or a failure when it cannot be read. A usable document
    /// replaces the core's keys, anything else keeps them (and is logged).
    pub(super) fn serve(&mut self, now: Now, core: &mut Server) {
        let Some(request) = core.poll_jwks_fetch(now) else {
            return;
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                warn!(file = %self.path.display(), "cannot read the OIDC JWK Set, keeping the keys in use: {e}");
                core.jwks_fetch_failed(now);
                return;
            }
        };
        match core.jwks_fetched(now, &bytes) {
            Ok(update) if bytes != self.last => {
                let (added, removed) = (update.added.len(), update.removed.len());
                info!(file = %self.path.display(), reason = ?request.reason, added, removed, "OIDC JWK Set reloaded");
            }
            Ok(_) => debug!(file = %self.path.display(), reason = ?request.reason, "OIDC JWK Set unchanged"),
            Err(e) => {
                warn!(file = %self.path.display(), "the OIDC JWK Set file is unusable, keeping the keys in use: {e}");
            }
        }
        self.last = bytes;
    }
}
