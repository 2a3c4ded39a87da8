//! The E2E test vectors of docs/E2E.md, kept in docs/vectors/e2e.json.
//!
//! Every value in the file is recomputed here from fixed inputs (the
//! fixture RSA keys, fixed P-256 scalars, fixed PSS salts, epochs, room id,
//! counters and clocks) through the crate's own functions, and compared
//! field by field with the file: the file can never drift from the code.
//! Each intermediate the implementation keeps private (signed messages,
//! salts, MAC inputs, ...) is rebuilt here from the text of docs/E2E.md and
//! checked against what the implementation produced (a signature verifies
//! over it, a key derived from it is the session's key, a tag computed over
//! it is the blob's tag), so the document is checked too. The sealed blobs
//! are then opened with the receiving side's API, and a second opening is
//! refused as a replay.
//!
//! Regenerate the file (after an intended format change only):
//!
//! ```text
//! CONFAB_WRITE_VECTORS=1 cargo test -p confab-proto --lib e2e_vectors
//! ```
//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | the fixed inputs, the whole vector file, the two tests |
//! | `support.rs` | hex, a scripted CryptoRng, the ordered JSON tree, the comparison |
//! | `rederive.rs` | independent re-derivations from the text of docs/E2E.md |
//! | `identity.rs` | identities, safety number, identity key at rest |
//! | `handshake.rs` | the MP handshake |
//! | `messages.rs` | the sealed MP and room messages, the room's keys |

mod handshake;
mod identity;
mod messages;
mod rederive;
mod support;

use rand::SeedableRng;
use rand::rngs::StdRng;

use self::support::{Node, compare, text, vectors_path, write_mode};
use crate::e2e::seal::{associated_data, open_message};
use crate::e2e::{
    ConversationId, IdentityKey, MpOffer, PublicIdentity, RoomDescriptor, RoomKeys, RoomSession, StreamKey, fixtures,
};
use crate::server::HashParams;

// ---- the fixed inputs ----

const ALICE: &str = "alice";
const BOB: &str = "bob";
/// RFC 5903 section 8.1 (ECDH P-256): the initiator's private scalar `i`.
const E_A_SCALAR: &str = "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433";
/// RFC 5903 section 8.1: the responder's private scalar `r`.
const E_B_SCALAR: &str = "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53";
/// RFC 5903 section 8.1: the shared secret (x coordinate of i * r * G).
const RFC5903_SHARED: &str = "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de";
const PSS_SALT_REQUEST: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const PSS_SALT_ACCEPT: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const EPOCH_A_TO_B: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const EPOCH_B_TO_A: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const EPOCH_ROOM: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf";
const COUNTER_A_TO_B: u64 = 0;
const COUNTER_B_TO_A: u64 = 7;
const COUNTER_ROOM: u64 = 2;
const SENT_MS_A_TO_B: u64 = 1_700_000_000_123;
const SENT_MS_B_TO_A: u64 = 1_700_000_004_567;
const SENT_MS_ROOM: u64 = 1_700_000_009_001;
const TEXT_A_TO_B: &str = "hi bob";
const TEXT_B_TO_A: &str = "hi alice, ça va? ✓";
const TEXT_ROOM: &str = "hello room11";
const ROOM_NAME: &str = "room11";
const ROOM_PASSWORD: &str = "pass2934 and more";
const ROOM_ID: &str = "00112233445566778899aabbccddeeff";
/// Cheap argon2id costs so the test is fast; real rooms use m = 65536, t = 3, p = 1.
const ROOM_VECTOR_PARAMS: HashParams = HashParams { m_cost_kib: 32, t_cost: 2, p_cost: 1 };
const AT_REST_PASSWORD: &str = "correct horse battery";
const AT_REST_SALT: &str = "5a5a5a5a000102030405060708090a0b";
const AT_REST_VECTOR_PARAMS: HashParams = HashParams { m_cost_kib: 16, t_cost: 2, p_cost: 1 };

/// The two fixture identities, loaded once.
struct Identities {
    alice: IdentityKey,
    bob: IdentityKey,
    alice_pub: PublicIdentity,
    bob_pub: PublicIdentity,
}

impl Identities {
    fn load() -> Self {
        let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).expect("alice");
        let bob = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).expect("bob");
        let alice_pub = PublicIdentity::from_spki_der(alice.public().spki_der()).expect("alice spki");
        let bob_pub = PublicIdentity::from_spki_der(bob.public().spki_der()).expect("bob spki");
        // The canonical SPKI is exactly what OpenSSL writes.
        assert_eq!(alice_pub.spki_der(), fixtures::ALICE_SPKI, "alice: SPKI as OpenSSL writes it");
        assert_eq!(bob_pub.spki_der(), fixtures::BOB_SPKI, "bob: SPKI as OpenSSL writes it");
        Self { alice, bob, alice_pub, bob_pub }
    }
}

/// Every vector of docs/vectors/e2e.json, recomputed, in the file's order.
fn build() -> Node {
    let ids = Identities::load();
    let safety = identity::safety(&ids);
    let mut hs = handshake::handshake(&ids);
    let (ab_node, ba_node) = messages::mp_messages(&mut hs);
    let (room, room_message) = messages::room(&mut hs.rng);
    let at_rest = identity::at_rest(&ids.alice);
    Node::Obj(vec![
        (
            "description",
            text(
                "confab E2E test vectors (docs/E2E.md). Byte strings are lowercase hex; integers are JSON numbers; \
             *_utf8 fields are text. Inputs: identities.*.pkcs8_der, handshake.*.ephemeral_secret, \
             handshake.*.pss_salt, the epoch, counter, sent_ms and plaintext of each message, the room's name, \
             password, room_id and argon2id costs, and at_rest's password, salt and costs. Everything else is \
             derived. The argon2id costs are deliberately tiny (real rooms use m = 65536 KiB, t = 3, p = 1). \
             RSA-PSS is randomised only by its salt: with the recorded salt the signature is reproducible, and \
             s^e mod n equals pss_encoded_message. proto/src/e2e/tests/e2e_vectors/ recomputes every value.",
            ),
        ),
        (
            "format",
            Node::Obj(vec![
                ("sealed_version", Node::Num(2)),
                ("handshake_version", Node::Num(1)),
                ("descriptor_version", Node::Num(1)),
                ("at_rest_version", Node::Num(1)),
            ]),
        ),
        (
            "identities",
            Node::Obj(vec![
                ("alice", identity::identity_node(ALICE, fixtures::ALICE_PKCS8, &ids.alice)),
                ("bob", identity::identity_node(BOB, fixtures::BOB_PKCS8, &ids.bob)),
            ]),
        ),
        ("safety_number", safety),
        ("handshake", hs.node),
        ("mp_message_a_to_b", Node::Obj(ab_node)),
        ("mp_message_b_to_a", Node::Obj(ba_node)),
        ("room", room),
        ("room_message", Node::Obj(room_message)),
        ("identity_at_rest", at_rest),
    ])
}

/// Recomputes every vector and compares it with docs/vectors/e2e.json
/// (or rewrites the file when `CONFAB_WRITE_VECTORS=1`).
#[test]
fn e2e_vectors_match_the_implementation() {
    let doc = build();
    let path = vectors_path();
    if write_mode() {
        let mut out = String::new();
        doc.write(&mut out, 0);
        out.push('\n');
        std::fs::create_dir_all(path.parent().expect("docs/vectors")).expect("mkdir docs/vectors");
        std::fs::write(&path, out).expect("write docs/vectors/e2e.json");
        return;
    }
    let file = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate it with CONFAB_WRITE_VECTORS=1)", path.display()));
    let found: serde_json::Value = serde_json::from_str(&file).expect("docs/vectors/e2e.json is valid JSON");
    compare("", &doc.to_value(), &found);
}

/// The file's own inputs, read back, give the file's outputs through the
/// public API alone (what an independent implementation would do with it).
#[test]
fn e2e_vectors_open_from_the_file() {
    if write_mode() {
        return; // the other test is rewriting the file
    }
    let file = std::fs::read_to_string(vectors_path()).expect("docs/vectors/e2e.json");
    let v: serde_json::Value = serde_json::from_str(&file).expect("valid JSON");
    let s = |path: &str| -> Vec<u8> {
        let value = v.pointer(path).and_then(serde_json::Value::as_str).unwrap_or_else(|| panic!("{path}"));
        hex::decode(value).unwrap_or_else(|_| panic!("{path}: not hex"))
    };
    let n = |path: &str| v.pointer(path).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("{path}"));
    let alice = PublicIdentity::from_spki_der(&s("/identities/alice/spki_der")).expect("alice spki");
    let bob = PublicIdentity::from_spki_der(&s("/identities/bob/spki_der")).expect("bob spki");
    let offer = MpOffer::verify(ALICE, &alice, BOB, &s("/handshake/request/blob")).expect("request verifies");
    assert_eq!(offer.ephemeral().as_slice(), s("/handshake/request/ephemeral_public").as_slice());
    bob.verify(&s("/handshake/accept/signed_message"), &s("/handshake/accept/signature")).expect("accept verifies");
    for (name, stream) in [("mp_message_a_to_b", "a_to_b"), ("mp_message_b_to_a", "b_to_a")] {
        let key: [u8; 32] = s(&format!("/handshake/stream_key_{stream}")).try_into().expect("32 bytes");
        let key = StreamKey::from_bytes(key);
        let epoch: [u8; 16] = s(&format!("/{name}/epoch")).try_into().expect("16 bytes");
        let keys = key.epoch_keys(&epoch);
        assert_eq!(keys.to_bytes()[..16], s(&format!("/{name}/epoch_enc_key"))[..], "{name}: enc key");
        let sender = v.pointer(&format!("/{name}/sender")).and_then(serde_json::Value::as_str).expect("sender");
        let recipient = v.pointer(&format!("/{name}/recipient")).and_then(serde_json::Value::as_str).expect("to");
        let ad = associated_data(&ConversationId::mp(sender, recipient), sender);
        let (header, opened) = open_message(&keys, &ad, &s(&format!("/{name}/sealed"))).expect("opens");
        assert_eq!(header.counter, n(&format!("/{name}/counter")), "{name}: counter");
        assert_eq!(opened.sent_ms, n(&format!("/{name}/sent_ms")), "{name}: sent_ms");
        assert_eq!(opened.plaintext, s(&format!("/{name}/plaintext")), "{name}: plaintext");
    }
    let descriptor = RoomDescriptor::parse(&s("/room/descriptor"), HashParams::INSECURE_FAST).expect("descriptor");
    let password = v.pointer("/room/password_utf8").and_then(serde_json::Value::as_str).expect("password");
    let keys = RoomKeys::derive(ROOM_NAME, password.as_bytes(), &descriptor).expect("room keys");
    assert_eq!(keys.verifier().as_slice(), s("/room/verifier").as_slice(), "room verifier");
    let mut session = RoomSession::new(keys, BOB, &mut StdRng::from_seed([3; 32]));
    let opened = session.open(ALICE, &s("/room_message/sealed")).expect("room message opens");
    assert_eq!(opened.plaintext, s("/room_message/plaintext"));
    let at_password = v.pointer("/identity_at_rest/password_utf8").and_then(serde_json::Value::as_str).expect("pw");
    let loaded = IdentityKey::decrypt_at_rest(&s("/identity_at_rest/blob"), at_password.as_bytes()).expect("at rest");
    assert_eq!(loaded.public(), &alice);
}
