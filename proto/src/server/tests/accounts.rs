//! Account attacks (issue 10, section 3): password guessing in parallel and
//! through the failure table.

use std::time::Duration;

use bytes::Bytes;

use super::{Harness, PASSPHRASE, PASSWORD, config, register_body};
use crate::server::{ServerConfig, SourceKey};
use crate::wire::{Login, Refresh, Register, status};

fn guess(user: &str) -> Login {
    Login { username: user.into(), password: "wrong guess".into() }
}

/// 50 connections guess alice's password at the same moment, round after
/// round, inside one window: at most `login_burst` (5) passwords are hashed,
/// not one per connection per round.
#[test]
fn fifty_parallel_wrong_password_logins_hash_at_most_the_burst() {
    let mut h = Harness::new(config());
    assert_eq!(h.register("alice"), status::CREATED);
    let before = h.jobs;
    h.hold = true;
    let sessions: Vec<_> = (0..50).map(|_| h.connect()).collect();
    let mut answers = Vec::new();
    for _ in 0..10 {
        let ids: Vec<_> = sessions.iter().map(|&s| (s, h.send(s, guess("alice")))).collect();
        h.run_held();
        answers.extend(ids.into_iter().map(|(s, id)| h.code(s, id)));
        h.advance(Duration::from_secs(1));
    }
    let hashed = h.jobs - before;
    assert!(hashed <= 5, "{hashed} guesses were hashed within one window");
    assert_eq!(answers.iter().filter(|c| **c == status::UNAUTHORIZED).count(), hashed);
    assert!(answers.iter().all(|c| matches!(*c, status::UNAUTHORIZED | status::RATE_LIMITED)), "{answers:?}");
    // After the window the owner gets in.
    h.hold = false;
    h.advance(Duration::from_secs(60));
    let _ = h.login("alice");
}

/// An attacker who locked alice's account fills the failure table with
/// names of his choosing: alice's record is not the one forgotten.
#[test]
fn the_failure_table_eviction_cannot_be_steered_onto_a_victim() {
    let mut h = Harness::new(ServerConfig { max_tracked_accounts: 4, ..config() });
    assert_eq!(h.register("alice"), status::CREATED);
    for _ in 0..5 {
        let s = h.connect();
        let id = h.send(s, guess("alice"));
        assert_eq!(h.code(s, id), status::UNAUTHORIZED);
    }
    let s = h.connect();
    let id = h.send(s, guess("alice"));
    assert_eq!(h.code(s, id), status::RATE_LIMITED);
    // Names that sort after (and before) alice's, more of them than the table holds.
    for name in (0..20).map(|i| format!("zz{i:02}")).chain((0..20).map(|i| format!("aa{i:02}"))) {
        let s = h.connect();
        let id = h.send(s, guess(&name));
        assert_eq!(h.code(s, id), status::UNAUTHORIZED, "{name}");
    }
    let s = h.connect();
    let id = h.send(s, Login { username: "alice".into(), password: PASSWORD.into() });
    assert_eq!(h.code(s, id), status::RATE_LIMITED, "alice's record was evicted: {}", h.reason(s, id));
}

/// 50 connections from one address guess at 50 accounts at once: the
/// source's budget (`login_source_burst`) bounds the hashes, whatever the
/// accounts; another address is not affected.
#[test]
fn one_source_is_limited_across_accounts() {
    let mut h = Harness::new(ServerConfig { login_source_burst: 8, ..config() });
    let ip = SourceKey::from_ip("203.0.113.7".parse().unwrap());
    let before = h.jobs;
    h.hold = true;
    let sessions: Vec<_> = (0..50).map(|_| h.connect_from(ip)).collect();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let ids: Vec<_> =
            sessions.iter().enumerate().map(|(i, &s)| (s, h.send(s, guess(&format!("user{i:02}"))))).collect();
        h.run_held();
        answers.extend(ids.into_iter().map(|(s, id)| h.code(s, id)));
        h.advance(Duration::from_secs(1));
    }
    let hashed = h.jobs - before;
    assert_eq!(hashed, 8, "{answers:?}");
    assert_eq!(answers.iter().filter(|c| **c == status::RATE_LIMITED).count(), 150 - 8);
    // Another address, and an in-process link, still get their guesses hashed.
    for source in [SourceKey::from_ip("198.51.100.1".parse().unwrap()), SourceKey::Local] {
        let s = h.connect_from(source);
        let id = h.send(s, guess("user00"));
        h.run_held();
        assert_eq!(h.code(s, id), status::UNAUTHORIZED);
    }
    // The source's window ends like an account's.
    h.advance(Duration::from_secs(60));
    let s = h.connect_from(ip);
    let id = h.send(s, guess("user00"));
    h.run_held();
    assert_eq!(h.code(s, id), status::UNAUTHORIZED);
}

#[test]
fn source_keys_group_ipv6_by_64_and_unmap_ipv4() {
    let key = |s: &str| SourceKey::from_ip(s.parse().unwrap());
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    assert_ne!(key("192.0.2.1"), SourceKey::Local);
}

fn tokens(h: &Harness, s: crate::server::SessionId, id: u32) -> crate::wire::Tokens {
    match h.response(s, id).body {
        crate::wire::ResponseBody::Tokens(t) => t,
        other => panic!("expected tokens, got {other:?}"),
    }
}

/// A refresh token spent two days ago, long past its own expiry, is still
/// known as spent while its login lives: presenting it revokes the login.
#[test]
fn a_spent_refresh_token_is_remembered_for_the_life_of_its_login() {
    let hour = Duration::from_secs(3600);
    let mut h = Harness::new(ServerConfig { access_ttl: hour / 6, refresh_ttl: hour, ..config() });
    assert_eq!(h.register("alice"), status::CREATED);
    let (_, t) = h.login("alice");
    let first = t.refresh_token.clone();
    let mut current = t.refresh_token;
    // The client refreshes every 50 minutes, on a new connection each time, for two days.
    for _ in 0..60 {
        h.advance(hour * 5 / 6);
        let s = h.connect();
        let id = h.send(s, Refresh { refresh_token: current });
        current = tokens(&h, s, id).refresh_token;
    }
    let thief = h.connect();
    let id = h.send(thief, Refresh { refresh_token: first });
    assert_eq!(h.code(thief, id), status::UNAUTHORIZED);
    assert!(h.reason(thief, id).contains("reused"), "{}", h.reason(thief, id));
    let s = h.connect();
    let id = h.send(s, Refresh { refresh_token: current });
    assert_eq!(h.code(s, id), status::UNAUTHORIZED, "the login survived the reuse of its first token");
    assert!(h.reason(s, id).contains("revoked"), "{}", h.reason(s, id));
}

#[test]
fn a_name_must_start_with_a_letter_or_a_digit() {
    let mut h = Harness::new(config());
    // Punctuation only, a relative path, an option: refused with the rule in the reason.
    for bad in ["...", "..x", "-rf", "_ab", ".", "ab", "Abc"] {
        assert_eq!(h.register(bad), 400, "{bad:?} was accepted");
    }
    for good in ["abc", "0ab", "a..", "a-b_c.d"] {
        assert_eq!(h.register(good), 201, "{good:?} was refused");
    }
    let s = h.connect();
    let id = h.send(
        s,
        Register {
            username: "...".into(),
            password: PASSWORD.into(),
            passphrase: PASSPHRASE.into(),
            identity_key: Bytes::from_static(b"idkey"),
        },
    );
    assert!(h.reason(s, id).contains("starting with a letter or a digit"), "{}", h.reason(s, id));
}

/// Issue 12, item 7: 1,100 parallel logins queued 1,024 hash jobs, answered
/// over 34 s, long after the clients' 15 s timeout, and the 503s said
/// `retry_after_ms` 0. Now a password check that would wait longer than
/// `login_wait` at the measured pace is refused at once, with the wait
/// after which it would fit.
#[test]
fn the_hash_queue_holds_what_is_answered_within_login_wait() {
    let mut h = Harness::new(ServerConfig { login_wait: Duration::from_secs(10), ..config() });
    h.hold = true;
    let sessions: Vec<_> = (0..500).map(|_| h.connect()).collect();
    for (n, &s) in sessions.iter().enumerate() {
        let id = h.send(s, register_body(&format!("user{n:03}")));
        assert!(h.received_nothing(s, id), "no pace measured yet: only max_pending_jobs bounds the queue");
    }
    assert_eq!(h.held.len(), 500);
    // The workers answer one job every 30 ms.
    let run_one = |h: &mut Harness| {
        let job = h.held.remove(0);
        let result = job.run();
        h.advance(Duration::from_millis(30));
        h.server.handle_work(h.now, result);
        h.pump();
    };
    for _ in 0..100 {
        run_one(&mut h);
    }
    // 400 out at 30 ms each: a new one would be answered in 12 s, after 10 s.
    let late = h.connect();
    let id = h.send(late, register_body("late"));
    assert_eq!(h.code(late, id), status::UNAVAILABLE);
    let wait = h.response(late, id);
    let crate::wire::ResponseBody::Error(body) = &wait.body else { panic!("{wait:?}") };
    assert!((1_900..=2_200).contains(&body.retry_after_ms), "retry after {} ms, ~2.03 s", body.retry_after_ms);
    assert!(body.reason.contains("retry in 3 s"), "{}", body.reason);
    // Once that much has drained, it fits.
    for _ in 0..80 {
        run_one(&mut h);
    }
    let id = h.send(late, register_body("late"));
    assert!(h.received_nothing(late, id), "accepted into the queue");
    while !h.held.is_empty() {
        run_one(&mut h);
    }
    assert_eq!(h.code(late, id), status::CREATED);
}
