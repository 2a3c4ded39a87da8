//! Single-use codes for third-party servers (seed 003, made safe).
//!
//! A user asks the server for a code bound to an audience (a game server's
//! id, say), hands it to that third party, which asks the server to verify
//! it. The seed's code was a hash of the username and a secret: valid
//! forever, for anyone. Here a code is a MAC with the user's 32-byte secret
//! (`User::secret`) over the username, the audience, an expiry at most 60 s
//! away and a random nonce, and the verifier remembers the codes it has
//! accepted until they expire, so each is good once.
//!
//! ## Layout
//!
//! ```text
//! code  = BASE64URL-NOPAD( nonce[16] || expires_ms u64 BE || aud_len u8 || audience[aud_len] || mac[32] )
//! mac   = HMAC-SHA256( key = user secret[32],
//!                      "confab-code-v1" || user_len u8 || username || aud_len u8 || audience
//!                      || expires_ms u64 BE || nonce[16] )
//! ```
//!
//! `expires_ms` is Unix milliseconds. The audience travels in the code (it
//! is not secret: the third party knows its own id) so that a code shown to
//! the wrong party is told apart from a forged one, *after* the MAC has
//! authenticated it. Lengths are prefixed in the MAC input, so
//! `("ab", "c")` and `("a", "bc")` never collide. The MAC is compared in
//! constant time.
//!
//! The replay set lives in memory: a server restarted within 60 s of
//! accepting a code would accept it once more, unless the caller persists
//! [`UsedCodes`].

use std::collections::BTreeSet;

use hmac::{KeyInit, Mac};
use rand::CryptoRng;
use sha2::Sha256;

use super::{b64_decode, b64_encode};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Longest life of a code, in milliseconds.
pub const CODE_MAX_TTL_MS: u64 = 60_000;
/// Longest audience, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 64;
/// Longest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 255;
const LABEL: &[u8] = b"confab-code-v1";
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// Bytes of a code besides the audience.
const FIXED_LEN: usize = NONCE_LEN + 8 + 1 + MAC_LEN;

/// A freshly issued code.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCode {
    /// The code, unpadded base64url.
    pub code: String,
    /// Its expiry, Unix milliseconds.
    pub expires_ms: u64,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode").field("expires_ms", &self.expires_ms).finish_non_exhaustive()
    }
}

/// Why a code could not be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IssueCodeError {
    /// The audience is empty or longer than [`MAX_AUDIENCE_LEN`] bytes.
    #[error("the audience must be 1 to 64 bytes")]
    BadAudience,
    /// The username is empty or longer than [`MAX_USERNAME_LEN`] bytes.
    #[error("the username must be 1 to 255 bytes")]
    BadUsername,
    /// The lifetime is zero.
    #[error("a code must live at least one millisecond")]
    ZeroTtl,
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyCodeError {
    /// Not base64url, or not the layout of a code.
    #[error("not a code")]
    Format,
    /// The MAC does not verify: forged, altered, or for another user.
    #[error("the code's MAC does not verify")]
    BadMac,
    /// A genuine code, issued for another audience.
    #[error("the code was issued for another audience")]
    WrongAudience,
    /// A genuine code past its expiry.
    #[error("the code has expired")]
    Expired,
    /// A genuine code whose expiry is more than 60 s away: the clock went
    /// back or the code was not issued under these rules.
    #[error("the code expires too far in the future")]
    ExpiryTooFar,
    /// A genuine code already used once.
    #[error("the code was already used")]
    Replayed,
    /// The replay set is full of unexpired codes: refused rather than
    /// forgetting one (fail closed).
    #[error("too many codes in flight")]
    ReplayCacheFull,
}

/// The codes accepted and not yet expired: a second presentation is a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedCodes {
    /// `(expires_ms, mac)`, ordered by expiry for pruning.
    used: BTreeSet<(u64, [u8; MAC_LEN])>,
    max_entries: usize,
}

impl UsedCodes {
    /// An empty set holding at most `max_entries` unexpired codes.
    #[must_use]
    pub fn new(max_entries: usize) -> UsedCodes {
        UsedCodes { used: BTreeSet::new(), max_entries }
    }

    /// Forgets the codes expired at `now_ms` (they are refused as expired anyway).
    pub fn prune(&mut self, now_ms: u64) {
        self.used = self.used.split_off(&(now_ms.saturating_add(1), [0; MAC_LEN]));
    }

    /// Number of codes remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// True when no code is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// The earliest expiry remembered: when [`prune`](Self::prune) next has work.
    #[must_use]
    pub fn next_expiry(&self) -> Option<u64> {
        self.used.first().map(|(e, _)| *e)
    }

    fn consume(&mut self, expires_ms: u64, mac: [u8; MAC_LEN], now_ms: u64) -> Result<(), VerifyCodeError> {
        if self.used.contains(&(expires_ms, mac)) {
            return Err(VerifyCodeError::Replayed);
        }
        if self.used.len() >= self.max_entries {
            self.prune(now_ms);
            if self.used.len() >= self.max_entries {
                return Err(VerifyCodeError::ReplayCacheFull);
            }
        }
        self.used.insert((expires_ms, mac));
        Ok(())
    }
}

fn mac(secret: &[u8; 32], username: &[u8], audience: &[u8], expires_ms: u64, nonce: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes never fails.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(LABEL);
    // Lengths are bounded by the callers (255 and 64), so they fit a byte.
    mac.update(&[username.len() as u8]);
    mac.update(username);
    mac.update(&[audience.len() as u8]);
    mac.update(audience);
    mac.update(&expires_ms.to_be_bytes());
    mac.update(nonce);
    mac
}

/// Issues a code for `username` and `audience`, living `ttl_ms` (capped at
/// [`CODE_MAX_TTL_MS`]) from `now_ms`.
pub fn issue_code<R: CryptoRng + ?Sized>(
    rng: &mut R,
    secret: &[u8; 32],
    username: &str,
    audience: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<IssuedCode, IssueCodeError> {
    if username.is_empty() || username.len() > MAX_USERNAME_LEN {
        return Err(IssueCodeError::BadUsername);
    }
    if audience.is_empty() || audience.len() > MAX_AUDIENCE_LEN {
        return Err(IssueCodeError::BadAudience);
    }
    if ttl_ms == 0 {
        return Err(IssueCodeError::ZeroTtl);
    }
    let expires_ms = now_ms.saturating_add(ttl_ms.min(CODE_MAX_TTL_MS));
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let tag = mac(secret, username.as_bytes(), audience.as_bytes(), expires_ms, &nonce).finalize().into_bytes();
    let mut bytes = Vec::with_capacity(FIXED_LEN + audience.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&expires_ms.to_be_bytes());
    bytes.push(audience.len() as u8);
    bytes.extend_from_slice(audience.as_bytes());
    bytes.extend_from_slice(&tag);
    Ok(IssuedCode { code: b64_encode(&bytes), expires_ms })
}

/// Verifies a code presented by `audience` as coming from `username`, at
/// `now_ms`, and consumes it. Checks, in order: format, MAC, audience,
/// expiry, replay.
pub fn verify_code(
    secret: &[u8; 32],
    username: &str,
    audience: &str,
    code: &str,
    now_ms: u64,
    used: &mut UsedCodes,
) -> Result<(), VerifyCodeError> {
    if code.len() > (FIXED_LEN + MAX_AUDIENCE_LEN).div_ceil(3) * 4 || username.len() > MAX_USERNAME_LEN {
        return Err(VerifyCodeError::Format);
    }
    let bytes = b64_decode(code.as_bytes()).ok_or(VerifyCodeError::Format)?;
    if bytes.len() < FIXED_LEN + 1 {
        return Err(VerifyCodeError::Format);
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let (expires, rest) = rest.split_at(8);
    let (aud_len, rest) = rest.split_at(1);
    let aud_len = usize::from(aud_len[0]);
    if aud_len == 0 || aud_len > MAX_AUDIENCE_LEN || rest.len() != aud_len + MAC_LEN {
        return Err(VerifyCodeError::Format);
    }
    let (code_audience, tag) = rest.split_at(aud_len);
    let mut expires_be = [0u8; 8];
    expires_be.copy_from_slice(expires);
    let expires_ms = u64::from_be_bytes(expires_be);

    mac(secret, username.as_bytes(), code_audience, expires_ms, nonce)
        .verify_slice(tag)
        .map_err(|_| VerifyCodeError::BadMac)?;
    if code_audience != audience.as_bytes() {
        return Err(VerifyCodeError::WrongAudience);
    }
    if now_ms >= expires_ms {
        return Err(VerifyCodeError::Expired);
    }
    if expires_ms > now_ms.saturating_add(CODE_MAX_TTL_MS) {
        return Err(VerifyCodeError::ExpiryTooFar);
    }
    let mut tag_bytes = [0u8; MAC_LEN];
    tag_bytes.copy_from_slice(tag);
    used.consume(expires_ms, tag_bytes, now_ms)
}
