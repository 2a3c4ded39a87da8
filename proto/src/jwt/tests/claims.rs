//! Claim validation: time, issuer, audience, authorized party, subject, kind.

use serde_json::json;

use super::*;
use crate::jwt::{JwkSet, JwtError, Validation, Verified, verify};
use crate::token::TokenKind;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/confab";

fn keys() -> JwkSet {
    JwkSet::parse(format!(r#"{{"keys":[{}]}}"#, test_jwk_json("t")).as_bytes()).unwrap()
}

fn run(header: Value, claims: Value, validation: &Validation, now: u64) -> Result<Verified, JwtError> {
    verify(&es256_token(&test_signing_key(), &header, &claims), &keys(), validation, now)
}

fn at(claims: Value, validation: &Validation) -> Result<Verified, JwtError> {
    run(json!({ "alg": "ES256", "kid": "t" }), claims, validation, NOW)
}

/// A phantom access token's claims; `patch` overrides members (null removes one).
fn phantom(patch: Value) -> Value {
    let mut claims = json!({
        "iss": ISS, "sub": "alice", "aud": "confab", "exp": NOW + 300, "iat": NOW, "jti": "ab12", "type": "access",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn access() -> Validation {
    Validation::access(ISS, "confab")
}

#[test]
fn jwt_claims_of_a_good_access_token() {
    let verified = at(phantom(json!({})), &access()).unwrap();
    assert_eq!(verified.kind, Some(TokenKind::Access));
    assert_eq!(verified.claims.sub.as_deref(), Some("alice"));
    assert_eq!(verified.claims.aud, Some(vec!["confab".to_owned()]));
    assert_eq!(verified.claims.username(), Some("alice"));
}

#[test]
fn jwt_expired_with_leeway() {
    let leeway = access().leeway_secs;
    let exp = NOW - leeway;
    assert_eq!(
        at(phantom(json!({ "exp": exp, "iat": exp - 300 })), &access()),
        Err(JwtError::Expired { exp: exp as i64, now: NOW })
    );
    assert!(at(phantom(json!({ "exp": exp + 1, "iat": exp - 300 })), &access()).is_ok());
    let strict = Validation { leeway_secs: 0, ..access() };
    assert_eq!(
        at(phantom(json!({ "exp": NOW, "iat": NOW - 300 })), &strict),
        Err(JwtError::Expired { exp: NOW as i64, now: NOW })
    );
    // No exp at all: never accepted.
    assert_eq!(at(phantom(json!({ "exp": null })), &access()), Err(JwtError::MissingClaim("exp")));
    assert_eq!(at(phantom(json!({ "exp": null })), &Validation::default()), Err(JwtError::MissingClaim("exp")));
}

#[test]
fn jwt_not_yet_valid_and_issued_in_the_future() {
    let leeway = access().leeway_secs;
    let nbf = NOW + leeway + 1;
    assert_eq!(at(phantom(json!({ "nbf": nbf })), &access()), Err(JwtError::NotYetValid { nbf: nbf as i64, now: NOW }));
    assert!(at(phantom(json!({ "nbf": NOW + leeway })), &access()).is_ok());
    let iat = NOW + leeway + 1;
    assert_eq!(
        at(phantom(json!({ "iat": iat, "exp": iat + 300 })), &access()),
        Err(JwtError::IssuedInFuture { iat: iat as i64, now: NOW })
    );
}

#[test]
fn jwt_numeric_dates() {
    // Fractional seconds are allowed (RFC 7519 NumericDate) and truncated.
    let verified = at(phantom(json!({ "exp": (NOW + 10) as f64 + 0.75 })), &access()).unwrap();
    assert_eq!(verified.claims.exp, Some((NOW + 10) as i64));
    // Huge values saturate; negative ones are simply in the past.
    assert!(at(phantom(json!({ "exp": u64::MAX })), &access()).is_ok());
    assert!(at(phantom(json!({ "exp": 1e300 })), &access()).is_ok());
    assert!(matches!(at(phantom(json!({ "exp": -5 })), &access()), Err(JwtError::Expired { exp: -5, .. })));
    assert_eq!(at(phantom(json!({ "exp": "1900000000" })), &access()), Err(JwtError::BadClaim("exp")));
    assert_eq!(at(phantom(json!({ "nbf": true })), &access()), Err(JwtError::BadClaim("nbf")));
}

#[test]
fn jwt_wrong_issuer() {
    assert_eq!(
        at(phantom(json!({ "iss": "https://evil.example/realms/confab" })), &access()),
        Err(JwtError::WrongIssuer("https://evil.example/realms/confab".into()))
    );
    assert_eq!(at(phantom(json!({ "iss": null })), &access()), Err(JwtError::MissingClaim("iss")));
    assert_eq!(at(phantom(json!({ "iss": 5 })), &access()), Err(JwtError::BadClaim("iss")));
    // Not configured: not checked.
    let any_issuer = Validation { issuer: None, ..access() };
    assert!(at(phantom(json!({ "iss": "https://other" })), &any_issuer).is_ok());
}

#[test]
fn jwt_wrong_audience() {
    assert_eq!(at(phantom(json!({ "aud": "other-service" })), &access()), Err(JwtError::WrongAudience));
    assert_eq!(at(phantom(json!({ "aud": ["account", "other"] })), &access()), Err(JwtError::WrongAudience));
    assert_eq!(at(phantom(json!({ "aud": [] })), &access()), Err(JwtError::WrongAudience));
    assert!(at(phantom(json!({ "aud": ["account", "confab"] })), &access()).is_ok());
    assert_eq!(at(phantom(json!({ "aud": null })), &access()), Err(JwtError::MissingClaim("aud")));
    assert_eq!(at(phantom(json!({ "aud": ["confab", 1] })), &access()), Err(JwtError::BadClaim("aud")));
    assert_eq!(at(phantom(json!({ "aud": { "confab": true } })), &access()), Err(JwtError::BadClaim("aud")));
}

#[test]
fn jwt_authorized_party() {
    let with_azp = Validation { authorized_parties: vec!["confab-cli".into(), "confab-web".into()], ..access() };
    assert!(at(phantom(json!({ "azp": "confab-web" })), &with_azp).is_ok());
    assert_eq!(at(phantom(json!({ "azp": "evil-app" })), &with_azp), Err(JwtError::WrongAzp("evil-app".into())));
    assert_eq!(at(phantom(json!({})), &with_azp), Err(JwtError::MissingClaim("azp")));
    // Not configured: not checked.
    assert!(at(phantom(json!({ "azp": "evil-app" })), &access()).is_ok());
}

#[test]
fn jwt_subject_required() {
    assert_eq!(at(phantom(json!({ "sub": null })), &access()), Err(JwtError::MissingClaim("sub")));
    let verified = at(phantom(json!({ "preferred_username": "alice.b" })), &access()).unwrap();
    assert_eq!(verified.claims.username(), Some("alice.b"));
}

#[test]
fn jwt_refresh_token_is_never_an_access_token() {
    let refresh = phantom(json!({ "type": "refresh" }));
    assert_eq!(
        at(refresh.clone(), &access()),
        Err(JwtError::WrongType { expected: TokenKind::Access, found: "refresh".into() })
    );
    let verified = at(refresh, &Validation::refresh(ISS, "confab")).unwrap();
    assert_eq!(verified.kind, Some(TokenKind::Refresh));
    assert_eq!(
        at(phantom(json!({})), &Validation::refresh(ISS, "confab")),
        Err(JwtError::WrongType { expected: TokenKind::Refresh, found: "access".into() })
    );
}

#[test]
fn jwt_keycloak_token_kinds() {
    let keycloak = |typ: &str| phantom(json!({ "type": null, "typ": typ, "azp": "confab-cli" }));
    assert_eq!(at(keycloak("Bearer"), &access()).unwrap().kind, Some(TokenKind::Access));
    for typ in ["Refresh", "Offline"] {
        assert_eq!(
            at(keycloak(typ), &access()),
            Err(JwtError::WrongType { expected: TokenKind::Access, found: typ.into() })
        );
        assert_eq!(at(keycloak(typ), &Validation::refresh(ISS, "confab")).unwrap().kind, Some(TokenKind::Refresh));
    }
    // An ID token is neither.
    assert_eq!(
        at(keycloak("ID"), &access()),
        Err(JwtError::WrongType { expected: TokenKind::Access, found: "ID".into() })
    );
    // RFC 9068 header typ.
    let verified =
        run(json!({ "alg": "ES256", "kid": "t", "typ": "at+jwt" }), phantom(json!({ "type": null })), &access(), NOW);
    assert_eq!(verified.unwrap().kind, Some(TokenKind::Access));
    // No marker at all: no kind, refused where one is required.
    assert_eq!(at(phantom(json!({ "type": null })), &access()), Err(JwtError::MissingClaim("type")));
    assert_eq!(at(phantom(json!({ "type": null })), &Validation::default()).unwrap().kind, None);
}

#[test]
fn jwt_access_and_refresh_are_mutually_exclusive() {
    // Every combination of markers: no token passes both validations.
    let types = [None, Some("access"), Some("refresh"), Some("id")];
    let typs = [None, Some("Bearer"), Some("Refresh"), Some("Offline"), Some("ID")];
    let header_typs = [None, Some("JWT"), Some("at+jwt")];
    let mut accepted = [0usize; 2];
    for t in types {
        for k in typs {
            for h in header_typs {
                let mut claims = phantom(json!({ "type": null }));
                if let Some(t) = t {
                    claims["type"] = json!(t);
                }
                if let Some(k) = k {
                    claims["typ"] = json!(k);
                }
                let mut header = json!({ "alg": "ES256", "kid": "t" });
                if let Some(h) = h {
                    header["typ"] = json!(h);
                }
                let as_access = run(header.clone(), claims.clone(), &access(), NOW).is_ok();
                let as_refresh = run(header, claims, &Validation::refresh(ISS, "confab"), NOW).is_ok();
                assert!(!(as_access && as_refresh), "type {t:?}, typ {k:?}, header typ {h:?}");
                accepted[0] += usize::from(as_access);
                accepted[1] += usize::from(as_refresh);
            }
        }
    }
    assert!(accepted[0] > 0 && accepted[1] > 0);
}

#[test]
fn jwt_contradictory_markers_are_ambiguous() {
    assert_eq!(at(phantom(json!({ "typ": "Refresh" })), &access()), Err(JwtError::AmbiguousType));
    assert_eq!(at(phantom(json!({ "typ": "ID" })), &access()), Err(JwtError::AmbiguousType));
    let header = json!({ "alg": "ES256", "kid": "t", "typ": "at+jwt" });
    assert_eq!(
        run(header, phantom(json!({ "type": "refresh" })), &Validation::refresh(ISS, "confab"), NOW),
        Err(JwtError::AmbiguousType)
    );
}

#[test]
fn jwt_claims_are_not_read_before_the_signature() {
    // Expired and wrongly issued, but also badly signed: the signature is what is reported.
    let token = es256_token(&test_signing_key(), &json!({ "alg": "ES256", "kid": "t" }), &phantom(json!({})));
    let (input, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", b64_encode(&[1; 64]));
    assert_eq!(verify(&forged, &keys(), &access(), NOW + 100_000), Err(JwtError::BadSignature));
}
