//! The bound on the mail waiting at one target (`MAIL_PER_TARGET`,
//! docs/PARTITIONS.md, "Mail"): past it, requests to that target are
//! refused 503 (recorded nowhere) and room pushes to it dropped; answers
//! and notices are mailed whatever the backlog.

use bytes::Bytes;

use super::split::{Split, User};
use crate::server::{MAIL_PER_TARGET, ServerLog};
use crate::wire::{
    CreateRoom, ErrorBody, EventBody, FetchKey, JoinRoom, RequestMp, ResponseBody, RoomHistory, SendRoom, status,
};

fn key_of(split: &mut Split, user: &User, of: &User) -> u32 {
    user.ask(split, FetchKey { username: of.name.clone() })
}

/// A room name whose home is `home`.
fn room_of(split: &Split, home: u8) -> String {
    let p = split.parts();
    (0..).map(|i| format!("hall{i}")).find(|n| p.home_of_room(n) == home).expect("some name")
}

/// Requests to a partition far behind on this one's mail are refused 503
/// with a wait, nothing mailed and nothing recorded: once the runtime
/// counts again, the same request id crosses. Other targets are not
/// concerned.
#[test]
fn requests_to_a_target_behind_on_its_mail_are_refused_until_it_caught_up() {
    let mut split = Split::new(3);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let carol = User::join(&mut split, 2, "carol");
    assert_eq!(split.cores[0].server.mail_backlog(1), 0, "told nothing: nothing waits");
    split.cores[0].server.handle_mail_backlog(1, MAIL_PER_TARGET - 1);
    // One more item fits, and counts.
    let id = key_of(&mut split, &alice, &bob);
    assert_eq!(split.cores[0].server.mail_backlog(1), MAIL_PER_TARGET, "what was mailed since the count counts");
    split.settle();
    assert_eq!(alice.code(&split, id), status::OK);
    // Full (the estimate errs high until the next count): nothing more crosses to 1.
    let request = RequestMp { peer: bob.name.clone(), handshake: Bytes::from_static(b"hs") };
    let refused = [key_of(&mut split, &alice, &bob), alice.ask(&mut split, request.clone())];
    assert!(split.table.is_empty(), "nothing mailed");
    for id in refused {
        let r = split.cores[0].response(alice.session, id);
        assert_eq!(r.code, status::UNAVAILABLE);
        match r.body {
            ResponseBody::Error(ErrorBody { reason, retry_after_ms }) => {
                assert!(
                    reason.contains(&format!("partition 1 has not applied {MAX}", MAX = MAIL_PER_TARGET)),
                    "{reason}"
                );
                assert!(retry_after_ms > 0);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(split.cores[0].server.state().conversation(&alice.name, &bob.name).is_none(), "no tentative copy");
    assert!(split.cores[0].server.state().mail().pending_all().next().is_none(), "nothing pending");
    // Another target is not concerned.
    let id = key_of(&mut split, &alice, &carol);
    split.settle();
    assert_eq!(alice.code(&split, id), status::OK);
    // The runtime counts again: partition 1 applied everything. The refused request, sent
    // again under its id, crosses.
    split.cores[0].server.handle_mail_backlog(1, 0);
    let auth = alice.auth();
    split.cores[0].send_as(alice.session, refused[1], request, &auth);
    split.settle();
    let answers = split.cores[0].responses(alice.session, refused[1]);
    assert_eq!(answers.iter().map(|r| r.code).collect::<Vec<_>>(), [status::UNAVAILABLE, status::OK]);
}

/// A room message is not pushed to a home far behind on the room home's
/// mail (logged; its members there find it in the history), while answers
/// to that home's requests still go.
#[test]
fn room_pushes_to_a_target_behind_on_its_mail_are_dropped_and_answers_still_go() {
    let mut split = Split::new(2);
    let alice = User::join(&mut split, 0, "alice");
    let bob = User::join(&mut split, 1, "bob");
    let room = room_of(&split, 1);
    let verifier = Bytes::from_static(b"0123456789abcdef");
    let descriptor = Bytes::from_static(b"d");
    let made = bob.ask(&mut split, CreateRoom { room: room.clone(), verifier: verifier.clone(), descriptor });
    let joined = alice.ask(&mut split, JoinRoom { room: room.clone(), verifier });
    split.settle();
    assert_eq!((bob.code(&split, made), alice.code(&split, joined)), (status::CREATED, status::OK));
    let say = |text: &'static str| SendRoom { room: room.clone(), sealed: Bytes::from_static(text.as_bytes()) };
    let pushed = |split: &Split| {
        let events = split.cores[0].events(alice.session).into_iter();
        events.filter(|e| matches!(e, EventBody::RoomMessage(_))).count()
    };
    bob.ask(&mut split, say("one"));
    split.settle();
    assert_eq!(pushed(&split), 1);
    // Partition 0 is far behind on partition 1's mail.
    split.cores[1].server.handle_mail_backlog(0, MAIL_PER_TARGET);
    let id = bob.ask(&mut split, say("two"));
    assert!(split.table.is_empty(), "no push mailed");
    split.settle();
    assert_eq!(bob.code(&split, id), status::OK, "posted");
    assert_eq!(pushed(&split), 1, "not pushed");
    let dropped = ServerLog::PushDropped { to: 0, room: room.clone(), waiting: MAIL_PER_TARGET };
    assert!(split.cores[1].logs.contains(&dropped), "{:?}", split.cores[1].logs);
    // Alice's requests to the room's home are answered all the same, and find it in the history.
    let id = alice.ask(&mut split, RoomHistory { room: room.clone() });
    split.settle();
    match split.cores[0].response(alice.session, id).body {
        ResponseBody::History(h) => assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]),
        other => panic!("expected the history, got {other:?}"),
    }
    // Caught up: pushed again.
    split.cores[1].server.handle_mail_backlog(0, 0);
    bob.ask(&mut split, say("three"));
    split.settle();
    assert_eq!(pushed(&split), 2);
}
