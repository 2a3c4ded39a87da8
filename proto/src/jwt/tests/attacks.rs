//! Tokens crafted to get past the verifier, each rejected with its own reason.

use hmac::{KeyInit, Mac};
use proptest::prelude::*;
use serde_json::json;
use sha2::Sha256;

use super::*;
use crate::jwt::{JwkSet, JwtError, Part, Validation, verify};

const NOW: u64 = 1_800_000_000;

fn claims() -> Value {
    json!({ "iss": "https://idp", "sub": "alice", "exp": NOW + 300, "iat": NOW })
}

/// The test key as kid "t" plus the RFC 7517 A.1 keys ("1": EC for encryption, "2011-04-29": RSA).
fn keys() -> JwkSet {
    let rfc: Value = serde_json::from_str(RFC7517_A1).unwrap();
    let mut all = rfc["keys"].as_array().unwrap().clone();
    all.push(serde_json::from_str(&test_jwk_json("t")).unwrap());
    JwkSet::parse(json!({ "keys": all }).to_string().as_bytes()).unwrap()
}

fn check(token: &str) -> Result<(), JwtError> {
    verify(token, &keys(), &Validation::default(), NOW).map(|_| ())
}

fn valid_token() -> String {
    es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "t" }), &claims())
}

#[test]
fn jwt_the_valid_token_verifies() {
    check(&valid_token()).unwrap();
}

#[test]
fn jwt_hs256_signed_with_the_rsa_public_key_is_rejected() {
    // The classic confusion: HMAC keyed with the public key the verifier
    // would use for RS256. The HMAC is genuine; the algorithm is refused.
    let public_key = keys().get("2011-04-29").unwrap().to_json_value().to_string();
    let input = format!(
        "{}.{}",
        b64_encode(br#"{"alg":"HS256","kid":"2011-04-29"}"#),
        b64_encode(claims().to_string().as_bytes())
    );
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(public_key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let token = format!("{input}.{}", b64_encode(&mac.finalize().into_bytes()));
    assert_eq!(check(&token), Err(JwtError::AlgHmac("HS256".into())));
    for alg in ["HS384", "HS512", "hs256"] {
        let header = b64_encode(format!(r#"{{"alg":"{alg}","kid":"2011-04-29"}}"#).as_bytes());
        let token = format!("{header}.{}", token.split_once('.').unwrap().1);
        assert_eq!(check(&token), Err(JwtError::AlgHmac(alg.into())));
    }
}

#[test]
fn jwt_other_algorithms_are_not_allowed() {
    for alg in ["PS256", "ES384", "ES512", "RS512", "EdDSA", "ES256K", "", "RSA-OAEP"] {
        let token = es256_token(&test_signing_key(), &json!({ "alg": alg, "kid": "t" }), &claims());
        assert_eq!(check(&token), Err(JwtError::AlgNotAllowed(alg.into())), "{alg}");
    }
    let token = es256_token(&test_signing_key(), &json!({ "kid": "t" }), &claims());
    assert_eq!(check(&token), Err(JwtError::MissingAlg));
}

#[test]
fn jwt_wrong_key_type_is_rejected() {
    // ES256 header naming the RSA key.
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "2011-04-29" }), &claims());
    assert_eq!(check(&token), Err(JwtError::KeyTypeMismatch { alg: "ES256", kty: "RSA" }));
    // RS256 header naming the EC key.
    let token = es256_token(&test_signing_key(), &json!({ "alg": "RS256", "kid": "t" }), &claims());
    assert_eq!(check(&token), Err(JwtError::KeyTypeMismatch { alg: "RS256", kty: "EC" }));
}

#[test]
fn jwt_key_restricted_to_another_alg_is_rejected() {
    let jwk = test_jwk_json("t").replace(r#""kid":"t""#, r#""kid":"t","alg":"ES512""#);
    let keys = JwkSet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap();
    assert_eq!(
        verify(&valid_token(), &keys, &Validation::default(), NOW),
        Err(JwtError::KeyAlgMismatch { alg: "ES256", key_alg: "ES512".into() })
    );
}

#[test]
fn jwt_encryption_keys_never_verify() {
    // RFC 7517 A.1's EC key "1" is `use: enc`.
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "1" }), &claims());
    assert_eq!(check(&token), Err(JwtError::KeyNotForSigning));
    // key_ops without verify.
    let jwk = test_jwk_json("t").replace(r#""kid":"t""#, r#""kid":"t","key_ops":["encrypt"]"#);
    let keys = JwkSet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap();
    assert_eq!(verify(&valid_token(), &keys, &Validation::default(), NOW), Err(JwtError::KeyNotForSigning));
}

#[test]
fn jwt_unknown_kid_and_missing_kid() {
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "nope" }), &claims());
    assert_eq!(check(&token), Err(JwtError::UnknownKid("nope".into())));
    // No kid: the only key fitting ES256 that may verify is chosen ("1" is for encryption).
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256" }), &claims());
    check(&token).unwrap();
    // No kid, no fitting key.
    let rfc_sig = JwkSet::parse(RFC7517_A1.replace(r#""use":"enc""#, r#""use":"sig""#).as_bytes()).unwrap();
    let two_ec = JwkSet::from_keys(rfc_sig.keys().iter().cloned().chain(keys().get("t").cloned())).unwrap();
    assert_eq!(verify(&token, &two_ec, &Validation::default(), NOW), Err(JwtError::AmbiguousKey));
    let only_rsa = JwkSet::from_keys(rfc_sig.get("2011-04-29").cloned()).unwrap();
    assert_eq!(verify(&token, &only_rsa, &Validation::default(), NOW), Err(JwtError::NoKey));
    assert_eq!(verify(&token, &JwkSet::default(), &Validation::default(), NOW), Err(JwtError::NoKey));
}

#[test]
fn jwt_tampered_payload_is_rejected() {
    let token = valid_token();
    let (header, rest) = token.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let mut forged = claims();
    forged["sub"] = json!("mallory");
    let token = format!("{header}.{}.{signature}", b64_encode(forged.to_string().as_bytes()));
    assert_eq!(check(&token), Err(JwtError::BadSignature));
}

#[test]
fn jwt_tampered_signature_is_rejected() {
    let token = valid_token();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut signature = b64_decode(signature.as_bytes()).unwrap();
    for i in [0, 31, 32, 63] {
        signature[i] ^= 0x01;
        assert_eq!(check(&format!("{input}.{}", b64_encode(&signature))), Err(JwtError::BadSignature));
        signature[i] ^= 0x01;
    }
    // All-zero r and s, and r = s = n (out of range) are not signatures at all.
    assert_eq!(check(&format!("{input}.{}", b64_encode(&[0; 64]))), Err(JwtError::BadSignature));
    assert_eq!(check(&format!("{input}.{}", b64_encode(&[0xff; 64]))), Err(JwtError::BadSignature));
    // A DER encoding of the same signature has the wrong length.
    let der = p256::ecdsa::Signature::from_slice(&signature).unwrap().to_der();
    assert!(matches!(
        check(&format!("{input}.{}", b64_encode(der.as_bytes()))),
        Err(JwtError::SignatureLength { expected: 64, .. })
    ));
    assert_eq!(check(&format!("{input}.")), Err(JwtError::SignatureLength { expected: 64, found: 0 }));
}

#[test]
fn jwt_rs256_signature_must_have_the_modulus_length() {
    let token = rfc7515_a2_token();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut signature = b64_decode(signature.as_bytes()).unwrap();
    let a2 = rfc7515_a2_keys();
    let at = RFC_EXP - 100;
    let short = format!("{input}.{}", b64_encode(&signature[1..]));
    assert_eq!(
        verify(&short, &a2, &Validation::default(), at),
        Err(JwtError::SignatureLength { expected: 256, found: 255 })
    );
    signature[100] ^= 1;
    let flipped = format!("{input}.{}", b64_encode(&signature));
    assert_eq!(verify(&flipped, &a2, &Validation::default(), at), Err(JwtError::BadSignature));
    // The genuine A.2 token does not verify with another 2048-bit RSA key (RFC 7517 A.1's).
    let other = JwkSet::from_keys(keys().get("2011-04-29").cloned().map(|mut k| {
        k.kid = None;
        k
    }))
    .unwrap();
    assert_eq!(verify(&token, &other, &Validation::default(), at), Err(JwtError::BadSignature));
}

#[test]
fn jwt_keys_in_the_header_are_rejected() {
    // An attacker signs with their own key and offers it in the header.
    let attacker = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let attacker_public = crate::jwt::EcKey::from_verifying_key(attacker.verifying_key());
    let attacker_jwk = crate::jwt::Jwk::new(crate::jwt::PublicKey::Ec(attacker_public)).to_json_value();
    let cases = [
        ("jwk", json!({ "alg": "ES256", "kid": "t", "jwk": attacker_jwk })),
        ("jku", json!({ "alg": "ES256", "kid": "t", "jku": "https://attacker.example/jwks.json" })),
        ("x5u", json!({ "alg": "ES256", "kid": "t", "x5u": "https://attacker.example/cert.pem" })),
        ("x5c", json!({ "alg": "ES256", "kid": "t", "x5c": ["MIIB..."] })),
    ];
    for (name, header) in cases {
        let token = es256_token(&attacker, &header, &claims());
        assert_eq!(check(&token), Err(JwtError::EmbeddedKey(name)), "{name}");
    }
}

#[test]
fn jwt_critical_extensions_are_rejected() {
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let header = json!({ "alg": "ES256", "kid": "t", "crit": crit, "b64": false });
        let token = es256_token(&test_signing_key(), &header, &claims());
        assert_eq!(check(&token), Err(JwtError::UnsupportedCrit));
    }
}

#[test]
fn jwt_header_typ_must_be_a_jwt() {
    for typ in ["JWT", "jwt", "application/jwt", "at+jwt", "application/at+JWT"] {
        let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "t", "typ": typ }), &claims());
        check(&token).unwrap_or_else(|e| panic!("{typ}: {e}"));
    }
    for typ in ["JWE", "logout+jwt", "dpop+jwt", "secevent+jwt"] {
        let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "t", "typ": typ }), &claims());
        assert_eq!(check(&token), Err(JwtError::HeaderType(typ.into())));
    }
}

#[test]
fn jwt_duplicate_members_are_rejected() {
    let key = test_signing_key();
    let token = es256_token_raw(&key, br#"{"alg":"ES256","kid":"t","alg":"none"}"#, claims().to_string().as_bytes());
    assert_eq!(check(&token), Err(JwtError::Json(Part::Header)));
    let claims = format!(r#"{{"iss":"https://idp","exp":{},"exp":{}}}"#, NOW - 1000, NOW + 1000);
    let token = es256_token_raw(&key, br#"{"alg":"ES256","kid":"t"}"#, claims.as_bytes());
    assert_eq!(check(&token), Err(JwtError::Json(Part::Payload)));
}

#[test]
fn jwt_malformed_tokens_are_rejected() {
    let valid = valid_token();
    let parts: Vec<&str> = valid.split('.').collect();
    assert_eq!(check(""), Err(JwtError::Format));
    assert_eq!(check("a.b"), Err(JwtError::Format));
    assert_eq!(check(&format!("{valid}.x.y")), Err(JwtError::Format), "a JWE has five parts");
    assert_eq!(check(&format!("{}=.{}.{}", parts[0], parts[1], parts[2])), Err(JwtError::Base64(Part::Header)));
    assert_eq!(check(&format!("{}+.{}.{}", parts[0], parts[1], parts[2])), Err(JwtError::Base64(Part::Header)));
    assert_eq!(check(&format!("{}.{}.{}!", parts[0], parts[1], parts[2])), Err(JwtError::Base64(Part::Signature)));
    // The same signature bytes with non-zero trailing bits in the last
    // character: base64url has one encoding per value, no malleability.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = parts[2].as_bytes()[parts[2].len() - 1];
    let index = ALPHABET.iter().position(|c| *c == last).unwrap();
    assert_eq!(index & 0b11, 0, "64 bytes leave the 2 low bits of the last character unused");
    let malleated =
        format!("{}.{}.{}{}", parts[0], parts[1], &parts[2][..parts[2].len() - 1], ALPHABET[index | 1] as char);
    assert_eq!(check(&malleated), Err(JwtError::Base64(Part::Signature)));
    // A signature over a payload that is not base64url: the signature verifies, the payload does not decode.
    let key = test_signing_key();
    let input = format!("{}.%%%", parts[0]);
    let signature: Signature = key.sign(input.as_bytes());
    assert_eq!(check(&format!("{input}.{}", b64_encode(&signature.to_bytes()))), Err(JwtError::Base64(Part::Payload)));
    // Header and payload must be JSON objects.
    let token = es256_token_raw(&key, br#"["ES256","t"]"#, b"{}");
    assert_eq!(check(&token), Err(JwtError::Json(Part::Header)));
    let token = es256_token_raw(&key, br#"{"alg":"ES256","kid":"t"}"#, br#"[1,2]"#);
    assert_eq!(check(&token), Err(JwtError::Json(Part::Payload)));
    let token = es256_token_raw(&key, br#"{"alg":"ES256","kid":"t"}"#, b"{} trailing");
    assert_eq!(check(&token), Err(JwtError::Json(Part::Payload)));
    let token = es256_token_raw(&key, br#"{"alg":"ES256","kid":7}"#, b"{}");
    assert_eq!(check(&token), Err(JwtError::Json(Part::Header)));
    // Too long, before anything else.
    let long = "a".repeat(Validation::default().max_token_len + 1);
    assert_eq!(check(&long), Err(JwtError::TooLong { max: 8192 }));
}

proptest! {
    #[test]
    fn jwt_arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(check(&text).is_err());
    }

    #[test]
    fn jwt_arbitrary_parts_never_panic(header in "[ -~]{0,80}", payload in "[ -~]{0,80}", sig in proptest::collection::vec(any::<u8>(), 0..80)) {
        let token = format!("{}.{}.{}", b64_encode(header.as_bytes()), b64_encode(payload.as_bytes()), b64_encode(&sig));
        prop_assert!(check(&token).is_err());
        let signed = es256_token_raw(&test_signing_key(), br#"{"alg":"ES256","kid":"t"}"#, payload.as_bytes());
        let _ = check(&signed);
    }
}
