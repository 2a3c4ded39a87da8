//! Rooms: the password derives the keys, the server sees the verifier,
//! history opens on the client, a wrong password never yields history.

use super::{Net, failures};
use crate::e2e::secure::{DecryptError, SecureError, SecureEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::ClientEvent;
use crate::e2e::{OpenError, RoomKeys, RoomSession, fixtures};
use crate::wire::Opcode;

/// The decrypted room messages among `events`: (room, from, text, history).
fn room_texts(events: &[SecureEvent]) -> Vec<(String, String, String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SecureEvent::Room { room, from, text, history, .. } => {
                Some((room.clone(), from.clone(), text.clone(), *history))
            }
            _ => None,
        })
        .collect()
}

fn entry(room: &str, from: &str, text: &str, history: bool) -> (String, String, String, bool) {
    (room.into(), from.into(), text.into(), history)
}

#[test]
fn right_password_opens_history_wrong_password_gets_nothing() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let c = net.user("carol", fixtures::MALLORY_PKCS8);
    let now = net.now;

    assert!(matches!(net.sc(a).send_room(now, "room11", "x"), Err(SecureError::NoRoomKey(_))));
    net.sc(a).create_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.take(a);
    net.sc(a).send_room(now, "room11", "first").unwrap();
    net.sc(a).send_room(now, "room11", "second").unwrap();
    net.pump();
    net.take(a);

    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    let events = net.take(b);
    assert_eq!(
        room_texts(&events),
        vec![entry("room11", "alice", "first", true), entry("room11", "alice", "second", true)],
        "{events:?}"
    );

    // The wrong password: refused by the server, and no text at all.
    let id = net.sc(c).join_room(now, "room11", b"pass2935").unwrap();
    net.pump();
    let events = net.take(c);
    assert!(
        events.iter().any(|e| matches!(e, SecureEvent::Plain(ClientEvent::Failed { request_id, opcode: Opcode::JoinRoom, code: 403, .. }) if *request_id == id)),
        "{events:?}"
    );
    assert!(room_texts(&events).is_empty());
    assert!(matches!(net.sc(c).send_room(now, "room11", "x"), Err(SecureError::NoRoomKey(_))));

    // Live messages reach members only, decrypted.
    net.sc(b).send_room(now, "room11", "hello from bob").unwrap();
    net.pump();
    assert_eq!(room_texts(&net.take(a)), vec![entry("room11", "bob", "hello from bob", false)]);
    assert!(room_texts(&net.take(c)).is_empty());

    // room_history opens again on the client (fresh windows per batch).
    net.sc(b).room_history(now, "room11").unwrap();
    net.pump();
    let texts = room_texts(&net.take(b));
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts.iter().all(|t| t.3));
}

#[test]
fn foreign_tampered_and_replayed_room_blobs_fail() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.take(a);
    net.take(b);

    let room_message = |seq: u64, sealed: Vec<u8>| ClientEvent::RoomMessage {
        room: "room11".into(),
        from: "alice".into(),
        seq,
        sent_ms: 0,
        sealed: sealed.into(),
    };
    // Sealed under another password's keys (a foreign room key).
    let keys = net.sc(a).room_keys("room11").unwrap().clone();
    let wrong = RoomKeys::derive("room11", b"a guessed password", keys.descriptor()).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let foreign = RoomSession::new(wrong, "alice", &mut rng).seal(0, b"forged").unwrap();
    // A genuine blob of alice, flipped, then genuine twice.
    let genuine = RoomSession::new(keys, "alice", &mut rng).seal(0, b"real").unwrap();
    let mut flipped = genuine.clone();
    flipped[20] ^= 0x80;
    net.sc(b).on_event(room_message(10, foreign));
    net.sc(b).on_event(room_message(11, flipped));
    net.sc(b).on_event(room_message(12, genuine.clone()));
    net.sc(b).on_event(room_message(13, genuine));
    net.pump();
    let events = net.take(b);
    assert_eq!(room_texts(&events), vec![entry("room11", "alice", "real", false)]);
    let reasons: Vec<_> = failures(&events)
        .into_iter()
        .map(|e| match e {
            SecureEvent::DecryptFailed { reason, room, .. } => {
                assert_eq!(room.as_deref(), Some("room11"));
                reason.clone()
            }
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            DecryptError::Open(OpenError::BadMac),
            DecryptError::Open(OpenError::BadMac),
            DecryptError::Open(OpenError::Replayed { counter: 0 })
        ]
    );
}

#[test]
fn a_rejoining_member_never_reuses_a_counter() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(b).send_room(now, "room11", "one").unwrap();
    net.sc(b).send_room(now, "room11", "two").unwrap();
    net.pump();
    net.sc(b).client_mut().leave_room(now, "room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.take(a);
    net.take(b);
    net.sc(b).send_room(now, "room11", "three").unwrap();
    net.pump();
    // Alice's replay window would refuse a reused counter.
    assert_eq!(room_texts(&net.take(a)), vec![entry("room11", "bob", "three", false)]);
}

#[test]
fn a_rejoin_keeps_the_counter_of_messages_gone_from_history() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let now = net.now;
    net.sc(a).create_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    for i in 0..3 {
        net.sc(b).send_room(now, "room11", &format!("bob {i}")).unwrap();
    }
    net.pump();
    // Alice pushes Bob's messages out of the 20-message history.
    for i in 0..20 {
        net.sc(a).send_room(now, "room11", &format!("alice {i}")).unwrap();
    }
    net.pump();
    net.sc(b).join_room(now, "room11", b"pass2934 of room11").unwrap();
    net.pump();
    net.take(a);
    net.take(b);
    net.sc(b).send_room(now, "room11", "after rejoin").unwrap();
    net.pump();
    assert_eq!(room_texts(&net.take(a)), vec![entry("room11", "bob", "after rejoin", false)]);
}
