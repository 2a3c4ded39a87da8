//! A stand-in Keycloak for the simulator: a realm whose ES256 keys sign
//! access tokens shaped like Keycloak's, published as a JWK Set the
//! simulated server is configured to trust.

use std::time::Duration;

use confab_proto::jwt::{EcKey, Jwk, JwkSet, PublicKey, sign_es256};
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate as _;
use rand::RngExt as _;
use rand::rngs::StdRng;

/// The realm's issuer.
pub const ISSUER: &str = "https://sso.sim.test/realms/confab";
/// The audience confab is configured with (Keycloak's audience mapper puts it in `aud`).
pub const AUDIENCE: &str = "confab";
/// The OIDC client the users log in through (`azp`).
pub const CLIENT_ID: &str = "confab-cli";

/// Keys in the realm's JWK Set at once.
const KEYS: usize = 3;

/// The test identity provider. Deterministic: its keys come from the simulation's generator.
pub struct TestIdp {
    keys: Vec<(String, SigningKey)>,
    /// The key that signs now; the realm rotates to the next one every few tokens.
    active: usize,
    issued: u64,
    lifetime: Duration,
}

impl std::fmt::Debug for TestIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("TestIdp")
            .field("kids", &kids)
            .field("active", &self.active)
            .field("issued", &self.issued)
            .finish()
    }
}

impl TestIdp {
    /// A realm with three ES256 keys drawn from `rng`; tokens live `lifetime`.
    pub fn new(rng: &mut StdRng, lifetime: Duration) -> TestIdp {
        let keys = (0..KEYS)
            .map(|i| {
                let key = SigningKey::generate_from_rng(rng);
                let tag: u32 = rng.random();
                (format!("kc-es256-{i}-{tag:08x}"), key)
            })
            .collect();
        TestIdp { keys, active: 0, issued: 0, lifetime }
    }

    /// The realm's JWK Set (Keycloak's `protocol/openid-connect/certs`): every key, public halves only.
    #[must_use]
    pub fn jwks_json(&self) -> String {
        let jwks = self.keys.iter().map(|(kid, key)| Jwk {
            kid: Some(kid.clone()),
            alg: Some("ES256".into()),
            key_use: Some("sig".into()),
            key_ops: None,
            key: PublicKey::Ec(EcKey::from_verifying_key(key.verifying_key())),
        });
        JwkSet::from_keys(jwks).map(|set| set.to_json()).unwrap_or_default()
    }

    /// How long a token lives (`exp - iat`).
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The `kid` of the key that signed the latest token.
    #[must_use]
    pub fn active_kid(&self) -> &str {
        &self.keys[self.active].0
    }

    /// Tokens issued so far.
    #[must_use]
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// An access token for `username` issued at `now_unix_ms`, Keycloak-shaped:
    /// `iss`, `aud` (confab and Keycloak's `account`), `azp`, `typ: Bearer`,
    /// `preferred_username`, a UUID-like `sub`, `exp = iat + lifetime`, `kid`.
    /// The signing key rotates every second token (to the next key of the set, round robin).
    pub fn token(&mut self, now_unix_ms: u64, username: &str) -> String {
        let sub =
            format!("{:08x}-0000-4000-8000-{:012x}", fnv(username.as_bytes()) as u32, fnv(username.as_bytes()) >> 16);
        self.token_for_subject(now_unix_ms, username, &sub)
    }

    /// Like [`token`](Self::token), with a chosen `sub`: the provider's user id, which a
    /// `preferred_username` may outlive (a rename) or be reused by (another user).
    pub fn token_for_subject(&mut self, now_unix_ms: u64, username: &str, sub: &str) -> String {
        self.issued += 1;
        if self.issued.is_multiple_of(2) {
            self.active = (self.active + 1) % self.keys.len();
        }
        let iat = now_unix_ms / 1000;
        let claims = serde_json::json!({
            "exp": iat + self.lifetime.as_secs(),
            "iat": iat,
            "auth_time": iat,
            "jti": format!("onrtac:{:016x}", self.issued),
            "iss": ISSUER,
            "aud": [AUDIENCE, "account"],
            "sub": sub,
            "typ": "Bearer",
            "azp": CLIENT_ID,
            "sid": format!("{:016x}", fnv(username.as_bytes()).rotate_left(7)),
            "scope": "openid profile email",
            "email_verified": false,
            "preferred_username": username,
        });
        let (kid, key) = &self.keys[self.active];
        sign_es256(key, kid, claims.to_string().as_bytes())
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}
