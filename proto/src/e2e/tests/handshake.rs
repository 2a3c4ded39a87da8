use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::e2e::fixtures::{ALICE_PKCS8, BOB_PKCS8, MALLORY_PKCS8};
use crate::e2e::seal::StreamKey;

struct Party {
    key: IdentityKey,
    public: PublicIdentity,
}

fn party(der: &[u8]) -> Party {
    let key = IdentityKey::from_pkcs8_der(der).unwrap();
    let public = key.public().clone();
    Party { key, public }
}

fn rng(seed: u8) -> StdRng {
    StdRng::from_seed([seed; 32])
}

fn keys_eq(a: &StreamKey, b: &StreamKey) -> bool {
    a == b
}

const T: u64 = 1_700_000_000_000;

fn handshake() -> (MpSession, MpSession) {
    let (alice, bob) = (party(ALICE_PKCS8), party(BOB_PKCS8));
    let mut rng = rng(1);
    let (pending, request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let offer = MpOffer::verify("alice", &alice.public, "bob", &request).unwrap();
    let (bob_session, accept) = offer.accept(&mut rng, &bob.key).unwrap();
    let alice_session = pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &accept).unwrap();
    (alice_session, bob_session)
}

#[test]
fn both_sides_derive_the_same_keys() {
    let (mut alice, mut bob) = handshake();
    assert!(keys_eq(alice.send_stream(), bob.opener().stream()));
    assert!(keys_eq(bob.send_stream(), alice.opener().stream()));
    // One key per direction, and the AES and HMAC keys of an epoch differ.
    assert!(!keys_eq(alice.send_stream(), alice.opener().stream()));
    let k = alice.sealer().keys().to_bytes();
    assert_ne!(k[..16], k[16..32]);
    // Each side sends in an epoch of its own.
    assert_ne!(alice.sealer().epoch(), bob.sealer().epoch());
    assert_eq!((alice.me(), alice.peer(), alice.role()), ("alice", "bob", Role::Requester));
    assert_eq!((bob.me(), bob.peer(), bob.role()), ("bob", "alice", Role::Accepter));

    let to_bob = alice.seal(T, b"hi bob").unwrap();
    assert_eq!(bob.open(&to_bob).unwrap().plaintext, b"hi bob");
    assert_eq!(bob.open(&to_bob), Err(OpenError::Replayed { counter: 0 }));
    let to_alice = bob.seal(T, b"hi alice").unwrap();
    assert_eq!(alice.open(&to_alice).unwrap().plaintext, b"hi alice");
    // A message reflected back to its sender does not open.
    let mine = alice.seal(T, b"echo").unwrap();
    assert_eq!(alice.open(&mine), Err(OpenError::BadMac));
}

#[test]
fn every_handshake_has_fresh_keys() {
    let (alice, bob) = (party(ALICE_PKCS8), party(BOB_PKCS8));
    let mut sessions = Vec::new();
    for seed in [1, 2] {
        let mut rng = rng(seed);
        let (pending, request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
        let (_, accept) =
            MpOffer::verify("alice", &alice.public, "bob", &request).unwrap().accept(&mut rng, &bob.key).unwrap();
        sessions.push(pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &accept).unwrap());
    }
    assert!(!keys_eq(sessions[0].send_stream(), sessions[1].send_stream()));
}

#[test]
fn blob_layout() {
    let alice = party(ALICE_PKCS8);
    let (pending, request) = MpRequest::new(&mut rng(4), &alice.key, "alice", "bob").unwrap();
    assert_eq!(request.len(), HANDSHAKE_LEN);
    assert_eq!(HANDSHAKE_LEN, 322);
    assert_eq!(request[0], HANDSHAKE_VERSION);
    assert_eq!(request[1], 0x04);
    assert_eq!(request[1..66], pending.ephemeral);
    // The signature is over exactly the documented message.
    let mut signed = b"confab mp request v1".to_vec();
    signed.extend_from_slice(&5u64.to_be_bytes());
    signed.extend_from_slice(b"alice");
    signed.extend_from_slice(&3u64.to_be_bytes());
    signed.extend_from_slice(b"bob");
    signed.push(1);
    signed.extend_from_slice(&request[1..66]);
    assert_eq!(alice.public.verify(&signed, &request[66..]), Ok(()));
    assert_eq!(pending.accepter(), "bob");
}

/// The server swaps Alice's ephemeral key for its own (keeping her
/// signature), or re-signs with another identity key: Bob rejects both.
#[test]
fn swapped_request_key_or_foreign_signature_is_rejected() {
    let (alice, mallory) = (party(ALICE_PKCS8), party(MALLORY_PKCS8));
    let mut rng = rng(5);
    let (_, request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let (_, server_own) = MpRequest::new(&mut rng, &mallory.key, "alice", "bob").unwrap();

    let mut swapped = request.clone();
    swapped[1..66].copy_from_slice(&server_own[1..66]);
    assert_eq!(MpOffer::verify("alice", &alice.public, "bob", &swapped).unwrap_err(), HandshakeError::BadSignature);
    // Signed by Mallory's identity key, presented as Alice's.
    assert_eq!(MpOffer::verify("alice", &alice.public, "bob", &server_own).unwrap_err(), HandshakeError::BadSignature);
    // Alice's genuine request, replayed towards someone else or from someone else.
    assert_eq!(MpOffer::verify("alice", &alice.public, "carol", &request).unwrap_err(), HandshakeError::BadSignature);
    assert_eq!(MpOffer::verify("mallory", &alice.public, "bob", &request).unwrap_err(), HandshakeError::BadSignature);
    assert!(MpOffer::verify("alice", &alice.public, "bob", &request).is_ok());
}

/// The same on the way back, plus: an acceptance answers one request only,
/// and a request cannot pass for an acceptance.
#[test]
fn swapped_accept_key_or_foreign_signature_is_rejected() {
    let (alice, bob, mallory) = (party(ALICE_PKCS8), party(BOB_PKCS8), party(MALLORY_PKCS8));
    let mut rng = rng(6);
    let (pending, request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let offer = MpOffer::verify("alice", &alice.public, "bob", &request).unwrap();
    let (_, accept) = offer.accept(&mut rng, &bob.key).unwrap();

    // The server answers in Bob's name with its own key pair.
    let (_, forged) = offer.accept(&mut rng, &mallory.key).unwrap();
    assert_eq!(
        pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &forged).unwrap_err(),
        HandshakeError::BadSignature
    );
    let mut swapped = accept.clone();
    swapped[1..66].copy_from_slice(&forged[1..66]);
    assert_eq!(
        pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &swapped).unwrap_err(),
        HandshakeError::BadSignature
    );
    // Bob's acceptance of an older request of Alice's.
    let (_, old_request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let old_offer = MpOffer::verify("alice", &alice.public, "bob", &old_request).unwrap();
    let (_, old_accept) = old_offer.accept(&mut rng, &bob.key).unwrap();
    assert_eq!(
        pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &old_accept).unwrap_err(),
        HandshakeError::BadSignature
    );
    // Bob's own request to Alice, passed off as an acceptance.
    let (_, bob_request) = MpRequest::new(&mut rng, &bob.key, "alice", "bob").unwrap();
    assert_eq!(
        pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &bob_request).unwrap_err(),
        HandshakeError::BadSignature
    );
    // The request survived the failures.
    assert!(pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &accept).is_ok());
}

/// A full man in the middle: the server runs one handshake with each side
/// under Mallory's identity key. Pinning the real keys stops it.
#[test]
fn man_in_the_middle_is_detected_by_pinned_keys() {
    let (alice, bob, mallory) = (party(ALICE_PKCS8), party(BOB_PKCS8), party(MALLORY_PKCS8));
    let mut rng = rng(7);
    let (alice_pending, _) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let (_, to_bob) = MpRequest::new(&mut rng, &mallory.key, "alice", "bob").unwrap();
    assert!(MpOffer::verify("alice", &alice.public, "bob", &to_bob).is_err());
    let fake_offer = MpOffer::verify("alice", &mallory.public, "bob", &to_bob).unwrap();
    let (_, to_alice) = fake_offer.accept(&mut rng, &mallory.key).unwrap();
    assert!(alice_pending.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &to_alice).is_err());
}

#[test]
fn every_single_bit_flip_of_a_request_is_rejected() {
    let alice = party(ALICE_PKCS8);
    let (_, request) = MpRequest::new(&mut rng(8), &alice.key, "alice", "bob").unwrap();
    for bit in 0..request.len() * 8 {
        let mut bad = request.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(MpOffer::verify("alice", &alice.public, "bob", &bad).is_err(), "bit {bit}");
    }
}

#[test]
fn malformed_blobs() {
    let alice = party(ALICE_PKCS8);
    let (_, request) = MpRequest::new(&mut rng(9), &alice.key, "alice", "bob").unwrap();
    let verify = |blob: &[u8]| MpOffer::verify("alice", &alice.public, "bob", blob).unwrap_err();
    assert_eq!(verify(&[]), HandshakeError::WrongLength { len: 0 });
    assert_eq!(verify(&request[..321]), HandshakeError::WrongLength { len: 321 });
    assert_eq!(verify(&[&request[..], &[0]].concat()), HandshakeError::WrongLength { len: 323 });
    let mut v2 = request.clone();
    v2[0] = 2;
    assert_eq!(verify(&v2), HandshakeError::UnknownVersion(2));
    // Compressed form, the point at infinity, a point off the curve.
    let mut compressed = request.clone();
    compressed[1] = 0x02;
    assert_eq!(verify(&compressed), HandshakeError::BadEphemeralKey);
    let mut zero = request.clone();
    zero[1..66].fill(0);
    assert_eq!(verify(&zero), HandshakeError::BadEphemeralKey);
    let mut off_curve = request.clone();
    off_curve[65] ^= 1;
    assert_eq!(verify(&off_curve), HandshakeError::BadEphemeralKey);
}

proptest::proptest! {
    #[test]
    fn prop_verify_never_panics(blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let alice = party(ALICE_PKCS8);
        proptest::prop_assert!(MpOffer::verify("alice", &alice.public, "bob", &blob).is_err());
    }
}

/// The requester restarts between request and acceptance.
#[test]
fn pending_request_survives_export_and_restore() {
    let (alice, bob) = (party(ALICE_PKCS8), party(BOB_PKCS8));
    let mut rng = rng(10);
    let (pending, request) = MpRequest::new(&mut rng, &alice.key, "alice", "bob").unwrap();
    let saved = pending.export();
    drop(pending);
    let restored = MpRequest::restore(&saved).unwrap();
    assert_eq!(restored.accepter(), "bob");
    let (mut bob_session, accept) =
        MpOffer::verify("alice", &alice.public, "bob", &request).unwrap().accept(&mut rng, &bob.key).unwrap();
    let mut alice_session = restored.complete(&mut StdRng::from_seed([99; 32]), &bob.public, &accept).unwrap();
    assert_eq!(bob_session.open(&alice_session.seal(T, b"still here").unwrap()).unwrap().plaintext, b"still here");
    // Every truncation and a trailing byte are refused, without panicking.
    for len in 0..saved.len() {
        assert_eq!(MpRequest::restore(&saved[..len]).unwrap_err(), RestoreError, "len {len}");
    }
    assert!(MpRequest::restore(&[&saved[..], &[0]].concat()).is_err());
    let mut zero_secret = saved.to_vec();
    zero_secret[1..33].fill(0);
    assert!(MpRequest::restore(&zero_secret).is_err());
}
