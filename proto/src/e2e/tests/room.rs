use super::*;

const FAST: HashParams = HashParams::INSECURE_FAST;

fn derive(room: &str, password: &str) -> RoomKeys {
    RoomKeys::derive(room, password.as_bytes(), FAST).unwrap()
}

#[test]
fn same_name_and_password_same_keys() {
    let (a, b) = (derive("room11", "pass2934"), derive("room11", "pass2934"));
    assert_eq!(a.verifier(), b.verifier());
    assert_eq!(a.sender_keys("alice"), b.sender_keys("alice"));
    assert_eq!(a.room(), "room11");
    assert_eq!(a.verifier().len(), VERIFIER_LEN);
}

#[test]
fn other_name_or_password_other_keys() {
    let base = derive("room11", "pass2934");
    for other in [derive("room12", "pass2934"), derive("room11", "pass2935"), derive("Room11", "pass2934")] {
        assert_ne!(base.verifier(), other.verifier());
        assert_ne!(base.sender_keys("alice"), other.sender_keys("alice"));
    }
}

#[test]
fn salt_binds_the_room_name() {
    let expected: [u8; 32] = Sha256::digest(b"confab room salt v1room11").into();
    assert_eq!(room_salt("room11"), expected);
    assert_ne!(room_salt("room11"), room_salt("room12"));
}

#[test]
fn keys_are_separated() {
    let keys = derive("room11", "pass2934");
    let (alice, bob) = (keys.sender_keys("alice").to_bytes(), keys.sender_keys("bob").to_bytes());
    assert_ne!(alice, bob);
    assert_ne!(alice[..16], alice[16..32]);
    let verifier = keys.verifier();
    assert!(!alice.windows(32).any(|w| w == verifier) && !bob.windows(32).any(|w| w == verifier));
    assert!(!format!("{keys:?}").contains(&format!("{:?}", &verifier[..4])), "Debug shows no key bytes");
}

#[test]
fn members_read_each_other_and_history() {
    let mut alice = RoomSession::new(derive("room11", "pass2934"), "alice");
    let mut bob = RoomSession::new(derive("room11", "pass2934"), "bob");
    // History as the server keeps it: (sender, blob), in order.
    let mut history = Vec::new();
    for i in 0..5u8 {
        history.push(("alice", alice.seal(&[b'a', i]).unwrap()));
        history.push(("bob", bob.seal(&[b'b', i]).unwrap()));
    }
    // Both use counter 0 first, with different keys: different key streams.
    assert_ne!(history[0].1[9..11], history[1].1[9..11]);
    let mut carol = RoomSession::new(derive("room11", "pass2934"), "carol");
    for (sender, blob) in &history {
        let plaintext = carol.open(sender, blob).unwrap();
        assert_eq!(plaintext[0], sender.as_bytes()[0]);
    }
    assert_eq!(carol.window("alice").unwrap().highest(), Some(4));
    // A replay of either sender's message is refused.
    assert_eq!(carol.open("bob", &history[1].1), Err(OpenError::Replayed { counter: 0 }));
    // Alice also reads her own messages back from the history.
    assert_eq!(alice.open("alice", &history[0].1).unwrap(), [b'a', 0]);
}

#[test]
fn wrong_sender_room_or_password_fails() {
    let mut alice = RoomSession::new(derive("room11", "pass2934"), "alice");
    let blob = alice.seal(b"hello").unwrap();
    let mut bob = RoomSession::new(derive("room11", "pass2934"), "bob");
    assert_eq!(bob.open("carol", &blob), Err(OpenError::BadMac));
    assert_eq!(bob.window("carol"), None, "a failed open records nothing");
    let mut elsewhere = RoomSession::new(derive("room12", "pass2934"), "bob");
    assert_eq!(elsewhere.open("alice", &blob), Err(OpenError::BadMac));
    let mut guesser = RoomSession::new(derive("room11", "pass2935"), "eve");
    assert_eq!(guesser.open("alice", &blob), Err(OpenError::BadMac));
    assert_eq!(bob.open("alice", &blob).unwrap(), b"hello");
}

#[test]
fn resume_and_restore() {
    let keys = derive("room11", "pass2934");
    let mut alice = RoomSession::new(keys.clone(), "alice");
    let first = alice.seal(b"1").unwrap();
    assert_eq!(alice.next_counter(), 1);
    let mut again = RoomSession::resume(keys.clone(), "alice", alice.next_counter());
    let second = again.seal(b"2").unwrap();
    assert_eq!(second[1..9], 1u64.to_be_bytes());
    let mut bob = RoomSession::new(keys, "bob");
    bob.restore_window("alice", ReplayWindow::from_parts(Some(0), 1));
    assert_eq!(bob.open("alice", &first), Err(OpenError::Replayed { counter: 0 }));
    assert_eq!(bob.open("alice", &second).unwrap(), b"2");
    assert_eq!(bob.keys().room(), "room11");
}

#[test]
fn bad_argon2_params() {
    let err = RoomKeys::derive("room11", b"pass", HashParams { m_cost_kib: 8, t_cost: 1, p_cost: 0 }).unwrap_err();
    assert!(matches!(err, RoomError::BadParams(_)));
}
