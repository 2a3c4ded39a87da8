//! The identities, the safety number and the identity key at rest.

use sha2::{Digest, Sha256};

use super::rederive::safety_half;
use super::support::{Node, Scripted, h, hx, text};
use super::{ALICE, AT_REST_PASSWORD, AT_REST_SALT, AT_REST_VECTOR_PARAMS, BOB, Identities};
use crate::e2e::identity::argon2id;
use crate::e2e::kdf::extract;
use crate::e2e::seal::{ctr_apply, hmac_sha256, iv_for};
use crate::e2e::{IdentityKey, KeySchedule, fixtures, safety_number};

/// One fixture identity: its key, SPKI and fingerprint.
pub(super) fn identity_node(username: &str, pkcs8: &[u8], key: &IdentityKey) -> Node {
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

/// The safety number of Alice and Bob, each half recomputed from E2E.md.
pub(super) fn safety(ids: &Identities) -> Node {
    let (alice_pub, bob_pub) = (&ids.alice_pub, &ids.bob_pub);
    let (spki_a, spki_b) = (alice_pub.spki_der().to_vec(), bob_pub.spki_der().to_vec());
    let number = safety_number(ALICE, alice_pub, BOB, bob_pub);
    assert_eq!(number, safety_number(BOB, bob_pub, ALICE, alice_pub), "safety number is symmetric");
    let (hash_a, half_a) = safety_half(ALICE, &spki_a);
    let (hash_b, half_b) = safety_half(BOB, &spki_b);
    let mut halves = [half_a.clone(), half_b.clone()];
    halves.sort();
    assert_eq!(number.digits(), halves.concat(), "safety number = sorted halves");
    Node::Obj(vec![
        ("user_a", text(ALICE)),
        ("user_b", text(BOB)),
        ("iterations", Node::Num(5200)),
        ("hash_a", hx(&hash_a)),
        ("digits_a", text(&half_a)),
        ("hash_b", hx(&hash_b)),
        ("digits_b", text(&half_b)),
        ("digits", text(number.digits())),
        ("display", text(&number.to_string())),
    ])
}

/// Alice's key encrypted at rest, every step recomputed from E2E.md.
pub(super) fn at_rest(alice: &IdentityKey) -> Node {
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
    Node::Obj(vec![
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
    ])
}
