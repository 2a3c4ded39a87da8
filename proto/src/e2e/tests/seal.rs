use proptest::prelude::*;

use super::*;

fn keys(seed: u8) -> SealKeys {
    SealKeys::new([seed; 16], [seed.wrapping_add(1); 32])
}

fn pair(seed: u8) -> (Sealer, Opener) {
    (Sealer::new(keys(seed)), Opener::new(keys(seed)))
}

fn room() -> ConversationId {
    ConversationId::room("room11")
}

#[test]
fn round_trip_and_layout() {
    let (mut sealer, mut opener) = pair(1);
    for (i, plaintext) in [&b""[..], b"x", b"hello world", &[7u8; 1000]].into_iter().enumerate() {
        let blob = sealer.seal(&room(), "alice", plaintext).unwrap();
        assert_eq!(blob.len(), plaintext.len() + OVERHEAD);
        assert_eq!(blob[0], SEAL_VERSION);
        assert_eq!(blob[1..9], (i as u64).to_be_bytes());
        assert_eq!(peek_counter(&blob), Ok(i as u64));
        if !plaintext.is_empty() {
            assert_ne!(&blob[HEADER_LEN..HEADER_LEN + plaintext.len()], plaintext, "not encrypted");
        }
        assert_eq!(opener.open(&room(), "alice", &blob).unwrap(), plaintext);
    }
    assert_eq!(sealer.next_counter(), 4);
}

/// The layout is exactly what the module docs say: CTR with IV =
/// counter || 0^64, tag over version | ad length | ad | counter | ciphertext.
#[test]
fn layout_matches_the_spec() {
    let k = keys(9);
    let ad = associated_data(&ConversationId::mp("alice", "bob"), "alice");
    let blob = seal_with_counter(&k, 0x0102_0304_0506_0708, &ad, b"secret").unwrap();
    let mut ciphertext = b"secret".to_vec();
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(ctr_apply(&[9; 16], &iv, &mut ciphertext));
    let mut mac_input = vec![1u8];
    mac_input.extend_from_slice(&(ad.len() as u64).to_be_bytes());
    mac_input.extend_from_slice(&ad);
    mac_input.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    mac_input.extend_from_slice(&ciphertext);
    let mut expected = vec![1u8, 1, 2, 3, 4, 5, 6, 7, 8];
    expected.extend_from_slice(&ciphertext);
    expected.extend_from_slice(&hmac_sha256(&[10; 32], &[&mac_input]));
    assert_eq!(blob, expected);
    // The associated data: len | conversation | len | sender.
    let conv = ConversationId::mp("alice", "bob");
    let mut want = (conv.as_bytes().len() as u64).to_be_bytes().to_vec();
    want.extend_from_slice(conv.as_bytes());
    want.extend_from_slice(&5u64.to_be_bytes());
    want.extend_from_slice(b"alice");
    assert_eq!(ad, want);
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (mut sealer, _) = pair(2);
    let blob = sealer.seal(&room(), "alice", b"hi bob").unwrap();
    for bit in 0..blob.len() * 8 {
        let mut tampered = blob.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let mut opener = Opener::new(keys(2));
        let result = opener.open(&room(), "alice", &tampered);
        assert!(result.is_err(), "bit {bit} flipped and accepted");
        if bit >= 8 {
            assert_eq!(result, Err(OpenError::BadMac), "bit {bit}");
        } else {
            assert!(matches!(result, Err(OpenError::UnknownVersion(_))), "bit {bit}");
        }
        // A rejected blob leaves the window untouched: the real one still opens.
        assert_eq!(opener.open(&room(), "alice", &blob).unwrap(), b"hi bob");
    }
}

#[test]
fn truncated_and_unknown_version() {
    let (mut sealer, mut opener) = pair(3);
    let blob = sealer.seal(&room(), "alice", b"").unwrap();
    assert_eq!(blob.len(), OVERHEAD);
    for len in 0..OVERHEAD {
        assert_eq!(opener.open(&room(), "alice", &blob[..len]), Err(OpenError::Truncated { len }));
    }
    let mut v2 = blob.clone();
    v2[0] = 2;
    assert_eq!(opener.open(&room(), "alice", &v2), Err(OpenError::UnknownVersion(2)));
    // A tag cut short by one byte, with one more byte of "ciphertext", fails.
    let mut shifted = blob.clone();
    shifted.insert(HEADER_LEN, 0);
    assert_eq!(opener.open(&room(), "alice", &shifted), Err(OpenError::BadMac));
    assert_eq!(opener.open(&room(), "alice", &blob), Ok(vec![]));
}

#[test]
fn replay_and_too_old_are_rejected() {
    let (mut sealer, mut opener) = pair(4);
    let blobs: Vec<Vec<u8>> = (0..100).map(|i| sealer.seal(&room(), "alice", &[i as u8]).unwrap()).collect();
    assert_eq!(opener.open(&room(), "alice", &blobs[0]).unwrap(), [0]);
    assert_eq!(opener.open(&room(), "alice", &blobs[0]), Err(OpenError::Replayed { counter: 0 }));
    // Jump ahead, then late arrivals within the window are accepted once.
    assert_eq!(opener.open(&room(), "alice", &blobs[70]).unwrap(), [70]);
    assert_eq!(opener.open(&room(), "alice", &blobs[69]).unwrap(), [69]);
    assert_eq!(opener.open(&room(), "alice", &blobs[7]).unwrap(), [7]); // 63 behind
    assert_eq!(opener.open(&room(), "alice", &blobs[7]), Err(OpenError::Replayed { counter: 7 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[6]), Err(OpenError::TooOld { counter: 6, highest: 70 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[1]), Err(OpenError::TooOld { counter: 1, highest: 70 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[70]), Err(OpenError::Replayed { counter: 70 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[99]).unwrap(), [99]);
    assert_eq!(opener.open(&room(), "alice", &blobs[69]), Err(OpenError::Replayed { counter: 69 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[35]), Err(OpenError::TooOld { counter: 35, highest: 99 }));
    assert_eq!(opener.open(&room(), "alice", &blobs[36]).unwrap(), [36]); // 63 behind
    assert_eq!(opener.open(&room(), "alice", &blobs[71]).unwrap(), [71]);
}

#[test]
fn forged_blob_does_not_move_the_window() {
    let (mut sealer, mut opener) = pair(5);
    let first = sealer.seal(&room(), "alice", b"a").unwrap();
    let mut forged = seal_with_counter(&keys(6), 1_000_000, &associated_data(&room(), "alice"), b"z").unwrap();
    assert_eq!(opener.open(&room(), "alice", &forged), Err(OpenError::BadMac));
    forged[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(opener.open(&room(), "alice", &forged), Err(OpenError::BadMac));
    assert_eq!(opener.window().highest(), None);
    assert_eq!(opener.open(&room(), "alice", &first).unwrap(), b"a");
}

#[test]
fn wrong_conversation_sender_or_key_fails() {
    let (mut sealer, _) = pair(7);
    let blob = sealer.seal(&ConversationId::mp("alice", "bob"), "alice", b"hi").unwrap();
    let open = |conv: ConversationId, sender: &str, k: SealKeys| Opener::new(k).open(&conv, sender, &blob);
    assert_eq!(open(ConversationId::mp("alice", "bob"), "alice", keys(7)).unwrap(), b"hi");
    assert_eq!(open(ConversationId::mp("bob", "alice"), "alice", keys(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "carol"), "alice", keys(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::room("alice"), "alice", keys(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "bob"), "bob", keys(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "bob"), "alice", keys(8)), Err(OpenError::BadMac));
    // Right AES key, wrong MAC key.
    let mixed = SealKeys::new([7; 16], [9; 32]);
    assert_eq!(open(ConversationId::mp("alice", "bob"), "alice", mixed), Err(OpenError::BadMac));
}

#[test]
fn conversation_ids() {
    // Both users name a direction the same way; the two directions differ.
    assert_eq!(ConversationId::mp("alice", "bob"), ConversationId::mp("alice", "bob"));
    assert_ne!(ConversationId::mp("alice", "bob"), ConversationId::mp("bob", "alice"));
    // Length prefixes: no two pairs collide by concatenation.
    assert_ne!(ConversationId::mp("ab", "c"), ConversationId::mp("a", "bc"));
    assert_ne!(ConversationId::room("mp"), ConversationId::mp("", ""));
    assert_ne!(associated_data(&room(), "ab"), associated_data(&ConversationId::room("room11a"), "b"));
}

#[test]
fn same_plaintext_twice_gives_different_ciphertexts() {
    let (mut sealer, _) = pair(8);
    let a = sealer.seal(&room(), "alice", &[0; 64]).unwrap();
    let b = sealer.seal(&room(), "alice", &[0; 64]).unwrap();
    assert_ne!(a[HEADER_LEN..HEADER_LEN + 64], b[HEADER_LEN..HEADER_LEN + 64]);
}

#[test]
fn counter_exhaustion_and_resume() {
    let mut sealer = Sealer::resume(keys(9), u64::MAX - 1);
    let last = sealer.seal(&room(), "alice", b"last").unwrap();
    assert_eq!(peek_counter(&last), Ok(u64::MAX - 1));
    assert_eq!(sealer.seal(&room(), "alice", b"one more"), Err(SealError::CounterExhausted));
    let mut opener = Opener::resume(keys(9), ReplayWindow::from_parts(Some(10), 0));
    assert_eq!(opener.open(&room(), "alice", &last).unwrap(), b"last");
}

#[test]
fn replay_window_parts() {
    let mut w = ReplayWindow::new();
    assert_eq!(w.check(u64::MAX), Ok(()));
    w.accept(5);
    w.accept(3);
    assert_eq!((w.highest(), w.bitmap()), (Some(5), 0b101));
    let restored = ReplayWindow::from_parts(w.highest(), w.bitmap());
    assert_eq!(restored, w);
    assert_eq!(restored.check(3), Err(OpenError::Replayed { counter: 3 }));
    assert_eq!(restored.check(4), Ok(()));
    w.accept(200);
    assert_eq!((w.highest(), w.bitmap()), (Some(200), 1));
    assert_eq!(ReplayWindow::from_parts(None, 7), ReplayWindow::new());
}

#[test]
fn keys_debug_hides_bytes() {
    assert_eq!(format!("{:?}", keys(1)), "SealKeys(..)");
    assert_eq!(SealKeys::from_bytes(&keys(1).to_bytes()), keys(1));
}

proptest! {
    #[test]
    fn prop_seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        name in "[a-z0-9_.-]{1,32}",
        sender in "[a-z0-9_.-]{3,32}",
        seed in any::<u8>(),
        start in any::<u64>().prop_map(|c| c % (u64::MAX - 4)),
    ) {
        let conv = ConversationId::room(&name);
        let mut sealer = Sealer::resume(keys(seed), start);
        let mut opener = Opener::new(keys(seed));
        for _ in 0..3 {
            let blob = sealer.seal(&conv, &sender, &plaintext).unwrap();
            prop_assert_eq!(blob.len(), plaintext.len() + OVERHEAD);
            prop_assert_eq!(opener.open(&conv, &sender, &blob).unwrap(), plaintext.clone());
            prop_assert!(opener.open(&conv, &sender, &blob).is_err());
        }
    }

    #[test]
    fn prop_mp_round_trip(plaintext in proptest::collection::vec(any::<u8>(), 0..512), a in "[a-z]{3,8}", b in "[a-z]{3,8}") {
        let (mut sealer, mut opener) = pair(11);
        let blob = sealer.seal(&ConversationId::mp(&a, &b), &a, &plaintext).unwrap();
        prop_assert_eq!(opener.open(&ConversationId::mp(&a, &b), &a, &blob).unwrap(), plaintext);
    }

    #[test]
    fn prop_open_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut opener = Opener::new(keys(12));
        prop_assert!(opener.open(&room(), "alice", &blob).is_err());
    }
}
