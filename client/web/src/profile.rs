//! The profile bytes: everything a browser keeps across reloads, in one blob
//! the page encrypts (AES-GCM under a non-extractable WebCrypto key) before
//! it writes it to IndexedDB.
//!
//! JSON: `{"format": 1, "identity": base64(PKCS#8 DER), "state":
//! SecureSnapshot, "verified": {user: fingerprint}, "owner": user,
//! "locked": base64(at-rest blob), "sent": {peer: [{"text", "sent_ms"}]}}`. The identity key and the session state
//! are secret: the blob is never stored in the clear. `owner` is the account
//! this identity key was registered for, `locked` the key encrypted under
//! that account's password (`IdentityKey::encrypt_at_rest`, argon2id), both
//! absent until a registration or login of this device succeeded. `sent`
//! holds this user's own private messages, kept one hour after sending (as
//! received ones are kept one hour after receipt), so a reload shows both
//! sides of a conversation.
//!
//! After a logout the page keeps only the *key record*: `{"format": 1,
//! "kind": "locked", "owner": user, "locked": base64(at-rest blob)}`, from
//! which a login with the password brings the identity key back
//! ([`WebClient::unlock`](crate::WebClient::unlock)); nothing else of the
//! account stays in the browser.

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
    /// A key record (a logged-out account): log in to unlock it.
    #[error("{0} is logged out on this browser: log in to unlock the identity key")]
    Locked(String),
}

/// The stored form (owned, for reading).
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) format: u32,
    pub(crate) identity: String,
    pub(crate) state: SecureSnapshot,
    #[serde(default)]
    pub(crate) verified: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) locked: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) sent: BTreeMap<String, Vec<SentMp>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registering: Option<RegisteringStored>,
}

/// A registration sent and not answered yet, as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct RegisteringStored {
    pub(crate) owner: String,
    pub(crate) locked: String,
    pub(crate) request_id: u32,
}

/// A registration sent and not answered yet (or answered 409 after its
/// answer may have been lost): the key is this account's if a login as it
/// succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registering {
    pub(crate) owner: String,
    pub(crate) blob: Vec<u8>,
    pub(crate) request_id: u32,
    /// The connection was lost (or the page reloaded) after it was sent:
    /// a 409 to its resending may be the server remembering it.
    pub(crate) lost: bool,
}

/// A private message this user sent, as the page shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentMp {
    pub(crate) text: String,
    pub(crate) sent_ms: u64,
}

/// What the browser keeps besides the machine's snapshot.
#[derive(Default)]
pub(crate) struct Local {
    /// Contacts whose safety number this user compared, with the key
    /// fingerprint they compared it for.
    pub(crate) verified: BTreeMap<String, String>,
    /// Whose identity key this is, and the key under their password.
    pub(crate) lock: Option<Lock>,
    /// This user's own private messages by peer, for one hour.
    pub(crate) sent: BTreeMap<String, Vec<SentMp>>,
    /// A registration in flight, or one whose answer may have been lost.
    pub(crate) registering: Option<Registering>,
}

/// The key record kept after a logout.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) format: u32,
    pub(crate) kind: String,
    pub(crate) owner: String,
    pub(crate) locked: String,
}

/// The `kind` of a key record.
const LOCKED: &str = "locked";

/// The identity key's owner and its at-rest blob, as the profile keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) owner: String,
    /// The at-rest blob, if a login with the password succeeded here.
    pub(crate) blob: Option<Vec<u8>>,
}

/// Encodes a profile; the result is secret.
pub(crate) fn encode(identity_der: &[u8], state: SecureSnapshot, local: &Local) -> Zeroizing<Vec<u8>> {
    let lock = local.lock.as_ref();
    let stored = Stored {
        format: PROFILE_FORMAT,
        identity: STANDARD.encode(identity_der),
        state,
        verified: local.verified.clone(),
        owner: lock.map(|l| l.owner.clone()),
        locked: lock.and_then(|l| l.blob.as_deref()).map(|b| STANDARD.encode(b)),
        sent: local.sent.clone(),
        registering: local.registering.as_ref().map(|r| RegisteringStored {
            owner: r.owner.clone(),
            locked: STANDARD.encode(&r.blob),
            request_id: r.request_id,
        }),
    };
    let bytes = serde_json::to_vec(&stored).expect("a profile always serialises");
    // The base64 copy of the key inside `stored` is dropped here; wipe it.
    let mut identity = stored.identity;
    zeroize::Zeroize::zeroize(&mut identity);
    Zeroizing::new(bytes)
}

/// Encodes the key record of a logout (not secret beyond the password's
/// strength: the key in it is encrypted under the password).
pub(crate) fn encode_record(owner: &str, blob: &[u8]) -> Vec<u8> {
    let record = KeyRecord {
        format: PROFILE_FORMAT,
        kind: LOCKED.to_owned(),
        owner: owner.to_owned(),
        locked: STANDARD.encode(blob),
    };
    serde_json::to_vec(&record).expect("a key record always serialises")
}

/// The owner and at-rest blob of a key record, or `None` if `bytes` are
/// not one (a profile, or damaged).
pub(crate) fn decode_record(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    let record: KeyRecord = serde_json::from_slice(bytes).ok()?;
    if record.format != PROFILE_FORMAT || record.kind != LOCKED {
        return None;
    }
    let blob = STANDARD.decode(record.locked.as_bytes()).ok()?;
    Some((record.owner, blob))
}

/// A stored registration in flight, after a reload: its answer may be lost.
pub(crate) fn registering(stored: Option<RegisteringStored>) -> Option<Registering> {
    let r = stored?;
    let blob = STANDARD.decode(r.locked.as_bytes()).ok()?;
    Some(Registering { owner: r.owner, blob, request_id: r.request_id, lost: true })
}

/// Decodes profile bytes into the identity key's DER and the rest.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Stored), ProfileError> {
    if let Some((owner, _)) = decode_record(bytes) {
        return Err(ProfileError::Locked(owner));
    }
    let mut stored: Stored = serde_json::from_slice(bytes).map_err(|e| ProfileError::Damaged(e.to_string()))?;
    if stored.format != PROFILE_FORMAT {
        return Err(ProfileError::Format(stored.format));
    }
    let der = Zeroizing::new(STANDARD.decode(stored.identity.as_bytes()).map_err(|_| ProfileError::Identity)?);
    zeroize::Zeroize::zeroize(&mut stored.identity);
    Ok((der, stored))
}
