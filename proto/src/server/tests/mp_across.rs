//! Private messages between users of two homes (docs/PARTITIONS.md,
//! "Conversations across two homes"): each home keeps a copy of the
//! conversation, the lane to a user is kept (and decided) at its home, and
//! requests cross as mail with their answers remembered for retries.

use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};

use super::config;
use super::split::{Split, User};
use crate::server::state::Conversation;
use crate::server::{MAX_PENDING, ServerConfig, SessionId};
use crate::wire::{
    AcceptMp, CloseMp, DeliveryAck, EventBody, FetchKey, RequestMp, ResponseBody, SendMp, Sent, Status, status,
};

fn hs(of: &str) -> Bytes {
    Bytes::from(format!("hs-{of}"))
}

/// `from` asks `to`; the request id.
fn request(split: &mut Split, from: &User, to: &User) -> u32 {
    let body = RequestMp { peer: to.name.clone(), handshake: hs(&from.name) };
    let id = split.cores[from.home].send_auth(from.session, body, &from.auth());
    split.collect();
    id
}

fn accept(split: &mut Split, by: &User, of: &User) -> u32 {
    let body = AcceptMp { peer: of.name.clone(), handshake: hs(&by.name) };
    let id = split.cores[by.home].send_auth(by.session, body, &by.auth());
    split.collect();
    id
}

fn send(split: &mut Split, from: &User, to: &User, text: &str) -> u32 {
    let body = SendMp { peer: to.name.clone(), sealed: Bytes::from(text.to_owned()) };
    let id = split.cores[from.home].send_auth(from.session, body, &from.auth());
    split.collect();
    id
}

fn close(split: &mut Split, by: &User, peer: &User) -> u32 {
    let id = split.cores[by.home].send_auth(by.session, CloseMp { peer: peer.name.clone() }, &by.auth());
    split.collect();
    id
}

/// The copy of the conversation of `user` with `peer` at `user`'s home.
fn copy(split: &Split, user: &User, peer: &User) -> Option<Conversation> {
    split.cores[user.home].server.state().conversation(&user.name, &peer.name).cloned()
}

fn sent_seq(split: &Split, user: &User, id: u32) -> (u16, u64) {
    let r = split.cores[user.home].response(user.session, id);
    match r.body {
        ResponseBody::Sent(Sent { seq }) => (r.code, seq),
        other => panic!("expected Sent for #{id} of {}, got {} {other:?}", user.name, r.code),
    }
}

/// The messages `user` received from `from` (sequence numbers and texts).
fn messages(split: &Split, user: &User) -> Vec<(String, u64, String)> {
    let events = split.cores[user.home].events(user.session);
    let messages = events.into_iter().filter_map(|e| match e {
        EventBody::UserMessage(m) => Some((m.from, m.seq, String::from_utf8_lossy(&m.sealed).into_owned())),
        _ => None,
    });
    messages.collect()
}

/// How many of the events `user` received match `kind`.
fn count_events(split: &Split, user: &User, kind: impl Fn(&EventBody) -> bool) -> usize {
    split.cores[user.home].events(user.session).iter().filter(|e| kind(e)).count()
}

/// An open conversation between alice (home 0) and bob (home 1).
fn open_pair() -> (Split, User, User) {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    request(&mut split, &alice, &bob);
    split.settle();
    accept(&mut split, &bob, &alice);
    split.settle();
    assert_eq!(copy(&split, &alice, &bob), Some(Conversation::Open));
    assert_eq!(copy(&split, &bob, &alice), Some(Conversation::Open));
    (split, alice, bob)
}

#[test]
fn a_conversation_across_two_homes_opens_and_carries_messages_both_ways() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let id = request(&mut split, &alice, &bob);
    assert!(split.cores[0].received_nothing(alice.session, id), "decided at bob's home");
    assert!(matches!(copy(&split, &alice, &bob), Some(Conversation::Requesting { .. })), "tentative meanwhile");
    split.settle();
    assert_eq!(sent_seq(&split, &alice, id), (status::OK, 1), "bob is online: 200");
    let requested = Some(Conversation::Requested { by: alice.name.clone(), handshake: hs(&alice.name) });
    assert_eq!(copy(&split, &alice, &bob), requested);
    assert_eq!(copy(&split, &bob, &alice), requested);
    let events = split.cores[1].events(bob.session);
    match &events.iter().filter(|e| !matches!(e, EventBody::Connected(_))).collect::<Vec<_>>()[..] {
        [EventBody::MpRequest(r)] => {
            assert_eq!((r.from.as_str(), r.seq), (alice.name.as_str(), 1));
            assert_eq!(r.identity_key, Bytes::from(format!("idkey-{}", alice.name)));
            assert_eq!(r.handshake, hs(&alice.name));
        }
        other => panic!("bob expected alice's request, got {other:?}"),
    }
    let id = accept(&mut split, &bob, &alice);
    assert!(matches!(copy(&split, &bob, &alice), Some(Conversation::Accepting { .. })));
    split.settle();
    match split.cores[1].response(bob.session, id).body {
        ResponseBody::PeerKeys(k) => {
            assert_eq!(k.peer, alice.name);
            assert_eq!(k.identity_key, Bytes::from(format!("idkey-{}", alice.name)));
            assert_eq!(k.handshake, hs(&alice.name));
        }
        other => panic!("expected alice's keys, got {other:?}"),
    }
    let events = split.cores[0].events(alice.session);
    assert!(
        matches!(&events.iter().filter(|e| !matches!(e, EventBody::Connected(_))).collect::<Vec<_>>()[..], [EventBody::MpAccepted(a)]
        if a.peer == bob.name && a.seq == 1 && a.handshake == hs(&bob.name))
    );
    assert_eq!(
        (copy(&split, &alice, &bob), copy(&split, &bob, &alice)),
        (Some(Conversation::Open), Some(Conversation::Open))
    );
    let one = send(&mut split, &alice, &bob, "one");
    let back = send(&mut split, &bob, &alice, "back");
    split.settle();
    assert_eq!(sent_seq(&split, &alice, one), (status::OK, 2), "after the request in alice -> bob");
    assert_eq!(sent_seq(&split, &bob, back), (status::OK, 2), "after the acceptance in bob -> alice");
    assert_eq!(messages(&split, &bob), [(alice.name.clone(), 2, "one".to_owned())]);
    assert_eq!(messages(&split, &alice), [(bob.name.clone(), 2, "back".to_owned())]);
    // The lanes to a user are at its home, and acknowledged there.
    let lane = |core: usize, from: &User, to: &User| {
        split.cores[core].server.state().lanes().lane(&from.name, &to.name).map(|l| l.items.len())
    };
    assert_eq!((lane(1, &alice, &bob), lane(0, &alice, &bob)), (Some(2), None));
    let ack = split.cores[1].send_auth(bob.session, DeliveryAck { peer: alice.name.clone(), seq: 2 }, &bob.auth());
    split.collect();
    assert_eq!(split.cores[1].code(bob.session, ack), status::OK);
    assert!(split.table.is_empty(), "an acknowledgement crosses nothing");
    assert_eq!(split.cores[1].server.state().lanes().queued_for(&bob.name), 0);
}

#[test]
fn an_offline_peer_of_another_home_gets_its_queue_at_login() {
    let (mut split, alice, bob) = open_pair();
    split.cores[1].disconnect(bob.session);
    split.settle();
    let id = send(&mut split, &alice, &bob, "while away");
    split.settle();
    assert_eq!(sent_seq(&split, &alice, id), (status::ACCEPTED, 2), "bob is offline: 202");
    let (session, _) = split.cores[1].login(&bob.name);
    let bob = User { session, ..bob };
    let got: Vec<_> = split.cores[1]
        .events(bob.session)
        .into_iter()
        .filter_map(|e| match e {
            EventBody::MpRequest(r) => Some(r.seq),
            EventBody::UserMessage(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert_eq!(got, [1, 2], "the unacknowledged request and the message, in order");
}

#[test]
fn a_retry_waits_for_the_same_answer_and_mails_nothing_again() {
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "once");
    assert_eq!(split.table.len(), 1);
    // The connection is lost before the answer; the client sends the request again, same id.
    split.cores[0].disconnect(alice.session);
    split.collect();
    let mailed = split.table.len();
    assert_eq!(mailed, 2, "and a notice that alice left");
    let again = split.cores[0].connect();
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"once") };
    split.cores[0].send_as(again, id, body.clone(), &alice.auth());
    split.collect();
    assert_eq!(split.table.len(), mailed, "nothing mailed again");
    assert!(split.cores[0].received_nothing(again, id), "it waits for the same answer");
    split.settle();
    let alice = User { session: again, ..alice };
    assert_eq!(sent_seq(&split, &alice, id), (status::OK, 2));
    assert_eq!(messages(&split, &bob), [(alice.name.clone(), 2, "once".to_owned())], "delivered once");
    // Answered: a later retry gets the remembered answer, and still nothing is mailed.
    let third = split.cores[0].connect();
    split.cores[0].send_as(third, id, body, &alice.auth());
    split.collect();
    assert!(split.table.is_empty());
    assert_eq!(split.cores[0].response(third, id).body, ResponseBody::Sent(Sent { seq: 2 }));
}

/// A client that comes back on a new connection before the server noticed
/// the old one is gone: the new login replaces the old connection, and the
/// retry waits for the answer the old one waited for.
#[test]
fn a_retry_on_a_connection_that_replaced_the_waiting_one_gets_the_answer() {
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "x");
    let second = split.cores[0].connect();
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"x") };
    split.cores[0].send_as(second, id, body, &alice.auth());
    let replaced = split.cores[0]
        .received(alice.session)
        .iter()
        .any(|m| matches!(m, crate::wire::Message::Close(c) if c.code == status::CONFLICT));
    assert!(replaced, "the older connection is closed (replaced by a newer login)");
    assert!(split.cores[0].received_nothing(second, id));
    split.settle();
    assert_eq!(split.cores[0].response(second, id).body, ResponseBody::Sent(Sent { seq: 2 }));
    assert_eq!(messages(&split, &bob).len(), 1);
}

#[test]
fn a_home_restored_while_a_request_waited_applies_its_answer_and_a_retry_gets_it() {
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "kept");
    // Alice's home taken over before the answer: the pending record is durable.
    split.cores[0].fail_over();
    let pending = split.cores[0].server.state().mail().pending_all().map(|(_, r)| r.request_id).collect::<Vec<_>>();
    assert_eq!(pending, [id], "the request is still pending after the restore");
    // The retry arrives before the answer: it waits for it.
    let s = split.cores[0].connect();
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"kept") };
    split.cores[0].send_as(s, id, body.clone(), &alice.auth());
    split.collect();
    assert!(split.cores[0].received_nothing(s, id));
    split.settle();
    assert_eq!(split.cores[0].response(s, id).body, ResponseBody::Sent(Sent { seq: 2 }));
    // Restored again after the answer, with nobody waiting: the answer was remembered.
    let id2 = send(&mut split, &User { session: s, ..alice_again(&alice) }, &bob, "second");
    split.cores[0].fail_over();
    split.settle();
    let s2 = split.cores[0].connect();
    let body2 = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"second") };
    split.cores[0].send_as(s2, id2, body2, &alice.auth());
    split.collect();
    assert!(split.table.is_empty(), "answered from the record, nothing mailed");
    assert_eq!(split.cores[0].response(s2, id2).body, ResponseBody::Sent(Sent { seq: 3 }));
    let texts: Vec<_> = messages(&split, &bob).into_iter().map(|(_, seq, t)| (seq, t)).collect();
    assert_eq!(texts, [(2, "kept".to_owned()), (3, "second".to_owned())], "each delivered once");
}

fn alice_again(alice: &User) -> User {
    User { name: alice.name.clone(), home: alice.home, session: alice.session, tokens: alice.tokens.clone() }
}

#[test]
fn a_pending_request_id_used_for_another_request_is_refused() {
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "x");
    let s = split.cores[0].connect();
    split.cores[0].send_as(s, id, CloseMp { peer: bob.name.clone() }, &alice.auth());
    assert_eq!(split.cores[0].code(s, id), status::CONFLICT);
    split.collect();
    assert_eq!(split.table.len(), 1, "only the send was mailed");
}

/// Crossing requests: the smaller name's wins at both homes, whichever
/// home it lives at.
#[test]
fn crossing_requests_leave_the_smaller_names_request() {
    for (first, second) in [("amy", "zed"), ("zed", "amy")] {
        let mut split = Split::new(2);
        let x = User::join(&mut split, 0, first);
        let y = User::join(&mut split, 1, second);
        let ix = request(&mut split, &x, &y);
        let iy = request(&mut split, &y, &x);
        split.settle();
        let (winner, loser, iw, il) = if x.name < y.name { (&x, &y, ix, iy) } else { (&y, &x, iy, ix) };
        assert_eq!(sent_seq(&split, winner, iw), (status::OK, 1));
        assert_eq!(split.cores[loser.home].code(loser.session, il), status::CONFLICT);
        assert_eq!(
            split.cores[loser.home].reason(loser.session, il),
            format!("{} already asked you: accept instead", winner.name)
        );
        let requested = Some(Conversation::Requested { by: winner.name.clone(), handshake: hs(&winner.name) });
        assert_eq!((copy(&split, &x, &y), copy(&split, &y, &x)), (requested.clone(), requested), "{first}/{second}");
        let requests = |u: &User| {
            split.cores[u.home].events(u.session).iter().filter(|e| matches!(e, EventBody::MpRequest(_))).count()
        };
        assert_eq!((requests(loser), requests(winner)), (1, 0), "only the winner's request was queued");
        // The loser accepts: the conversation opens.
        accept(&mut split, loser, winner);
        split.settle();
        assert_eq!((copy(&split, &x, &y), copy(&split, &y, &x)), (Some(Conversation::Open), Some(Conversation::Open)));
    }
}

#[test]
fn a_request_refused_at_the_peers_home_leaves_no_copy() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let nobody = split.user_of(1, "nobody");
    let ghost = User { name: nobody.clone(), home: 1, session: alice.session, tokens: alice.tokens.clone() };
    for _ in 0..2 {
        let id = request(&mut split, &alice, &ghost);
        split.settle();
        assert_eq!(split.cores[0].code(alice.session, id), status::NOT_FOUND, "not 409 the second time");
        assert_eq!(split.cores[0].reason(alice.session, id), format!("no user {nobody}"));
        assert_eq!(copy(&split, &alice, &ghost), None);
    }
}

#[test]
fn a_full_queue_at_the_peers_home_refuses_and_undoes_the_tentative_state() {
    let config = ServerConfig { queue_per_recipient: 1, ..config() };
    let mut split = Split::with(2, config);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let carol = User::join(&mut split, 1, "carol");
    // Bob's queue is full (carol's request, unacknowledged): alice's request is refused there.
    request(&mut split, &carol, &bob);
    let id = request(&mut split, &alice, &bob);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, id), status::QUEUE_FULL);
    assert_eq!(copy(&split, &alice, &bob), None);
    assert_eq!(copy(&split, &bob, &alice), None);
    // An acceptance refused by the requester's home (carol's queue there is full: alice's
    // request, unacknowledged) goes back to "requested", and may be accepted again later.
    let dave = User::join(&mut split, 0, "dave");
    request(&mut split, &carol, &dave);
    split.settle();
    let to_carol = request(&mut split, &alice, &carol);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, to_carol), status::OK);
    let id = accept(&mut split, &dave, &carol);
    split.settle();
    assert_eq!(split.cores[0].code(dave.session, id), status::QUEUE_FULL, "carol's queue is full");
    let requested = Some(Conversation::Requested { by: carol.name.clone(), handshake: hs(&carol.name) });
    assert_eq!(copy(&split, &dave, &carol), requested, "back to requested: dave may accept later");
    assert_eq!(copy(&split, &carol, &dave), requested);
    let ack = split.cores[1].send_auth(carol.session, DeliveryAck { peer: alice.name.clone(), seq: 1 }, &carol.auth());
    assert_eq!(split.cores[1].code(carol.session, ack), status::OK);
    let id = accept(&mut split, &dave, &carol);
    split.settle();
    assert_eq!(split.cores[0].code(dave.session, id), status::OK);
    let open = Some(Conversation::Open);
    assert_eq!((copy(&split, &dave, &carol), copy(&split, &carol, &dave)), (open.clone(), open));
}

#[test]
fn a_close_ends_this_homes_copy_at_once_and_the_peers_when_it_arrives() {
    let (mut split, alice, bob) = open_pair();
    let id = close(&mut split, &alice, &bob);
    assert_eq!(copy(&split, &alice, &bob), None, "at once");
    assert_eq!(copy(&split, &bob, &alice), Some(Conversation::Open), "not yet");
    split.settle();
    let r = split.cores[0].response(alice.session, id);
    assert_eq!((r.status, r.code, r.body), (Status::Finished, status::OK, ResponseBody::Sent(Sent { seq: 2 })));
    assert_eq!(copy(&split, &bob, &alice), None);
    assert!(
        split.cores[1]
            .events(bob.session)
            .iter()
            .any(|e| matches!(e, EventBody::MpClosed(c) if c.peer == alice.name && c.seq == 2))
    );
    // Closed: a send either way is refused (at home, nothing mailed).
    let refused = send(&mut split, &bob, &alice, "late");
    assert_eq!(split.cores[1].code(bob.session, refused), status::FORBIDDEN);
    assert!(split.table.is_empty());
}

#[test]
fn closing_from_both_sides_at_once_answers_both() {
    let (mut split, alice, bob) = open_pair();
    let a = close(&mut split, &alice, &bob);
    let b = close(&mut split, &bob, &alice);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, a), status::OK);
    assert_eq!(split.cores[1].code(bob.session, b), status::OK);
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (None, None));
    // Each closed it: neither is told the other did (on one server the second close is 404).
    for u in [&alice, &bob] {
        let closed = count_events(&split, u, |e| matches!(e, EventBody::MpClosed(_)));
        assert_eq!(closed, 0, "{}", u.name);
    }
    // And they may talk again.
    let id = request(&mut split, &alice, &bob);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, id), status::OK);
}

#[test]
fn a_message_sent_while_the_peer_closed_is_refused_by_the_peers_home() {
    let (mut split, alice, bob) = open_pair();
    // Bob closes; before his home's notice arrives, alice's copy is still open and she sends.
    close(&mut split, &bob, &alice);
    let id = send(&mut split, &alice, &bob, "too late");
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, id), status::FORBIDDEN);
    assert!(messages(&split, &bob).is_empty());
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (None, None));
}

#[test]
fn a_message_expired_at_the_peers_home_is_noticed_to_its_sender() {
    let config = ServerConfig { mp_retention: Duration::from_secs(120), ..config() };
    let mut split = Split::with(2, config);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    request(&mut split, &alice, &bob);
    split.settle();
    accept(&mut split, &bob, &alice);
    split.settle();
    split.cores[1].disconnect(bob.session);
    let id = send(&mut split, &alice, &bob, "never read");
    split.settle();
    assert_eq!(sent_seq(&split, &alice, id), (status::ACCEPTED, 2));
    split.cores[0].disconnect(alice.session);
    split.cores[1].advance(Duration::from_secs(200));
    split.collect();
    split.settle();
    assert_eq!(split.cores[1].server.state().lanes().queued_for(&bob.name), 0, "dropped at bob's home");
    assert_eq!(split.cores[0].server.state().lanes().notices(&alice.name), [(bob.name.clone(), 2)], "kept for alice");
    let (s, _) = split.cores[0].login(&alice.name);
    assert!(
        split.cores[0]
            .events(s)
            .iter()
            .any(|e| matches!(e, EventBody::MpExpired(x) if x.peer == bob.name && x.seq == 2))
    );
}

#[test]
fn a_peer_leaving_is_told_across_homes() {
    let (mut split, alice, bob) = open_pair();
    split.cores[1].disconnect(bob.session);
    split.settle();
    assert!(
        split.cores[0].events(alice.session).iter().any(|e| matches!(e, EventBody::PeerGone(g) if g.peer == bob.name))
    );
}

#[test]
fn pending_requests_of_one_login_are_bounded() {
    let (mut split, alice, bob) = open_pair();
    // One request per connection (a connection's later frames wait behind it).
    for _ in 0..MAX_PENDING {
        let s = split.cores[0].connect();
        split.cores[0].send_auth(s, SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"m") }, &alice.auth());
    }
    let s = split.cores[0].connect();
    let id =
        split.cores[0].send_auth(s, SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"m") }, &alice.auth());
    assert_eq!(split.cores[0].code(s, id), status::UNAVAILABLE);
    assert!(split.cores[0].reason(s, id).contains("of this login"));
    split.collect();
    assert_eq!(split.table.len(), MAX_PENDING, "the refused one was not mailed");
    split.settle();
    // Answered: room again, and the refusal was not remembered: the retry is performed.
    split.cores[0].send_as(s, id, SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"m") }, &alice.auth());
    split.collect();
    split.settle();
    let codes: Vec<u16> = split.cores[0].responses(s, id).iter().map(|r| r.code).collect();
    assert_eq!(codes, [status::UNAVAILABLE, status::OK]);
    assert_eq!(messages(&split, &bob).len(), MAX_PENDING + 1);
}

/// Random MP traffic between users of three homes, with mail delivered in
/// random rounds and homes restored at random: once everything settled,
/// the two copies of every conversation agree and none is tentative, every
/// message answered 200/202 reached its recipient exactly once and in
/// order, and nothing is left pending.
#[test]
fn random_traffic_across_homes_settles_into_agreeing_copies() {
    let mut delivered = 0;
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut split = Split::new(3);
        let mut users: Vec<User> = (0..3u8)
            .flat_map(|h| ["ann", "ben"].map(|p| (h, format!("{p}{h}"))))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(h, p)| User::join(&mut split, h, &p))
            .collect();
        let mut sent: Vec<(usize, usize, SessionId, u32, String)> = Vec::new();
        for step in 0..150 {
            let (i, j) = (rng.random_range(0..users.len()), rng.random_range(0..users.len()));
            if i == j {
                continue;
            }
            let text = format!("m{seed}-{step}");
            let (x, y) = (&users[i], &users[j]);
            // Mostly what the conversation's state (as x's home sees it) calls for, sometimes not.
            let roll = rng.random_range(0..20);
            match (roll, copy(&split, x, y)) {
                (1, _) => {
                    // x comes back on a new connection (replacing one perhaps held by a
                    // request on its way): it may act again before that request's answer.
                    users[i].session = split.cores[users[i].home].connect();
                }
                (0 | 2, _) => {
                    // A round of mail, or a takeover of a home (its users log in again).
                    if roll == 0 {
                        let home = rng.random_range(0..3);
                        split.cores[home].fail_over();
                        for u in users.iter_mut().filter(|u| u.home == home) {
                            let (s, t) = split.cores[home].login(&u.name);
                            (u.session, u.tokens) = (s, t);
                        }
                        split.collect();
                    } else {
                        split.deliver();
                    }
                }
                (3, _) => drop(close(&mut split, x, y)),
                (4, _) => drop(request(&mut split, x, y)),
                (_, None) => drop(request(&mut split, x, y)),
                (_, Some(Conversation::Requested { by, .. })) if by == y.name => drop(accept(&mut split, x, y)),
                _ => {
                    let id = send(&mut split, x, y, &text);
                    sent.push((i, j, x.session, id, text));
                }
            }
        }
        split.settle();
        for x in &users {
            for y in &users {
                if x.name == y.name {
                    continue;
                }
                let (cx, cy) = (copy(&split, x, y), copy(&split, y, x));
                assert!(
                    !matches!(cx, Some(Conversation::Requesting { .. } | Conversation::Accepting { .. })),
                    "seed {seed}: {} / {}: tentative after settling: {cx:?}",
                    x.name,
                    y.name
                );
                if x.home != y.home {
                    assert_eq!(cx, cy, "seed {seed}: the copies of {} / {} differ", x.name, y.name);
                }
            }
        }
        for core in &split.cores {
            assert_eq!(core.server.state().mail().pending_all().count(), 0, "seed {seed}: a request still pending");
        }
        // Every message answered 200/202 (to a session still there to hear it) is in its lane,
        // once; no message is in its lane twice.
        for (i, j, session, id, text) in &sent {
            let (x, y) = (&users[*i], &users[*j]);
            let lane = split.cores[y.home].server.state().lanes().lane(&x.name, &y.name);
            let copies = lane.into_iter().flat_map(|l| l.items.iter()).filter(|item| {
                matches!(&item.kind, crate::server::state::ItemKind::Message { sealed } if sealed == text.as_bytes())
            });
            assert!(copies.count() <= 1, "seed {seed}: {text} queued twice");
            let Some(r) = split.cores[x.home].received(*session).iter().find_map(|m| match m {
                crate::wire::Message::Response(r) if r.request_id == *id => Some(r.clone()),
                _ => None,
            }) else {
                continue;
            };
            let ResponseBody::Sent(Sent { seq }) = r.body else { continue };
            let lane = split.cores[y.home].server.state().lanes().lane(&x.name, &y.name);
            let found: Vec<_> = lane
                .into_iter()
                .flat_map(|l| l.items.iter())
                .filter(|item| matches!(&item.kind, crate::server::state::ItemKind::Message { sealed } if sealed == text.as_bytes()))
                .map(|item| item.seq)
                .collect();
            assert_eq!(found, [seq], "seed {seed}: {text} of {} to {}", x.name, y.name);
            delivered += 1;
        }
    }
    assert!(delivered > 2_000, "only {delivered} messages got through: the test tests little");
}

/// Each partition holds its share of the server-wide queue: `queue_total`
/// 4 over two partitions is 2 items at each home.
#[test]
fn the_server_wide_queue_is_shared_between_partitions() {
    let config = ServerConfig { queue_total: 4, queue_per_recipient: 4, ..config() };
    let mut split = Split::with(2, config);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let carol = User::join(&mut split, 1, "carol");
    let ids = [request(&mut split, &alice, &bob), request(&mut split, &alice, &carol)];
    split.settle();
    assert_eq!(ids.map(|id| split.cores[0].code(alice.session, id)), [status::OK, status::OK]);
    let dave = User::join(&mut split, 1, "dave");
    let id = request(&mut split, &alice, &dave);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, id), status::QUEUE_FULL, "home 1 holds its 2");
    // Home 0's share is its own: bob's request to alice is queued there.
    let id = request(&mut split, &bob, &alice);
    split.settle();
    assert_eq!(split.cores[1].code(bob.session, id), status::CONFLICT, "alice already asked bob");
    let id = request(&mut split, &dave, &alice);
    split.settle();
    assert_eq!(split.cores[1].code(dave.session, id), status::OK);
}

/// Attacker review, finding 1: both close, then one asks again before the
/// other's close arrived. The other's close is about the conversation both
/// ended: it must not end the new request, nor tell its sender "closed".
#[test]
fn a_close_that_predates_a_new_request_leaves_it_alone() {
    let (mut split, alice, bob) = open_pair();
    close(&mut split, &alice, &bob);
    close(&mut split, &bob, &alice);
    // Alice comes back on a new connection (the held one is replaced) and asks again.
    let session = split.cores[0].connect();
    let alice = User { session, ..alice };
    let id = request(&mut split, &alice, &bob);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, id), status::OK);
    let requested = Some(Conversation::Requested { by: alice.name.clone(), handshake: hs(&alice.name) });
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (requested.clone(), requested));
    let closed = count_events(&split, &alice, |e| matches!(e, EventBody::MpClosed(_)));
    assert_eq!(closed, 0, "no stale close notice for alice's new request");
    accept(&mut split, &bob, &alice);
    split.settle();
    let open = Some(Conversation::Open);
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (open.clone(), open));
}

/// A request on its way cannot be taken back before its answer: its fate
/// is decided at the peer's home, which may let it win over the peer's own
/// crossing request (found by the seeded test: a request closed while
/// tentative made the crossing rule's prediction wrong, and the copies
/// disagreed). Closed once answered, it ends at both homes.
#[test]
fn a_request_on_its_way_is_closed_only_once_answered() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    request(&mut split, &bob, &alice);
    let session = split.cores[1].connect();
    let bob = User { session, ..bob };
    let id = close(&mut split, &bob, &alice);
    assert_eq!(split.cores[1].code(bob.session, id), status::CONFLICT);
    assert!(split.cores[1].reason(bob.session, id).contains("on its way"));
    // Alice asks him meanwhile: hers wins (the smaller name), his is refused.
    let ia = request(&mut split, &alice, &bob);
    split.settle();
    assert_eq!(split.cores[0].code(alice.session, ia), status::OK);
    let requested = Some(Conversation::Requested { by: alice.name.clone(), handshake: hs(&alice.name) });
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (requested.clone(), requested));
    // Bob refuses hers by closing: both copies end, and alice is told.
    let id = close(&mut split, &bob, &alice);
    split.settle();
    assert_eq!(split.cores[1].code(bob.session, id), status::OK);
    assert_eq!((copy(&split, &alice, &bob), copy(&split, &bob, &alice)), (None, None));
    let closed = count_events(&split, &alice, |e| matches!(e, EventBody::MpClosed(_)));
    assert_eq!(closed, 1);
}

/// Finding 2: closes cannot queue at the peer's home what its caps would
/// refuse, nor for users who do not exist: a request on its way cannot be
/// closed, and a refused one leaves nothing to close.
#[test]
fn closes_queue_nothing_for_a_refused_request() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let nobody = split.user_of(1, "nobody");
    let ghost = User { name: nobody, home: 1, session: alice.session, tokens: alice.tokens.clone() };
    request(&mut split, &alice, &ghost);
    let session = split.cores[0].connect();
    let alice = User { session, ..alice };
    let id = close(&mut split, &alice, &ghost);
    assert_eq!(split.cores[0].code(alice.session, id), status::CONFLICT);
    split.settle();
    let id = close(&mut split, &alice, &ghost);
    assert_eq!(split.cores[0].code(alice.session, id), status::NOT_FOUND);
    split.settle();
    assert_eq!(split.cores[1].server.state().lanes().queued_total(), 0);
    assert_eq!(split.cores[1].server.state().lanes().lane(&alice.name, &ghost.name), None);
}

/// Finding 6: an answer of the wrong kind for a pending MP request (here a
/// key, as a hostile or broken partition might send) is refused as such,
/// never handed to the client as a success, and settles the request.
#[test]
fn an_answer_of_the_wrong_kind_is_no_success() {
    use crate::server::{MailItem, ServerLog};
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "x");
    let (&(_, _, ticket), _) = split.table.iter().next().expect("the send");
    let wrong = MailItem::KeyFound { ticket, username: bob.name.clone(), identity_key: Bytes::from_static(b"k") };
    let seq = split.cores[0].server.mail_applied_from(1) + 1;
    let now = split.cores[0].now;
    assert_eq!(split.cores[0].server.handle_mail(now, 1, seq, &wrong.encode()), crate::server::MailOutcome::Applied);
    split.cores[0].pump();
    forget_injected(&mut split);
    assert_eq!(split.cores[0].code(alice.session, id), status::INTERNAL);
    assert!(split.cores[0].server.state().mail().pending_all().next().is_none(), "settled");
    assert!(split.cores[0].logs.iter().any(|l| matches!(l, ServerLog::BadMail { .. })));
    // A queued answer with a code other than 200/202 is no success either.
    let id = send(&mut split, &alice_again(&alice), &bob, "y");
    let ticket = split.cores[0].server.state().mail().pending_all().next().map(|((_, t), _)| *t).expect("pending");
    let odd = MailItem::MpQueued { ticket, code: status::CREATED, seq: 7 };
    assert_eq!(split.cores[0].server.handle_mail(now, 1, seq + 1, &odd.encode()), crate::server::MailOutcome::Applied);
    split.cores[0].pump();
    forget_injected(&mut split);
    assert_eq!(split.cores[0].code(alice.session, id), status::INTERNAL);
    // A notice must name a user of its source as the one who left (or whose message expired).
    let carol = User::join(&mut split, 0, "carol");
    let forged = MailItem::PeerGone { ticket: 0, peer: carol.name.clone(), users: vec![alice.name.clone()] };
    let before = split.cores[0].events(alice.session).len();
    assert_eq!(
        split.cores[0].server.handle_mail(now, 1, seq + 2, &forged.encode()),
        crate::server::MailOutcome::Applied
    );
    split.cores[0].pump();
    forget_injected(&mut split);
    assert_eq!(split.cores[0].events(alice.session).len(), before, "carol does not live at partition 1");
}

/// The `MailIn`s of items a test gave core 0 itself, which the modelled
/// table never held.
fn forget_injected(split: &mut Split) {
    split.cores[0].mail.retain(|c| !matches!(c, crate::server::Change::MailIn { .. }));
}

/// The peer's home does not answer within 30 s: the request is still on
/// its way, so the session is answered 504 (not a refusal: the outcome is
/// not known yet) and goes on; the same request again waits for the answer
/// and learns the outcome, performed once.
#[test]
fn a_request_unanswered_within_30_s_is_504_and_its_retry_learns_the_outcome() {
    let (mut split, alice, bob) = open_pair();
    let id = send(&mut split, &alice, &bob, "slow");
    split.cores[0].advance(crate::server::mailbox::WAIT_FOR_ANSWER);
    assert_eq!(split.cores[0].code(alice.session, id), status::OUTCOME_PENDING);
    assert!(split.cores[0].reason(alice.session, id).contains("same request id"));
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"slow") };
    split.cores[0].send_as(alice.session, id, body, &alice.auth());
    split.collect();
    assert_eq!(split.table.len(), 1, "not mailed again");
    split.settle();
    let answers = split.cores[0].responses(alice.session, id);
    assert_eq!(answers.len(), 2);
    assert_eq!((answers[1].code, &answers[1].body), (status::OK, &ResponseBody::Sent(Sent { seq: 2 })));
    assert_eq!(messages(&split, &bob).len(), 1, "performed once");
}

/// Second review, finding 1: crossing requests while the loser's queue is
/// full. The winner's request is queued anyway (it takes the place of the
/// loser's own: one item for the pair), since the loser is told to accept it.
#[test]
fn the_winner_of_crossing_requests_is_queued_even_at_a_full_queue() {
    let config = ServerConfig { queue_per_recipient: 1, ..config() };
    let mut split = Split::with(2, config);
    let ann = User::join(&mut split, 0, "ann");
    let ben = User::join(&mut split, 1, "ben");
    let cy = User::join(&mut split, 1, "cy");
    request(&mut split, &cy, &ben);
    assert_eq!(split.cores[1].server.state().lanes().queued_for(&ben.name), 1, "ben's queue is full");
    let ib = request(&mut split, &ben, &ann);
    let ia = request(&mut split, &ann, &ben);
    split.settle();
    assert_eq!(split.cores[0].code(ann.session, ia), status::OK);
    assert_eq!(split.cores[1].reason(ben.session, ib), format!("{} already asked you: accept instead", ann.name));
    let requested = Some(Conversation::Requested { by: ann.name.clone(), handshake: hs(&ann.name) });
    assert_eq!((copy(&split, &ann, &ben), copy(&split, &ben, &ann)), (requested.clone(), requested));
    let id = accept(&mut split, &ben, &ann);
    split.settle();
    assert_eq!(split.cores[1].code(ben.session, id), status::OK, "there was a request to accept");
}

/// Second review, finding 2: a request sent again while on its way (after
/// a 504) is answered when its outcome is known, and does not hold the
/// connection's later frames meanwhile.
#[test]
fn a_request_sent_again_while_on_its_way_holds_nothing_behind_it() {
    let (mut split, alice, bob) = open_pair();
    let carol = User::join(&mut split, 0, "carol");
    let id = send(&mut split, &alice, &bob, "slow");
    split.cores[0].advance(crate::server::mailbox::WAIT_FOR_ANSWER);
    assert_eq!(split.cores[0].code(alice.session, id), status::OUTCOME_PENDING);
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"slow") };
    split.cores[0].send_as(alice.session, id, body, &alice.auth());
    let later = split.cores[0].send_auth(alice.session, FetchKey { username: carol.name.clone() }, &alice.auth());
    assert_eq!(split.cores[0].code(alice.session, later), status::OK, "not held behind the retry");
    // Still nothing from bob's home for 30 s more: 504 again, and the connection went on.
    split.cores[0].advance(crate::server::mailbox::WAIT_FOR_ANSWER);
    let codes =
        |split: &Split| -> Vec<u16> { split.cores[0].responses(alice.session, id).iter().map(|r| r.code).collect() };
    assert_eq!(codes(&split), [status::OUTCOME_PENDING, status::OUTCOME_PENDING]);
    split.settle();
    assert_eq!(codes(&split), [status::OUTCOME_PENDING, status::OUTCOME_PENDING], "nobody waits now");
    let body = SendMp { peer: bob.name.clone(), sealed: Bytes::from_static(b"slow") };
    split.cores[0].send_as(alice.session, id, body, &alice.auth());
    assert_eq!(codes(&split)[2], status::OK, "the remembered outcome");
    assert_eq!(messages(&split, &bob).len(), 1);
}

/// Second review, finding 5: the bound on requests in flight counts the
/// remembered ones after a restore too.
#[test]
fn requests_in_flight_are_counted_after_a_restore() {
    let (mut split, alice, bob) = open_pair();
    for _ in 0..3 {
        let session = split.cores[0].connect();
        send(&mut split, &User { session, ..alice_again(&alice) }, &bob, "x");
    }
    assert_eq!(split.cores[0].server.in_flight(), 3);
    split.cores[0].fail_over();
    assert_eq!(split.cores[0].server.in_flight(), 3, "durable: still counted");
    split.settle();
    assert_eq!(split.cores[0].server.in_flight(), 0);
}

/// Second review, finding 7: as on one server, only the peers of an open
/// conversation hear that one left.
#[test]
fn a_peer_leaving_is_not_told_to_one_who_closed_meanwhile() {
    let (mut split, alice, bob) = open_pair();
    close(&mut split, &alice, &bob);
    // Bob leaves before alice's close reached his home: his home still sees it open.
    split.cores[1].disconnect(bob.session);
    split.settle();
    let gone = count_events(&split, &alice, |e| matches!(e, EventBody::PeerGone(_)));
    assert_eq!(gone, 0);
}
