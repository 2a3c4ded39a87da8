//! Mail between the cores of a split state (docs/PARTITIONS.md, "Mail"):
//! several cores, each a partition, and the store's outbox table modelled
//! (`split.rs`). The first request that crosses partitions is `fetch_key`
//! of a user of another home.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};

use super::config;
use super::split::{Pair, Split, pair};
use crate::server::{Change, MAIL_VERSION, MailItem, MailOutcome, Partitions, Server, ServerLog, SessionId};
use crate::wire::{FetchKey, ResponseBody, status};

fn fetch_key(split: &mut Split, core: usize, session: SessionId, access: &str, of: &str) -> u32 {
    let id = split.cores[core].send_auth(session, FetchKey { username: of.into() }, access.as_bytes());
    split.collect();
    id
}

#[test]
fn fetch_key_of_a_user_of_another_home_is_answered_through_mail() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    assert!(split.cores[a].received_nothing(s, id), "no answer before the other home's");
    assert_eq!(split.cores[a].server.waiting_requests(), 1);
    assert_eq!(split.table.keys().copied().collect::<Vec<_>>(), [(0, 1, 1)], "one item, to bob's home");
    assert_eq!(split.deliver(), 1, "bob's home answers");
    assert_eq!(split.table.keys().copied().collect::<Vec<_>>(), [(1, 0, 1)], "its answer, the request applied");
    assert!(split.cores[a].received_nothing(s, id));
    assert_eq!(split.deliver(), 1);
    assert!(split.table.is_empty());
    match split.cores[a].response(s, id).body {
        ResponseBody::IdentityKey(k) => {
            assert_eq!(k.username, bob);
            assert_eq!(k.identity_key, Bytes::from(format!("idkey-{bob}")));
        }
        other => panic!("expected bob's key, got {other:?}"),
    }
    assert_eq!(split.cores[a].server.waiting_requests(), 0);
    // The numbers: one item each way, each applied.
    let (c0, c1) = (&split.cores[0].server, &split.cores[1].server);
    assert_eq!((c0.state().mail().next_to(1), c1.state().mail().next_to(0)), (2, 2));
    assert_eq!((c0.mail_applied_from(1), c1.mail_applied_from(0)), (1, 1));
}

#[test]
fn fetch_key_of_a_user_of_the_same_home_sends_no_mail() {
    let mut split = Split::new(2);
    let (alice, carol) = (split.user_of(0, "alice"), split.user_of(0, "carol"));
    let (a, s, tokens) = split.join(&alice);
    split.join(&carol);
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &carol);
    assert_eq!(split.cores[a].code(s, id), status::OK);
    assert!(split.table.is_empty());
    assert_eq!(split.cores[0].server.state().mail().next_to(1), 1, "nothing was mailed");
}

#[test]
fn an_unknown_user_of_another_home_is_answered_404_from_there() {
    let mut split = Split::new(2);
    let alice = split.user_of(0, "alice");
    let nobody = split.user_of(1, "nobody");
    let (a, s, tokens) = split.join(&alice);
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &nobody);
    split.settle();
    assert_eq!(split.cores[a].code(s, id), status::NOT_FOUND);
    assert_eq!(split.cores[a].reason(s, id), format!("no user {nobody}"));
}

#[test]
fn duplicates_gaps_and_misdirected_items_change_nothing() {
    let mut split = Split::new(3);
    let item = MailItem::FetchKey { ticket: 1, peer: "x".into() }.encode();
    let h = &mut split.cores[1];
    let now = h.now;
    assert_eq!(h.server.handle_mail(now, 0, 2, &item), MailOutcome::Gap { next: 1 });
    assert_eq!(h.server.handle_mail(now, 1, 1, &item), MailOutcome::Misdirected, "from itself");
    assert_eq!(h.server.handle_mail(now, 3, 1, &item), MailOutcome::Misdirected, "no such partition");
    h.pump();
    assert!(h.mail.is_empty(), "nothing committed");
    assert_eq!(h.server.handle_mail(now, 0, 1, &item), MailOutcome::Applied);
    assert_eq!(h.server.handle_mail(now, 0, 1, &item), MailOutcome::Duplicate);
    assert_eq!(h.server.handle_mail(now, 0, 3, &item), MailOutcome::Gap { next: 2 });
    h.pump();
    let answers = h.mail.iter().filter(|c| matches!(c, Change::MailOut { .. })).count();
    assert_eq!(answers, 1, "one answer for one item, whatever was given twice");
}

/// The target restored after applying (a takeover): the item given again,
/// as a runtime that read it before its deletion would, is a duplicate.
#[test]
fn a_target_restored_after_applying_applies_nothing_twice() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    let item = split.table[&(0, 1, 1)].clone();
    split.deliver();
    split.cores[1].fail_over();
    let h = &mut split.cores[1];
    assert_eq!(h.server.mail_applied_from(0), 1, "the cursor is in the state");
    assert_eq!(h.server.handle_mail(h.now, 0, 1, &item), MailOutcome::Duplicate);
    h.pump();
    split.settle();
    assert_eq!(split.cores[a].code(s, id), status::OK);
}

/// The asking home restored while it waited: the answer is applied (its
/// number counts), answers nobody, and the client asks again.
#[test]
fn an_answer_to_a_home_restored_meanwhile_is_applied_and_answers_nobody() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.cores[a].fail_over();
    split.settle();
    assert_eq!(split.cores[a].server.mail_applied_from(1), 1);
    assert_eq!(split.cores[a].server.waiting_requests(), 0);
    assert!(!split.cores[a].logs.iter().any(|l| matches!(l, ServerLog::BadMail { .. })), "a good answer, to nobody");
    let again = split.cores[a].connect();
    let id = fetch_key(&mut split, a, again, &tokens.access_token, &bob);
    split.settle();
    assert_eq!(split.cores[a].code(again, id), status::OK);
}

/// A session that ends while it waits waits no more, but its request stays
/// in flight (counted) until its answer comes back, so that reconnecting
/// does not free a slot whose mail is still out.
#[test]
fn a_request_stays_counted_until_its_answer_even_when_its_session_ended() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.cores[a].disconnect(s);
    assert_eq!(split.cores[a].server.waiting_requests(), 1, "still in flight");
    split.settle();
    assert_eq!(split.cores[a].server.waiting_requests(), 0, "its answer came back");
}

/// Requests are handled in order per connection: frames after a request
/// that waits for another partition wait too, and are handled after its answer.
#[test]
fn later_frames_wait_behind_a_request_to_another_home() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let carol = split.user_of(0, "carol");
    split.join(&carol);
    let far = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    let near = fetch_key(&mut split, a, s, &tokens.access_token, &carol);
    assert!(split.cores[a].received_nothing(s, near), "the later request waits");
    split.settle();
    let order: Vec<u32> = split.cores[a]
        .received(s)
        .iter()
        .filter_map(|m| match m {
            crate::wire::Message::Response(r) => Some(r.request_id),
            _ => None,
        })
        .filter(|id| [far, near].contains(id))
        .collect();
    assert_eq!(order, [far, near]);
}

/// After `WAIT_FOR_ANSWER` the session is answered 503 with a wait and goes
/// on; the late answer answers nobody.
#[test]
fn a_late_answer_is_503_and_the_session_goes_on() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let carol = split.user_of(0, "carol");
    split.join(&carol);
    let far = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    let near = fetch_key(&mut split, a, s, &tokens.access_token, &carol);
    split.cores[a].advance(crate::server::mailbox::WAIT_FOR_ANSWER);
    assert_eq!(split.cores[a].code(s, far), status::UNAVAILABLE);
    match split.cores[a].response(s, far).body {
        ResponseBody::Error(e) => assert!(e.retry_after_ms > 0, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(split.cores[a].code(s, near), status::OK, "the frames behind it went on");
    assert_eq!(split.cores[a].server.waiting_requests(), 1, "still in flight");
    split.settle();
    assert_eq!(split.cores[a].server.waiting_requests(), 0);
    let answers = split.cores[a]
        .received(s)
        .iter()
        .filter(|m| matches!(m, crate::wire::Message::Response(r) if r.request_id == far))
        .count();
    assert_eq!(answers, 1, "the late answer answers nobody");
}

/// Tickets are the requests' own numbers: after a restore of the asking
/// home, a new request (on a session whose id may be the old one's) never
/// takes the answer of the old one.
#[test]
fn an_old_answer_never_answers_a_new_request_after_a_restore() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let carol = split.user_of(1, "carol");
    split.join(&carol);
    fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.deliver(); // bob's home answers; the answer is in the table
    split.cores[a].fail_over();
    let again = split.cores[a].connect();
    let id = fetch_key(&mut split, a, again, &tokens.access_token, &carol);
    split.settle();
    match split.cores[a].response(again, id).body {
        ResponseBody::IdentityKey(k) => assert_eq!(k.username, carol, "its own answer, not bob's"),
        other => panic!("{other:?}"),
    }
}

/// Another partition's 401 or 419 is not about the asking session's
/// tokens: the client gets 500, never a reason to drop or refresh its own.
#[test]
fn another_partitions_401_reaches_the_client_as_500() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    let answer = MailItem::Refused { ticket: 1, code: status::UNAUTHORIZED, reason: "who?".into() }.encode();
    let h = &mut split.cores[a];
    assert_eq!(h.server.handle_mail(h.now, 1, 1, &answer), MailOutcome::Applied);
    h.pump();
    assert_eq!(h.code(s, id), status::INTERNAL);
}

/// An answer about another user than the one asked about is refused (500)
/// and logged, not handed over.
#[test]
fn an_answer_about_another_user_is_not_handed_over() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    let answer =
        MailItem::KeyFound { ticket: 1, username: "mallory".into(), identity_key: Bytes::from_static(b"k") }.encode();
    let h = &mut split.cores[a];
    assert_eq!(h.server.handle_mail(h.now, 1, 1, &answer), MailOutcome::Applied);
    h.pump();
    assert_eq!(h.code(s, id), status::INTERNAL);
    assert!(h.logs.iter().any(|l| matches!(l, ServerLog::BadMail { reason, .. } if reason.contains("mallory"))));
}

/// `max_accounts` 3 over two partitions: 2 accounts at each home.
#[test]
fn the_account_cap_is_shared_between_partitions() {
    let mut split = Split::with(2, crate::server::ServerConfig { max_accounts: 3, ..config() });
    let names: Vec<String> = (0..3).map(|i| split.user_of(0, &format!("u{i}x"))).collect();
    assert_eq!(split.cores[0].register(&names[0]), status::CREATED);
    assert_eq!(split.cores[0].register(&names[1]), status::CREATED);
    let s = split.cores[0].connect();
    let id = split.cores[0].send(s, super::register_body(&names[2]));
    assert_eq!(split.cores[0].code(s, id), status::QUEUE_FULL);
    assert_eq!(
        split.cores[0].reason(s, id),
        "partition 0 of this server has reached its limit of 2 accounts (3 in all)"
    );
    let other = split.user_of(1, "vic");
    assert_eq!(split.cores[1].register(&other), status::CREATED, "the other home has its own share");
}

/// Accounts are made and logged in at their home only.
#[test]
fn register_and_login_of_a_user_of_another_home_are_refused() {
    let mut split = Split::new(2);
    let bob = split.user_of(1, "bob");
    split.join(&bob);
    let h = &mut split.cores[0];
    assert_eq!(h.register(&bob), status::BAD_REQUEST);
    let s = h.connect();
    let id = h.send(s, crate::wire::Login { username: bob.clone(), password: super::PASSWORD.into() });
    assert_eq!(h.code(s, id), status::BAD_REQUEST);
    assert!(h.reason(s, id).contains("partition 1"), "{}", h.reason(s, id));
}

/// Application is total: an item that does not decode is logged and
/// counts as applied; a request of a version this build does not read is
/// answered 501, so that its sender does not wait for ever.
#[test]
fn items_that_do_not_decode_are_applied_as_nothing_and_never_block() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    // The request, rewritten as a newer build's.
    let mut newer = split.table[&(0, 1, 1)].to_vec();
    newer[9] = MAIL_VERSION + 1;
    split.table.insert((0, 1, 1), Bytes::from(newer));
    split.settle();
    assert_eq!(split.cores[a].code(s, id), status::NOT_IMPLEMENTED);
    assert!(split.cores[a].reason(s, id).contains("version"), "{}", split.cores[a].reason(s, id));
    assert!(split.cores[1].logs.iter().any(|l| matches!(l, ServerLog::BadMail { .. })));
    // An answer this build cannot read: the session is told (500), and nothing is mailed
    // back (an answer is never answered).
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.deliver();
    let answer_key = *split.table.keys().next().expect("the answer");
    let mut newer = split.table[&answer_key].to_vec();
    newer[9] = MAIL_VERSION + 1;
    split.table.insert(answer_key, Bytes::from(newer));
    split.settle();
    assert_eq!(split.cores[a].code(s, id), status::INTERNAL);
    assert!(split.cores[a].reason(s, id).contains("cannot read"), "{}", split.cores[a].reason(s, id));
    // Garbage in place of the next request: applied as nothing (it has no ticket to answer),
    // and the item after it goes through.
    let lost = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.table.insert((0, 1, 3), Bytes::from_static(b"\x01\x02"));
    split.settle();
    assert_eq!(split.cores[1].logs.iter().filter(|l| matches!(l, ServerLog::BadMail { .. })).count(), 2);
    assert!(split.cores[a].received_nothing(s, lost), "a request without a ticket is answered by nobody");
    split.cores[a].advance(crate::server::mailbox::WAIT_FOR_ANSWER);
    assert_eq!(split.cores[a].code(s, lost), status::UNAVAILABLE, "until its session stops waiting");
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    split.settle();
    assert_eq!(split.cores[a].code(s, id), status::OK, "the item after it went through");
    assert_eq!(split.cores[1].server.mail_applied_from(0), 4);
    // A request of a kind this build does not know (with a readable ticket) is refused 501,
    // and one whose body does not decode 400: its sender's request never waits for ever.
    for (kind, code) in [(99, status::NOT_IMPLEMENTED), (1, status::BAD_REQUEST)] {
        let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
        let key = *split.table.keys().next().expect("the request");
        let mut item = split.table[&key].to_vec();
        item[10] = kind;
        if kind == 1 {
            item.truncate(12);
        }
        split.table.insert(key, Bytes::from(item));
        split.settle();
        assert_eq!(split.cores[a].code(s, id), code, "kind {kind}");
    }
}

/// At most `MAX_WAITING` requests are in flight; beyond, 503 with a wait.
/// (A session waits for one at a time: its later frames wait behind it.)
#[test]
fn requests_in_flight_are_bounded() {
    let mut split = Split::new(2);
    let (alice, bob) = (split.user_of(0, "alice"), split.user_of(1, "bob"));
    let (a, _, tokens) = split.join(&alice);
    split.join(&bob);
    for _ in 0..crate::server::MAX_WAITING {
        let s = split.cores[a].connect();
        fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    }
    assert_eq!(split.cores[a].server.waiting_requests(), crate::server::MAX_WAITING);
    let s = split.cores[a].connect();
    let id = fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    assert_eq!(split.cores[a].code(s, id), status::UNAVAILABLE);
    split.settle();
    assert_eq!(split.cores[a].server.waiting_requests(), 0);
}

/// Many requests between three homes, items given in any order of sources,
/// some twice, homes restored at random: every request whose home lived
/// until its answer is answered exactly once and rightly, nothing is
/// applied twice, and the table empties.
#[test]
fn random_delivery_and_takeovers_answer_each_request_once() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut split = Split::new(3);
        let users: Vec<String> = (0..3).map(|home| split.user_of(home, &format!("u{home}x"))).collect();
        let mut sessions: Vec<(usize, SessionId, String)> = Vec::new();
        for u in &users {
            let (home, s, t) = split.join(u);
            sessions.push((home, s, t.access_token));
        }
        // (core, session, request id, asked about, the core's incarnation when asked)
        let mut asked = Vec::new();
        let mut asked_ids: Vec<(usize, SessionId, u32)> = Vec::new();
        let mut incarnation = [0u32; 3];
        for _ in 0..60 {
            match rng.random_range(0..10) {
                0..=5 => {
                    let (core, s, access) = sessions[rng.random_range(0..sessions.len())].clone();
                    let of = users[rng.random_range(0..users.len())].clone();
                    let id = fetch_key(&mut split, core, s, &access, &of);
                    asked_ids.push((core, s, id));
                    asked.push((core, s, id, of, incarnation[core]));
                }
                6..=7 => {
                    // One target, its sources in a random order, one item given twice.
                    let target = rng.random_range(0..3u8);
                    let mut items: Vec<_> = split
                        .table
                        .iter()
                        .filter(|((_, to, _), _)| *to == target)
                        .map(|(k, v)| (*k, v.clone()))
                        .collect();
                    let sources: Vec<u8> = {
                        let mut s: Vec<u8> = items.iter().map(|((from, _, _), _)| *from).collect();
                        s.dedup();
                        s
                    };
                    let first = sources.get(rng.random_range(0..sources.len().max(1))).copied();
                    items.sort_by_key(|((from, _, seq), _)| (Some(*from) != first, *from, *seq));
                    let core = &mut split.cores[usize::from(target)];
                    // An item past a gap first, when a source has two waiting: refused.
                    if let Some(((from, _, seq), item)) = items.get(1).filter(|(k, _)| Some(k.0) == first)
                        && rng.random_bool(0.5)
                    {
                        let next = core.server.mail_applied_from(*from) + 1;
                        assert_eq!(core.server.handle_mail(core.now, *from, *seq, item), MailOutcome::Gap { next });
                    }
                    // An item applied before (perhaps by an earlier run of this core): a duplicate.
                    if let Some(((from, _, seq), item)) =
                        split.applied.iter().filter(|(k, _)| k.1 == target).nth(rng.random_range(0..8))
                    {
                        assert_eq!(core.server.handle_mail(core.now, *from, *seq, item), MailOutcome::Duplicate);
                    }
                    for ((from, _, seq), item) in &items {
                        assert_eq!(core.server.handle_mail(core.now, *from, *seq, item), MailOutcome::Applied);
                        if rng.random_bool(0.2) {
                            assert_eq!(core.server.handle_mail(core.now, *from, *seq, item), MailOutcome::Duplicate);
                        }
                    }
                    core.pump();
                    split.collect();
                }
                _ => {
                    let core = rng.random_range(0..3usize);
                    split.cores[core].fail_over();
                    incarnation[core] += 1;
                    // Its clients come back on new connections.
                    for (home, s, _) in &mut sessions {
                        if *home == core {
                            *s = split.cores[core].connect();
                        }
                    }
                }
            }
        }
        split.settle();
        for (core, s, id, of, asked_in) in asked.clone() {
            let h = &split.cores[core];
            if asked_in != incarnation[core] {
                continue; // its home was restored: answered nobody (the client asks again)
            }
            let answers = h
                .received(s)
                .iter()
                .filter(|m| matches!(m, crate::wire::Message::Response(r) if r.request_id == id))
                .count();
            assert_eq!(answers, 1, "seed {seed}: request #{id} on {s} answered once");
            match h.response(s, id).body {
                ResponseBody::IdentityKey(k) => assert_eq!(k.username, of, "seed {seed}"),
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        for (index, core) in split.cores.iter().enumerate() {
            assert_eq!(core.server.waiting_requests(), 0, "seed {seed}");
            // Nothing answered that was not asked (in this run of the core).
            let asked_here: Vec<(SessionId, u32)> =
                asked_ids.iter().filter(|(c, ..)| *c == index).map(|(_, s, id)| (*s, *id)).collect();
            for (_, session, _) in sessions.iter().filter(|(home, ..)| *home == index) {
                for m in core.received(*session) {
                    if let crate::wire::Message::Response(r) = m
                        && r.opcode == crate::wire::Opcode::FetchKey
                    {
                        assert!(asked_here.contains(&(*session, r.request_id)), "seed {seed}: unasked answer");
                    }
                }
            }
        }
        // Every number sent was applied, once.
        for from in 0..3u8 {
            for to in (0..3u8).filter(|t| *t != from) {
                let sent = split.cores[usize::from(from)].server.state().mail().next_to(to) - 1;
                let applied = split.cores[usize::from(to)].server.mail_applied_from(from);
                assert_eq!(sent, applied, "seed {seed}: {from}->{to}");
            }
        }
    }
}

/// A split state's tokens name their home; a token of another partition is
/// another user's on a session (403, as today) and misrouted on an unbound
/// connection (400), never "unknown" (401: a client would drop its login).
#[test]
fn tokens_name_their_home_and_another_partitions_token_is_never_401() {
    let Pair { mut split, a, s, tokens, bob } = pair();
    let count = split.parts().count;
    assert_eq!(crate::token::partition_of(tokens.access_token.as_bytes(), count), Some(0));
    assert_eq!(crate::token::partition_of(tokens.refresh_token.as_bytes(), count), Some(0));
    let (b, _, bobs) = {
        let h = &mut split.cores[1];
        let (session, t) = h.login(&bob);
        (1usize, session, t)
    };
    assert_eq!(crate::token::partition_of(bobs.access_token.as_bytes(), count), Some(1));
    assert_ne!(a, b);
    let h = &mut split.cores[a];
    // On alice's session: bob's tokens are another user's.
    let id = h.send_auth(s, FetchKey { username: "x".into() }, bobs.access_token.as_bytes());
    assert_eq!(h.code(s, id), status::FORBIDDEN);
    let id = h.send(s, crate::wire::Refresh { refresh_token: bobs.refresh_token.clone() });
    assert_eq!(h.code(s, id), status::FORBIDDEN);
    // On a new connection: misrouted.
    let fresh = h.connect();
    let id = h.send_auth(fresh, FetchKey { username: "x".into() }, bobs.access_token.as_bytes());
    assert_eq!(h.code(fresh, id), status::BAD_REQUEST);
    assert!(h.reason(fresh, id).contains("partition 1"), "{}", h.reason(fresh, id));
    let fresh = h.connect();
    let id = h.send(fresh, crate::wire::Refresh { refresh_token: bobs.refresh_token });
    assert_eq!(h.code(fresh, id), status::BAD_REQUEST);
    // Alice's own still work (a name of her home that nobody has: 404 from here).
    let nobody = split.user_of(0, "nobody");
    let h = &mut split.cores[a];
    let id = h.send_auth(s, FetchKey { username: nobody }, tokens.access_token.as_bytes());
    assert_eq!(h.code(s, id), status::NOT_FOUND);
}

/// An OIDC user's account is made at its home only: a JWT naming a user of
/// another home makes no account here (400, naming the home).
#[test]
fn an_oidc_account_is_made_at_its_home_only() {
    use rand::SeedableRng as _;

    use crate::jwt::{MintRequest, SignerConfig, SigningKeys};
    use crate::server::OidcConfig;
    use crate::token::TokenKind;
    use crate::wire::SetIdentityKey;

    const IDP: &str = "https://idp.test/realms/confab";
    let t0 = crate::examples::TIMESTAMP_MS / 1000;
    let mut idp = SigningKeys::generate(SignerConfig::new(IDP, "confab"), &mut StdRng::from_seed([5; 32]), t0);
    let mut split = Split::new(2);
    for (index, core) in split.cores.iter_mut().enumerate() {
        let oidc = OidcConfig::new(IDP, "confab", idp.jwks_json(t0));
        let partitions = Partitions { index: u8::try_from(index).unwrap(), count: 2 };
        let c = crate::server::ServerConfig { oidc: Some(oidc), partitions, ..config() };
        core.server = Server::new(c, [40 + partitions.index; 32], core.now).expect("a valid configuration");
    }
    let dave = split.user_of(1, "dave");
    let request =
        MintRequest { token: dave.as_bytes(), kind: TokenKind::Access, subject: &dave, token_expires: t0 + 300 };
    let jwt = idp.mint(t0, &request).unwrap().jwt;
    let key = || SetIdentityKey { identity_key: Bytes::from_static(b"dave's key") };
    let h = &mut split.cores[0];
    let s = h.connect();
    let id = h.send_auth(s, key(), jwt.as_bytes());
    assert_eq!(h.code(s, id), status::BAD_REQUEST, "{}", h.reason(s, id));
    assert!(h.reason(s, id).contains("partition 1"), "{}", h.reason(s, id));
    assert!(h.server.state().user(&dave).is_none(), "no account away from home");
    let h = &mut split.cores[1];
    let s = h.connect();
    let id = h.send_auth(s, key(), jwt.as_bytes());
    assert_eq!(h.code(s, id), status::OK, "{}", h.reason(s, id));
    assert!(h.server.state().user(&dave).is_some());
}

/// `introspect` of another partition's token is misrouted (400), not
/// "inactive" (404), and only after the backend's credential was checked.
#[test]
fn introspect_of_another_partitions_token_is_misrouted() {
    use crate::server::PhantomConfig;
    use crate::wire::Introspect;

    let Pair { mut split, bob, .. } = pair();
    let (_, bobs) = split.cores[1].login(&bob);
    let phantom = PhantomConfig::new("a long backend secret", "https://confab.test", "api");
    let c = crate::server::ServerConfig {
        phantom: Some(phantom),
        partitions: Partitions { index: 0, count: 2 },
        ..config()
    };
    let h = &mut split.cores[0];
    h.server = Server::new(c, [50; 32], h.now).expect("a valid configuration");
    let s = h.connect();
    let ask = || Introspect { token: bobs.access_token.clone() };
    let id = h.send_auth(s, ask(), b"wrong secret");
    assert_eq!(h.code(s, id), status::FORBIDDEN, "nothing said to an untrusted caller");
    let id = h.send_auth(s, ask(), b"a long backend secret");
    assert_eq!(h.code(s, id), status::BAD_REQUEST);
    assert!(h.reason(s, id).contains("partition 1"), "{}", h.reason(s, id));
}

/// The frames that wait behind a request to another home are bounded as
/// those behind a password check are (`max_deferred_bytes`): past it the
/// connection is closed with 413, saying why.
#[test]
fn frames_held_behind_a_request_to_another_home_are_bounded() {
    let mut split = Split::new(2);
    let h = &mut split.cores[0];
    let c = crate::server::ServerConfig {
        max_deferred_bytes: 300,
        partitions: Partitions { index: 0, count: 2 },
        ..config()
    };
    h.server = Server::new(c, [60; 32], h.now).expect("a valid configuration");
    let (alice, bob, carol) = (split.user_of(0, "alice"), split.user_of(1, "bob"), split.user_of(0, "carol"));
    let (a, s, tokens) = split.join(&alice);
    split.join(&bob);
    split.join(&carol);
    fetch_key(&mut split, a, s, &tokens.access_token, &bob);
    for _ in 0..10 {
        fetch_key(&mut split, a, s, &tokens.access_token, &carol);
    }
    let closed = split.cores[a].logs.iter().any(|l| {
        matches!(l, ServerLog::SessionClosed { session, code, reason }
            if *session == s && *code == status::TOO_LARGE && reason.contains("waited for another partition"))
    });
    assert!(closed, "{:?}", split.cores[a].logs);
}
