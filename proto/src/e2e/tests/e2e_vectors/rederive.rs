//! Independent re-derivations from the text of docs/E2E.md: what the
//! implementation keeps private, rebuilt here without it.

use p256::SecretKey;
use p256::elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, RsaPublicKey};
use sha2::{Digest, Sha256, Sha512};

use super::support::lp;

pub(super) fn ephemeral_public(scalar: &[u8]) -> Vec<u8> {
    let secret = SecretKey::from_slice(scalar).expect("valid scalar");
    secret.public_key().as_affine().to_sec1_point(false).as_bytes().to_vec()
}

pub(super) fn signed_request(a: &str, b: &str, e_a: &[u8]) -> Vec<u8> {
    [b"confab mp request v1".as_slice(), &lp(a.as_bytes()), &lp(b.as_bytes()), &[1], e_a].concat()
}

pub(super) fn signed_accept(a: &str, b: &str, e_a: &[u8], e_b: &[u8]) -> Vec<u8> {
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
pub(super) fn emsa_pss_encode(message: &[u8], salt: &[u8]) -> Vec<u8> {
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
pub(super) fn rsa_public_op(spki: &[u8], signature: &[u8]) -> Vec<u8> {
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
pub(super) fn safety_half(username: &str, spki: &[u8]) -> (Vec<u8>, String) {
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
