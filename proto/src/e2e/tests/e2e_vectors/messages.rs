//! Sealed messages: one each way of the MP session, and one in a room.

use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use super::handshake::Handshake;
use super::support::{Node, h16, hx, lp, text};
use super::{
    ALICE, BOB, COUNTER_A_TO_B, COUNTER_B_TO_A, COUNTER_ROOM, EPOCH_A_TO_B, EPOCH_B_TO_A, EPOCH_ROOM, ROOM_ID,
    ROOM_NAME, ROOM_PASSWORD, ROOM_VECTOR_PARAMS, SENT_MS_A_TO_B, SENT_MS_B_TO_A, SENT_MS_ROOM, TEXT_A_TO_B,
    TEXT_B_TO_A, TEXT_ROOM,
};
use crate::e2e::identity::argon2id;
use crate::e2e::kdf::extract;
use crate::e2e::room::{ROOM_PARAMS, room_salt};
use crate::e2e::seal::{
    OVERHEAD, associated_data, ctr_apply, hmac_sha256, iv_for, open_message, peek_header, seal_message,
};
use crate::e2e::{
    ConversationId, OpenError, RoomDescriptor, RoomError, RoomKeys, RoomSession, Sealer, StreamKey, check_room_password,
};

/// The fields of one vector object, in order.
type Fields = Vec<(&'static str, Node)>;

/// The fixed inputs of one sealed message.
struct SealInput<'a> {
    stream: &'a StreamKey,
    epoch: [u8; 16],
    counter: u64,
    conversation: ConversationId,
    sender: &'a str,
    sent_ms: u64,
    text: &'a str,
}

/// Seals one message with the implementation and checks every step of it
/// against docs/E2E.md. Returns the vector and the blob.
fn seal_node(name: &str, input: &SealInput<'_>) -> (Fields, Vec<u8>) {
    let keys = input.stream.epoch_keys(&input.epoch);
    let key_bytes = keys.to_bytes();
    let (enc, mac) = key_bytes.split_at(16);
    let prk = extract(&input.epoch, input.stream.as_bytes());
    let ad = associated_data(&input.conversation, input.sender);
    assert_eq!(
        ad,
        [lp(input.conversation.as_bytes()), lp(input.sender.as_bytes())].concat(),
        "{name}: associated data = lp(conversation) | lp(sender)"
    );
    let plaintext = input.text.as_bytes();
    let blob = seal_message(&keys, &input.epoch, input.counter, &ad, input.sent_ms, plaintext).expect("seals");
    assert_eq!(blob.len(), plaintext.len() + OVERHEAD, "{name}: blob length");
    let iv = iv_for(input.counter);
    assert_eq!(iv, [input.counter.to_be_bytes(), [0u8; 8]].concat().as_slice(), "{name}: CTR initial block");
    let framed = [&input.sent_ms.to_be_bytes()[..], plaintext].concat();
    let mut ciphertext = framed.clone();
    assert!(ctr_apply(enc.try_into().expect("16 bytes"), &iv, &mut ciphertext));
    let mac_input =
        [&[2u8][..], &input.epoch, &input.counter.to_be_bytes(), &(ad.len() as u64).to_be_bytes(), &ad, &ciphertext]
            .concat();
    let tag = hmac_sha256(mac, &[&mac_input]);
    let expected = [&[2u8][..], &input.epoch, &input.counter.to_be_bytes(), &ciphertext, &tag].concat();
    assert_eq!(blob, expected, "{name}: blob = version | epoch | counter | ciphertext | HMAC(mac_input)");
    // The low-level opener gives everything back.
    let (header, opened) = open_message(&keys, &ad, &blob).expect("opens");
    assert_eq!(peek_header(&blob).expect("header"), header);
    assert_eq!((header.epoch, header.counter), (input.epoch, input.counter), "{name}: header");
    assert_eq!((opened.sent_ms, opened.plaintext.as_slice()), (input.sent_ms, plaintext), "{name}: opened");
    let node = vec![
        ("sender", text(input.sender)),
        ("stream_key", hx(input.stream.as_bytes())),
        ("epoch", hx(&input.epoch)),
        ("epoch_prk", hx(&prk)),
        ("epoch_enc_key", hx(enc)),
        ("epoch_mac_key", hx(mac)),
        ("counter", Node::Num(input.counter)),
        ("sent_ms", Node::Num(input.sent_ms)),
        ("plaintext_utf8", text(input.text)),
        ("plaintext", hx(plaintext)),
        ("conversation_id", hx(input.conversation.as_bytes())),
        ("associated_data", hx(&ad)),
        ("ctr_initial_block", hx(&iv)),
        ("framed_plaintext", hx(&framed)),
        ("ciphertext", hx(&ciphertext)),
        ("mac_input", hx(&mac_input)),
        ("tag", hx(&tag)),
        ("sealed", hx(&blob)),
    ];
    (node, blob)
}

/// The MP messages a->b and b->a: sealed, opened by the other side, and
/// refused as replays. Returns the two vectors.
pub(super) fn mp_messages(hs: &mut Handshake) -> (Fields, Fields) {
    let (k_ab, k_ba) = (&hs.k_ab, &hs.k_ba);
    let (alice_mp, bob_mp) = (&mut hs.alice_mp, &mut hs.bob_mp);
    let ab = SealInput {
        stream: k_ab,
        epoch: h16(EPOCH_A_TO_B),
        counter: COUNTER_A_TO_B,
        conversation: ConversationId::mp(ALICE, BOB),
        sender: ALICE,
        sent_ms: SENT_MS_A_TO_B,
        text: TEXT_A_TO_B,
    };
    let (mut ab_node, ab_blob) = seal_node("mp a->b", &ab);
    // A sending session's first message is counter 0: the public Sealer gives the same blob.
    let mut sealer = Sealer::with_epoch(alice_mp.send_stream(), ab.epoch);
    assert_eq!(sealer.seal(&ab.conversation, ALICE, ab.sent_ms, TEXT_A_TO_B.as_bytes()).expect("seal"), ab_blob);
    let opened = bob_mp.open(&ab_blob).expect("bob opens a->b");
    assert_eq!((opened.sent_ms, opened.plaintext.as_slice()), (SENT_MS_A_TO_B, TEXT_A_TO_B.as_bytes()));
    assert_eq!(bob_mp.open(&ab_blob), Err(OpenError::Replayed { counter: COUNTER_A_TO_B }), "a->b replay refused");
    let ba = SealInput {
        stream: k_ba,
        epoch: h16(EPOCH_B_TO_A),
        counter: COUNTER_B_TO_A,
        conversation: ConversationId::mp(BOB, ALICE),
        sender: BOB,
        sent_ms: SENT_MS_B_TO_A,
        text: TEXT_B_TO_A,
    };
    let (mut ba_node, ba_blob) = seal_node("mp b->a", &ba);
    let opened = alice_mp.open(&ba_blob).expect("alice opens b->a");
    assert_eq!((opened.sent_ms, opened.plaintext.as_slice()), (SENT_MS_B_TO_A, TEXT_B_TO_A.as_bytes()));
    assert_eq!(alice_mp.open(&ba_blob), Err(OpenError::Replayed { counter: COUNTER_B_TO_A }), "b->a replay refused");
    // Each direction only opens with its own conversation id.
    assert_eq!(bob_mp.open(&ba_blob), Err(OpenError::BadMac), "b->a does not open as a->b");
    ab_node.insert(1, ("recipient", text(BOB)));
    ba_node.insert(1, ("recipient", text(ALICE)));
    (ab_node, ba_node)
}

/// The room: descriptor, salt, argon2id, keys and verifier, then one
/// message from Alice that Bob opens. Returns the `room` and
/// `room_message` vectors.
pub(super) fn room(rng: &mut StdRng) -> (Node, Fields) {
    let room_id = h16(ROOM_ID);
    let descriptor = RoomDescriptor::from_parts(room_id, ROOM_VECTOR_PARAMS);
    let descriptor_bytes = descriptor.to_bytes();
    let p = ROOM_VECTOR_PARAMS;
    let expected_descriptor =
        [&[1u8][..], &room_id, &p.m_cost_kib.to_be_bytes(), &p.t_cost.to_be_bytes(), &p.p_cost.to_be_bytes()].concat();
    assert_eq!(descriptor_bytes.as_slice(), expected_descriptor.as_slice(), "room descriptor layout");
    assert_eq!(RoomDescriptor::parse(&descriptor_bytes, ROOM_VECTOR_PARAMS), Ok(descriptor));
    assert!(
        matches!(RoomDescriptor::parse(&descriptor_bytes, ROOM_PARAMS), Err(RoomError::WeakParams { .. })),
        "the vector's cheap costs are below the default client minimum"
    );
    check_room_password(ROOM_PASSWORD.as_bytes()).expect("the vector's room password is accepted");
    let salt = room_salt(ROOM_NAME, &room_id);
    let salt_input = [b"confab v2 room salt".as_slice(), &room_id, ROOM_NAME.as_bytes()].concat();
    assert_eq!(salt, <[u8; 32]>::from(Sha256::digest(&salt_input)), "room salt");
    let keys = RoomKeys::derive(ROOM_NAME, ROOM_PASSWORD.as_bytes(), &descriptor).expect("room keys");
    let mut argon = [0u8; 32];
    argon2id(ROOM_PASSWORD.as_bytes(), &salt, p, &mut argon).expect("argon2id");
    assert_eq!(keys.secret(), &argon, "room secret = argon2id(password, salt)");
    let room_prk = extract(&salt, &argon);
    let alice_room_key = keys.sender_key(ALICE);
    let bob_room_key = keys.sender_key(BOB);
    let conversation = keys.conversation();
    let expected_conversation = [b"room".as_slice(), &lp(ROOM_NAME.as_bytes()), &room_id].concat();
    assert_eq!(conversation.as_bytes(), expected_conversation.as_slice(), "room conversation id");
    assert_eq!(conversation, ConversationId::room(ROOM_NAME, &room_id));
    let room_node = Node::Obj(vec![
        ("room", text(ROOM_NAME)),
        ("password_utf8", text(ROOM_PASSWORD)),
        ("room_id", hx(&room_id)),
        ("argon2id_m_cost_kib", Node::Num(u64::from(p.m_cost_kib))),
        ("argon2id_t_cost", Node::Num(u64::from(p.t_cost))),
        ("argon2id_p_cost", Node::Num(u64::from(p.p_cost))),
        ("descriptor", hx(&descriptor_bytes)),
        ("salt_input", hx(&salt_input)),
        ("salt", hx(&salt)),
        ("argon2id_output", hx(&argon)),
        ("hkdf_prk", hx(&room_prk)),
        ("verifier", hx(keys.verifier())),
        ("stream_key_alice", hx(alice_room_key.as_bytes())),
        ("stream_key_bob", hx(bob_room_key.as_bytes())),
        ("conversation_id", hx(conversation.as_bytes())),
    ]);

    let room_msg = SealInput {
        stream: &alice_room_key,
        epoch: h16(EPOCH_ROOM),
        counter: COUNTER_ROOM,
        conversation: conversation.clone(),
        sender: ALICE,
        sent_ms: SENT_MS_ROOM,
        text: TEXT_ROOM,
    };
    let (mut message_node, room_blob) = seal_node("room message", &room_msg);
    message_node.insert(1, ("room", text(ROOM_NAME)));
    // Bob joins: descriptor from the server, the password, his own derivation.
    let bob_descriptor = RoomDescriptor::parse(&descriptor_bytes, ROOM_VECTOR_PARAMS).expect("descriptor");
    let bob_keys = RoomKeys::derive(ROOM_NAME, ROOM_PASSWORD.as_bytes(), &bob_descriptor).expect("bob's room keys");
    assert_eq!(bob_keys.verifier(), keys.verifier(), "same verifier");
    let mut bob_room = RoomSession::new(bob_keys, BOB, rng);
    let opened = bob_room.open(ALICE, &room_blob).expect("bob opens the room message");
    assert_eq!((opened.sent_ms, opened.plaintext.as_slice()), (SENT_MS_ROOM, TEXT_ROOM.as_bytes()));
    assert_eq!(bob_room.open(ALICE, &room_blob), Err(OpenError::Replayed { counter: COUNTER_ROOM }));
    assert_eq!(bob_room.open(BOB, &room_blob), Err(OpenError::BadMac), "the sender is bound");
    (room_node, message_node)
}
