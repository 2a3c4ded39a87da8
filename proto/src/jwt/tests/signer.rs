//! The phantom-token signer: round trip, rotation, persistence.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::jwt::{
    JwkSet, JwtError, KeyRecord, MintRequest, SignError, SignerConfig, SigningKeys, Validation, jti, verify,
};
use crate::token::TokenKind;

/// RFC 7638 thumbprint of the RFC 7515 A.3 key, computed with Python's hashlib.
pub(super) const A3_THUMBPRINT: &str = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

const T0: u64 = 1_800_000_000;
const ACCESS: &[u8] = b"cfa_UXhXblRyQmtMbVB6WXZIZF85NzdmY2YwNQ";

fn config() -> SignerConfig {
    SignerConfig::new("confab://server", "confab-backends")
}

fn request(expires: u64) -> MintRequest<'static> {
    MintRequest { token: ACCESS, kind: TokenKind::Access, subject: "alice", token_expires: expires }
}

fn published(keys: &SigningKeys, now: u64) -> JwkSet {
    JwkSet::parse(keys.jwks_json(now).as_bytes()).unwrap()
}

fn access() -> Validation {
    Validation::access("confab://server", "confab-backends")
}

#[test]
fn jwt_signer_round_trip() {
    let mut rng = StdRng::from_seed([9; 32]);
    let mut keys = SigningKeys::generate(config(), &mut rng, T0);
    let minted = keys.mint(T0, &request(T0 + 900)).unwrap();
    assert_eq!(minted.exp, T0 + 300, "capped at max_ttl_secs");
    assert_eq!(minted.kid, keys.current_kid());

    let verified = verify(&minted.jwt, &published(&keys, T0), &access(), T0 + 1).unwrap();
    assert_eq!(verified.kind, Some(TokenKind::Access));
    assert_eq!(verified.header.kid.as_deref(), Some(keys.current_kid()));
    assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
    let c = &verified.claims;
    assert_eq!(c.iss.as_deref(), Some("confab://server"));
    assert_eq!(c.aud, Some(vec!["confab-backends".to_owned()]));
    assert_eq!(c.sub.as_deref(), Some("alice"));
    assert_eq!((c.iat, c.exp), (Some(T0 as i64), Some((T0 + 300) as i64)));
    assert_eq!(c.token_type.as_deref(), Some("access"));
    // jti is the SHA-256 of the opaque token (Python: hashlib.sha256(token).hexdigest()), never the token.
    assert_eq!(c.jti.as_deref(), Some("53e3acff9be2280a4ec75d94289f30fffa7c9b3ba9ed08a7950696d9cc6bd25f"));
    assert_eq!(jti(ACCESS), "53e3acff9be2280a4ec75d94289f30fffa7c9b3ba9ed08a7950696d9cc6bd25f");
    let payload = minted.jwt.split('.').nth(1).unwrap();
    let payload = String::from_utf8(super::b64_decode(payload.as_bytes()).unwrap()).unwrap();
    assert!(!payload.contains("cfa_") && !payload.contains("UXhXbl"), "{payload}");

    // A refresh token's JWT is a refresh token, and only that.
    let refresh =
        MintRequest { kind: TokenKind::Refresh, token: b"cfr_TWZSdEdoSmtMcFF3RXJUeV9mY2VhNzMyYQ", ..request(T0 + 50) };
    let minted = keys.mint(T0, &refresh).unwrap();
    assert_eq!(minted.exp, T0 + 50, "never outlives its opaque token");
    let set = published(&keys, T0);
    assert!(matches!(verify(&minted.jwt, &set, &access(), T0), Err(JwtError::WrongType { .. })));
    let as_refresh = Validation::refresh("confab://server", "confab-backends");
    assert_eq!(verify(&minted.jwt, &set, &as_refresh, T0).unwrap().kind, Some(TokenKind::Refresh));
}

#[test]
fn jwt_signer_refuses_expired_tokens_and_empty_subjects() {
    let mut keys = SigningKeys::generate(config(), &mut StdRng::from_seed([1; 32]), T0);
    assert_eq!(keys.mint(T0, &request(T0)), Err(SignError::TokenExpired));
    assert_eq!(keys.mint(T0, &MintRequest { subject: "", ..request(T0 + 10) }), Err(SignError::EmptySubject));
}

#[test]
fn jwt_signer_kid_is_the_rfc7638_thumbprint() {
    let record = KeyRecord {
        kid: String::new(),
        secret: super::b64_decode(super::RFC7515_A3_D.as_bytes()).unwrap().try_into().unwrap(),
        created: T0,
        last_exp: 0,
        current: true,
    };
    let keys = SigningKeys::restore(config(), &[record]).unwrap();
    assert_eq!(keys.current_kid(), A3_THUMBPRINT);
    let jwks: serde_json::Value = serde_json::from_str(&keys.jwks_json(T0)).unwrap();
    assert_eq!(
        jwks,
        serde_json::json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "x": super::RFC7515_A3_X, "y": super::RFC7515_A3_Y,
            "kid": A3_THUMBPRINT, "alg": "ES256", "use": "sig",
        }]})
    );
}

#[test]
fn jwt_signer_rotation_keeps_retired_keys_until_their_tokens_expire() {
    let mut rng = StdRng::from_seed([2; 32]);
    let mut keys = SigningKeys::generate(config(), &mut rng, T0);
    let old_kid = keys.current_kid().to_owned();
    let old = keys.mint(T0, &request(T0 + 3600)).unwrap();
    assert_eq!(old.exp, T0 + 300);

    let new_kid = keys.rotate(&mut rng, T0 + 100);
    assert_ne!(new_kid, old_kid);
    let new = keys.mint(T0 + 100, &request(T0 + 3600)).unwrap();
    assert_eq!(new.kid, new_kid);

    // Both verify against what is published while the old token lives.
    for now in [T0 + 100, T0 + 299] {
        let set = published(&keys, now);
        assert_eq!(set.len(), 2);
        verify(&old.jwt, &set, &access(), now).unwrap();
        verify(&new.jwt, &set, &access(), now).unwrap();
    }
    // The retired key stays published for the grace after the old token's exp...
    let grace = config().publish_grace_secs;
    assert_eq!(keys.next_prune(), Some(old.exp + grace));
    assert_eq!(published(&keys, old.exp + grace - 1).len(), 2);
    assert!(keys.prune(old.exp + grace - 1).is_empty());
    // ...then it is gone, and a token naming it is an unknown kid.
    let after = old.exp + grace;
    let set = published(&keys, after);
    assert_eq!(set.len(), 1);
    assert!(set.get(&old_kid).is_none());
    let lenient = Validation { leeway_secs: 1_000_000, ..access() };
    assert_eq!(verify(&old.jwt, &set, &lenient, after), Err(JwtError::UnknownKid(old_kid.clone())));
    verify(&new.jwt, &set, &access(), after).unwrap();
    assert_eq!(keys.prune(after), vec![old_kid]);
    assert_eq!(keys.next_prune(), None);
}

#[test]
fn jwt_signer_drops_a_key_that_signed_nothing() {
    let mut rng = StdRng::from_seed([3; 32]);
    let mut keys = SigningKeys::generate(config(), &mut rng, T0);
    keys.rotate(&mut rng, T0 + 1);
    assert_eq!(published(&keys, T0 + 1).len(), 1);
    assert_eq!(keys.records().len(), 1);
}

#[test]
fn jwt_signer_state_survives_a_restart() {
    let mut rng = StdRng::from_seed([4; 32]);
    let mut keys = SigningKeys::generate(config(), &mut rng, T0);
    let old = keys.mint(T0, &request(T0 + 3600)).unwrap();
    keys.rotate(&mut rng, T0 + 10);
    let records = keys.records();
    assert_eq!(records.len(), 2);
    assert!(!format!("{records:?}").contains("secret"), "Debug never prints private keys");

    let mut restored = SigningKeys::restore(config(), &records).unwrap();
    assert_eq!(restored.current_kid(), keys.current_kid());
    assert_eq!(restored.jwks_json(T0 + 10), keys.jwks_json(T0 + 10));
    verify(&old.jwt, &published(&restored, T0 + 20), &access(), T0 + 20).unwrap();
    // Same key, same claims, same signature (RFC 6979): the signers are identical.
    assert_eq!(restored.mint(T0 + 20, &request(T0 + 60)), keys.mint(T0 + 20, &request(T0 + 60)));

    let mut bad = records.clone();
    bad[0].secret = [0; 32];
    assert!(matches!(SigningKeys::restore(config(), &bad), Err(SignError::InvalidKey(_))));
    let mut two_current = records.clone();
    two_current[1].current = true;
    assert_eq!(SigningKeys::restore(config(), &two_current).unwrap_err(), SignError::NoCurrentKey);
    assert_eq!(SigningKeys::restore(config(), &records[1..]).unwrap_err(), SignError::NoCurrentKey);
}
