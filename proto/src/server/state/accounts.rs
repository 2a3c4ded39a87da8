//! [`AccountBook`]: accounts, tokens, token families and what hangs off
//! them (remembered responses, OIDC logins and subjects, signing keys).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::types::{Dedup, OidcLogin, Recorded, RetryKey, Rotation, TokenRecord, User};
use crate::jwt::KeyRecord;
use crate::server::keyed::IntKeyed;
use crate::token::TokenKind;

/// Accounts and tokens. Keeps its redundant data consistent: the highest
/// family ever handed out, the reverse map of OIDC subjects, and the
/// remembered responses of families that still live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountBook {
    /// Accounts by username.
    pub(super) users: BTreeMap<String, User>,
    /// Tokens by SHA-256 of the token.
    pub(super) tokens: BTreeMap<[u8; 32], TokenRecord>,
    /// Remembered responses per token family (one login of one client).
    pub(super) dedup: BTreeMap<u64, Dedup>,
    /// Remembered responses per family (from the config).
    pub(super) dedup_cap: usize,
    /// The highest token family handed out.
    pub(super) last_family: u64,
    /// The phantom-token signing keys (empty until first used).
    pub(super) signing_keys: Vec<KeyRecord>,
    /// The token family of each OIDC login (see [`oidc_login`](Self::oidc_login)).
    pub(super) oidc_logins: BTreeMap<[u8; 32], OidcLogin>,
    /// Refresh tokens of revoked families, with the latest expiry of their family.
    pub(super) revoked_refresh: BTreeMap<[u8; 32], u64>,
    /// The account of each OIDC provider user, by subject key.
    pub(super) oidc_subjects: BTreeMap<[u8; 32], String>,
    /// The reverse of `oidc_subjects`.
    pub(super) oidc_accounts: BTreeMap<String, [u8; 32]>,
    /// For an access token issued by a `refresh_keyed` exchange: the
    /// exchange's retry key (store format 5), forgotten with the token. Every
    /// key of this map is a token of `tokens`.
    pub(super) retry_keys: BTreeMap<[u8; 32], RetryKey>,
    /// The key of the remembered responses' maps (not part of the state's value).
    pub(super) hasher: IntKeyed,
}

impl AccountBook {
    /// The account `username`.
    #[must_use]
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    /// Every account, by name.
    pub fn users(&self) -> impl Iterator<Item = (&String, &User)> {
        self.users.iter()
    }

    /// How many accounts exist.
    #[must_use]
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The record of the token whose SHA-256 is `hash`.
    #[must_use]
    pub fn token(&self, hash: &[u8; 32]) -> Option<&TokenRecord> {
        self.tokens.get(hash)
    }

    /// How many tokens are remembered (live, within their grace, or spent tombstones).
    #[must_use]
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `hash` is a refresh token of a revoked family (logout, detected reuse), not yet
    /// forgotten: presenting it is answered "revoked", not "unknown".
    #[must_use]
    pub fn is_revoked_refresh(&self, hash: &[u8; 32]) -> bool {
        self.revoked_refresh.contains_key(hash)
    }

    /// The responses remembered for a token family.
    #[must_use]
    pub fn dedup(&self, family: u64) -> Option<&Dedup> {
        self.dedup.get(&family)
    }

    /// The response recorded for `request_id` in `family`.
    #[must_use]
    pub fn recorded(&self, family: u64, request_id: u32) -> Option<&Recorded> {
        self.dedup.get(&family)?.get(request_id)
    }

    /// The highest token family handed out.
    #[must_use]
    pub fn last_family(&self) -> u64 {
        self.last_family
    }

    /// The phantom-token signing keys (empty until first used).
    #[must_use]
    pub fn signing_keys(&self) -> &[KeyRecord] {
        &self.signing_keys
    }

    /// The token family of an OIDC login, by the SHA-256 key of the login (issuer, user and the
    /// provider's SSO session id `sid`, else its subject): every connection of one login shares
    /// it, so retries are recognised across connections. Forgotten with the family, or
    /// `token_grace` after the login's last token expired.
    #[must_use]
    pub fn oidc_login(&self, key: &[u8; 32]) -> Option<&OidcLogin> {
        self.oidc_logins.get(key)
    }

    /// Every OIDC login, by key.
    pub fn oidc_logins(&self) -> impl Iterator<Item = (&[u8; 32], &OidcLogin)> {
        self.oidc_logins.iter()
    }

    /// The account of a provider user, by [`oidc_subject_key`](crate::server::oidc_subject_key)
    /// of its (`iss`, `sub`): bound at its first login, never changed.
    #[must_use]
    pub fn oidc_subject(&self, subject: &[u8; 32]) -> Option<&str> {
        self.oidc_subjects.get(subject).map(String::as_str)
    }

    /// Whether the account `username` is bound to a provider subject.
    #[must_use]
    pub fn is_oidc_bound(&self, username: &str) -> bool {
        self.oidc_accounts.contains_key(username)
    }

    /// The retry key of the `refresh_keyed` exchange that issued the access
    /// token `access` (its hash), as long as the server remembers that token.
    #[must_use]
    pub fn retry_key(&self, access: &[u8; 32]) -> Option<&RetryKey> {
        self.retry_keys.get(access)
    }

    /// The token families with a token that expires after `before_ms`.
    fn live_families(&self, before_ms: u64) -> BTreeSet<u64> {
        self.tokens.values().filter(|t| t.expires_ms > before_ms).map(|t| t.family).collect()
    }

    /// Whether a purge with `before_ms` would forget anything.
    #[must_use]
    pub fn purge_due(&self, before_ms: u64) -> bool {
        let live = self.live_families(before_ms);
        self.tokens.values().any(|t| !kept_by_purge(t, before_ms, &live))
            || self.oidc_logins.values().any(|l| l.expires_ms <= before_ms)
            || self.revoked_refresh.values().any(|e| *e <= before_ms)
    }

    pub(super) fn user_created(&mut self, username: &str, user: &User) {
        self.users.insert(username.to_owned(), user.clone());
    }

    pub(super) fn identity_key_set(&mut self, username: &str, identity_key: &Bytes) {
        if let Some(u) = self.users.get_mut(username) {
            u.identity_key = identity_key.clone();
        }
    }

    pub(super) fn token_issued(&mut self, hash: [u8; 32], record: &TokenRecord) {
        self.family_seen(record.family);
        self.tokens.insert(hash, record.clone());
    }

    /// `hash` was exchanged for `rotation`'s pair; `retry` is the exchange's
    /// retry key (`refresh_keyed`), kept for the pair's refresh token.
    pub(super) fn token_rotated(&mut self, hash: &[u8; 32], rotation: Rotation, retry: Option<RetryKey>) {
        let Some(t) = self.tokens.get_mut(hash) else { return };
        t.rotated = Some(rotation);
        if let Some(key) = retry
            && self.tokens.contains_key(&rotation.access)
        {
            self.retry_keys.insert(rotation.access, key);
        }
    }

    pub(super) fn exchange_answered(&mut self, access: &[u8; 32]) {
        if let Some(kept) = self.retry_keys.get_mut(access) {
            kept.answered = true;
        }
    }

    pub(super) fn tokens_revoked(&mut self, hashes: &[[u8; 32]]) {
        for h in hashes {
            self.tokens.remove(h);
            self.retry_keys.remove(h);
        }
    }

    /// Every token of `family` goes; its refresh tokens are remembered as revoked (with the
    /// family's latest expiry), its responses and OIDC logins are forgotten.
    pub(super) fn family_revoked(&mut self, family: u64) {
        let expires_ms = self.tokens.values().filter(|t| t.family == family).map(|t| t.expires_ms).max();
        for (hash, t) in &self.tokens {
            if t.family == family && t.kind == TokenKind::Refresh {
                self.revoked_refresh.insert(*hash, expires_ms.unwrap_or(t.expires_ms));
            }
        }
        self.tokens.retain(|_, t| t.family != family);
        self.forget_orphan_retry_keys();
        self.dedup.remove(&family);
        self.oidc_logins.retain(|_, l| l.family != family);
    }

    pub(super) fn tokens_purged(&mut self, before_ms: u64) {
        let live = self.live_families(before_ms);
        self.tokens.retain(|_, t| kept_by_purge(t, before_ms, &live));
        self.forget_orphan_retry_keys();
        self.revoked_refresh.retain(|_, e| *e > before_ms);
        self.oidc_logins.retain(|_, l| l.expires_ms > before_ms);
        let live: BTreeSet<u64> =
            self.tokens.values().map(|t| t.family).chain(self.oidc_logins.values().map(|l| l.family)).collect();
        self.dedup.retain(|family, _| live.contains(family));
    }

    /// Keeps the retry keys of remembered tokens only.
    fn forget_orphan_retry_keys(&mut self) {
        let tokens = &self.tokens;
        self.retry_keys.retain(|hash, _| tokens.contains_key(hash));
    }

    pub(super) fn recorded_response(&mut self, family: u64, request_id: u32, response: &Recorded) {
        let (cap, hasher) = (self.dedup_cap, self.hasher);
        self.dedup.entry(family).or_insert_with(|| Dedup::with_hasher(hasher)).insert(
            request_id,
            response.clone(),
            cap,
        );
    }

    /// Keys the remembered responses' maps with `hasher` from now on.
    pub(super) fn rekey(&mut self, hasher: IntKeyed) {
        self.hasher = hasher;
        for d in self.dedup.values_mut() {
            *d = d.rekeyed(hasher);
        }
    }

    pub(super) fn family_seen(&mut self, family: u64) {
        self.last_family = self.last_family.max(family);
    }

    pub(super) fn signing_keys_set(&mut self, records: &[KeyRecord]) {
        self.signing_keys = records.to_vec();
    }

    pub(super) fn oidc_login_bound(&mut self, key: [u8; 32], login: OidcLogin) {
        self.family_seen(login.family);
        self.oidc_logins.insert(key, login);
    }

    pub(super) fn oidc_subject_bound(&mut self, subject: [u8; 32], username: &str) {
        self.oidc_subjects.insert(subject, username.to_owned());
        self.oidc_accounts.insert(username.to_owned(), subject);
    }
}

/// Whether a purge up to `before_ms` keeps a token: unexpired (within the grace), or a spent
/// refresh token (a tombstone) of a family still alive, so that presenting it again is
/// recognised as reuse for as long as the login lasts.
fn kept_by_purge(t: &TokenRecord, before_ms: u64, live: &BTreeSet<u64>) -> bool {
    t.expires_ms > before_ms || (t.rotated.is_some() && live.contains(&t.family))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Opcode, ResponseBody, Status};

    fn token(kind: TokenKind, family: u64, expires_ms: u64) -> TokenRecord {
        TokenRecord { kind, username: "al".into(), family, expires_ms, rotated: None }
    }

    fn recorded() -> Recorded {
        Recorded { opcode: Opcode::SendMp, status: Status::Valid, code: 200, body: ResponseBody::Empty }
    }

    #[test]
    fn a_revoked_family_leaves_only_its_refresh_tombstones() {
        let mut book = AccountBook { dedup_cap: 8, ..AccountBook::default() };
        book.token_issued([1; 32], &token(TokenKind::Access, 3, 10));
        book.token_issued([2; 32], &token(TokenKind::Refresh, 3, 50));
        book.token_issued([3; 32], &token(TokenKind::Access, 4, 10));
        book.recorded_response(3, 1, &recorded());
        book.oidc_login_bound([9; 32], OidcLogin { family: 3, expires_ms: 10 });
        assert_eq!(book.last_family(), 4);
        book.family_revoked(3);
        assert!(book.token(&[1; 32]).is_none() && book.token(&[2; 32]).is_none());
        assert!(book.token(&[3; 32]).is_some(), "another family is untouched");
        assert!(book.is_revoked_refresh(&[2; 32]) && !book.is_revoked_refresh(&[1; 32]));
        assert!(book.recorded(3, 1).is_none() && book.oidc_login(&[9; 32]).is_none());
        assert_eq!(book.last_family(), 4, "families are never reused");
    }

    #[test]
    fn a_purge_keeps_the_tombstones_and_responses_of_live_families() {
        let mut book = AccountBook { dedup_cap: 8, ..AccountBook::default() };
        let spent = TokenRecord {
            rotated: Some(Rotation { at_ms: 1, refresh: [0; 32], access: [0; 32] }),
            ..token(TokenKind::Refresh, 1, 5)
        };
        book.token_issued([1; 32], &spent);
        book.token_issued([2; 32], &token(TokenKind::Refresh, 1, 100));
        book.token_issued([3; 32], &token(TokenKind::Access, 2, 5));
        book.recorded_response(1, 1, &recorded());
        book.recorded_response(2, 1, &recorded());
        assert!(book.purge_due(10));
        book.tokens_purged(10);
        assert!(!book.purge_due(10));
        assert!(book.token(&[1; 32]).is_some(), "a spent token of a live family stays");
        assert!(book.token(&[3; 32]).is_none());
        assert!(book.recorded(1, 1).is_some() && book.recorded(2, 1).is_none());
    }

    #[test]
    fn responses_are_capped_per_family_oldest_first() {
        let mut book = AccountBook { dedup_cap: 2, ..AccountBook::default() };
        for id in 1..=3 {
            book.recorded_response(7, id, &recorded());
        }
        assert_eq!(book.dedup(7).map(Dedup::len), Some(2));
        assert!(book.recorded(7, 1).is_none() && book.recorded(7, 3).is_some());
    }

    #[test]
    fn rekeying_keeps_the_responses_and_the_value() {
        let mut book = AccountBook { dedup_cap: 8, ..AccountBook::default() };
        for id in [9, 5, 7] {
            book.recorded_response(1, id, &recorded());
        }
        let before = book.clone();
        book.rekey(IntKeyed::derive(&[7; 32], "test"));
        assert_eq!(book, before, "the key is not part of the value");
        assert!([9, 5, 7].iter().all(|id| book.recorded(1, *id).is_some()));
        book.recorded_response(1, 6, &recorded());
        assert_eq!(book.dedup(1).map(Dedup::len), Some(4));
    }

    #[test]
    fn subjects_and_accounts_stay_each_others_reverse() {
        let mut book = AccountBook::default();
        book.oidc_subject_bound([5; 32], "dave");
        assert_eq!(book.oidc_subject(&[5; 32]), Some("dave"));
        assert!(book.is_oidc_bound("dave") && !book.is_oidc_bound("erin"));
    }
}
