//! End-to-end encryption: the client-side cryptography of confab (issue 5).
//!
//! The server is a blind router: it carries sealed blobs, handshake blobs
//! and room verifiers, and learns neither content nor content keys. This
//! module is the crypto those blobs are made with. It is sans-IO like the
//! rest of the crate: no clock, no OS randomness (every function that needs
//! randomness takes the caller's `&mut impl rand::CryptoRng`), no panic on
//! any input. The [`Client`](crate::Client) machine itself stays
//! crypto-free: [`SecureClient`] wraps it, seals before `send_mp` /
//! `send_room` and opens what `UserMessage` / `RoomMessage` events carry.
//!
//! | file | concern |
//! | --- | --- |
//! | [`seal`] | AES-128-CTR + HMAC-SHA256 encrypt-then-MAC, sender epochs, counters, replay state |
//! | [`kdf`] | HKDF-SHA256 key schedule, one label per key |
//! | [`identity`] | RSA-2048 identity keys, RSA-PSS, fingerprints, safety numbers, key at rest |
//! | [`handshake`] | forward-secret MP handshake (signed ephemeral P-256, ECDH, HKDF) |
//! | [`room`] | room descriptor (random id, costs), room password to keys and join verifier (argon2id, HKDF) |
//! | [`secure`] | [`SecureClient`]: the client machine with all of the above (contacts, sessions, rooms, local expiry) |
//! | [`fixtures`] | fixed RSA keys for tests, examples and benchmarks |
//!
//! docs/E2E.md gives every byte of every structure, with test vectors.
//! Wire layouts (each module documents its own too):
//!
//! ```text
//! sealed message  version u8 (2) | epoch [16] | counter u64 BE | ciphertext [8 + n] | HMAC-SHA256 tag [32]
//! handshake blob  version u8 (1) | ephemeral P-256 SEC1 uncompressed [65] | RSA-PSS signature [256]
//! room descriptor version u8 (1) | room id [16] | m_cost u32 | t_cost u32 | p_cost u32
//! room verifier   [32]
//! key at rest     version u8 (1) | m_cost u32 | t_cost u32 | p_cost u32 | salt [16] | raw sealed blob
//! ```
//!
//! # Example
//!
//! An MP session between Alice and Bob, then a room, with the fixture keys
//! (a real client loads its key with [`IdentityKey::decrypt_at_rest`] and
//! gets its peers' keys from the server, pinned on first use):
//!
//! ```
//! use confab_proto::e2e::{fixtures, safety_number, IdentityKey, MpOffer, MpRequest, OpenError, PublicIdentity};
//! use confab_proto::e2e::{RoomDescriptor, RoomKeys, RoomSession};
//! use confab_proto::server::HashParams;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::from_seed([7; 32]); // the caller's CryptoRng
//! let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8)?;
//! let bob = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8)?;
//! // What each learned from the server (SPKI DER) and pinned:
//! let alice_pub = PublicIdentity::from_spki_der(alice.public().spki_der())?;
//! let bob_pub = PublicIdentity::from_spki_der(bob.public().spki_der())?;
//! // The number both users read to each other out of band:
//! let number = safety_number("alice", &alice_pub, "bob", &bob_pub);
//! assert_eq!(number, safety_number("bob", &bob_pub, "alice", &alice_pub));
//! assert_eq!(number.digits().len(), 60);
//!
//! // Alice asks; `request` goes into request_mp's `handshake` field.
//! let (pending, request) = MpRequest::new(&mut rng, &alice, "alice", "bob")?;
//! // Bob checks it against Alice's pinned key, accepts; `accept` goes into accept_mp.
//! let offer = MpOffer::verify("alice", &alice_pub, "bob", &request)?;
//! let (mut bob_mp, accept) = offer.accept(&mut rng, &bob)?;
//! // Alice checks the acceptance against Bob's pinned key.
//! let mut alice_mp = pending.complete(&mut rng, &bob_pub, &accept)?;
//!
//! let now_ms = 1_700_000_000_000; // the sender's clock, sealed with the message
//! let sealed = alice_mp.seal(now_ms, b"hi bob")?; // send_mp's `sealed` blob
//! assert_eq!(bob_mp.open(&sealed)?.plaintext, b"hi bob");
//! assert_eq!(bob_mp.open(&sealed), Err(OpenError::Replayed { counter: 0 }));
//! let reply = bob_mp.seal(now_ms, b"hi alice")?;
//! assert_eq!(alice_mp.open(&reply)?.plaintext, b"hi alice");
//!
//! // A room: its creator draws a descriptor (random id, argon2id costs) that
//! // the server keeps; members derive the keys from it and the password.
//! // Tests use cheap argon2; a real room gets `room::ROOM_PARAMS`.
//! let descriptor = RoomDescriptor::generate(&mut rng, HashParams::INSECURE_FAST);
//! let keys = RoomKeys::derive("room11", b"pass2934 and more", &descriptor)?;
//! let verifier: &[u8; 32] = keys.verifier(); // create_room / join_room's `verifier`
//! let mut alice_room = RoomSession::new(keys.clone(), "alice", &mut rng);
//! let bob_keys = RoomKeys::derive("room11", b"pass2934 and more", &descriptor)?;
//! assert_eq!(bob_keys.verifier(), verifier);
//! let mut bob_room = RoomSession::new(bob_keys, "bob", &mut rng);
//! let sealed = alice_room.seal(now_ms, b"hello room")?; // send_room's blob
//! assert_eq!(bob_room.open("alice", &sealed)?.plaintext, b"hello room");
//! // Wrong password: a different verifier, and history never opens.
//! let wrong = RoomKeys::derive("room11", b"pass2935 and more", &descriptor)?;
//! assert_ne!(wrong.verifier(), verifier);
//! assert_eq!(RoomSession::new(wrong, "eve", &mut rng).open("alice", &sealed), Err(OpenError::BadMac));
//! // The same name and password in a new incarnation of the room: nothing opens.
//! let reborn = RoomDescriptor::generate(&mut rng, HashParams::INSECURE_FAST);
//! let reborn = RoomKeys::derive("room11", b"pass2934 and more", &reborn)?;
//! assert_eq!(RoomSession::new(reborn, "bob", &mut rng).open("alice", &sealed), Err(OpenError::BadMac));
//!
//! // The identity key at rest, under the user's password.
//! let stored = alice.encrypt_at_rest(&mut rng, b"correct horse", HashParams::INSECURE_FAST)?;
//! let loaded = IdentityKey::decrypt_at_rest(&stored, b"correct horse")?;
//! assert_eq!(loaded.public(), alice.public());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod fixtures;
pub mod handshake;
pub mod identity;
pub mod kdf;
pub mod room;
pub mod seal;
pub mod secure;

#[cfg(test)]
#[path = "tests/vectors.rs"]
mod vectors;

#[cfg(test)]
#[path = "tests/e2e_vectors/mod.rs"]
mod e2e_vectors;

pub use handshake::{HandshakeError, MpOffer, MpRequest, MpSession, RestoreError, Role};
pub use identity::{
    AtRestError, Fingerprint, IdentityKey, KeyError, PublicIdentity, SafetyNumber, SignError, VerifyError,
    safety_number,
};
pub use kdf::{Direction, KeySchedule, Purpose};
pub use room::{RoomDescriptor, RoomError, RoomKeys, RoomSession, check_room_password};
pub use seal::{
    ConversationId, Epoch, EpochRecord, OpenError, Opened, Opener, ReplayState, ReplayWindow, SealError, SealKeys,
    Sealer, StreamKey,
};
pub use secure::{DecryptError, SecureClient, SecureError, SecureEvent, SecureOutput};
