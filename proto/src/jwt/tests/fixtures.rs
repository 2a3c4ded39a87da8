//! Tokens minted by an independent implementation (PyJWT 2.15 with the
//! `cryptography` package, keys confab has never seen: see
//! `testdata/mint_fixtures.py`) verify exactly when they should.

use crate::jwt::{JwkSet, JwtError, KeyError, Validation, verify};
use crate::token::TokenKind;

const FIXTURES: &str = include_str!("../testdata/pyjwt_fixtures.json");

struct Fixtures {
    keys: JwkSet,
    issuer: String,
    iat: u64,
    exp: u64,
    tokens: serde_json::Map<String, serde_json::Value>,
}

fn load() -> Fixtures {
    let doc: serde_json::Value = serde_json::from_str(FIXTURES).unwrap();
    Fixtures {
        keys: JwkSet::parse(doc["jwks"].to_string().as_bytes()).unwrap(),
        issuer: doc["issuer"].as_str().unwrap().to_owned(),
        iat: doc["iat"].as_u64().unwrap(),
        exp: doc["exp"].as_u64().unwrap(),
        tokens: doc["tokens"].as_object().unwrap().clone(),
    }
}

impl Fixtures {
    fn token(&self, name: &str) -> &str {
        self.tokens[name].as_str().unwrap()
    }

    fn access(&self) -> Validation {
        Validation { authorized_parties: vec!["confab-cli".into()], ..Validation::access(&self.issuer, "confab") }
    }
}

#[test]
fn jwt_pyjwt_jwks_parses_and_skips_the_weak_key() {
    let f = load();
    let kids: Vec<_> = f.keys.keys().iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, ["kc-rsa-1", "kc-ec-1", "kc-enc-1"]);
    assert!(!f.keys.get("kc-enc-1").unwrap().can_verify());
    assert_eq!(f.keys.skipped().len(), 1);
    assert_eq!(f.keys.skipped()[0].kid.as_deref(), Some("weak-rsa-1024"));
    assert_eq!(f.keys.skipped()[0].reason, KeyError::RsaTooSmall(1024));
}

#[test]
fn jwt_pyjwt_keycloak_access_tokens_verify_while_valid() {
    let f = load();
    for name in ["rs256_keycloak_access", "es256_keycloak_access"] {
        let verified = verify(f.token(name), &f.keys, &f.access(), f.iat + 10).unwrap();
        assert_eq!(verified.kind, Some(TokenKind::Access), "{name}");
        assert_eq!(verified.claims.username(), Some("alice"));
        assert_eq!(verified.claims.azp.as_deref(), Some("confab-cli"));
        assert_eq!(verified.claims_json["scope"], "openid profile offline_access");
        // At the edges of its validity, with the default 60 s leeway.
        assert!(verify(f.token(name), &f.keys, &f.access(), f.exp + 59).is_ok());
        assert_eq!(
            verify(f.token(name), &f.keys, &f.access(), f.exp + 60),
            Err(JwtError::Expired { exp: f.exp as i64, now: f.exp + 60 })
        );
        assert_eq!(
            verify(f.token(name), &f.keys, &f.access(), f.iat - 61),
            Err(JwtError::IssuedInFuture { iat: f.iat as i64, now: f.iat - 61 })
        );
        // Other issuer, audience, client.
        let other_issuer = Validation { issuer: Some("https://idp.example.test/realms/other".into()), ..f.access() };
        assert_eq!(verify(f.token(name), &f.keys, &other_issuer, f.iat), Err(JwtError::WrongIssuer(f.issuer.clone())));
        let other_audience = Validation { audience: Some("game-7".into()), ..f.access() };
        assert_eq!(verify(f.token(name), &f.keys, &other_audience, f.iat), Err(JwtError::WrongAudience));
        let other_client = Validation { authorized_parties: vec!["confab-web".into()], ..f.access() };
        assert_eq!(verify(f.token(name), &f.keys, &other_client, f.iat), Err(JwtError::WrongAzp("confab-cli".into())));
        // Not a refresh token.
        let refresh = Validation::refresh(&f.issuer, "confab");
        assert!(matches!(verify(f.token(name), &f.keys, &refresh, f.iat), Err(JwtError::WrongType { .. })));
    }
}

#[test]
fn jwt_pyjwt_refresh_token_is_only_a_refresh_token() {
    let f = load();
    let token = f.token("es256_phantom_refresh");
    assert_eq!(
        verify(token, &f.keys, &Validation::access(&f.issuer, "confab"), f.iat),
        Err(JwtError::WrongType { expected: TokenKind::Access, found: "refresh".into() })
    );
    let verified = verify(token, &f.keys, &Validation::refresh(&f.issuer, "confab"), f.iat).unwrap();
    assert_eq!(verified.claims.sub.as_deref(), Some("bob"));
    assert_eq!(verified.claims.jti.as_deref(), Some(crate::jwt::jti(b"cfr_not-a-real-token").as_str()));
}

#[test]
fn jwt_pyjwt_attack_tokens_are_rejected() {
    let f = load();
    let at = f.iat + 10;
    // Signed by a key outside the set, under a kid of the set.
    assert_eq!(verify(f.token("rs256_signed_by_stranger"), &f.keys, &f.access(), at), Err(JwtError::BadSignature));
    // Signed by the 1024-bit key the set lists but does not use.
    assert_eq!(
        verify(f.token("rs256_weak_key"), &f.keys, &f.access(), at),
        Err(JwtError::UnusableKey { kid: "weak-rsa-1024".into(), reason: KeyError::RsaTooSmall(1024) })
    );
    // HMAC keyed with the RSA public key's PEM.
    assert_eq!(
        verify(f.token("hs256_with_rsa_public_pem"), &f.keys, &f.access(), at),
        Err(JwtError::AlgHmac("HS256".into()))
    );
}
