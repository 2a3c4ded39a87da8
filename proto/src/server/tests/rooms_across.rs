//! Rooms of a split state (docs/PARTITIONS.md, "Rooms"): a room lives at
//! its home; members of other homes reach it by mail, and its messages
//! reach their online sessions by mail.

use bytes::Bytes;

use super::split::{Split, User};
use crate::server::{MailItem, ServerLog, SessionId};
use crate::wire::{
    CreateRoom, DeleteRoom, EventBody, JoinRoom, LeaveRoom, Message, RequestBody, ResponseBody, RoomHistory, RoomInfo,
    SendRoom, Sent, status,
};

const VERIFIER: &[u8] = b"0123456789abcdef";

impl User {
    /// The room messages this user's session received: (room, from, seq, text).
    fn room_messages(&self, split: &Split) -> Vec<(String, String, u64, String)> {
        let events = split.cores[self.home].events(self.session).into_iter();
        let messages = events.filter_map(|e| match e {
            EventBody::RoomMessage(m) => Some((m.room, m.from, m.seq, String::from_utf8_lossy(&m.sealed).into_owned())),
            _ => None,
        });
        messages.collect()
    }
}

/// A room name whose home is `home`.
fn room_of(split: &Split, home: u8, prefix: &str) -> String {
    let p = split.parts();
    (0..).map(|i| format!("{prefix}{i}")).find(|n| p.home_of_room(n) == home).expect("some name")
}

/// Two homes: bob (1) owns a room of his home, which alice (0) joined.
fn hall(config: crate::server::ServerConfig) -> (Split, User, User, String) {
    let mut split = Split::with(2, config);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let room = room_of(&split, 1, "hall");
    bob.ask(&mut split, create(&room));
    alice.ask(&mut split, join(&room));
    split.settle();
    (split, alice, bob, room)
}

fn create(room: &str) -> CreateRoom {
    CreateRoom { room: room.into(), verifier: Bytes::from_static(VERIFIER), descriptor: Bytes::from_static(b"d") }
}

fn join(room: &str) -> JoinRoom {
    JoinRoom { room: room.into(), verifier: Bytes::from_static(VERIFIER) }
}

fn say(room: &str, text: &str) -> SendRoom {
    SendRoom { room: room.into(), sealed: Bytes::from(text.to_owned()) }
}

/// Three homes: alice (0) creates a room of home 1, where bob lives;
/// carol (2) joins; messages reach every other online member.
#[test]
fn a_room_of_another_home_is_used_from_three_homes() {
    let mut split = Split::new(3);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let carol = User::join(&mut split, 2, "carol");
    let room = room_of(&split, 1, "hall");
    let id = alice.ask(&mut split, create(&room));
    assert!(split.cores[0].received_nothing(alice.session, id), "decided at the room's home");
    split.settle();
    assert_eq!(alice.code(&split, id), status::CREATED);
    assert!(split.cores[1].server.state().room(&room).is_some(), "the room lives at its home");
    assert!(split.cores[0].server.state().room(&room).is_none());
    let (jb, jc) = (bob.ask(&mut split, join(&room)), carol.ask(&mut split, join(&room)));
    split.settle();
    assert_eq!((bob.code(&split, jb), carol.code(&split, jc)), (status::OK, status::OK));
    let id = alice.ask(&mut split, say(&room, "hello"));
    split.settle();
    assert_eq!(split.cores[0].response(alice.session, id).body, ResponseBody::Sent(Sent { seq: 1 }));
    let hello = (room.clone(), alice.name.clone(), 1, "hello".to_owned());
    assert_eq!(bob.room_messages(&split), std::slice::from_ref(&hello), "bob lives at the room's home");
    assert_eq!(carol.room_messages(&split), [hello], "carol's home got it by mail");
    assert!(alice.room_messages(&split).is_empty(), "not to its sender");
    // The history, asked from another home.
    let id = carol.ask(&mut split, RoomHistory { room: room.clone() });
    split.settle();
    match split.cores[2].response(carol.session, id).body {
        ResponseBody::History(h) => assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]),
        other => panic!("expected the history, got {other:?}"),
    }
    let id = carol.ask(&mut split, RoomInfo { room: room.clone() });
    split.settle();
    assert_eq!(carol.code(&split, id), status::OK);
    // Carol leaves: no more messages for her; the owner deletes it from its home.
    let id = carol.ask(&mut split, LeaveRoom { room: room.clone() });
    split.settle();
    assert_eq!(carol.code(&split, id), status::OK);
    bob.ask(&mut split, say(&room, "bye"));
    split.settle();
    assert_eq!(carol.room_messages(&split).len(), 1);
    assert_eq!(alice.room_messages(&split).len(), 1, "alice is a member of another home");
    let id = bob.ask(&mut split, DeleteRoom { room: room.clone() });
    split.settle();
    assert_eq!(bob.code(&split, id), status::FORBIDDEN, "only its owner");
    let id = alice.ask(&mut split, DeleteRoom { room: room.clone() });
    split.settle();
    assert_eq!(alice.code(&split, id), status::OK);
    assert!(split.cores[1].server.state().room(&room).is_none());
}

/// The room's home refuses as one server does, and its refusals reach the
/// client as they are: wrong password, no such room, not a member.
#[test]
fn refusals_of_the_rooms_home_reach_the_client() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let room = room_of(&split, 1, "hall");
    let id = alice.ask(&mut split, join(&room));
    split.settle();
    assert_eq!(alice.code(&split, id), status::NOT_FOUND);
    assert_eq!(split.cores[0].reason(alice.session, id), format!("no room {room}"));
    let bob = User::join(&mut split, 1, "bob");
    bob.ask(&mut split, create(&room));
    let wrong = JoinRoom { room: room.clone(), verifier: Bytes::from_static(b"fedcba9876543210") };
    let id = alice.ask(&mut split, wrong);
    split.settle();
    assert_eq!(alice.code(&split, id), status::FORBIDDEN);
    assert_eq!(split.cores[0].reason(alice.session, id), "wrong room password");
    let id = alice.ask(&mut split, say(&room, "x"));
    split.settle();
    assert_eq!(alice.code(&split, id), status::FORBIDDEN, "not a member");
}

/// A member's join and message reach the room's home in the order its
/// home mailed them, even when both leave before either is answered (the
/// session's later frames wait behind the first: one FIFO).
#[test]
fn a_join_and_a_message_keep_their_order() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let room = room_of(&split, 1, "hall");
    bob.ask(&mut split, create(&room));
    let j = alice.ask(&mut split, join(&room));
    let s = alice.ask(&mut split, say(&room, "first"));
    split.settle();
    assert_eq!((alice.code(&split, j), alice.code(&split, s)), (status::OK, status::OK));
    assert_eq!(bob.room_messages(&split).len(), 1);
}

/// `send_room` is remembered: a retry while it is on its way waits for the
/// same answer and posts nothing twice, after a restore of the asking home
/// too.
#[test]
fn a_retried_room_message_is_posted_once() {
    let (mut split, alice, bob, room) = hall(super::config());
    let id = alice.ask(&mut split, say(&room, "once"));
    split.cores[0].fail_over();
    let session = split.cores[0].connect();
    let alice = User { session, ..alice };
    split.cores[0].send_as(alice.session, id, say(&room, "once"), alice.tokens.access_token.as_bytes());
    split.collect();
    assert_eq!(split.table.len(), 1, "not mailed again");
    split.settle();
    assert_eq!(split.cores[0].response(alice.session, id).body, ResponseBody::Sent(Sent { seq: 1 }));
    let history = &split.cores[1].server.state().room(&room).expect("the room").history;
    assert_eq!(history.len(), 1, "posted once");
    assert_eq!(bob.room_messages(&split).len(), 1);
}

/// A member of another home offline when a message is posted is not
/// pushed anything; it finds the message in the history, as on one server.
#[test]
fn an_offline_member_of_another_home_finds_the_message_in_the_history() {
    let (mut split, alice, bob, room) = hall(super::config());
    split.cores[0].disconnect(alice.session);
    bob.ask(&mut split, say(&room, "while away"));
    split.settle();
    let (session, tokens) = split.cores[0].login(&alice.name);
    let alice = User { session, tokens, ..alice };
    assert!(alice.room_messages(&split).is_empty());
    let id = alice.ask(&mut split, join(&room));
    split.settle();
    match split.cores[0].response(alice.session, id).body {
        ResponseBody::RoomJoined(j) => assert_eq!(j.history.len(), 1),
        other => panic!("expected the room, got {other:?}"),
    }
}

/// Hostile or broken mail: a forwarded frame that is not a room request,
/// a request for a room of another home, and pushes that are not room
/// messages of the source's rooms or name users of other homes.
#[test]
fn forwarded_frames_and_pushes_are_checked() {
    let mut split = Split::new(3);
    let alice = User::join(&mut split, 0, "alice");
    let room = room_of(&split, 1, "hall");
    let other = room_of(&split, 2, "hall");
    let request = |body: RequestBody| {
        Message::Request(crate::wire::Request { request_id: 1, timestamp_ms: 0, body }).to_bytes(b"")
    };
    let cases = [
        (request(crate::wire::FetchKey { username: alice.name.clone() }.into()), status::BAD_REQUEST),
        (Bytes::from_static(b"not a frame"), status::BAD_REQUEST),
        (request(create(&other).into()), status::INTERNAL),
    ];
    let core = &mut split.cores[1];
    let now = core.now;
    for (i, (frame, code)) in cases.into_iter().enumerate() {
        let ticket = 100 + i as u64;
        let item = MailItem::Forward { ticket, user: alice.name.clone(), frame };
        let seq = core.server.mail_applied_from(0) + 1;
        assert_eq!(core.server.handle_mail(now, 0, seq, &item.encode()), crate::server::MailOutcome::Applied);
        core.pump();
        let answer = core.mail.iter().rev().find_map(|c| match c {
            crate::server::Change::MailOut { item, .. } => MailItem::decode(item).ok(),
            _ => None,
        });
        assert!(
            matches!(answer, Some(MailItem::Refused { ticket: t, code: c, .. }) if t == ticket && c == code),
            "{answer:?}"
        );
    }
    assert!(split.cores[1].server.state().room(&other).is_none(), "nothing made");
    // Pushes: a frame that is no room message, a room of another home, a user of another home.
    let event = |room: &str| {
        let m = crate::wire::RoomMessage {
            room: room.into(),
            from: "x".into(),
            seq: 1,
            sent_ms: 0,
            sealed: Bytes::from_static(b"s"),
        };
        Message::Event(crate::wire::Event { request_id: 0, timestamp_ms: 0, body: m.into() }).to_bytes(b"")
    };
    let bob = split.user_of(1, "bob");
    let pushes = [
        (vec![alice.name.clone()], Bytes::from_static(b"garbage")),
        (vec![alice.name.clone()], event(&other)),
        (vec![bob], event(&room)),
    ];
    let core = &mut split.cores[0];
    for (i, (users, frame)) in pushes.into_iter().enumerate() {
        let seq = core.server.mail_applied_from(1) + 1;
        let item = MailItem::RoomPush { ticket: i as u64, users, frame };
        assert_eq!(core.server.handle_mail(now, 1, seq, &item.encode()), crate::server::MailOutcome::Applied);
        core.pump();
    }
    let bad = split.cores[0].logs.iter().filter(|l| matches!(l, ServerLog::BadMail { .. })).count();
    assert_eq!(bad, 3);
    assert!(alice.room_messages(&split).is_empty(), "nothing pushed");
}

/// Review, finding 1: with no history kept (`room_history` 0), members of
/// other homes still get the message live, as on one server.
#[test]
fn without_a_history_members_of_other_homes_still_get_the_message() {
    let (mut split, alice, bob, room) = hall(crate::server::ServerConfig { room_history: 0, ..super::config() });
    bob.ask(&mut split, say(&room, "live"));
    split.settle();
    assert_eq!(alice.room_messages(&split).len(), 1);
}

/// Review, finding 2: a room request's pending record is not an MP
/// request's: its refusal leaves alone a conversation with a user named
/// like the room whose tentative state has the same ticket (tickets are
/// numbered per target partition).
#[test]
fn a_refused_room_message_leaves_a_conversation_alone() {
    let mut split = Split::new(3);
    let alice = User::join(&mut split, 0, "alice");
    // A user of home 1 whose name, as a room's, lives at home 2.
    let p = split.parts();
    let name = (0..).map(|i| format!("bob{i}")).find(|n| p.home_of_user(n) == 1 && p.home_of_room(n) == 2).unwrap();
    let (_, _, _) = split.join(&name);
    let body = crate::wire::RequestMp { peer: name.clone(), handshake: Bytes::from_static(b"hs") };
    alice.ask(&mut split, body);
    let tentative = split.cores[0].server.state().conversation(&alice.name, &name).cloned();
    assert!(matches!(tentative, Some(crate::server::state::Conversation::Requesting { ticket: 1, .. })));
    // On a new connection, a message to the room named like him (home 2, the first item there).
    let alice = User { session: split.cores[0].connect(), ..alice };
    let id = alice.ask(&mut split, say(&name, "x"));
    // The room's home (a build that cannot read the request, say) refuses it, before bob's
    // home answered alice's request.
    split.table.remove(&(0, 2, 1)).expect("the room request");
    let refused = MailItem::Refused { ticket: 1, code: status::NOT_IMPLEMENTED, reason: "unknown kind".into() };
    let core = &mut split.cores[0];
    let now = core.now;
    assert_eq!(core.server.handle_mail(now, 2, 1, &refused.encode()), crate::server::MailOutcome::Applied);
    core.pump();
    core.mail.retain(|c| !matches!(c, crate::server::Change::MailIn { .. }));
    assert_eq!(alice.code(&split, id), status::NOT_IMPLEMENTED);
    split.settle();
    let copy = split.cores[0].server.state().conversation(&alice.name, &name).cloned();
    assert!(matches!(copy, Some(crate::server::state::Conversation::Requested { .. })), "{copy:?}");
}

/// Review, finding 3: an answer of the wrong kind for a waiting request is
/// no success: a response frame for a `fetch_key`, a key for a room request.
#[test]
fn answers_of_the_wrong_kind_reach_no_waiter_as_a_success() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = split.user_of(1, "bob");
    split.join(&bob);
    let room = room_of(&split, 1, "hall");
    let fetch = alice.ask(&mut split, crate::wire::FetchKey { username: bob.clone() });
    let (&(_, _, ticket), _) = split.table.iter().next().expect("the request");
    let frame = Message::Response(crate::wire::Response {
        opcode: crate::wire::Opcode::FetchKey,
        request_id: 0,
        timestamp_ms: 0,
        status: crate::wire::Status::Valid,
        code: status::OK,
        body: ResponseBody::IdentityKey(crate::wire::IdentityKey {
            username: "mallory".into(),
            identity_key: Bytes::new(),
        }),
    })
    .to_bytes(b"");
    let core = &mut split.cores[0];
    let now = core.now;
    let seq = core.server.mail_applied_from(1) + 1;
    assert_eq!(
        core.server.handle_mail(now, 1, seq, &MailItem::Replied { ticket, frame }.encode()),
        crate::server::MailOutcome::Applied
    );
    core.pump();
    assert_eq!(split.cores[0].code(alice.session, fetch), status::INTERNAL);
    split.cores[0].mail.retain(|c| !matches!(c, crate::server::Change::MailIn { .. }));
    split.table.clear();
    // A key for a room request.
    let info = alice.ask(&mut split, RoomInfo { room: room.clone() });
    let (&(_, _, ticket), _) = split.table.iter().next().expect("the request");
    let key = MailItem::KeyFound { ticket, username: room.clone(), identity_key: Bytes::new() };
    let core = &mut split.cores[0];
    assert_eq!(core.server.handle_mail(now, 1, seq + 1, &key.encode()), crate::server::MailOutcome::Applied);
    core.pump();
    assert_eq!(split.cores[0].code(alice.session, info), status::INTERNAL);
    // A response of the right opcode whose success code is no success code.
    split.cores[0].mail.retain(|c| !matches!(c, crate::server::Change::MailIn { .. }));
    split.table.clear();
    let info = alice.ask(&mut split, RoomInfo { room: room.clone() });
    let (&(_, _, ticket), _) = split.table.iter().next().expect("the request");
    let frame = Message::Response(crate::wire::Response {
        opcode: crate::wire::Opcode::RoomInfo,
        request_id: 0,
        timestamp_ms: 0,
        status: crate::wire::Status::Valid,
        code: status::CONFLICT,
        body: ResponseBody::RoomDescriptor(crate::wire::RoomDescribed { descriptor: Bytes::from_static(b"d") }),
    })
    .to_bytes(b"");
    let core = &mut split.cores[0];
    let replied = MailItem::Replied { ticket, frame };
    assert_eq!(core.server.handle_mail(now, 1, seq + 2, &replied.encode()), crate::server::MailOutcome::Applied);
    core.pump();
    assert_eq!(split.cores[0].code(alice.session, info), status::INTERNAL);
}

/// Review, finding 4: requests whose answers are not remembered count
/// against the login's bound too (its sessions end, its requests stay).
#[test]
fn unremembered_requests_of_one_login_are_bounded() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let room = room_of(&split, 1, "hall");
    let mut alice = alice;
    for _ in 0..crate::server::MAX_PENDING {
        alice.session = split.cores[0].connect();
        alice.ask(&mut split, RoomInfo { room: room.clone() });
    }
    alice.session = split.cores[0].connect();
    let id = alice.ask(&mut split, RoomInfo { room: room.clone() });
    assert_eq!(alice.code(&split, id), status::UNAVAILABLE);
    assert!(split.cores[0].reason(alice.session, id).contains("of this login"));
}

/// Review, finding 5: a room message too large for the room's history is
/// refused at the sender's home, before anything is mailed.
#[test]
fn a_room_message_too_large_is_refused_at_home() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let room = room_of(&split, 1, "hall");
    let budget = split.cores[0].server.config().room_history_budget();
    let big = SendRoom { room: room.clone(), sealed: Bytes::from(vec![7; budget]) };
    let id = alice.ask(&mut split, big);
    assert_eq!(alice.code(&split, id), status::TOO_LARGE);
    assert!(split.table.is_empty(), "nothing mailed");
}

/// Random room traffic between six users of three homes over two rooms of
/// two homes, with random mail rounds, reconnections (after which a client
/// sends its last message again, same id) and takeovers: once
/// settled, nothing is pending, every message answered 200 is in its room's
/// history once with the answered number, and no message is there twice.
#[test]
fn random_room_traffic_posts_each_answered_message_once() {
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng};
    let config = crate::server::ServerConfig { room_history: 10_000, ..super::config() };
    let mut posted = 0;
    for seed in 0..100u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut split = Split::with(3, config.clone());
        let mut users: Vec<User> = (0..3u8)
            .flat_map(|h| [(h, "ann"), (h, "ben")])
            .map(|(h, p)| User::join(&mut split, h, &format!("{p}{h}x")))
            .collect();
        let rooms = [room_of(&split, 1, "hall"), room_of(&split, 2, "den")];
        users[0].ask(&mut split, create(&rooms[0]));
        users[0].ask(&mut split, create(&rooms[1]));
        split.settle();
        // (room, sender's home, session, request id, text, sender)
        let mut sent: Vec<(usize, usize, SessionId, u32, String, usize)> = Vec::new();
        for step in 0..120 {
            let (u, r) = (rng.random_range(0..users.len()), rng.random_range(0..2));
            let room = rooms[r].clone();
            match rng.random_range(0..12) {
                0 => {
                    let home = rng.random_range(0..3);
                    split.cores[home].fail_over();
                    // Its users come back with their tokens (the same logins: their retries
                    // are recognised).
                    for user in users.iter_mut().filter(|x| x.home == home) {
                        user.session = split.cores[home].connect();
                    }
                    split.collect();
                }
                1 => {
                    // A reconnection, and the client sends its last message again, same id.
                    users[u].session = split.cores[users[u].home].connect();
                    if let Some((r, _, _, id, text, _)) =
                        sent.iter().rev().find(|x| x.1 == users[u].home && x.5 == u).cloned()
                    {
                        let (user, body) = (&users[u], say(&rooms[r], &text));
                        split.cores[user.home].send_as(user.session, id, body, user.tokens.access_token.as_bytes());
                        split.collect();
                        let again = (r, user.home, user.session, id, text, u);
                        sent.push(again);
                    }
                }
                2..=3 => drop(split.deliver()),
                4..=5 => drop(users[u].ask(&mut split, join(&room))),
                6 => drop(users[u].ask(&mut split, LeaveRoom { room })),
                _ => {
                    let text = format!("s{seed}-{step}");
                    let id = users[u].ask(&mut split, say(&room, &text));
                    sent.push((r, users[u].home, users[u].session, id, text, u));
                }
            }
        }
        split.settle();
        for core in &split.cores {
            assert_eq!(core.server.state().mail().pending_all().count(), 0, "seed {seed}: pending left");
        }
        for (r, sender_home, session, id, text, _) in &sent {
            let home = usize::from(split.parts().home_of_room(&rooms[*r]));
            let history = &split.cores[home].server.state().room(&rooms[*r]).expect("the room").history;
            let found: Vec<u64> = history.iter().filter(|e| e.sealed == text.as_bytes()).map(|e| e.seq).collect();
            assert!(found.len() <= 1, "seed {seed}: {text} posted twice");
            let answers = split.cores[*sender_home].responses(*session, *id);
            if let Some(ResponseBody::Sent(Sent { seq })) = answers.last().map(|a| a.body.clone()) {
                assert_eq!(found, [seq], "seed {seed}: {text}");
                posted += 1;
            }
        }
    }
    assert!(posted > 500, "only {posted} messages answered 200: the test tests little");
}
