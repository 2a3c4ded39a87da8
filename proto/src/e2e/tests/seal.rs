use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const T: u64 = 1_700_000_000_000;

fn stream(seed: u8) -> StreamKey {
    StreamKey::from_bytes([seed; 32])
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn pair(seed: u8) -> (Sealer, Opener) {
    (Sealer::new(&stream(seed), &mut rng(u64::from(seed))), Opener::new(stream(seed)))
}

fn room() -> ConversationId {
    ConversationId::room("room11", &[0x11; 16])
}

fn open(opener: &mut Opener, blob: &[u8]) -> Result<Vec<u8>, OpenError> {
    opener.open(&room(), "alice", blob).map(|o| o.plaintext)
}

#[test]
fn round_trip_and_layout() {
    let (mut sealer, mut opener) = pair(1);
    let epoch = *sealer.epoch();
    for (i, plaintext) in [&b""[..], b"x", b"hello world", &[7u8; 1000]].into_iter().enumerate() {
        let blob = sealer.seal(&room(), "alice", T + i as u64, plaintext).unwrap();
        assert_eq!(blob.len(), plaintext.len() + OVERHEAD);
        assert_eq!(blob[0], SEAL_VERSION);
        assert_eq!(blob[1..17], epoch);
        assert_eq!(blob[17..25], (i as u64).to_be_bytes());
        assert_eq!(peek_header(&blob), Ok(Header { epoch, counter: i as u64 }));
        if !plaintext.is_empty() {
            assert_ne!(&blob[33..33 + plaintext.len()], plaintext, "not encrypted");
        }
        let opened = opener.open(&room(), "alice", &blob).unwrap();
        assert_eq!((opened.sent_ms, &opened.plaintext[..]), (T + i as u64, plaintext));
    }
    assert_eq!(sealer.next_counter(), 4);
}

/// The layout is exactly what the module docs say: epoch keys by HKDF from
/// the stream key, CTR with IV = counter || 0^64 over `sent_ms | plaintext`,
/// tag over version | epoch | counter | ad length | ad | ciphertext.
#[test]
fn layout_matches_the_spec() {
    let stream = stream(9);
    let epoch = [0xe0; 16];
    let (prk, _) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&epoch), &[9; 32]);
    let expand = |label: &[u8], out: &mut [u8]| {
        hkdf::Hkdf::<sha2::Sha256>::from_prk(&prk).unwrap().expand(label, out).unwrap();
    };
    let (mut enc, mut mac) = ([0u8; 16], [0u8; 32]);
    expand(b"confab v2 epoch enc", &mut enc);
    expand(b"confab v2 epoch mac", &mut mac);
    assert_eq!(stream.epoch_keys(&epoch), SealKeys::new(enc, mac));

    let ad = associated_data(&ConversationId::mp("alice", "bob"), "alice");
    let blob = seal_message(&stream.epoch_keys(&epoch), &epoch, 0x0102_0304_0506_0708, &ad, T, b"secret").unwrap();
    let mut ciphertext = T.to_be_bytes().to_vec();
    ciphertext.extend_from_slice(b"secret");
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(ctr_apply(&enc, &iv, &mut ciphertext));
    let mut mac_input = vec![2u8];
    mac_input.extend_from_slice(&epoch);
    mac_input.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    mac_input.extend_from_slice(&(ad.len() as u64).to_be_bytes());
    mac_input.extend_from_slice(&ad);
    mac_input.extend_from_slice(&ciphertext);
    let mut expected = vec![2u8];
    expected.extend_from_slice(&epoch);
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&ciphertext);
    expected.extend_from_slice(&hmac_sha256(&mac, &[&mac_input]));
    assert_eq!(blob, expected);
    // The associated data: len | conversation | len | sender.
    let conv = ConversationId::mp("alice", "bob");
    let mut want = (conv.as_bytes().len() as u64).to_be_bytes().to_vec();
    want.extend_from_slice(conv.as_bytes());
    want.extend_from_slice(&5u64.to_be_bytes());
    want.extend_from_slice(b"alice");
    assert_eq!(ad, want);
    // A room's id: "room" | len | name | room id.
    let mut want = b"room".to_vec();
    want.extend_from_slice(&6u64.to_be_bytes());
    want.extend_from_slice(b"room11");
    want.extend_from_slice(&[0x11; 16]);
    assert_eq!(room().as_bytes(), &want[..]);
}

/// The property issue 10 asks for: two sending sessions of one stream
/// (a restart, a restored profile, a second device) never share key stream.
#[test]
fn two_sending_sessions_never_share_key_stream() {
    let mut first = Sealer::new(&stream(1), &mut rng(1));
    let mut second = Sealer::new(&stream(1), &mut rng(2));
    assert_ne!(first.epoch(), second.epoch());
    let zeros = [0u8; 64];
    let a = first.seal(&room(), "alice", T, &zeros).unwrap();
    let b = second.seal(&room(), "alice", T, &zeros).unwrap();
    // Same counter, same plaintext, same stream key: the key streams differ.
    assert_eq!(a[17..25], b[17..25]);
    assert_ne!(a[HEADER_LEN..HEADER_LEN + 72], b[HEADER_LEN..HEADER_LEN + 72]);
    assert_ne!(first.keys(), second.keys());
    // Both open on the receiving side, each once.
    let mut opener = Opener::new(stream(1));
    assert_eq!(open(&mut opener, &a).unwrap(), zeros);
    assert_eq!(open(&mut opener, &b).unwrap(), zeros);
    assert_eq!(open(&mut opener, &a), Err(OpenError::Replayed { counter: 0 }));
    assert_eq!(opener.state().records().len(), 2);
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (mut sealer, _) = pair(2);
    let blob = sealer.seal(&room(), "alice", T, b"hi bob").unwrap();
    for bit in 0..blob.len() * 8 {
        let mut tampered = blob.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let mut opener = Opener::new(stream(2));
        let result = open(&mut opener, &tampered);
        if bit >= 8 {
            assert_eq!(result, Err(OpenError::BadMac), "bit {bit}");
        } else {
            assert!(matches!(result, Err(OpenError::UnknownVersion(_))), "bit {bit}");
        }
        assert!(opener.state().records().is_empty(), "a rejected blob records nothing");
        assert_eq!(open(&mut opener, &blob).unwrap(), b"hi bob");
    }
}

#[test]
fn truncated_and_unknown_version() {
    let (mut sealer, mut opener) = pair(3);
    let blob = sealer.seal(&room(), "alice", T, b"").unwrap();
    assert_eq!(blob.len(), OVERHEAD);
    for len in 0..OVERHEAD {
        assert_eq!(open(&mut opener, &blob[..len]), Err(OpenError::Truncated { len, min: OVERHEAD }));
    }
    let mut v1 = blob.clone();
    v1[0] = 1;
    assert_eq!(open(&mut opener, &v1), Err(OpenError::UnknownVersion(1)));
    // A tag cut short by one byte, with one more byte of "ciphertext", fails.
    let mut shifted = blob.clone();
    shifted.insert(HEADER_LEN, 0);
    assert_eq!(open(&mut opener, &shifted), Err(OpenError::BadMac));
    assert_eq!(open(&mut opener, &blob), Ok(vec![]));
}

#[test]
fn replay_and_too_old_are_rejected() {
    let (mut sealer, mut opener) = pair(4);
    let blobs: Vec<Vec<u8>> = (0..100).map(|i| sealer.seal(&room(), "alice", T + i, &[i as u8]).unwrap()).collect();
    assert_eq!(open(&mut opener, &blobs[0]).unwrap(), [0]);
    assert_eq!(open(&mut opener, &blobs[0]), Err(OpenError::Replayed { counter: 0 }));
    // Jump ahead, then late arrivals within the window are accepted once.
    assert_eq!(open(&mut opener, &blobs[70]).unwrap(), [70]);
    assert_eq!(open(&mut opener, &blobs[69]).unwrap(), [69]);
    assert_eq!(open(&mut opener, &blobs[7]).unwrap(), [7]); // 63 behind
    assert_eq!(open(&mut opener, &blobs[7]), Err(OpenError::Replayed { counter: 7 }));
    assert_eq!(open(&mut opener, &blobs[6]), Err(OpenError::TooOld { counter: 6, highest: 70 }));
    assert_eq!(open(&mut opener, &blobs[70]), Err(OpenError::Replayed { counter: 70 }));
    assert_eq!(open(&mut opener, &blobs[99]).unwrap(), [99]);
    assert_eq!(open(&mut opener, &blobs[35]), Err(OpenError::TooOld { counter: 35, highest: 99 }));
    assert_eq!(open(&mut opener, &blobs[36]).unwrap(), [36]); // 63 behind
}

/// A receiver remembers at most MAX_EPOCHS epochs per stream; a forgotten
/// epoch's messages are refused forever after (the floor), newer epochs
/// are still accepted.
#[test]
fn forgotten_epochs_stay_refused() {
    let mut opener = Opener::new(stream(5));
    let mut first = Vec::new();
    for i in 0..=MAX_EPOCHS as u64 {
        let mut sealer = Sealer::new(&stream(5), &mut rng(1000 + i));
        let blob = sealer.seal(&room(), "alice", T + i, b"m").unwrap();
        assert!(open(&mut opener, &blob).is_ok(), "epoch {i}");
        if i == 0 {
            first = blob;
        }
    }
    assert_eq!(opener.state().records().len(), MAX_EPOCHS);
    assert_eq!(opener.state().floor_ms(), Some(T));
    assert_eq!(open(&mut opener, &first), Err(OpenError::Stale { sent_ms: T, floor_ms: T }));
    // A persisted and restored state refuses it too.
    let restored = ReplayState::from_parts(&opener.state().records(), opener.state().floor_ms());
    assert_eq!(&restored, opener.state());
    let mut again = Opener::resume(stream(5), restored);
    assert_eq!(open(&mut again, &first), Err(OpenError::Stale { sent_ms: T, floor_ms: T }));
    // A new sending session with a later clock is welcome.
    let mut late = Sealer::new(&stream(5), &mut rng(7));
    assert!(open(&mut again, &late.seal(&room(), "alice", T + 10_000, b"new").unwrap()).is_ok());
}

#[test]
fn forged_blob_moves_nothing() {
    let (mut sealer, mut opener) = pair(5);
    let first = sealer.seal(&room(), "alice", T, b"a").unwrap();
    let other = StreamKey::from_bytes([6; 32]);
    let epoch = *sealer.epoch();
    let ad = associated_data(&room(), "alice");
    let mut forged = seal_message(&other.epoch_keys(&epoch), &epoch, 1_000_000, &ad, T, b"z").unwrap();
    assert_eq!(open(&mut opener, &forged), Err(OpenError::BadMac));
    forged[17..25].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(open(&mut opener, &forged), Err(OpenError::BadMac));
    assert!(opener.state().records().is_empty());
    assert_eq!(open(&mut opener, &first).unwrap(), b"a");
}

#[test]
fn wrong_conversation_sender_or_key_fails() {
    let (mut sealer, _) = pair(7);
    let blob = sealer.seal(&ConversationId::mp("alice", "bob"), "alice", T, b"hi").unwrap();
    let open = |conv: ConversationId, sender: &str, k: StreamKey| {
        Opener::new(k).open(&conv, sender, &blob).map(|o| o.plaintext)
    };
    assert_eq!(open(ConversationId::mp("alice", "bob"), "alice", stream(7)).unwrap(), b"hi");
    assert_eq!(open(ConversationId::mp("bob", "alice"), "alice", stream(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "carol"), "alice", stream(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::room("alice", &[0; 16]), "alice", stream(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "bob"), "bob", stream(7)), Err(OpenError::BadMac));
    assert_eq!(open(ConversationId::mp("alice", "bob"), "alice", stream(8)), Err(OpenError::BadMac));
}

#[test]
fn conversation_ids() {
    // Both users name a direction the same way; the two directions differ.
    assert_eq!(ConversationId::mp("alice", "bob"), ConversationId::mp("alice", "bob"));
    assert_ne!(ConversationId::mp("alice", "bob"), ConversationId::mp("bob", "alice"));
    // Length prefixes: no two pairs collide by concatenation.
    assert_ne!(ConversationId::mp("ab", "c"), ConversationId::mp("a", "bc"));
    // Two incarnations of a room differ.
    assert_ne!(ConversationId::room("room11", &[1; 16]), ConversationId::room("room11", &[2; 16]));
    assert_ne!(associated_data(&room(), "ab"), associated_data(&ConversationId::room("room11a", &[0x11; 16]), "b"));
}

#[test]
fn counter_exhaustion() {
    let mut sealer = Sealer::with_epoch(&stream(9), [3; 16]);
    sealer.next = u64::MAX - 1;
    let last = sealer.seal(&room(), "alice", T, b"last").unwrap();
    assert_eq!(peek_header(&last).unwrap().counter, u64::MAX - 1);
    assert_eq!(sealer.seal(&room(), "alice", T, b"one more"), Err(SealError::CounterExhausted));
    assert_eq!(open(&mut Opener::new(stream(9)), &last).unwrap(), b"last");
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
fn raw_blobs_round_trip() {
    let keys = SealKeys::new([1; 16], [2; 32]);
    let blob = seal_with_counter(&keys, 0, b"ad", b"key material").unwrap();
    assert_eq!(blob.len(), RAW_OVERHEAD + 12);
    assert_eq!(open_unchecked(&keys, b"ad", &blob), Ok((0, b"key material".to_vec())));
    assert_eq!(open_unchecked(&keys, b"other", &blob), Err(OpenError::BadMac));
}

#[test]
fn keys_debug_hides_bytes() {
    assert_eq!(format!("{:?}", SealKeys::new([1; 16], [2; 32])), "SealKeys(..)");
    assert_eq!(format!("{:?}", stream(1)), "StreamKey(..)");
}

proptest! {
    #[test]
    fn prop_seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        name in "[a-z0-9_.-]{1,32}",
        sender in "[a-z0-9_.-]{3,32}",
        seed in any::<u8>(),
        sent_ms in any::<u64>(),
    ) {
        let conv = ConversationId::room(&name, &[seed; 16]);
        let mut sealer = Sealer::new(&stream(seed), &mut rng(u64::from(seed)));
        let mut opener = Opener::new(stream(seed));
        for _ in 0..3 {
            let blob = sealer.seal(&conv, &sender, sent_ms, &plaintext).unwrap();
            prop_assert_eq!(blob.len(), plaintext.len() + OVERHEAD);
            let opened = opener.open(&conv, &sender, &blob).unwrap();
            prop_assert_eq!((opened.sent_ms, opened.plaintext), (sent_ms, plaintext.clone()));
            prop_assert!(opener.open(&conv, &sender, &blob).is_err());
        }
    }

    #[test]
    fn prop_open_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut opener = Opener::new(stream(12));
        prop_assert!(opener.open(&room(), "alice", &blob).is_err());
    }
}

/// Found by the attacker review: an epoch forgotten under the floor and
/// then heard from again must not come back with an empty window that
/// accepts its old messages a second time.
#[test]
fn a_forgotten_epoch_heard_again_does_not_readmit_its_old_messages() {
    let mut long_lived = Sealer::new(&stream(5), &mut rng(1));
    let m1 = long_lived.seal(&room(), "alice", T + 1000, b"m1").unwrap();
    let mut opener = Opener::new(stream(5));
    assert!(open(&mut opener, &m1).is_ok());
    for i in 0..MAX_EPOCHS as u64 {
        let mut other = Sealer::new(&stream(5), &mut rng(2000 + i));
        assert!(open(&mut opener, &other.seal(&room(), "alice", T + 2000 + i, b"x").unwrap()).is_ok());
    }
    assert_eq!(opener.state().floor_ms(), Some(T + 1000), "the long-lived epoch was forgotten");
    let m2 = long_lived.seal(&room(), "alice", T + 5000, b"m2").unwrap();
    assert!(open(&mut opener, &m2).is_ok(), "a newer message of the forgotten epoch is welcome");
    assert!(matches!(open(&mut opener, &m1), Err(OpenError::Stale { sent_ms, .. }) if sent_ms == T + 1000));
}
