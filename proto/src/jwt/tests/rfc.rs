//! RFC 7515 Appendix A and RFC 7517 Appendix A vectors.

use super::*;
use crate::jwt::{Algorithm, EcKey, Jwk, JwkSet, JwtError, KeyError, PublicKey, Validation, verify, verify_es256};

fn a2_keys() -> JwkSet {
    rfc7515_a2_keys()
}

fn a3_keys() -> JwkSet {
    let json = format!(r#"{{"keys":[{}]}}"#, test_jwk_json("a3").replace(r#","kid":"a3""#, ""));
    JwkSet::parse(json.as_bytes()).unwrap()
}

fn joe() -> Validation {
    Validation { issuer: Some("joe".into()), ..Validation::default() }
}

#[test]
fn jwt_rfc7515_a2_rs256_verifies() {
    let keys = a2_keys();
    assert_eq!(keys.keys()[0].key.kty(), "RSA");
    let PublicKey::Rsa(rsa) = &keys.keys()[0].key else { unreachable!() };
    assert_eq!(rsa.bits(), 2048);

    let verified = verify(&rfc7515_a2_token(), &keys, &joe(), RFC_EXP - 100).unwrap();
    assert_eq!(verified.header.alg, Algorithm::Rs256);
    assert_eq!(verified.header.kid, None);
    assert_eq!(verified.claims.iss.as_deref(), Some("joe"));
    assert_eq!(verified.claims.exp, Some(RFC_EXP as i64));
    assert_eq!(verified.claims_json["http://example.com/is_root"], Value::Bool(true));
    assert_eq!(verified.kind, None);
}

#[test]
fn jwt_rfc7515_a2_is_expired_after_its_exp() {
    let keys = a2_keys();
    let leeway = Validation::default().leeway_secs;
    assert!(verify(&rfc7515_a2_token(), &keys, &joe(), RFC_EXP + leeway - 1).is_ok());
    assert_eq!(
        verify(&rfc7515_a2_token(), &keys, &joe(), RFC_EXP + leeway),
        Err(JwtError::Expired { exp: RFC_EXP as i64, now: RFC_EXP + leeway })
    );
}

#[test]
fn jwt_rfc7515_a3_es256_verifies() {
    let verified = verify(&rfc7515_a3_token(), &a3_keys(), &joe(), RFC_EXP - 100).unwrap();
    assert_eq!(verified.header.alg, Algorithm::Es256);
    assert_eq!(verified.claims.iss.as_deref(), Some("joe"));
}

#[test]
fn jwt_rfc7515_a3_private_key_matches_its_public_key() {
    // RFC 7515 A.3.1 gives d with (x, y): the signing key used by the other tests is that key.
    let key = test_signing_key();
    let public = EcKey::from_verifying_key(key.verifying_key());
    let x = b64_decode(RFC7515_A3_X.as_bytes()).unwrap();
    let y = b64_decode(RFC7515_A3_Y.as_bytes()).unwrap();
    assert_eq!(public, EcKey::from_coordinates(&x, &y).unwrap());
    // And what it signs verifies with the RFC's public key through the primitive.
    let token = sign_and_split(&key);
    verify_es256(&public, token.0.as_bytes(), &token.1).unwrap();
}

fn sign_and_split(key: &SigningKey) -> (String, Vec<u8>) {
    let token = crate::jwt::sign_es256(key, "k", br#"{"iss":"joe","exp":1}"#);
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input.to_owned(), b64_decode(sig.as_bytes()).unwrap())
}

#[test]
fn jwt_rfc7515_a5_alg_none_is_rejected() {
    // A.5: {"alg":"none"}, the A.2 payload, an empty signature.
    let token = format!("eyJhbGciOiJub25lIn0.{RFC_PAYLOAD}.");
    assert_eq!(b64_decode(b"eyJhbGciOiJub25lIn0").unwrap(), br#"{"alg":"none"}"#);
    assert_eq!(verify(&token, &a2_keys(), &joe(), RFC_EXP - 100), Err(JwtError::AlgNone));
    // Any letter case, and with a signature part that is not empty.
    for alg in ["None", "NONE", "nOnE"] {
        let header = b64_encode(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
        let token = format!("{header}.{RFC_PAYLOAD}.AAAA");
        assert_eq!(verify(&token, &a2_keys(), &joe(), RFC_EXP - 100), Err(JwtError::AlgNone));
    }
}

#[test]
fn jwt_rfc7517_a1_public_keys_parse() {
    let set = JwkSet::parse(RFC7517_A1.as_bytes()).unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.skipped().is_empty());

    let ec = set.get("1").unwrap();
    assert_eq!(ec.key.kty(), "EC");
    assert_eq!(ec.key_use.as_deref(), Some("enc"));
    assert_eq!(ec.alg, None);
    assert!(!ec.can_verify(), "an encryption key never verifies signatures");
    let x = b64_decode(b"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4").unwrap();
    let y = b64_decode(b"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM").unwrap();
    assert_eq!(ec.key, PublicKey::Ec(EcKey::from_coordinates(&x, &y).unwrap()));

    let rsa = set.get("2011-04-29").unwrap();
    assert_eq!(rsa.alg.as_deref(), Some("RS256"));
    assert_eq!(rsa.key_use, None);
    assert!(rsa.can_verify());
    let PublicKey::Rsa(key) = &rsa.key else { panic!("not RSA") };
    assert_eq!(key.bits(), 2048);

    // Published again, the set parses to the same keys.
    let again = JwkSet::parse(set.to_json().as_bytes()).unwrap();
    assert_eq!(again, set);
}

#[test]
fn jwt_rfc7517_a2_private_key_is_not_accepted_as_a_public_key() {
    // RFC 7517 A.2's EC key carries d: a published key whose private half is public is refused.
    let json = r#"{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE",
        "use":"enc","kid":"1"}"#;
    assert_eq!(Jwk::from_json(json.as_bytes()), Err(KeyError::PrivateMaterial.into()));
    // In a set it is skipped, with the reason.
    let set = JwkSet::parse(format!(r#"{{"keys":[{json}]}}"#).as_bytes()).unwrap();
    assert!(set.is_empty());
    assert_eq!(set.skipped()[0].reason, KeyError::PrivateMaterial);
    assert_eq!(set.skipped()[0].kid.as_deref(), Some("1"));
}

#[test]
fn jwt_rfc7638_thumbprint_vector() {
    // RFC 7638 section 3.1's example is RSA; for EC the value was computed
    // independently with Python (hashlib.sha256 over the canonical JSON).
    let x = b64_decode(RFC7515_A3_X.as_bytes()).unwrap();
    let y = b64_decode(RFC7515_A3_Y.as_bytes()).unwrap();
    let key = EcKey::from_coordinates(&x, &y).unwrap();
    assert_eq!(key.thumbprint(), super::signer::A3_THUMBPRINT);
}
