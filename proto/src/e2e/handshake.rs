//! The forward-secret MP handshake: signed ephemeral P-256 keys, ECDH, HKDF.
//!
//! Seed 001's request/accept and seed 002's key exchange, made forward
//! secret: the requester ("A") and the accepter ("B") each create an
//! ephemeral P-256 key for this conversation only and sign it with their
//! identity key. Both derive the session keys from the ECDH of the two
//! ephemeral keys; once the ephemeral secrets are dropped, a later theft of
//! an identity key does not decrypt the conversation.
//!
//! # Blob layout
//!
//! The request (A to B) and the acceptance (B to A) have the same layout;
//! it is what goes into `request_mp` / `accept_mp`'s `handshake` field
//! (opaque to the server):
//!
//! ```text
//! offset  size  field
//! 0       1     version = HANDSHAKE_VERSION (1)
//! 1       65    ephemeral P-256 public key, SEC1 uncompressed (0x04 | x | y)
//! 66      256   RSA-PSS-SHA256 signature (salt 32) by the sender's identity key
//! ```
//!
//! Exactly [`HANDSHAKE_LEN`] (322) bytes. The signed messages (`lp(x)` =
//! `len u64 | x`, big-endian):
//!
//! ```text
//! request: "confab mp request v1" | lp(A) | lp(B) | version | E_A
//! accept:  "confab mp accept v1"  | lp(A) | lp(B) | version | E_A | E_B
//! ```
//!
//! The acceptance also signs the requester's ephemeral key, so it answers
//! that request and no other. The labels differ, so a request can never pass
//! for an acceptance.
//!
//! # Session keys
//!
//! ```text
//! ikm  = ECDH(e_A, E_B) = ECDH(e_B, E_A)         (x coordinate, 32 bytes)
//! salt = SHA-256("confab mp session v1" | lp(A) | lp(B)
//!                | SHA-256(SPKI_A) | SHA-256(SPKI_B) | E_A | E_B)
//! keys = HKDF-SHA256(salt, ikm), expanded with `confab v2 mp a->b` and
//!        `confab v2 mp b->a` (`kdf`): one 32-byte stream key per direction,
//!        sealed under with a fresh random epoch per sending session (`seal`)
//! ```
//!
//! A server that swaps an ephemeral key cannot sign the swapped key with the
//! victim's identity key, so verification fails; a server that swaps the
//! identity key itself is caught by key pinning and safety numbers.

use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::identity::{Fingerprint, IdentityKey, PublicIdentity, SIGNATURE_LEN, SignError, VerifyError};
use super::kdf::{Direction, KeySchedule, Purpose};
use super::seal::{ConversationId, OpenError, Opened, Opener, SealError, Sealer, StreamKey};

/// Version byte of a handshake blob.
pub const HANDSHAKE_VERSION: u8 = 1;
/// Bytes of an uncompressed SEC1 P-256 point.
pub const EPHEMERAL_LEN: usize = 65;
/// Bytes of a handshake blob.
pub const HANDSHAKE_LEN: usize = 1 + EPHEMERAL_LEN + SIGNATURE_LEN;

const REQUEST_LABEL: &[u8] = b"confab mp request v1";
const ACCEPT_LABEL: &[u8] = b"confab mp accept v1";
const SESSION_LABEL: &[u8] = b"confab mp session v1";

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not [`HANDSHAKE_LEN`] bytes.
    #[error("handshake blob has {len} bytes, {HANDSHAKE_LEN} expected")]
    WrongLength {
        /// The blob's length.
        len: usize,
    },
    /// A version byte this code does not know.
    #[error("unknown handshake version {0}")]
    UnknownVersion(u8),
    /// The ephemeral key is not an uncompressed point of P-256.
    #[error("invalid ephemeral key")]
    BadEphemeralKey,
    /// The signature is not the peer identity key's over this handshake:
    /// the blob was altered, or it is not from the expected user.
    #[error("handshake signature rejected")]
    BadSignature,
    /// Our own signature failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl From<VerifyError> for HandshakeError {
    fn from(_: VerifyError) -> Self {
        Self::BadSignature
    }
}

/// Why saved [`MpRequest`] bytes could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed saved MP request")]
pub struct RestoreError;

/// The role of a user in an MP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent the request ("A").
    Requester,
    /// Accepted it ("B").
    Accepter,
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn signed_request(requester: &str, accepter: &str, e_a: &[u8]) -> Vec<u8> {
    let mut m = REQUEST_LABEL.to_vec();
    put_field(&mut m, requester.as_bytes());
    put_field(&mut m, accepter.as_bytes());
    m.push(HANDSHAKE_VERSION);
    m.extend_from_slice(e_a);
    m
}

fn signed_accept(requester: &str, accepter: &str, e_a: &[u8], e_b: &[u8]) -> Vec<u8> {
    let mut m = ACCEPT_LABEL.to_vec();
    put_field(&mut m, requester.as_bytes());
    put_field(&mut m, accepter.as_bytes());
    m.push(HANDSHAKE_VERSION);
    m.extend_from_slice(e_a);
    m.extend_from_slice(e_b);
    m
}

fn ephemeral_bytes(public: &PublicKey) -> [u8; EPHEMERAL_LEN] {
    let mut out = [0u8; EPHEMERAL_LEN];
    out.copy_from_slice(public.as_affine().to_sec1_point(false).as_bytes());
    out
}

fn blob(ephemeral: &[u8; EPHEMERAL_LEN], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HANDSHAKE_LEN);
    out.push(HANDSHAKE_VERSION);
    out.extend_from_slice(ephemeral);
    out.extend_from_slice(signature);
    out
}

/// Splits a blob into its ephemeral key (parsed) and signature.
fn parse(blob: &[u8]) -> Result<(PublicKey, [u8; EPHEMERAL_LEN], &[u8]), HandshakeError> {
    if blob.len() != HANDSHAKE_LEN {
        return Err(HandshakeError::WrongLength { len: blob.len() });
    }
    if blob[0] != HANDSHAKE_VERSION {
        return Err(HandshakeError::UnknownVersion(blob[0]));
    }
    let mut raw = [0u8; EPHEMERAL_LEN];
    raw.copy_from_slice(&blob[1..1 + EPHEMERAL_LEN]);
    if raw[0] != 0x04 {
        return Err(HandshakeError::BadEphemeralKey);
    }
    let key = PublicKey::from_sec1_bytes(&raw).map_err(|_| HandshakeError::BadEphemeralKey)?;
    Ok((key, raw, &blob[1 + EPHEMERAL_LEN..]))
}

/// P-256 ECDH: the x coordinate of `secret · peer` (the peer key is any
/// valid SEC1 encoding; it is checked to be on the curve and not the
/// identity).
pub(crate) fn ecdh(secret: &SecretKey, peer_sec1: &[u8]) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let peer = PublicKey::from_sec1_bytes(peer_sec1).map_err(|_| HandshakeError::BadEphemeralKey)?;
    Ok(shared(secret, &peer))
}

fn shared(secret: &SecretKey, peer: &PublicKey) -> Zeroizing<[u8; 32]> {
    let shared = secret.diffie_hellman(peer);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes());
    out
}

/// Everything both sides know once both blobs are verified.
struct Transcript<'a> {
    requester: &'a str,
    accepter: &'a str,
    fp_a: Fingerprint,
    fp_b: Fingerprint,
    e_a: &'a [u8; EPHEMERAL_LEN],
    e_b: &'a [u8; EPHEMERAL_LEN],
}

impl Transcript<'_> {
    fn schedule(&self, ikm: &[u8; 32]) -> KeySchedule {
        let mut salt = SESSION_LABEL.to_vec();
        put_field(&mut salt, self.requester.as_bytes());
        put_field(&mut salt, self.accepter.as_bytes());
        salt.extend_from_slice(&self.fp_a.0);
        salt.extend_from_slice(&self.fp_b.0);
        salt.extend_from_slice(self.e_a);
        salt.extend_from_slice(self.e_b);
        KeySchedule::new(&Sha256::digest(&salt), ikm)
    }

    fn session(&self, ikm: &[u8; 32], role: Role, rng: &mut impl rand::CryptoRng) -> MpSession {
        let schedule = self.schedule(ikm);
        let a_to_b = schedule.stream_key(Purpose::Mp(Direction::AToB));
        let b_to_a = schedule.stream_key(Purpose::Mp(Direction::BToA));
        let (me, peer, send, recv) = match role {
            Role::Requester => (self.requester, self.accepter, a_to_b, b_to_a),
            Role::Accepter => (self.accepter, self.requester, b_to_a, a_to_b),
        };
        MpSession::resume(me, peer, role, send, Opener::new(recv), rng)
    }
}

/// The requester's side of a handshake in flight: keep it (and its
/// ephemeral secret) until the acceptance arrives, which may be long after
/// if the peer was offline. Drop it to forget the secret.
pub struct MpRequest {
    secret: SecretKey,
    ephemeral: [u8; EPHEMERAL_LEN],
    requester: String,
    accepter: String,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for MpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpRequest").field("requester", &self.requester).field("accepter", &self.accepter).finish()
    }
}

impl MpRequest {
    /// Starts a handshake from `requester` (whose identity key is
    /// `identity`) to `accepter`. Returns the pending state and the blob for
    /// `request_mp`.
    pub fn new(
        rng: &mut impl rand::CryptoRng,
        identity: &IdentityKey,
        requester: &str,
        accepter: &str,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let secret = SecretKey::generate_from_rng(rng);
        let ephemeral = ephemeral_bytes(&secret.public_key());
        let signature = identity.sign(rng, &signed_request(requester, accepter, &ephemeral))?;
        let request = Self {
            secret,
            ephemeral,
            requester: requester.to_owned(),
            accepter: accepter.to_owned(),
            fingerprint: identity.public().fingerprint(),
        };
        Ok((request, blob(&ephemeral, &signature)))
    }

    /// The pending state as bytes, for a client that must survive a restart
    /// before the acceptance arrives (the peer may be offline for days).
    /// Holds the ephemeral **secret**: store it encrypted, delete it once
    /// the handshake completes or is abandoned.
    ///
    /// Layout: `version u8 (1) | secret [32] | SHA-256(SPKI) of the
    /// requester [32] | len u16 | requester | len u16 | accepter`.
    #[must_use]
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(69 + self.requester.len() + self.accepter.len()));
        out.push(HANDSHAKE_VERSION);
        out.extend_from_slice(&self.secret.to_bytes());
        out.extend_from_slice(&self.fingerprint.0);
        put_names(&mut out, &self.requester, &self.accepter);
        out
    }

    /// The inverse of [`export`](Self::export).
    pub fn restore(bytes: &[u8]) -> Result<Self, RestoreError> {
        let rest = bytes.strip_prefix(&[HANDSHAKE_VERSION]).ok_or(RestoreError)?;
        let (secret, rest) = rest.split_at_checked(32).ok_or(RestoreError)?;
        let (fingerprint, rest) = rest.split_at_checked(32).ok_or(RestoreError)?;
        let (requester, accepter) = take_names(rest)?;
        let secret = SecretKey::from_slice(secret).map_err(|_| RestoreError)?;
        let mut fp = [0u8; 32];
        fp.copy_from_slice(fingerprint);
        let ephemeral = ephemeral_bytes(&secret.public_key());
        Ok(Self { secret, ephemeral, requester, accepter, fingerprint: Fingerprint(fp) })
    }

    /// The user the request is for.
    #[must_use]
    pub fn accepter(&self) -> &str {
        &self.accepter
    }

    /// Finishes the handshake with the accepter's blob, checked against the
    /// accepter's pinned identity key. On error the request stays usable.
    /// `rng` draws the session's first sending epoch.
    pub fn complete(
        &self,
        rng: &mut impl rand::CryptoRng,
        accepter_key: &PublicIdentity,
        accept_blob: &[u8],
    ) -> Result<MpSession, HandshakeError> {
        let (e_b_key, e_b, signature) = parse(accept_blob)?;
        accepter_key.verify(&signed_accept(&self.requester, &self.accepter, &self.ephemeral, &e_b), signature)?;
        let transcript = Transcript {
            requester: &self.requester,
            accepter: &self.accepter,
            fp_a: self.fingerprint,
            fp_b: accepter_key.fingerprint(),
            e_a: &self.ephemeral,
            e_b: &e_b,
        };
        Ok(transcript.session(&shared(&self.secret, &e_b_key), Role::Requester, rng))
    }
}

/// A request whose signature checked out, waiting for the accepter's
/// decision. Holds no secret.
#[derive(Debug, Clone)]
pub struct MpOffer {
    requester: String,
    accepter: String,
    requester_fingerprint: Fingerprint,
    e_a: [u8; EPHEMERAL_LEN],
}

impl MpOffer {
    /// Checks a request blob from `requester` to `accepter` against the
    /// requester's pinned identity key.
    pub fn verify(
        requester: &str,
        requester_key: &PublicIdentity,
        accepter: &str,
        request_blob: &[u8],
    ) -> Result<Self, HandshakeError> {
        let (_, e_a, signature) = parse(request_blob)?;
        requester_key.verify(&signed_request(requester, accepter, &e_a), signature)?;
        Ok(Self {
            requester: requester.to_owned(),
            accepter: accepter.to_owned(),
            requester_fingerprint: requester_key.fingerprint(),
            e_a,
        })
    }

    /// The verified offer as bytes (it holds no secret), to survive a
    /// restart before the user decides. Layout: `version u8 (1) | SHA-256(SPKI)
    /// of the requester [32] | ephemeral [65] | len u16 | requester | len u16 | accepter`.
    #[must_use]
    pub fn export(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(102 + self.requester.len() + self.accepter.len());
        out.push(HANDSHAKE_VERSION);
        out.extend_from_slice(&self.requester_fingerprint.0);
        out.extend_from_slice(&self.e_a);
        put_names(&mut out, &self.requester, &self.accepter);
        out
    }

    /// The inverse of [`export`](Self::export) (the ephemeral key is checked to be a P-256 point).
    pub fn restore(bytes: &[u8]) -> Result<Self, RestoreError> {
        let rest = bytes.strip_prefix(&[HANDSHAKE_VERSION]).ok_or(RestoreError)?;
        let (fingerprint, rest) = rest.split_at_checked(32).ok_or(RestoreError)?;
        let (e_a, rest) = rest.split_at_checked(EPHEMERAL_LEN).ok_or(RestoreError)?;
        PublicKey::from_sec1_bytes(e_a).map_err(|_| RestoreError)?;
        let (requester, accepter) = take_names(rest)?;
        let mut fp = [0u8; 32];
        fp.copy_from_slice(fingerprint);
        let mut ephemeral = [0u8; EPHEMERAL_LEN];
        ephemeral.copy_from_slice(e_a);
        Ok(Self { requester, accepter, requester_fingerprint: Fingerprint(fp), e_a: ephemeral })
    }

    /// Who asked.
    #[must_use]
    pub fn requester(&self) -> &str {
        &self.requester
    }

    /// The requester's ephemeral public key (SEC1 uncompressed): a request
    /// seen twice is a replay.
    #[must_use]
    pub fn ephemeral(&self) -> &[u8; EPHEMERAL_LEN] {
        &self.e_a
    }

    /// Accepts: creates the accepter's ephemeral key, derives the session
    /// and returns the blob for `accept_mp`. `identity` is the accepter's.
    pub fn accept(
        &self,
        rng: &mut impl rand::CryptoRng,
        identity: &IdentityKey,
    ) -> Result<(MpSession, Vec<u8>), HandshakeError> {
        let secret = SecretKey::generate_from_rng(rng);
        let e_b = ephemeral_bytes(&secret.public_key());
        let signature = identity.sign(rng, &signed_accept(&self.requester, &self.accepter, &self.e_a, &e_b))?;
        let ikm = ecdh(&secret, &self.e_a)?;
        let transcript = Transcript {
            requester: &self.requester,
            accepter: &self.accepter,
            fp_a: self.requester_fingerprint,
            fp_b: identity.public().fingerprint(),
            e_a: &self.e_a,
            e_b: &e_b,
        };
        Ok((transcript.session(&ikm, Role::Accepter, rng), blob(&e_b, &signature)))
    }
}

/// An established MP session: one stream each way. The sending side is a
/// sending session with its own random epoch, never persisted.
#[derive(Debug, Clone)]
pub struct MpSession {
    me: String,
    peer: String,
    role: Role,
    send_stream: StreamKey,
    send: Sealer,
    recv: Opener,
    send_conversation: ConversationId,
    recv_conversation: ConversationId,
}

impl MpSession {
    /// Rebuilds a session from persisted parts (the sending stream key, and
    /// the receiving stream with what it accepted). Sending starts a new
    /// epoch drawn from `rng`, so nothing a restored copy seals can repeat
    /// a (key, nonce) pair of the original.
    #[must_use]
    pub fn resume(
        me: &str,
        peer: &str,
        role: Role,
        send_stream: StreamKey,
        opener: Opener,
        rng: &mut impl rand::CryptoRng,
    ) -> Self {
        Self {
            me: me.to_owned(),
            peer: peer.to_owned(),
            role,
            send: Sealer::new(&send_stream, rng),
            send_stream,
            recv: opener,
            send_conversation: ConversationId::mp(me, peer),
            recv_conversation: ConversationId::mp(peer, me),
        }
    }

    /// Seals a message to the peer at this user's clock `sent_ms`.
    pub fn seal(&mut self, sent_ms: u64, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.send.seal(&self.send_conversation, &self.me, sent_ms, plaintext)
    }

    /// Opens a message from the peer (window, tag, floor) and records it.
    pub fn open(&mut self, blob: &[u8]) -> Result<Opened, OpenError> {
        self.recv.open(&self.recv_conversation, &self.peer, blob)
    }

    /// This user.
    #[must_use]
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The other user.
    #[must_use]
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// This user's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The sending stream's key, to persist it.
    #[must_use]
    pub fn send_stream(&self) -> &StreamKey {
        &self.send_stream
    }

    /// The current sending session (epoch and next counter).
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.send
    }

    /// The receiving stream (key and what it accepted), to persist it.
    #[must_use]
    pub fn opener(&self) -> &Opener {
        &self.recv
    }
}

/// Appends the two names of an exported handshake, each as `len u16 | bytes`.
/// Usernames are at most 32 bytes; a longer one is cut at `u16::MAX` by
/// `min`, and then fails to restore rather than mislead.
fn put_names(out: &mut Vec<u8>, requester: &str, accepter: &str) {
    for name in [requester, accepter] {
        out.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }
}

/// The inverse of [`put_names`]: exactly two names and nothing after them.
fn take_names(mut rest: &[u8]) -> Result<(String, String), RestoreError> {
    let mut names = [String::new(), String::new()];
    for slot in &mut names {
        let (len, tail) = rest.split_at_checked(2).ok_or(RestoreError)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (name, tail) = tail.split_at_checked(len).ok_or(RestoreError)?;
        *slot = std::str::from_utf8(name).map_err(|_| RestoreError)?.to_owned();
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(RestoreError);
    }
    let [requester, accepter] = names;
    Ok((requester, accepter))
}

#[cfg(test)]
#[path = "tests/handshake.rs"]
mod tests;
