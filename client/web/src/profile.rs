//! The profile bytes: everything a browser keeps across reloads, in one blob
//! the page encrypts (AES-GCM under a non-extractable WebCrypto key) before
//! it writes it to IndexedDB.
//!
//! JSON: `{"format": 1, "identity": base64(PKCS#8 DER), "state":
//! SecureSnapshot, "verified": {user: fingerprint}}`. The identity key and
//! the session state are secret: the blob is never stored in the clear.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use confab_proto::e2e::secure::SecureSnapshot;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The version of the profile bytes this crate writes and reads.
pub const PROFILE_FORMAT: u32 = 1;

/// Why profile bytes did not give back a client.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not the JSON of a profile.
    #[error("damaged profile: {0}")]
    Damaged(String),
    /// Written by another version of this client.
    #[error("profile format {0} is not supported (this client reads format {PROFILE_FORMAT})")]
    Format(u32),
    /// The identity key in it did not load.
    #[error("damaged identity key in the profile")]
    Identity,
    /// The machine state in it did not restore.
    #[error("damaged profile state: {0}")]
    State(String),
}

/// The stored form (owned, for reading).
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) format: u32,
    pub(crate) identity: String,
    pub(crate) state: SecureSnapshot,
    #[serde(default)]
    pub(crate) verified: BTreeMap<String, String>,
}

/// Encodes a profile; the result is secret.
pub(crate) fn encode(
    identity_der: &[u8],
    state: SecureSnapshot,
    verified: &BTreeMap<String, String>,
) -> Zeroizing<Vec<u8>> {
    let stored =
        Stored { format: PROFILE_FORMAT, identity: STANDARD.encode(identity_der), state, verified: verified.clone() };
    let bytes = serde_json::to_vec(&stored).expect("a profile always serialises");
    // The base64 copy of the key inside `stored` is dropped here; wipe it.
    let mut identity = stored.identity;
    zeroize::Zeroize::zeroize(&mut identity);
    Zeroizing::new(bytes)
}

/// Decodes profile bytes into the identity key's DER and the rest.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Stored), ProfileError> {
    let mut stored: Stored = serde_json::from_slice(bytes).map_err(|e| ProfileError::Damaged(e.to_string()))?;
    if stored.format != PROFILE_FORMAT {
        return Err(ProfileError::Format(stored.format));
    }
    let der = Zeroizing::new(STANDARD.decode(stored.identity.as_bytes()).map_err(|_| ProfileError::Identity)?);
    zeroize::Zeroize::zeroize(&mut stored.identity);
    Ok((der, stored))
}
