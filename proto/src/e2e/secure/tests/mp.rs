//! MP sessions: handshake with an offline target, messages both ways,
//! pinning against a swapped key, tampered and replayed blobs, local expiry.

use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Net, PASSPHRASE, PASSWORD, alice_bob, failures, mps};

const T: u64 = 1_700_000_000_000;
use crate::e2e::secure::{DecryptError, MP_LOCAL_RETENTION, SecureClient, SecureError, SecureEvent, SecureOutput};
use crate::e2e::{IdentityKey, MpRequest, OpenError, fixtures};
use crate::server::HashParams;
use crate::{Client, ClientConfig, ClientEvent};

fn user_message(from: &str, seq: u64, sealed: Vec<u8>) -> ClientEvent {
    ClientEvent::UserMessage { from: from.into(), seq, sent_ms: 0, sealed: sealed.into() }
}

#[test]
fn handshake_with_an_offline_target_then_messages_both_ways() {
    let (mut net, a, b) = alice_bob();
    net.disconnect(b);
    let now = net.now;
    let id = net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(
        events.iter().any(
            |e| matches!(e, SecureEvent::Plain(ClientEvent::Done { request_id, code: 202, .. }) if *request_id == id)
        ),
        "queued for offline bob: {events:?}"
    );
    assert_eq!(net.sc(a).send_mp(now, "bob", "too early").unwrap_err().to_string(), "no private session with bob");

    net.connect(b);
    let events = net.take(b);
    let offered = events.iter().find_map(|e| match e {
        SecureEvent::MpOffered { from, safety_number } if from == "alice" => Some(safety_number.clone()),
        _ => None,
    });
    let number = offered.unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(net.sc(b).safety_number("alice"), Some(number.clone()));
    assert!(net.sc(b).pinned("alice").is_some(), "pinned on first use");
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    assert!(net.take(a).iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == "bob")));
    assert_eq!(net.sc(a).safety_number("bob"), Some(number), "both sides read the same number");

    net.sc(a).send_mp(now, "bob", "hi bob").unwrap();
    net.sc(a).send_mp(now, "bob", "are you there?").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "hi bob".into()), ("alice".into(), "are you there?".into())]);
    net.sc(b).send_mp(now, "alice", "hi alice").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(a)), vec![("bob".into(), "hi alice".into())]);
    assert_eq!(net.sc(b).messages("alice"), vec!["hi bob", "are you there?"]);

    // Queued for an offline peer, then delivered.
    net.disconnect(a);
    net.sc(b).send_mp(now, "alice", "while you were out").unwrap();
    net.pump();
    net.connect(a);
    assert_eq!(mps(&net.take(a)), vec![("bob".into(), "while you were out".into())]);
}

#[test]
fn a_swapped_identity_key_is_detected_and_blocks_sending() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;

    // The server hands Bob a request "from alice" under Mallory's key,
    // validly signed by Mallory.
    let mallory = IdentityKey::from_pkcs8_der(fixtures::MALLORY_PKCS8).unwrap();
    let mut rng = StdRng::from_seed([9; 32]);
    let (_, blob) = MpRequest::new(&mut rng, &mallory, "alice", "bob").unwrap();
    net.sc(b).on_event(ClientEvent::MpRequest {
        from: "alice".into(),
        seq: 50,
        identity_key: Bytes::from_static(fixtures::MALLORY_SPKI),
        handshake: blob.into(),
    });
    net.pump();
    let events = net.take(b);
    assert!(
        matches!(&events[..], [SecureEvent::KeyChanged { user, pinned, presented }]
            if user == "alice" && *pinned != *presented && *presented == mallory.public().fingerprint()),
        "{events:?}"
    );
    assert!(net.sc(b).is_blocked("alice"));
    assert!(matches!(net.sc(b).send_mp(now, "alice", "secret"), Err(SecureError::KeyChanged(u)) if u == "alice"));
    assert!(matches!(net.sc(b).request_mp(now, "alice"), Err(SecureError::KeyChanged(_))));
    assert!(matches!(net.sc(b).accept_mp(now, "alice"), Err(SecureError::KeyChanged(_))));

    // Nothing from "alice" opens meanwhile, not even under the old session.
    net.sc(a).send_mp(now, "bob", "still me").unwrap();
    net.pump();
    let events = net.take(b);
    assert!(mps(&events).is_empty());
    assert!(
        matches!(failures(&events)[..], [SecureEvent::DecryptFailed { reason: DecryptError::KeyChanged, .. }]),
        "{events:?}"
    );

    // Accepting the new key (after comparing safety numbers) unblocks and
    // pins it; the old session is gone.
    assert!(net.sc(b).accept_new_key("alice"));
    assert!(!net.sc(b).is_blocked("alice"));
    assert!(!net.sc(b).has_session("alice"));
    assert_eq!(net.sc(b).pinned("alice"), Some(mallory.public()));
}

#[test]
fn a_fetched_key_is_pinned_and_a_tampered_handshake_is_rejected() {
    let (mut net, a, b) = alice_bob();
    let now = net.now;
    // Bob pins Alice's key from the server before any request.
    net.sc(b).fetch_key(now, "alice").unwrap();
    net.pump();
    net.take(b);
    let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    assert_eq!(net.sc(b).pinned("alice"), Some(alice.public()));

    // A handshake blob altered in transit (one bit of the ephemeral key).
    let mut rng = StdRng::from_seed([3; 32]);
    let (_, mut blob) = MpRequest::new(&mut rng, &alice, "alice", "bob").unwrap();
    blob[10] ^= 1;
    net.sc(b).on_event(ClientEvent::MpRequest {
        from: "alice".into(),
        seq: 7,
        identity_key: Bytes::from_static(fixtures::ALICE_SPKI),
        handshake: blob.into(),
    });
    net.pump();
    let events = net.take(b);
    assert!(matches!(&events[..], [SecureEvent::HandshakeRejected { peer, .. }] if peer == "alice"), "{events:?}");
    assert!(matches!(net.sc(b).accept_mp(now, "alice"), Err(SecureError::NoOffer(_))));

    // The genuine handshake still works afterwards.
    net.handshake(a, b, "alice", "bob");
}

#[test]
fn flipped_bits_replays_and_foreign_blobs_never_yield_text() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let c = net.user("carol", fixtures::MALLORY_PKCS8);
    net.handshake(a, b, "alice", "bob");
    net.handshake(a, c, "alice", "carol");

    // Alice's next blob to Bob, sealed off a copy of her session.
    let mut copy = net.sc(a).session("bob").unwrap().clone();
    let blob = copy.seal(T, b"genuine").unwrap();
    for bit in 0..blob.len() * 8 {
        let mut flipped = blob.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        net.sc(b).on_event(user_message("alice", 100, flipped));
    }
    net.pump();
    let events = net.take(b);
    assert!(mps(&events).is_empty(), "no flipped blob opened");
    assert_eq!(failures(&events).len(), blob.len() * 8);
    assert!(events.iter().all(|e| matches!(e, SecureEvent::DecryptFailed { from, room: None, .. } if from == "alice")));

    // The genuine blob opens once; a replay is refused.
    net.sc(b).on_event(user_message("alice", 101, blob.clone()));
    net.sc(b).on_event(user_message("alice", 102, blob));
    net.pump();
    let events = net.take(b);
    assert_eq!(mps(&events), vec![("alice".into(), "genuine".into())]);
    let replayed = DecryptError::Open(OpenError::Replayed { counter: 0 });
    assert!(matches!(failures(&events)[..], [SecureEvent::DecryptFailed { reason, .. }] if *reason == replayed));

    // A blob from Alice's session with Carol, presented to Bob.
    let mut to_carol = net.sc(a).session("carol").unwrap().clone();
    to_carol.seal(T, b"skip a counter Bob has seen").unwrap();
    let foreign = to_carol.seal(T, b"for carol").unwrap();
    net.sc(b).on_event(user_message("alice", 103, foreign.clone()));
    // And from someone Bob has no session with.
    net.sc(b).on_event(user_message("carol", 1, foreign));
    net.pump();
    let events = net.take(b);
    let bad_mac = DecryptError::Open(OpenError::BadMac);
    assert!(
        matches!(&failures(&events)[..], [SecureEvent::DecryptFailed { reason: r1, .. }, SecureEvent::DecryptFailed { reason: DecryptError::NoSession, .. }] if *r1 == bad_mac),
        "{events:?}"
    );
}

#[test]
fn received_mps_are_deleted_an_hour_after_receipt() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    net.sc(a).send_mp(now, "bob", "burn after reading").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "burn after reading".into())]);
    assert_eq!(net.sc(b).messages("alice"), vec!["burn after reading"]);
    let SecureOutput::Timeout(Some(deadline)) = net.sc(b).poll_output() else { panic!("a deadline") };
    assert!(deadline <= now.instant + MP_LOCAL_RETENTION);

    // Keep the connection alive while the hour passes.
    let step = Duration::from_secs(20);
    while net.now.instant + step < now.instant + MP_LOCAL_RETENTION {
        net.advance(step);
    }
    assert_eq!(net.sc(b).messages("alice"), vec!["burn after reading"], "still within the hour");
    let events = net.take(b);
    assert!(!events.iter().any(|e| matches!(e, SecureEvent::MpExpiredLocally { .. })));
    net.advance(step);
    assert!(net.sc(b).messages("alice").is_empty());
    let events = net.take(b);
    assert!(
        events.iter().any(|e| matches!(e, SecureEvent::MpExpiredLocally { from } if from == "alice")),
        "{events:?}"
    );
}

#[test]
fn an_acceptance_the_server_refuses_leaves_no_session() {
    let (mut net, _a, b) = alice_bob();
    // A genuine request blob Bob never got through the server (the server
    // holds no request from alice, so it refuses the acceptance).
    let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let (_, blob) = MpRequest::new(&mut StdRng::from_seed([4; 32]), &alice, "alice", "bob").unwrap();
    net.sc(b).on_event(ClientEvent::MpRequest {
        from: "alice".into(),
        seq: 1,
        identity_key: Bytes::from_static(fixtures::ALICE_SPKI),
        handshake: blob.into(),
    });
    net.pump();
    let now = net.now;
    let id = net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    let events = net.take(b);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Failed { request_id, .. }) if *request_id == id)),
        "{events:?}"
    );
    assert!(!net.sc(b).has_session("alice"));
}

/// Alice's login is revoked (a copy of her profile spent her refresh
/// token): what she had written and not seen answered is indeterminate.
/// `deliver` says whether the server got her frames before that.
fn request_then_revoke(net: &mut Net, a: usize, deliver: bool) -> u32 {
    let now = net.now;
    let id = net.sc(a).request_mp(now, "bob").unwrap();
    if deliver {
        // The server performs it; its answer is lost with the connection.
        net.drain_client(a);
    } else {
        let p = &mut net.peers[a];
        p.store.turn(&mut p.sc);
    }
    net.disconnect(a);
    let token = net.sc(a).client().refresh_token().unwrap().to_owned();
    let identity = IdentityKey::from_pkcs8_der(fixtures::MALLORY_PKCS8).unwrap();
    let mut copy = Client::new(ClientConfig::default(), now);
    copy.resume(token);
    let copy = SecureClient::new(copy, identity, StdRng::from_seed([8; 32]), HashParams::INSECURE_FAST, now);
    net.peers.push(super::Peer { sc: copy, session: None, events: Vec::new(), store: Default::default() });
    net.connect(net.peers.len() - 1);
    for _ in 0..7 {
        net.advance(Duration::from_secs(10)); // past the retry grace
    }
    net.connect(a);
    let events = net.take(a);
    assert!(
        events.iter().any(
            |e| matches!(e, SecureEvent::Plain(ClientEvent::Indeterminate { request_id, .. }) if *request_id == id)
        ),
        "{events:?}"
    );
    assert!(!net.sc(a).client().is_logged_in());
    let now = net.now;
    net.sc(a).login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    net.take(a);
    id
}

/// Bob comes online, accepts what the server holds, and alice writes to him.
fn bob_accepts_and_reads(net: &mut Net, a: usize, b: usize) {
    net.connect(b);
    let events = net.take(b);
    let offers = events.iter().filter(|e| matches!(e, SecureEvent::MpOffered { from, .. } if from == "alice"));
    assert_eq!(offers.count(), 1, "{events:?}");
    let now = net.now;
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(events.iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == "bob")), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, SecureEvent::HandshakeRejected { .. })), "{events:?}");
    net.sc(a).send_mp(now, "bob", "made it").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "made it".into())]);
}

/// The simulator's seeds 67 and 518: a request performed by the server
/// whose answer was lost with a revoked login, asked again (409 "already
/// asked"), then accepted by the peer: the first handshake completes.
#[test]
fn a_request_performed_before_the_login_was_revoked_still_completes() {
    let (mut net, a, b) = alice_bob();
    net.disconnect(b);
    request_then_revoke(&mut net, a, true);
    let now = net.now;
    let again = net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Failed { request_id, code: 409, reason, .. })
            if *request_id == again && reason.contains("already asked"))),
        "{events:?}"
    );
    bob_accepts_and_reads(&mut net, a, b);
}

/// The same, but the server never got the first request: the second one is
/// performed and completes.
#[test]
fn a_request_lost_before_the_login_was_revoked_is_replaced_by_the_next() {
    let (mut net, a, b) = alice_bob();
    net.disconnect(b);
    request_then_revoke(&mut net, a, false);
    let now = net.now;
    let again = net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(
        events.iter().any(
            |e| matches!(e, SecureEvent::Plain(ClientEvent::Done { request_id, code: 202, .. }) if *request_id == again)
        ),
        "{events:?}"
    );
    bob_accepts_and_reads(&mut net, a, b);
}

/// The simulator's seed 4111: the peer closed the old conversation while
/// this user was offline; a new request made then goes out after the
/// close notice arrives (queued items come first): the notice is about the
/// old conversation, not the new request, which completes.
#[test]
fn a_close_notice_of_the_old_conversation_keeps_a_new_request_in_flight() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    net.disconnect(a);
    let now = net.now;
    net.sc(b).client_mut().close_mp(now, "alice").unwrap();
    net.pump();
    let id = net.sc(a).request_mp(now, "bob").unwrap();
    net.connect(a);
    let events = net.take(a);
    let closed = events.iter().position(|e| matches!(e, SecureEvent::Plain(ClientEvent::MpClosed { .. })));
    let done = events
        .iter()
        .position(|e| matches!(e, SecureEvent::Plain(ClientEvent::Done { request_id, .. }) if *request_id == id));
    assert!(closed.is_some() && closed < done, "the notice comes before the answer: {events:?}");
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(events.iter().any(|e| matches!(e, SecureEvent::MpReady { peer } if peer == "bob")), "{events:?}");
    net.sc(a).send_mp(now, "bob", "again").unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)), vec![("alice".into(), "again".into())]);
}
