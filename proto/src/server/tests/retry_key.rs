//! `refresh_keyed` (issue 16): an exchange whose answer was lost (its node
//! died after committing it) is retried from another connection, on another
//! node, with its retry key, and the login survives; any other second
//! presentation of the spent token is still reuse and revokes the login.

use std::time::Duration;

use bytes::Bytes;

use super::{Harness, config};
use crate::server::SessionId;
use crate::server::state::RetryKey;
use crate::token;
use crate::wire::{FetchKey, RETRY_KEY_LEN, Refresh, RefreshKeyed, Tokens, status};

const KEY: [u8; RETRY_KEY_LEN] = [0x5a; RETRY_KEY_LEN];

fn keyed(refresh_token: &str, key: &[u8], attempt: u32) -> RefreshKeyed {
    RefreshKeyed { refresh_token: refresh_token.into(), retry_key: Bytes::copy_from_slice(key), attempt }
}

/// Whether the server still knows `token` (without using it: a first use of
/// a keyed exchange's pair ends its retries).
fn alive(h: &Harness, token: &str) -> bool {
    h.server.state().accounts().token(&token::hash(token.as_bytes())).is_some()
}

/// Whether `access` authenticates a request on a new connection.
fn works(h: &mut Harness, access: &str) -> bool {
    let s = h.connect();
    let id = h.send_auth(s, FetchKey { username: "alice".into() }, access.as_bytes());
    h.code(s, id) == status::OK
}

/// Alice registered and logged in: her tokens.
fn alice(h: &mut Harness) -> Tokens {
    assert_eq!(h.register("alice"), status::CREATED);
    h.login("alice").1
}

/// Alice logged in; her client exchanged her refresh token with `KEY` on a
/// connection whose node then died before she read the answer. Returns the
/// spent token and the pair she never received.
fn exchanged_and_lost(h: &mut Harness) -> (String, Tokens) {
    let t = alice(h);
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 1));
    let lost = h.tokens(s, id);
    h.fail_over();
    h.advance(Duration::from_secs(12));
    (t.refresh_token, lost)
}

/// The login is revoked: `current`, its live refresh token, is answered "revoked".
fn assert_revoked(h: &mut Harness, current: &str) {
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: current.into() });
    assert_eq!(h.code(s, id), status::UNAUTHORIZED);
    assert!(h.reason(s, id).starts_with("refresh token revoked"), "{}", h.reason(s, id));
}

fn refused_as_reuse(h: &Harness, s: SessionId, id: u32) {
    assert_eq!(h.code(s, id), status::UNAUTHORIZED);
    assert!(h.reason(s, id).contains("reused"), "{}", h.reason(s, id));
}

#[test]
fn a_keyed_exchange_retried_with_its_key_after_a_failover_keeps_the_login() {
    let mut h = Harness::new(config());
    let (spent, lost) = exchanged_and_lost(&mut h);
    let s = h.connect();
    let id = h.send(s, keyed(&spent, &KEY, 2));
    let fresh = h.tokens(s, id);
    assert_ne!(fresh.refresh_token, lost.refresh_token);
    assert!(!alive(&h, &lost.access_token), "the access token never received is revoked");
    let cancelled = h.server.state().accounts().token(&token::hash(lost.refresh_token.as_bytes())).cloned();
    assert!(cancelled.is_some_and(|t| t.rotated.is_some()), "its refresh token is spent into the new pair");
    // Its answer lost too: the same key, a later attempt, retries again.
    h.fail_over();
    let s = h.connect();
    let id = h.send(s, keyed(&spent, &KEY, 3));
    let again = h.tokens(s, id);
    assert_ne!(again.access_token, fresh.access_token);
    assert!(!alive(&h, &fresh.access_token));
    assert!(works(&mut h, &again.access_token));
    // The login goes on: the new refresh token exchanges as usual.
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: again.refresh_token });
    let next = h.tokens(s, id);
    assert!(works(&mut h, &next.access_token));
}

#[test]
fn the_spent_token_with_another_key_revokes_the_login() {
    let mut h = Harness::new(config());
    let (spent, lost) = exchanged_and_lost(&mut h);
    let s = h.connect();
    let id = h.send(s, keyed(&spent, &[0x11; RETRY_KEY_LEN], 2));
    refused_as_reuse(&h, s, id);
    assert_revoked(&mut h, &lost.refresh_token);
}

#[test]
fn the_spent_token_without_its_key_on_another_connection_revokes_the_login() {
    let mut h = Harness::new(config());
    let (spent, lost) = exchanged_and_lost(&mut h);
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: spent });
    refused_as_reuse(&h, s, id);
    assert_revoked(&mut h, &lost.refresh_token);
}

/// Once the pair was refreshed, the exchange was answered and used: the
/// spent token, key or not, is a copy.
#[test]
fn a_keyed_retry_once_the_new_pair_was_refreshed_revokes_the_login() {
    let mut h = Harness::new(config());
    let (spent, lost) = exchanged_and_lost(&mut h);
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: lost.refresh_token });
    let current = h.tokens(s, id);
    assert_eq!(
        h.server.state().accounts().retry_key(&token::hash(current.access_token.as_bytes())),
        None,
        "a plain refresh keeps no key"
    );
    let s = h.connect();
    let id = h.send(s, keyed(&spent, &KEY, 2));
    refused_as_reuse(&h, s, id);
    assert_revoked(&mut h, &current.refresh_token);
}

#[test]
fn a_keyed_retry_past_the_grace_revokes_the_login() {
    let mut h = Harness::new(config());
    let grace = h.server.config().refresh_retry_grace;
    let (spent, lost) = exchanged_and_lost(&mut h);
    h.advance(grace);
    let s = h.connect();
    let id = h.send(s, keyed(&spent, &KEY, 2));
    refused_as_reuse(&h, s, id);
    assert_revoked(&mut h, &lost.refresh_token);
}

/// A key of the wrong length is refused before anything is looked at: the
/// token is neither spent nor counted as reused.
#[test]
fn a_retry_key_that_is_not_32_bytes_is_refused_and_spends_nothing() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    for len in [0, 16, 31, 33, 64] {
        let s = h.connect();
        let id = h.send(s, keyed(&t.refresh_token, &vec![1; len], 1));
        assert_eq!(h.code(s, id), status::BAD_REQUEST, "{len} bytes");
        assert!(h.reason(s, id).contains("retry_key must be 32 bytes"), "{}", h.reason(s, id));
    }
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 1));
    let pair = h.tokens(s, id);
    assert!(works(&mut h, &pair.access_token));
}

/// The server keeps a key (its hash) with the access token the exchange
/// issued: marked answered when that token authenticates a request, gone
/// when it is revoked (logout) or forgotten.
#[test]
fn a_retry_key_is_marked_answered_when_the_pair_is_used_and_goes_with_it() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 1));
    let second = h.tokens(s, id);
    let kept = |h: &Harness, t: &Tokens| {
        h.server.state().accounts().retry_key(&token::hash(t.access_token.as_bytes())).copied()
    };
    assert_eq!(
        kept(&h, &second),
        Some(RetryKey { key: token::hash(&KEY), attempt: 1, answered: false }),
        "the key's hash, never the key"
    );
    let id = h.send_auth(s, FetchKey { username: "alice".into() }, second.access_token.as_bytes());
    assert_eq!(h.code(s, id), status::OK);
    assert!(kept(&h, &second).is_some_and(|k| k.answered), "used: the exchange's answer arrived");
    let other = h.connect();
    let id = h.send(other, keyed(&second.refresh_token, &[3; RETRY_KEY_LEN], 1));
    let third = h.tokens(other, id);
    assert_eq!(kept(&h, &third), Some(RetryKey { key: token::hash(&[3; RETRY_KEY_LEN]), attempt: 1, answered: false }));
    // (the exchange on `other` replaced `s`: the logout goes on a connection of its own)
    let s = h.connect();
    let id = h.send_auth(s, crate::wire::Logout {}, second.access_token.as_bytes());
    assert_eq!(h.code(s, id), status::OK);
    assert_eq!(kept(&h, &third), None, "revoked with its login");
    assert!(h.server.state().accounts().token(&token::hash(third.access_token.as_bytes())).is_none());
}

/// The client's first attempt at an exchange went out on a connection it
/// gave up on; its second, on a new connection, made the exchange; then the
/// first arrives. A late copy of the client's own attempt: refused (409),
/// and neither the login nor the pair the second attempt got is touched.
#[test]
fn a_late_copy_of_an_earlier_attempt_is_refused_and_revokes_nothing() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let live = h.connect();
    let id = h.send(live, keyed(&t.refresh_token, &KEY, 2));
    let pair = h.tokens(live, id);
    h.advance(Duration::from_millis(300));
    for late in [1, 2] {
        let stale = h.connect();
        let id = h.send(stale, keyed(&t.refresh_token, &KEY, late));
        assert_eq!(h.code(stale, id), status::CONFLICT);
        let reason = h.reason(stale, id);
        assert!(reason.contains(&format!("attempt {late} of this exchange arrived after attempt 2")), "{reason}");
    }
    let id = h.send_auth(live, FetchKey { username: "alice".into() }, pair.access_token.as_bytes());
    assert_eq!(h.code(live, id), status::OK, "the live connection goes on");
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: pair.refresh_token });
    let next = h.tokens(s, id);
    assert!(works(&mut h, &next.access_token));
}

// ---- The attacker review's findings (a copy of the profile taken while a
// key was pending: the token, the key and the attempt number). ----

/// H1: the thief exchanges first with a huge attempt number, so that every
/// attempt of the victim looks like a late copy (409, nothing revoked), and
/// retries to keep the grace open. The grace runs from the first exchange,
/// whatever the retries: past it, the victim's attempt is reuse, and the
/// thief's pair dies with the login.
#[test]
fn a_thief_with_a_huge_attempt_number_silences_the_victim_for_the_grace_at_most() {
    let mut h = Harness::new(config());
    let grace = h.server.config().refresh_retry_grace;
    let t = alice(&mut h);
    let thief = h.connect();
    let id = h.send(thief, keyed(&t.refresh_token, &KEY, u32::MAX / 2));
    let _ = h.tokens(thief, id);
    h.advance(grace * 4 / 5);
    // Its connection timed out meanwhile: the retry comes from a new one.
    let thief = h.connect();
    let id = h.send(thief, keyed(&t.refresh_token, &KEY, u32::MAX / 2 + 1));
    let stolen = h.tokens(thief, id);
    let victim = h.connect();
    let id = h.send(victim, keyed(&t.refresh_token, &KEY, 2));
    assert_eq!(h.code(victim, id), status::CONFLICT, "inside the grace: taken for a late copy");
    h.advance(grace / 4);
    let victim = h.connect();
    let id = h.send(victim, keyed(&t.refresh_token, &KEY, 3));
    refused_as_reuse(&h, victim, id);
    assert!(!works(&mut h, &stolen.access_token), "the thief's pair died with the login");
}

/// H2, an idle victim: its exchange was answered on a connection that is
/// still open (it has sent nothing since). A keyed copy from elsewhere is
/// not a retry of a lost answer: refused (409), the victim untouched.
#[test]
fn a_keyed_copy_while_the_exchanging_connection_is_open_is_refused() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let victim = h.connect();
    let id = h.send(victim, keyed(&t.refresh_token, &KEY, 1));
    let pair = h.tokens(victim, id);
    let thief = h.connect();
    let id = h.send(thief, keyed(&t.refresh_token, &KEY, 2));
    assert_eq!(h.code(thief, id), status::CONFLICT);
    assert!(h.reason(thief, id).contains("still open"), "{}", h.reason(thief, id));
    let id = h.send_auth(victim, FetchKey { username: "alice".into() }, pair.access_token.as_bytes());
    assert_eq!(h.code(victim, id), status::OK, "the victim's connection goes on");
}

/// H2, a victim that used its new pair and left (a finished command): the
/// pair's first use ends the exchange's retries for good, so a keyed copy
/// afterwards is reuse, and revokes the login.
#[test]
fn a_keyed_copy_after_the_new_pair_was_used_revokes_the_login() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let victim = h.connect();
    let id = h.send(victim, keyed(&t.refresh_token, &KEY, 1));
    let pair = h.tokens(victim, id);
    let id = h.send_auth(victim, FetchKey { username: "alice".into() }, pair.access_token.as_bytes());
    assert_eq!(h.code(victim, id), status::OK);
    assert!(
        h.server.state().accounts().retry_key(&token::hash(pair.access_token.as_bytes())).is_some_and(|k| k.answered),
        "the first use of the pair marked the exchange answered"
    );
    h.fail_over();
    let thief = h.connect();
    let id = h.send(thief, keyed(&t.refresh_token, &KEY, 2));
    refused_as_reuse(&h, thief, id);
    assert!(!works(&mut h, &pair.access_token));
}

/// M3: a keyed retry that is then refused (the spent token expired, the
/// connection acts for another user) leaves the unused pair alone.
#[test]
fn a_keyed_retry_refused_for_another_reason_revokes_nothing() {
    let minute = Duration::from_secs(60);
    let mut h = Harness::new(crate::server::ServerConfig { access_ttl: minute, refresh_ttl: minute, ..config() });
    assert_eq!(h.register("alice"), status::CREATED);
    assert_eq!(h.register("bob"), status::CREATED);
    let (_, t) = h.login("alice");
    h.advance(Duration::from_secs(50));
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 1));
    let lost = h.tokens(s, id);
    h.fail_over();
    // On a connection acting for bob: 403.
    let (bob, _) = h.login("bob");
    let id = h.send(bob, keyed(&t.refresh_token, &KEY, 2));
    assert_eq!(h.code(bob, id), status::FORBIDDEN);
    assert!(alive(&h, &lost.access_token) && alive(&h, &lost.refresh_token), "the unused pair survived the 403");
    // Past the spent token's own expiry (inside the grace): 401 expired.
    h.advance(Duration::from_secs(15));
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 3));
    assert_eq!(h.code(s, id), status::UNAUTHORIZED);
    assert!(h.reason(s, id).contains("expired"), "{}", h.reason(s, id));
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: lost.refresh_token });
    assert_eq!(h.code(s, id), status::OK, "the unused pair survived the 401");
}

// ---- The second review's findings. ----

/// F1: a late copy of attempt 1 arrives after attempt 2 made the exchange
/// and the client's next command exchanged the new token in turn: still the
/// client's own late copy (409), not reuse.
#[test]
fn a_late_copy_after_the_next_exchange_is_refused_and_revokes_nothing() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 2));
    let second = h.tokens(s, id);
    let s = h.connect();
    let id = h.send(s, keyed(&second.refresh_token, &[3; RETRY_KEY_LEN], 1));
    let third = h.tokens(s, id);
    let late = h.connect();
    let id = h.send(late, keyed(&t.refresh_token, &KEY, 1));
    assert_eq!(h.code(late, id), status::CONFLICT, "{}", h.reason(late, id));
    assert!(works(&mut h, &third.access_token), "the login goes on");
}

/// F2: the client got its answer on a connection that then closed, having
/// sent nothing authenticated; a copy of its profile taken while the key
/// was pending retries and gets a pair. The client's pair was cancelled by
/// that retry, so when the client presents it, that proves a theft: reuse,
/// the login (the thief's pair with it) is revoked.
#[test]
fn a_pair_cancelled_by_a_keyed_retry_presented_again_revokes_the_login() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let victim = h.connect();
    let id = h.send(victim, keyed(&t.refresh_token, &KEY, 1));
    let pair = h.tokens(victim, id);
    h.disconnect(victim);
    let thief = h.connect();
    let id = h.send(thief, keyed(&t.refresh_token, &KEY, 2));
    let stolen = h.tokens(thief, id);
    let s = h.connect();
    let id = h.send(s, keyed(&pair.refresh_token, &[3; RETRY_KEY_LEN], 1));
    refused_as_reuse(&h, s, id);
    assert!(!alive(&h, &stolen.access_token) && !alive(&h, &stolen.refresh_token), "the thief's pair is revoked");
}

/// F3: on the connection that made a keyed exchange, the spent token again
/// once the pair has authenticated a request is not a retry either.
#[test]
fn the_spent_token_again_on_its_connection_after_the_pair_was_used_is_reuse() {
    let mut h = Harness::new(config());
    let t = alice(&mut h);
    let s = h.connect();
    let id = h.send(s, keyed(&t.refresh_token, &KEY, 1));
    let pair = h.tokens(s, id);
    let id = h.send_auth(s, FetchKey { username: "alice".into() }, pair.access_token.as_bytes());
    assert_eq!(h.code(s, id), status::OK);
    let id = h.send(s, keyed(&t.refresh_token, &KEY, u32::MAX));
    refused_as_reuse(&h, s, id);
    assert!(!alive(&h, &pair.access_token));
}
