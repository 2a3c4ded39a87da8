//! Attacker review (issue 11): provider keys and tokens at the server.

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Harness, config};
use crate::jwt::{MintRequest, SignerConfig, SigningKeys};
use crate::server::{OidcConfig, ServerConfig};
use crate::token::TokenKind;
use crate::wire::{FetchKey, SetIdentityKey, status};

const IDP: &str = "https://idp.test/realms/confab";

fn provider(seed: u8, now: u64) -> SigningKeys {
    SigningKeys::generate(SignerConfig::new(IDP, "confab"), &mut StdRng::from_seed([seed; 32]), now)
}

fn access_token(idp: &mut SigningKeys, now: u64, subject: &str) -> String {
    let request = MintRequest { token: subject.as_bytes(), kind: TokenKind::Access, subject, token_expires: now + 300 };
    idp.mint(now, &request).unwrap().jwt
}

/// AUTH.md: `handle_jwks` replaces the set, "keys that left the document
/// are dropped"; `JwksUpdate::removed`: "tokens naming them no longer
/// verify". A provider removes a key (leaked, or rotated out) and the
/// adapter installs the new set: a new connection presenting a JWT signed
/// by the removed key gets 401, but a connection that already verified that
/// JWT keeps it in its token cache and goes on being that user until the
/// JWT's `exp` + leeway (and `exp` is whatever the holder of a leaked key
/// chose to sign). Opaque tokens do not have this gap: revoking them
/// clears the caches (`forget_tokens`).
#[test]
fn a_jwt_signed_by_a_key_removed_from_the_provider_set_stops_working_on_live_connections() {
    let t0 = crate::examples::TIMESTAMP_MS / 1000;
    let mut leaked = provider(21, t0);
    let oidc = OidcConfig::new(IDP, "confab", leaked.jwks_json(t0));
    let mut h = Harness::new(ServerConfig { oidc: Some(oidc), ..config() });
    let token = access_token(&mut leaked, t0, "dave");

    let live = h.connect();
    let id = h.send_auth(live, SetIdentityKey { identity_key: Bytes::from_static(b"dave's key") }, token.as_bytes());
    assert_eq!(h.code(live, id), status::OK, "{}", h.reason(live, id));

    // The provider drops the key; the adapter installs the new set.
    let rotated = provider(22, t0);
    let now = h.now;
    let update = h.server.jwks_fetched(now, rotated.jwks_json(t0).as_bytes()).unwrap();
    assert_eq!(update.removed.len(), 1);

    let fresh = h.connect();
    let id = h.send_auth(fresh, FetchKey { username: "dave".into() }, token.as_bytes());
    assert_eq!(h.code(fresh, id), status::UNAUTHORIZED, "a new connection refuses the removed key");

    let id = h.send_auth(live, FetchKey { username: "dave".into() }, token.as_bytes());
    assert_eq!(
        h.code(live, id),
        status::UNAUTHORIZED,
        "the live connection still accepts a JWT whose key left the provider's set"
    );
}
