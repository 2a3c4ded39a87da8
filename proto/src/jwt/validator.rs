//! A caching JWT validator for backends (seed 004's Go `JWTValidator`, in
//! Rust and sans-IO).
//!
//! The validator keeps a JWK Set by `kid`. It never fetches: when it needs
//! a set (at start, on a token naming an unknown `kid`, or when the cache is
//! older than [`ValidatorConfig::max_cache_age`]) it asks through
//! [`JwtValidator::poll_fetch`]; the caller fetches the document (an HTTP
//! GET of the provider's `jwks_uri`, or confab's `jwks` request) and hands
//! the bytes to [`JwtValidator::handle_jwks`], which replaces the set:
//! keys that left the document are gone.
//!
//! Requests are rate limited: at most one per
//! [`ValidatorConfig::min_refresh_interval`], whatever the number of
//! unknown `kid`s seen meanwhile (they are coalesced into the next allowed
//! fetch), so a flood of tokens with random `kid`s costs one fetch per
//! interval. A fetch not answered within that interval is presumed lost.
//!
//! Time comes in as [`Now`]: its monotonic instant drives the refresh timer
//! and the rate limit, its wall clock checks the tokens' `exp`, `nbf` and
//! `iat`. The confab server checks OIDC access tokens through one of these.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use confab_proto::Now;
//! use confab_proto::jwt::{JwtError, JwtValidator, ValidatorConfig, Validation};
//!
//! let now = Now::new(Instant::now(), 1_800_000_000_000);
//! let mut validator = JwtValidator::new(ValidatorConfig::new(Validation::access("https://idp", "confab")), now);
//! // At start the validator has no keys and asks for a set.
//! let request = validator.poll_fetch(now).expect("initial fetch");
//! // ... the caller fetches the JWKS document, then:
//! validator.handle_jwks(now, br#"{"keys":[]}"#).unwrap();
//! assert!(validator.poll_fetch(now).is_none());
//! // A token is checked; on an unknown kid, poll_fetch says whether to refetch and retry.
//! let later = now.advance(Duration::from_secs(120));
//! let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5ldyJ9.e30.AAAA";
//! assert_eq!(validator.verify(later, token), Err(JwtError::UnknownKid("new".into())));
//! assert!(validator.poll_fetch(later).is_some());
//! # let _ = request;
//! ```

use std::time::Duration;

use crate::Instant;

use super::claims::Validation;
use super::error::JwtError;
use super::jwk::{JwkError, JwkSet};
use super::verify::{Verified, verify};
use crate::Now;

/// Parameters of a [`JwtValidator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// What tokens must satisfy.
    pub validation: Validation,
    /// Smallest interval between two fetch requests.
    pub min_refresh_interval: Duration,
    /// Age after which the set is refetched even without an unknown `kid`;
    /// zero never refetches on age alone.
    pub max_cache_age: Duration,
}

impl ValidatorConfig {
    /// One fetch a minute at most, and one an hour in any case.
    #[must_use]
    pub fn new(validation: Validation) -> ValidatorConfig {
        ValidatorConfig {
            validation,
            min_refresh_interval: Duration::from_secs(60),
            max_cache_age: Duration::from_secs(3600),
        }
    }
}

/// Why the validator wants a JWK Set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchReason {
    /// It has never had one.
    Initial,
    /// A token named a `kid` the set does not have (the first one seen since the last fetch).
    UnknownKid(String),
    /// The set is older than the configured maximum age.
    Periodic,
}

/// A request to fetch the JWK Set and give it to [`JwtValidator::handle_jwks`]
/// (or to report [`JwtValidator::fetch_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Why.
    pub reason: FetchReason,
}

/// What a new JWK Set changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwksUpdate {
    /// `kid`s new in this set.
    pub added: Vec<String>,
    /// `kid`s that left: tokens naming them no longer verify.
    pub removed: Vec<String>,
    /// Keys of the document that were skipped (unsupported or invalid).
    pub skipped: usize,
}

/// A JWT validator with a JWK Set cache; see the module documentation.
#[derive(Debug, Clone)]
pub struct JwtValidator {
    config: ValidatorConfig,
    keys: JwkSet,
    /// When it was made: the first request may go out from then.
    created: Instant,
    fetched_at: Option<Instant>,
    last_request: Option<Instant>,
    wanted: Option<FetchReason>,
    in_flight: bool,
}

impl JwtValidator {
    /// A validator with no keys yet: its first [`poll_fetch`](Self::poll_fetch) asks for a set.
    #[must_use]
    pub fn new(config: ValidatorConfig, now: Now) -> JwtValidator {
        JwtValidator {
            config,
            keys: JwkSet::default(),
            created: now.instant,
            fetched_at: None,
            last_request: None,
            wanted: Some(FetchReason::Initial),
            in_flight: false,
        }
    }

    /// A validator starting from a set the caller already has (a file, a
    /// persisted copy) installed at `now`.
    #[must_use]
    pub fn with_keys(config: ValidatorConfig, keys: JwkSet, now: Now) -> JwtValidator {
        JwtValidator { keys, fetched_at: Some(now.instant), wanted: None, ..JwtValidator::new(config, now) }
    }

    /// The current set.
    #[must_use]
    pub fn keys(&self) -> &JwkSet {
        &self.keys
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Verifies a token with the cached keys. On [`JwtError::UnknownKid`]
    /// (or [`JwtError::NoKey`]) a refresh is wanted: if
    /// [`poll_fetch`](Self::poll_fetch) then returns a request, the caller
    /// may fetch, install the set and verify again.
    pub fn verify(&mut self, now: Now, token: &str) -> Result<Verified, JwtError> {
        let result = verify(token, &self.keys, &self.config.validation, now.unix_ms / 1000);
        match &result {
            Err(JwtError::UnknownKid(kid)) => self.want(FetchReason::UnknownKid(kid.clone())),
            Err(JwtError::NoKey) => self.want(FetchReason::UnknownKid(String::new())),
            _ => {}
        }
        result
    }

    fn want(&mut self, reason: FetchReason) {
        // The first reason since the last fetch is kept; later ones coalesce into it.
        if self.wanted.is_none() {
            self.wanted = Some(reason);
        }
    }

    /// When the next request is allowed.
    fn allowed(&self) -> Instant {
        self.last_request.map_or(self.created, |t| t + self.config.min_refresh_interval)
    }

    /// When the set goes stale, if it ever does.
    fn stale_at(&self) -> Option<Instant> {
        let age = self.config.max_cache_age;
        if age.is_zero() { None } else { self.fetched_at.map(|t| t + age) }
    }

    /// A fetch to start now, if one is wanted and allowed.
    pub fn poll_fetch(&mut self, now: Now) -> Option<FetchRequest> {
        let now = now.instant;
        if now < self.allowed() {
            return None;
        }
        // A request unanswered for a whole interval is presumed lost.
        self.in_flight = false;
        if self.wanted.is_none() && self.stale_at().is_some_and(|t| now >= t) {
            self.wanted = Some(FetchReason::Periodic);
        }
        let reason = self.wanted.take()?;
        self.in_flight = true;
        self.last_request = Some(now);
        Some(FetchRequest { reason })
    }

    /// When [`poll_fetch`](Self::poll_fetch) may next return a request;
    /// `None` if nothing is wanted and the set never goes stale.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allowed = self.allowed();
        if self.wanted.is_some() { Some(allowed) } else { self.stale_at().map(|t| t.max(allowed)) }
    }

    /// Installs a fetched JWK Set, replacing the old one entirely. An
    /// unparseable document leaves the old set in place and counts as a
    /// failed fetch.
    pub fn handle_jwks(&mut self, now: Now, document: &[u8]) -> Result<JwksUpdate, JwkError> {
        let keys = match JwkSet::parse(document) {
            Ok(keys) => keys,
            Err(e) => {
                self.fetch_failed(now);
                return Err(e);
            }
        };
        self.in_flight = false;
        let kids = |set: &JwkSet| set.keys().iter().filter_map(|k| k.kid.clone()).collect::<Vec<_>>();
        let (old, new) = (kids(&self.keys), kids(&keys));
        let update = JwksUpdate {
            added: new.iter().filter(|k| !old.contains(k)).cloned().collect(),
            removed: old.iter().filter(|k| !new.contains(k)).cloned().collect(),
            skipped: keys.skipped().len(),
        };
        self.keys = keys;
        self.fetched_at = Some(now.instant);
        // The set is fresh as of now: whatever was wanted is answered. A kid
        // still unknown asks again on its next token, after the interval.
        self.wanted = None;
        Ok(update)
    }

    /// The requested fetch failed; a new one may be asked after the interval.
    pub fn fetch_failed(&mut self, _now: Now) {
        self.in_flight = false;
        if self.fetched_at.is_none() && self.wanted.is_none() {
            self.wanted = Some(FetchReason::Initial);
        }
    }

    /// True while a handed-out fetch has not been answered.
    #[must_use]
    pub fn fetch_in_flight(&self) -> bool {
        self.in_flight
    }
}
