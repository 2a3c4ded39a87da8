use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::e2e::seal::peek_header;

const FAST: HashParams = HashParams::INSECURE_FAST;
const T: u64 = 1_700_000_000_000;
const PASSWORD: &str = "pass2934 of room11";

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn descriptor(id: u8) -> RoomDescriptor {
    RoomDescriptor::from_parts([id; ROOM_ID_LEN], FAST)
}

fn derive(room: &str, password: &str, id: u8) -> RoomKeys {
    RoomKeys::derive(room, password.as_bytes(), &descriptor(id)).unwrap()
}

fn session(keys: RoomKeys, me: &str, seed: u64) -> RoomSession {
    RoomSession::new(keys, me, &mut rng(seed))
}

#[test]
fn same_name_password_and_descriptor_same_keys() {
    let (a, b) = (derive("room11", PASSWORD, 1), derive("room11", PASSWORD, 1));
    assert_eq!(a.verifier(), b.verifier());
    assert_eq!(a.sender_key("alice"), b.sender_key("alice"));
    assert_eq!(a.room(), "room11");
    assert_eq!(a.verifier().len(), VERIFIER_LEN);
}

#[test]
fn other_name_password_or_incarnation_other_keys() {
    let base = derive("room11", PASSWORD, 1);
    for other in [
        derive("room12", PASSWORD, 1),
        derive("room11", "pass2935 of room11", 1),
        derive("Room11", PASSWORD, 1),
        derive("room11", PASSWORD, 2),
    ] {
        assert_ne!(base.verifier(), other.verifier());
        assert_ne!(base.sender_key("alice"), other.sender_key("alice"));
    }
}

#[test]
fn salt_binds_the_room_id_and_name() {
    let mut input = b"confab v2 room salt".to_vec();
    input.extend_from_slice(&[7; 16]);
    input.extend_from_slice(b"room11");
    let expected: [u8; 32] = Sha256::digest(&input).into();
    assert_eq!(room_salt("room11", &[7; 16]), expected);
    assert_ne!(room_salt("room11", &[7; 16]), room_salt("room12", &[7; 16]));
    assert_ne!(room_salt("room11", &[7; 16]), room_salt("room11", &[8; 16]));
}

#[test]
fn descriptor_encoding_and_policy() {
    let d = RoomDescriptor::generate(&mut rng(1), ROOM_PARAMS);
    let bytes = d.to_bytes();
    assert_eq!(bytes.len(), DESCRIPTOR_LEN);
    assert_eq!(bytes[0], DESCRIPTOR_VERSION);
    assert_eq!(&bytes[1..17], d.room_id());
    assert_eq!(bytes[17..21], (64 * 1024u32).to_be_bytes());
    assert_eq!(bytes[21..25], 3u32.to_be_bytes());
    assert_eq!(bytes[25..29], 1u32.to_be_bytes());
    assert_eq!(RoomDescriptor::parse(&bytes, ROOM_PARAMS), Ok(d));
    assert_ne!(RoomDescriptor::generate(&mut rng(2), ROOM_PARAMS).room_id(), d.room_id());
    // A server that lowers the costs is refused.
    let weak = RoomDescriptor::from_parts([1; 16], FAST).to_bytes();
    assert!(matches!(RoomDescriptor::parse(&weak, ROOM_PARAMS), Err(RoomError::WeakParams { .. })));
    assert!(RoomDescriptor::parse(&weak, FAST).is_ok());
    // One that raises them beyond reason, or sends garbage, too.
    let huge = RoomDescriptor::from_parts([1; 16], HashParams { m_cost_kib: u32::MAX, t_cost: 3, p_cost: 1 });
    assert!(matches!(RoomDescriptor::parse(&huge.to_bytes(), FAST), Err(RoomError::BadDescriptor(_))));
    let zero_p = RoomDescriptor::from_parts([1; 16], HashParams { m_cost_kib: 64, t_cost: 3, p_cost: 0 });
    assert!(matches!(RoomDescriptor::parse(&zero_p.to_bytes(), FAST), Err(RoomError::BadDescriptor(_))));
    let thin = RoomDescriptor::from_parts([1; 16], HashParams { m_cost_kib: 8, t_cost: 3, p_cost: 2 });
    assert!(matches!(RoomDescriptor::parse(&thin.to_bytes(), FAST), Err(RoomError::BadDescriptor(_))));
    assert!(matches!(RoomDescriptor::parse(&bytes[..28], FAST), Err(RoomError::BadDescriptor(_))));
    let mut v2 = bytes;
    v2[0] = 2;
    assert!(matches!(RoomDescriptor::parse(&v2, FAST), Err(RoomError::BadDescriptor(_))));
}

#[test]
fn weak_room_passwords_are_refused() {
    for weak in ["", "short", "aaaaaaaaaaaaaaaa", "abababababab", "pass2934"] {
        assert_eq!(check_room_password(weak.as_bytes()), Err(RoomError::WeakPassword), "{weak:?}");
    }
    for fine in ["lobby secret", PASSWORD, "correct horse battery"] {
        assert_eq!(check_room_password(fine.as_bytes()), Ok(()), "{fine:?}");
    }
}

#[test]
fn keys_are_separated() {
    let keys = derive("room11", PASSWORD, 1);
    let (alice, bob) = (keys.sender_key("alice"), keys.sender_key("bob"));
    assert_ne!(alice, bob);
    let verifier = keys.verifier();
    assert_ne!(alice.as_bytes(), verifier);
    assert!(!format!("{keys:?}").contains(&format!("{:?}", &verifier[..4])), "Debug shows no key bytes");
}

#[test]
fn members_read_each_other_and_history() {
    let mut alice = session(derive("room11", PASSWORD, 1), "alice", 1);
    let mut bob = session(derive("room11", PASSWORD, 1), "bob", 2);
    let mut history = Vec::new();
    for i in 0..5u8 {
        history.push(("alice", alice.seal(T, &[b'a', i]).unwrap()));
        history.push(("bob", bob.seal(T, &[b'b', i]).unwrap()));
    }
    let mut carol = session(derive("room11", PASSWORD, 1), "carol", 3);
    for (sender, blob) in &history {
        let opened = carol.open(sender, blob).unwrap();
        assert_eq!(opened.plaintext[0], sender.as_bytes()[0]);
    }
    let epoch = *alice.sealer().epoch();
    assert_eq!(carol.received("alice").unwrap().window(&epoch).unwrap().highest(), Some(4));
    // A replay of either sender's message is refused; peek still reads it.
    let counter = peek_header(&history[1].1).unwrap().counter;
    assert_eq!(carol.open("bob", &history[1].1), Err(OpenError::Replayed { counter }));
    assert_eq!(carol.peek("bob", &history[1].1).unwrap().plaintext, [b'b', 0]);
    // Alice also reads her own messages back from the history.
    assert_eq!(alice.open("alice", &history[0].1).unwrap().plaintext, [b'a', 0]);
}

#[test]
fn wrong_sender_room_password_or_incarnation_fails() {
    let mut alice = session(derive("room11", PASSWORD, 1), "alice", 1);
    let blob = alice.seal(T, b"hello").unwrap();
    let mut bob = session(derive("room11", PASSWORD, 1), "bob", 2);
    assert_eq!(bob.open("carol", &blob), Err(OpenError::BadMac));
    assert!(bob.received("carol").is_none(), "a failed open records nothing");
    for (name, password, id) in [("room12", PASSWORD, 1), ("room11", "pass2935 of room11", 1), ("room11", PASSWORD, 2)]
    {
        let mut other = session(derive(name, password, id), "bob", 3);
        assert_eq!(other.open("alice", &blob), Err(OpenError::BadMac), "{name} {password} {id}");
    }
    assert_eq!(bob.open("alice", &blob).unwrap().plaintext, b"hello");
}

/// The CLI reproduction of issue 10: the same member seals again after a
/// logout, login and rejoin (a new session of the same keys): no two of its
/// messages share a (key, nonce) pair.
#[test]
fn a_rejoin_never_reuses_key_stream() {
    let keys = derive("room11", PASSWORD, 1);
    let mut before = session(keys.clone(), "alice", 1);
    let mut after = session(keys, "alice", 2);
    let m = [0u8; 32];
    let (c1, c2) = (before.seal(T, &m).unwrap(), after.seal(T, &m).unwrap());
    assert_eq!(peek_header(&c1).unwrap().counter, peek_header(&c2).unwrap().counter);
    assert_ne!(c1[25..65], c2[25..65], "same key stream");
}

#[test]
fn restore_received() {
    let keys = derive("room11", PASSWORD, 1);
    let mut alice = session(keys.clone(), "alice", 1);
    let first = alice.seal(T, b"1").unwrap();
    let second = alice.seal(T + 1, b"2").unwrap();
    let mut bob = session(keys.clone(), "bob", 2);
    bob.open("alice", &first).unwrap();
    let mut again = session(keys, "bob", 3);
    again.restore_received("alice", bob.received("alice").unwrap().clone());
    assert_eq!(again.open("alice", &first), Err(OpenError::Replayed { counter: 0 }));
    assert_eq!(again.open("alice", &second).unwrap().plaintext, b"2");
    assert_eq!(again.keys().room(), "room11");
}

#[test]
fn bad_argon2_params() {
    let d = RoomDescriptor::from_parts([1; 16], HashParams { m_cost_kib: 8, t_cost: 1, p_cost: 0 });
    let err = RoomKeys::derive("room11", b"pass", &d).unwrap_err();
    assert!(matches!(err, RoomError::BadParams(_)));
}
