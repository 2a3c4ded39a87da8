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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;

use p256::SecretKey;
use p256::elliptic_curve::sec1::ToSec1Point;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, RsaPublicKey};
use sha2::{Digest, Sha256, Sha512};

use crate::e2e::handshake::{HANDSHAKE_LEN, ecdh};
use crate::e2e::identity::argon2id;
use crate::e2e::kdf::extract;
use crate::e2e::room::{ROOM_PARAMS, room_salt};
use crate::e2e::seal::{
    OVERHEAD, associated_data, ctr_apply, hmac_sha256, iv_for, open_message, peek_header, seal_message,
};
use crate::e2e::{
    ConversationId, Direction, IdentityKey, KeySchedule, MpOffer, MpRequest, OpenError, PublicIdentity, Purpose, Role,
    RoomDescriptor, RoomError, RoomKeys, RoomSession, Sealer, StreamKey, check_room_password, fixtures, safety_number,
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

// ---- helpers ----

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex")
}

fn h16(s: &str) -> [u8; 16] {
    h(s).try_into().expect("16 bytes")
}

fn lp(field: &[u8]) -> Vec<u8> {
    let mut out = (field.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(field);
    out
}

/// A CryptoRng that first hands out scripted bytes, then a fixed stream.
/// RSA-PSS draws its 32-byte salt first, then blinding values (which do not
/// change the signature); P-256 key generation reads 32 bytes as a
/// little-endian integer.
struct Scripted {
    queue: VecDeque<u8>,
    rest: StdRng,
}

impl Scripted {
    fn new(parts: &[&[u8]]) -> Self {
        Self { queue: parts.concat().into(), rest: StdRng::from_seed([0x5e; 32]) }
    }

    /// Scripted bytes that make P-256 key generation return `scalar` (big-endian).
    fn scalar(scalar: &[u8]) -> Vec<u8> {
        scalar.iter().rev().copied().collect()
    }
}

impl rand::TryRng for Scripted {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            *byte = match self.queue.pop_front() {
                Some(b) => b,
                None => rand::Rng::next_u32(&mut self.rest) as u8,
            };
        }
        Ok(())
    }
}

impl rand::TryCryptoRng for Scripted {}

/// An ordered JSON tree (serde_json without `preserve_order` sorts keys).
enum Node {
    Str(String),
    Num(u64),
    Obj(Vec<(&'static str, Node)>),
}

fn hx(bytes: &[u8]) -> Node {
    Node::Str(hex::encode(bytes))
}

fn text(s: &str) -> Node {
    Node::Str(s.to_owned())
}

impl Node {
    fn to_value(&self) -> serde_json::Value {
        match self {
            Node::Str(s) => serde_json::Value::String(s.clone()),
            Node::Num(n) => serde_json::Value::from(*n),
            Node::Obj(fields) => {
                serde_json::Value::Object(fields.iter().map(|(k, v)| ((*k).to_owned(), v.to_value())).collect())
            }
        }
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Node::Str(_) | Node::Num(_) => out.push_str(&self.to_value().to_string()),
            Node::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(&"  ".repeat(indent + 1));
                    out.push_str(&serde_json::Value::String((*k).to_owned()).to_string());
                    out.push_str(": ");
                    v.write(out, indent + 1);
                    if i + 1 < fields.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
        }
    }
}

/// Fails with the path of the first value that differs.
fn compare(path: &str, expected: &serde_json::Value, found: &serde_json::Value) {
    use serde_json::Value;
    match (expected, found) {
        (Value::Object(e), Value::Object(f)) => {
            for (k, v) in e {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let Some(fv) = f.get(k) else { panic!("docs/vectors/e2e.json: `{sub}` is missing") };
                compare(&sub, v, fv);
            }
            for k in f.keys() {
                assert!(e.contains_key(k), "docs/vectors/e2e.json: `{path}.{k}` is not a vector field");
            }
        }
        _ => assert!(
            expected == found,
            "docs/vectors/e2e.json: `{path}` is {found}, the implementation computes {expected} \
             (regenerate with CONFAB_WRITE_VECTORS=1 only if the format change is intended)"
        ),
    }
}

fn write_mode() -> bool {
    std::env::var_os("CONFAB_WRITE_VECTORS").is_some_and(|v| v == "1")
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/e2e.json")
}

// ---- independent re-derivations from the text of docs/E2E.md ----

fn ephemeral_public(scalar: &[u8]) -> Vec<u8> {
    let secret = SecretKey::from_slice(scalar).expect("valid scalar");
    secret.public_key().as_affine().to_sec1_point(false).as_bytes().to_vec()
}

fn signed_request(a: &str, b: &str, e_a: &[u8]) -> Vec<u8> {
    [b"confab mp request v1".as_slice(), &lp(a.as_bytes()), &lp(b.as_bytes()), &[1], e_a].concat()
}

fn signed_accept(a: &str, b: &str, e_a: &[u8], e_b: &[u8]) -> Vec<u8> {
    [b"confab mp accept v1".as_slice(), &lp(a.as_bytes()), &lp(b.as_bytes()), &[1], e_a, e_b].concat()
}

/// MGF1 with SHA-256 (RFC 8017 B.2.1).
fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u32;
    while out.len() < len {
        out.extend_from_slice(&Sha256::new().chain_update(seed).chain_update(counter.to_be_bytes()).finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// EMSA-PSS-ENCODE (RFC 8017 9.1.1), SHA-256, MGF1-SHA-256, for a 2048-bit
/// modulus (emBits = 2047, emLen = 256).
fn emsa_pss_encode(message: &[u8], salt: &[u8]) -> Vec<u8> {
    let m_hash = Sha256::digest(message);
    let hh = Sha256::new().chain_update([0u8; 8]).chain_update(m_hash).chain_update(salt).finalize();
    let mut db = vec![0u8; 256 - 32 - 1];
    let at = db.len() - salt.len() - 1;
    db[at] = 0x01;
    db[at + 1..].copy_from_slice(salt);
    for (d, m) in db.iter_mut().zip(mgf1_sha256(&hh, 223)) {
        *d ^= m;
    }
    db[0] &= 0x7f;
    [db.as_slice(), &hh, &[0xbc]].concat()
}

/// s^e mod n: what a verifier compares with the encoded message.
fn rsa_public_op(spki: &[u8], signature: &[u8]) -> Vec<u8> {
    let key = RsaPublicKey::from_public_key_der(spki).expect("valid SPKI");
    let n = key.n();
    let precision = n.as_ref().bits_precision();
    let s = BoxedUint::from_be_slice(signature, precision).expect("signature fits the modulus");
    let mut acc = BoxedUint::one_with_precision(precision);
    for byte in key.e().to_be_bytes().iter() {
        for bit in (0..8).rev() {
            acc = acc.mul_mod(&acc, n);
            if byte >> bit & 1 == 1 {
                acc = acc.mul_mod(&s, n);
            }
        }
    }
    let bytes = acc.to_be_bytes();
    bytes[bytes.len() - 256..].to_vec()
}

/// The 30 digits of one user: docs/E2E.md, "Safety number".
fn safety_half(username: &str, spki: &[u8]) -> (Vec<u8>, String) {
    let mut hash: Vec<u8> = [&[0u8, 0][..], spki, username.as_bytes()].concat();
    for _ in 0..5200 {
        hash = Sha512::new().chain_update(&hash).chain_update(spki).finalize().to_vec();
    }
    let digits = hash[..30]
        .chunks(5)
        .map(|c| format!("{:05}", c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) % 100_000))
        .collect();
    (hash, digits)
}

// ---- the vectors ----

fn identity_node(username: &str, pkcs8: &[u8], key: &IdentityKey) -> Node {
    let spki = key.public().spki_der();
    let fp = key.public().fingerprint();
    assert_eq!(fp.0, <[u8; 32]>::from(Sha256::digest(spki)), "{username}: fingerprint is SHA-256(SPKI)");
    Node::Obj(vec![
        ("username", text(username)),
        ("pkcs8_der", hx(pkcs8)),
        ("spki_der", hx(spki)),
        ("fingerprint", hx(&fp.0)),
        ("fingerprint_display", text(&fp.to_string())),
    ])
}

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
fn seal_node(name: &str, input: &SealInput<'_>) -> (Vec<(&'static str, Node)>, Vec<u8>) {
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

fn build() -> Node {
    let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).expect("alice");
    let bob = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).expect("bob");
    let alice_pub = PublicIdentity::from_spki_der(alice.public().spki_der()).expect("alice spki");
    let bob_pub = PublicIdentity::from_spki_der(bob.public().spki_der()).expect("bob spki");
    // The canonical SPKI is exactly what OpenSSL writes.
    assert_eq!(alice_pub.spki_der(), fixtures::ALICE_SPKI, "alice: SPKI as OpenSSL writes it");
    assert_eq!(bob_pub.spki_der(), fixtures::BOB_SPKI, "bob: SPKI as OpenSSL writes it");
    let (spki_a, spki_b) = (alice_pub.spki_der().to_vec(), bob_pub.spki_der().to_vec());
    let (fp_a, fp_b) = (alice_pub.fingerprint().0, bob_pub.fingerprint().0);

    // ---- safety number ----
    let number = safety_number(ALICE, &alice_pub, BOB, &bob_pub);
    assert_eq!(number, safety_number(BOB, &bob_pub, ALICE, &alice_pub), "safety number is symmetric");
    let (hash_a, half_a) = safety_half(ALICE, &spki_a);
    let (hash_b, half_b) = safety_half(BOB, &spki_b);
    let mut halves = [half_a.clone(), half_b.clone()];
    halves.sort();
    assert_eq!(number.digits(), halves.concat(), "safety number = sorted halves");
    let safety = Node::Obj(vec![
        ("user_a", text(ALICE)),
        ("user_b", text(BOB)),
        ("iterations", Node::Num(5200)),
        ("hash_a", hx(&hash_a)),
        ("digits_a", text(&half_a)),
        ("hash_b", hx(&hash_b)),
        ("digits_b", text(&half_b)),
        ("digits", text(number.digits())),
        ("display", text(&number.to_string())),
    ]);

    // ---- handshake ----
    let (e_a_scalar, e_b_scalar) = (h(E_A_SCALAR), h(E_B_SCALAR));
    let (salt_req, salt_acc) = (h(PSS_SALT_REQUEST), h(PSS_SALT_ACCEPT));
    let mut rng_a = Scripted::new(&[&Scripted::scalar(&e_a_scalar), &salt_req]);
    let (pending, request) = MpRequest::new(&mut rng_a, &alice, ALICE, BOB).expect("request");
    assert_eq!(&pending.export()[1..33], e_a_scalar.as_slice(), "request: the scripted ephemeral scalar was used");
    let e_a = ephemeral_public(&e_a_scalar);
    assert_eq!(request.len(), HANDSHAKE_LEN);
    assert_eq!(request[0], 1, "request: version");
    assert_eq!(&request[1..66], e_a.as_slice(), "request: E_A");
    let m_req = signed_request(ALICE, BOB, &e_a);
    let sig_req = request[66..].to_vec();
    alice_pub.verify(&m_req, &sig_req).expect("request: the signature covers the documented signed message");
    let em_req = emsa_pss_encode(&m_req, &salt_req);
    assert_eq!(rsa_public_op(&spki_a, &sig_req), em_req, "request: s^e mod n = EMSA-PSS-ENCODE(M, salt)");

    let offer = MpOffer::verify(ALICE, &alice_pub, BOB, &request).expect("bob verifies the request");
    assert_eq!(offer.ephemeral().as_slice(), e_a.as_slice());
    let mut rng_b = Scripted::new(&[&Scripted::scalar(&e_b_scalar), &salt_acc]);
    let (mut bob_mp, accept) = offer.accept(&mut rng_b, &bob).expect("accept");
    let e_b = ephemeral_public(&e_b_scalar);
    assert_eq!(accept.len(), HANDSHAKE_LEN);
    assert_eq!(accept[0], 1, "accept: version");
    assert_eq!(&accept[1..66], e_b.as_slice(), "accept: E_B");
    let m_acc = signed_accept(ALICE, BOB, &e_a, &e_b);
    let sig_acc = accept[66..].to_vec();
    bob_pub.verify(&m_acc, &sig_acc).expect("accept: the signature covers the documented signed message");
    let em_acc = emsa_pss_encode(&m_acc, &salt_acc);
    assert_eq!(rsa_public_op(&spki_b, &sig_acc), em_acc, "accept: s^e mod n = EMSA-PSS-ENCODE(M, salt)");
    let mut rng = StdRng::from_seed([9; 32]);
    let mut alice_mp = pending.complete(&mut rng, &bob_pub, &accept).expect("alice completes");
    assert_eq!((alice_mp.role(), bob_mp.role()), (Role::Requester, Role::Accepter));

    let secret_a = SecretKey::from_slice(&e_a_scalar).expect("scalar");
    let secret_b = SecretKey::from_slice(&e_b_scalar).expect("scalar");
    let shared = ecdh(&secret_a, &e_b).expect("ecdh");
    assert_eq!(*shared, *ecdh(&secret_b, &e_a).expect("ecdh"), "ECDH agrees");
    assert_eq!(shared.as_slice(), h(RFC5903_SHARED).as_slice(), "ECDH: RFC 5903 8.1");
    let salt_input =
        [b"confab mp session v1".as_slice(), &lp(ALICE.as_bytes()), &lp(BOB.as_bytes()), &fp_a, &fp_b, &e_a, &e_b]
            .concat();
    let session_salt = Sha256::digest(&salt_input);
    let prk = extract(&session_salt, &shared[..]);
    let schedule = KeySchedule::new(&session_salt, &shared[..]);
    let k_ab = schedule.stream_key(Purpose::Mp(Direction::AToB));
    let k_ba = schedule.stream_key(Purpose::Mp(Direction::BToA));
    assert!(alice_mp.send_stream() == &k_ab && bob_mp.opener().stream() == &k_ab, "stream a->b");
    assert!(bob_mp.send_stream() == &k_ba && alice_mp.opener().stream() == &k_ba, "stream b->a");
    let handshake = Node::Obj(vec![
        ("requester", text(ALICE)),
        ("accepter", text(BOB)),
        (
            "request",
            Node::Obj(vec![
                ("ephemeral_secret", hx(&e_a_scalar)),
                ("ephemeral_public", hx(&e_a)),
                ("signed_message", hx(&m_req)),
                ("pss_salt", hx(&salt_req)),
                ("pss_encoded_message", hx(&em_req)),
                ("signature", hx(&sig_req)),
                ("blob", hx(&request)),
            ]),
        ),
        (
            "accept",
            Node::Obj(vec![
                ("ephemeral_secret", hx(&e_b_scalar)),
                ("ephemeral_public", hx(&e_b)),
                ("signed_message", hx(&m_acc)),
                ("pss_salt", hx(&salt_acc)),
                ("pss_encoded_message", hx(&em_acc)),
                ("signature", hx(&sig_acc)),
                ("blob", hx(&accept)),
            ]),
        ),
        ("ecdh_shared_secret", hx(&shared[..])),
        ("session_salt_input", hx(&salt_input)),
        ("session_salt", hx(&session_salt)),
        ("hkdf_prk", hx(&prk)),
        ("stream_key_a_to_b", hx(k_ab.as_bytes())),
        ("stream_key_b_to_a", hx(k_ba.as_bytes())),
    ]);

    // ---- MP messages, one each way ----
    let ab = SealInput {
        stream: &k_ab,
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
        stream: &k_ba,
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

    // ---- room ----
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
    let room = Node::Obj(vec![
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
    let (mut room_node, room_blob) = seal_node("room message", &room_msg);
    room_node.insert(1, ("room", text(ROOM_NAME)));
    // Bob joins: descriptor from the server, the password, his own derivation.
    let bob_descriptor = RoomDescriptor::parse(&descriptor_bytes, ROOM_VECTOR_PARAMS).expect("descriptor");
    let bob_keys = RoomKeys::derive(ROOM_NAME, ROOM_PASSWORD.as_bytes(), &bob_descriptor).expect("bob's room keys");
    assert_eq!(bob_keys.verifier(), keys.verifier(), "same verifier");
    let mut bob_room = RoomSession::new(bob_keys, BOB, &mut rng);
    let opened = bob_room.open(ALICE, &room_blob).expect("bob opens the room message");
    assert_eq!((opened.sent_ms, opened.plaintext.as_slice()), (SENT_MS_ROOM, TEXT_ROOM.as_bytes()));
    assert_eq!(bob_room.open(ALICE, &room_blob), Err(OpenError::Replayed { counter: COUNTER_ROOM }));
    assert_eq!(bob_room.open(BOB, &room_blob), Err(OpenError::BadMac), "the sender is bound");

    // ---- identity key at rest ----
    let at_salt = h(AT_REST_SALT);
    let q = AT_REST_VECTOR_PARAMS;
    let mut rng_rest = Scripted::new(&[&at_salt]);
    let stored = alice.encrypt_at_rest(&mut rng_rest, AT_REST_PASSWORD.as_bytes(), q).expect("at rest");
    let header =
        [&[1u8][..], &q.m_cost_kib.to_be_bytes(), &q.t_cost.to_be_bytes(), &q.p_cost.to_be_bytes(), &at_salt].concat();
    assert_eq!(&stored[..29], header.as_slice(), "at rest: header");
    let mut ikm = [0u8; 32];
    argon2id(AT_REST_PASSWORD.as_bytes(), &at_salt, q, &mut ikm).expect("argon2id");
    let context = b"confab identity at rest v1";
    let at_prk = extract(context, &ikm);
    let at_keys = KeySchedule::new(context, &ikm).at_rest_keys().to_bytes();
    let (at_enc, at_mac) = at_keys.split_at(16);
    let at_ad = [context.as_slice(), &header].concat();
    let pkcs8 = alice.to_pkcs8_der().expect("pkcs8");
    assert_eq!(pkcs8.as_slice(), fixtures::ALICE_PKCS8, "the PKCS#8 DER re-encodes as loaded");
    let mut at_ct = pkcs8.to_vec();
    assert!(ctr_apply(at_enc.try_into().expect("16"), &iv_for(0), &mut at_ct));
    let at_mac_input = [&[1u8][..], &(at_ad.len() as u64).to_be_bytes(), &at_ad, &0u64.to_be_bytes(), &at_ct].concat();
    let at_tag = hmac_sha256(at_mac, &[&at_mac_input]);
    let expected = [header.as_slice(), &[1], &0u64.to_be_bytes(), &at_ct, &at_tag].concat();
    assert_eq!(stored, expected, "at rest: header | 0x01 | counter 0 | ciphertext | tag");
    let loaded = IdentityKey::decrypt_at_rest(&stored, AT_REST_PASSWORD.as_bytes()).expect("decrypts");
    assert_eq!(loaded.public(), alice.public());
    let at_rest = Node::Obj(vec![
        ("key_owner", text(ALICE)),
        ("password_utf8", text(AT_REST_PASSWORD)),
        ("salt", hx(&at_salt)),
        ("argon2id_m_cost_kib", Node::Num(u64::from(q.m_cost_kib))),
        ("argon2id_t_cost", Node::Num(u64::from(q.t_cost))),
        ("argon2id_p_cost", Node::Num(u64::from(q.p_cost))),
        ("header", hx(&header)),
        ("argon2id_output", hx(&ikm)),
        ("hkdf_prk", hx(&at_prk)),
        ("enc_key", hx(at_enc)),
        ("mac_key", hx(at_mac)),
        ("associated_data", hx(&at_ad)),
        ("ciphertext", hx(&at_ct)),
        ("mac_input", hx(&at_mac_input)),
        ("tag", hx(&at_tag)),
        ("blob", hx(&stored)),
    ]);

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
             s^e mod n equals pss_encoded_message. proto/src/e2e/tests/e2e_vectors.rs recomputes every value.",
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
                ("alice", identity_node(ALICE, fixtures::ALICE_PKCS8, &alice)),
                ("bob", identity_node(BOB, fixtures::BOB_PKCS8, &bob)),
            ]),
        ),
        ("safety_number", safety),
        ("handshake", handshake),
        ("mp_message_a_to_b", Node::Obj(ab_node)),
        ("mp_message_b_to_a", Node::Obj(ba_node)),
        ("room", room),
        ("room_message", Node::Obj(room_node)),
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
