//! ES256 signature malleability. An ECDSA signature `(r, s)` has a twin
//! `(r, n - s)` that verifies the same message under the same key; strict
//! verifiers of some ecosystems accept only the "low" one (`s <= n / 2`).
//! This verifier accepts both, because issuers emit both (Java's and
//! OpenSSL's ECDSA do not normalise `s`: half of Keycloak's ES256 tokens are
//! "high-S", and so is one of the PyJWT fixtures below). That is safe only
//! because nothing confab keeps is keyed on the signature bytes: the twin
//! of a token verifies to exactly the same header and claims, and every
//! identity confab derives comes from those (docs/SECURITY.md, "JWT
//! signatures").

use serde_json::json;

use super::*;
use crate::jwt::{JwkSet, Validation, verify};

/// The order `n` of the P-256 group, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `n / 2` (rounded down): a signature whose `s` is above it is "high-S".
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde, 0x73, 0x7d,
    0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

const NOW: u64 = 1_800_000_000;

fn is_high_s(signature: &[u8]) -> bool {
    signature[32..] > HALF_ORDER[..]
}

/// The twin of a 64-byte `r || s` signature: `r || (n - s)`.
fn twin_signature(signature: &[u8]) -> Vec<u8> {
    assert_eq!(signature.len(), 64);
    let mut out = signature.to_vec();
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let diff = u16::from(ORDER[i]).wrapping_sub(u16::from(signature[32 + i])).wrapping_sub(borrow);
        out[32 + i] = diff as u8;
        borrow = u16::from(diff > 0xff);
    }
    assert_eq!(borrow, 0, "s is below n");
    out
}

/// The same token with the twin signature.
fn twin(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = b64_decode(signature.as_bytes()).unwrap();
    format!("{input}.{}", b64_encode(&twin_signature(&signature)))
}

fn signature_of(token: &str) -> Vec<u8> {
    b64_decode(token.rsplit_once('.').unwrap().1.as_bytes()).unwrap()
}

#[test]
fn jwt_twin_signature_is_n_minus_s() {
    // p256 agrees: the twin of a signature normalises to the same low-S signature.
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256" }), &json!({ "exp": NOW }));
    let signature = signature_of(&token);
    let twin = twin_signature(&signature);
    assert_ne!(is_high_s(&signature), is_high_s(&twin), "exactly one of the two is high-S");
    let low = |bytes: &[u8]| {
        let sig = Signature::from_slice(bytes).unwrap();
        sig.normalize_s().to_bytes().to_vec()
    };
    assert_eq!(low(&signature), low(&twin));
    assert_eq!(&signature[..32], &twin[..32], "r is unchanged");
}

#[test]
fn jwt_es256_twin_verifies_to_the_same_header_and_claims() {
    let keys = JwkSet::parse(format!(r#"{{"keys":[{}]}}"#, test_jwk_json("t")).as_bytes()).unwrap();
    let claims = json!({ "iss": "https://idp", "sub": "alice", "jti": "id-1", "exp": NOW + 300, "iat": NOW });
    // Several tokens, so that both a low-S and a high-S original occur (RFC 6979 nonces: deterministic).
    let mut seen = [false; 2];
    for n in 0..16 {
        let mut claims = claims.clone();
        claims["n"] = json!(n);
        let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "t" }), &claims);
        let twin = twin(&token);
        seen[usize::from(is_high_s(&signature_of(&token)))] = true;
        let original = verify(&token, &keys, &Validation::default(), NOW).unwrap();
        let variant = verify(&twin, &keys, &Validation::default(), NOW).unwrap();
        assert_eq!(original, variant, "the twin verifies to exactly the same header, claims and kind");
        // Tampering with the twin is still caught.
        let mut bad = signature_of(&twin);
        bad[63] ^= 1;
        let (input, _) = twin.rsplit_once('.').unwrap();
        assert!(verify(&format!("{input}.{}", b64_encode(&bad)), &keys, &Validation::default(), NOW).is_err());
    }
    assert_eq!(seen, [true, true], "both a low-S and a high-S original were tried");
}

/// PyJWT over OpenSSL (an independent issuer, like Keycloak over Java) does
/// not normalise `s`: one of its two ES256 fixture tokens is high-S. Both
/// verify, and so do their twins, to the same claims.
#[test]
fn jwt_independent_issuers_emit_high_s_signatures() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("../testdata/pyjwt_fixtures.json")).unwrap();
    let keys = JwkSet::parse(doc["jwks"].to_string().as_bytes()).unwrap();
    let issuer = doc["issuer"].as_str().unwrap();
    let at = doc["iat"].as_u64().unwrap() + 10;
    let cases = [
        (
            "es256_keycloak_access",
            false,
            Validation { authorized_parties: vec!["confab-cli".into()], ..Validation::access(issuer, "confab") },
        ),
        ("es256_phantom_refresh", true, Validation::refresh(issuer, "confab")),
    ];
    for (name, high, validation) in cases {
        let token = doc["tokens"][name].as_str().unwrap();
        assert_eq!(is_high_s(&signature_of(token)), high, "{name}");
        let original = verify(token, &keys, &validation, at).unwrap();
        let variant = verify(&twin(token), &keys, &validation, at).unwrap();
        assert_eq!(original, variant, "{name}");
    }
}
