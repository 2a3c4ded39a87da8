//! The caching validator: refresh on unknown kid, rate limiting, key removal.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::Now;
use crate::jwt::{
    FetchReason, FetchRequest, JwkError, JwtError, JwtValidator, MintRequest, SignerConfig, SigningKeys, Validation,
    ValidatorConfig,
};
use crate::token::TokenKind;

const T0: u64 = 1_800_000_000;

/// The time `secs` (Unix seconds, from `T0` on): the monotonic and the wall clock in step.
fn at(secs: u64) -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    Now::new(*BASE.get_or_init(Instant::now) + Duration::from_secs(secs - T0), secs * 1000)
}

fn signer(seed: u8) -> SigningKeys {
    SigningKeys::generate(SignerConfig::new("confab://server", "backend"), &mut StdRng::from_seed([seed; 32]), T0)
}

fn mint(keys: &mut SigningKeys, now: u64) -> String {
    let request = MintRequest { token: b"cfa_x", kind: TokenKind::Access, subject: "alice", token_expires: now + 3600 };
    keys.mint(now, &request).unwrap().jwt
}

fn validator() -> JwtValidator {
    let config = ValidatorConfig {
        validation: Validation::access("confab://server", "backend"),
        min_refresh_interval: Duration::from_secs(30),
        max_cache_age: Duration::from_secs(3600),
    };
    JwtValidator::new(config, at(T0))
}

#[test]
fn jwt_validator_fetches_at_start_then_verifies() {
    let mut keys = signer(1);
    let mut v = validator();
    assert_eq!(v.poll_timeout(), Some(at(T0).instant));
    assert_eq!(v.poll_fetch(at(T0)), Some(FetchRequest { reason: FetchReason::Initial }));
    assert!(v.fetch_in_flight());
    assert_eq!(v.poll_fetch(at(T0)), None, "one request at a time");
    let update = v.handle_jwks(at(T0), keys.jwks_json(T0).as_bytes()).unwrap();
    assert_eq!(update.added, vec![keys.current_kid().to_owned()]);
    assert!(update.removed.is_empty());
    assert!(!v.fetch_in_flight());

    let token = mint(&mut keys, T0);
    let verified = v.verify(at(T0 + 1), &token).unwrap();
    assert_eq!(verified.claims.sub.as_deref(), Some("alice"));
    assert_eq!(v.poll_fetch(at(T0 + 1)), None);
    assert_eq!(v.poll_timeout(), Some(at(T0 + 3600).instant), "next: the periodic refresh");
}

#[test]
fn jwt_validator_refreshes_on_unknown_kid() {
    let mut rng = StdRng::from_seed([5; 32]);
    let mut keys = signer(2);
    let mut v = validator();
    v.poll_fetch(at(T0));
    v.handle_jwks(at(T0), keys.jwks_json(T0).as_bytes()).unwrap();
    let old_kid = keys.current_kid().to_owned();
    let old_token = mint(&mut keys, T0);

    // The issuer rotates; a token signed with the new key arrives.
    let new_kid = keys.rotate(&mut rng, T0 + 100);
    let token = mint(&mut keys, T0 + 100);
    assert_eq!(v.verify(at(T0 + 100), &token), Err(JwtError::UnknownKid(new_kid.clone())));
    assert_eq!(v.poll_fetch(at(T0 + 100)), Some(FetchRequest { reason: FetchReason::UnknownKid(new_kid.clone()) }));
    let update = v.handle_jwks(at(T0 + 100), keys.jwks_json(T0 + 100).as_bytes()).unwrap();
    assert_eq!(update.added, vec![new_kid]);
    assert!(update.removed.is_empty(), "the retired key is still published");
    v.verify(at(T0 + 100), &token).unwrap();
    v.verify(at(T0 + 100), &old_token).unwrap();

    // Later the retired key leaves the set: the validator drops it too.
    let later = T0 + 300 + 60;
    let update = v.handle_jwks(at(later), keys.jwks_json(later).as_bytes()).unwrap();
    assert_eq!(update.removed, vec![old_kid.clone()]);
    let lenient = Validation { leeway_secs: 1_000_000, ..v.config().validation.clone() };
    assert_eq!(crate::jwt::verify(&old_token, v.keys(), &lenient, later), Err(JwtError::UnknownKid(old_kid)));
}

#[test]
fn jwt_validator_rate_limits_refreshes() {
    let mut keys = signer(3);
    let mut v = validator();
    v.poll_fetch(at(T0));
    v.handle_jwks(at(T0), keys.jwks_json(T0).as_bytes()).unwrap();

    // A flood of tokens with unknown kids within the interval: one fetch.
    let forged = |kid: &str| {
        let header = super::b64_encode(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#).as_bytes());
        format!("{header}.e30.AAAA")
    };
    let t = T0 + 30;
    assert!(matches!(v.verify(at(t), &forged("a")), Err(JwtError::UnknownKid(_))));
    assert_eq!(v.poll_fetch(at(t)), Some(FetchRequest { reason: FetchReason::UnknownKid("a".into()) }));
    v.handle_jwks(at(t), keys.jwks_json(t).as_bytes()).unwrap();
    for i in 0..1000 {
        assert!(matches!(v.verify(at(t + 1), &forged(&format!("k{i}"))), Err(JwtError::UnknownKid(_))));
        assert_eq!(v.poll_fetch(at(t + 1)), None);
    }
    assert_eq!(v.poll_timeout(), Some(at(t + 30).instant));
    assert_eq!(v.poll_fetch(at(t + 29)), None);
    // After the interval, the coalesced request goes out once.
    assert_eq!(v.poll_fetch(at(t + 30)), Some(FetchRequest { reason: FetchReason::UnknownKid("k0".into()) }));
    assert_eq!(v.poll_fetch(at(t + 30)), None);
    v.handle_jwks(at(t + 30), keys.jwks_json(t + 30).as_bytes()).unwrap();
    assert_eq!(v.poll_fetch(at(t + 1000)), None);
    // Good tokens are unaffected throughout.
    let token = mint(&mut keys, t + 1000);
    v.verify(at(t + 1000), &token).unwrap();
}

#[test]
fn jwt_validator_periodic_refresh_and_failures() {
    let keys = signer(4);
    let mut v = validator();
    v.poll_fetch(at(T0));
    // The fetch failed: the old (empty) set stays; the next try waits for the interval.
    v.fetch_failed(at(T0 + 1));
    assert!(!v.fetch_in_flight());
    assert_eq!(v.poll_fetch(at(T0 + 1)), None);
    assert_eq!(v.poll_fetch(at(T0 + 30)), Some(FetchRequest { reason: FetchReason::Initial }));
    // A document that is not a JWK Set leaves the set as it was.
    assert!(matches!(v.handle_jwks(at(T0 + 30), b"<html>"), Err(JwkError::Json(_))));
    assert!(v.keys().is_empty());
    assert_eq!(v.poll_fetch(at(T0 + 60)), Some(FetchRequest { reason: FetchReason::Initial }));
    v.handle_jwks(at(T0 + 60), keys.jwks_json(T0).as_bytes()).unwrap();
    assert_eq!(v.keys().len(), 1);
    // An hour later the set is refetched; a request never answered is retried after the interval.
    assert_eq!(v.poll_timeout(), Some(at(T0 + 3660).instant));
    assert_eq!(v.poll_fetch(at(T0 + 3659)), None);
    assert_eq!(v.poll_fetch(at(T0 + 3660)), Some(FetchRequest { reason: FetchReason::Periodic }));
    assert_eq!(v.poll_fetch(at(T0 + 3689)), None);
    assert_eq!(v.poll_fetch(at(T0 + 3690)), Some(FetchRequest { reason: FetchReason::Periodic }));
    v.handle_jwks(at(T0 + 3691), keys.jwks_json(T0).as_bytes()).unwrap();
    assert_eq!(v.poll_fetch(at(T0 + 3700)), None, "fresh again");
}

#[test]
fn jwt_validator_from_a_file_does_not_fetch_at_start() {
    let keys = signer(5);
    let set = crate::jwt::JwkSet::parse(keys.jwks_json(T0).as_bytes()).unwrap();
    let config = ValidatorConfig { max_cache_age: Duration::ZERO, ..ValidatorConfig::new(Validation::default()) };
    let mut v = JwtValidator::with_keys(config, set, at(T0));
    assert_eq!(v.poll_fetch(at(T0)), None);
    assert_eq!(v.poll_timeout(), None);
    assert_eq!(v.poll_fetch(at(T0 + 1_000_000)), None);
}
