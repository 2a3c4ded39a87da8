//! Keepalive, idle timeout, closes, and bad input from the server.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::lone::{Lone, logged_in, response, user_message};
use super::{Net, messages, outcome};
use crate::wire::{Close, Message, Opcode, Ping, Pong, RequestBody, ResponseBody, Status, status};
use crate::{ClientConfig, ClientEvent};

#[test]
fn ping_is_answered_with_its_nonce() {
    let mut lone = Lone::new(ClientConfig::default());
    lone.connect();
    lone.feed(&Message::Ping(Ping { nonce: 42 }).to_bytes(b""));
    assert_eq!(lone.sent, vec![Message::Pong(Pong { nonce: 42 })]);
}

#[test]
fn keepalive_ping_then_idle_close() {
    let mut lone = Lone::new(ClientConfig::default());
    let t0 = lone.now.instant;
    lone.connect();
    assert_eq!(lone.timeout, Some(t0 + Duration::from_secs(30)));
    lone.advance(Duration::from_secs(30));
    assert!(matches!(lone.sent.as_slice(), [Message::Ping(_)]), "{:?}", lone.sent);
    assert_eq!(lone.timeout, Some(t0 + Duration::from_secs(90)));

    // Any input (the pong) resets the clock.
    lone.feed(&Message::Pong(Pong { nonce: 1 }).to_bytes(b""));
    let t1 = lone.now.instant;
    assert_eq!(lone.timeout, Some(t1 + Duration::from_secs(30)));
    lone.advance(Duration::from_secs(30));
    assert_eq!(lone.sent.len(), 2);
    lone.advance(Duration::from_secs(59));
    assert!(lone.client.is_connected());
    lone.advance(Duration::from_secs(1));
    assert!(!lone.client.is_connected());
    assert!(matches!(lone.sent.last(), Some(Message::Close(Close { code: 408, .. }))));
    assert!(matches!(lone.events.as_slice(), [ClientEvent::Closed { code: 408, .. }]));
    assert_eq!(lone.closes.len(), 1);
    assert_eq!(lone.closes[0].0, 408);
    assert_eq!(lone.timeout, None, "nothing to wait for while disconnected");
}

#[test]
fn a_dead_link_is_given_up_and_its_requests_wait() {
    let mut net = Net::new();
    let a = net.user("alice");
    let b = net.user("bob");
    net.open_mp(a, b);
    net.peers[a].mute = true;
    net.peers[a].deaf = true;
    let now = net.now;
    let id = net.client(a).send_mp(now, "bob", Bytes::from_static(b"lost?")).unwrap();
    net.pump();
    net.advance(Duration::from_secs(30));
    net.advance(Duration::from_secs(60));
    assert!(!net.client(a).is_connected());
    assert_eq!(net.peers[a].closes.first().map(|c| c.0), Some(status::IDLE_TIMEOUT));
    assert!(net.take(a).iter().any(|e| matches!(e, ClientEvent::Closed { code: 408, .. })));
    assert_eq!(net.client(a).outbox_len(), 1);

    net.peers[a].mute = false;
    net.peers[a].deaf = false;
    net.connect(a);
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Done { .. })));
    assert_eq!(messages(&net.take(b)).len(), 1);
}

#[test]
fn a_replaced_session_is_closed_by_the_server() {
    let mut net = Net::new();
    let a = net.user("alice");
    let a2 = net.add();
    net.connect(a2);
    net.login(a2, "alice");
    let events = net.take(a);
    assert!(matches!(&events[..], [ClientEvent::Closed { code: 409, .. }]), "{events:?}");
    assert_eq!(net.peers[a].closes.first().map(|c| c.0), Some(409));
    assert!(!net.client(a).is_connected());
}

#[test]
fn fatal_stream_errors_close_with_the_protocol_code() {
    let cases: [(&[u8], u16); 3] = [
        (&[2], status::UNSUPPORTED_VERSION),
        (&[1, 9], status::BAD_REQUEST),
        (&[1, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], status::TOO_LARGE),
    ];
    for (bytes, want) in cases {
        let mut lone = logged_in(ClientConfig::default());
        lone.feed(bytes);
        assert!(matches!(lone.events.first(), Some(ClientEvent::BadFrame { .. })), "{:?}", lone.events);
        assert!(matches!(lone.events.last(), Some(ClientEvent::Closed { code, .. }) if *code == want));
        assert!(matches!(lone.sent.last(), Some(Message::Close(Close { code, .. })) if *code == want));
        assert_eq!(lone.closes.len(), 1);
        assert!(!lone.client.is_connected());
        assert!(lone.client.is_logged_in(), "the session survives the connection");
        lone.feed(b"more bytes after the end are ignored");
    }
}

#[test]
fn undecodable_frames_are_dropped_or_fail_their_request() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    let id = lone.client.fetch_key(now, "bob").unwrap();
    lone.drain();
    // An event with a truncated body: reported, the connection goes on.
    let mut bad_event = user_message("bob", 1);
    bad_event.truncate(bad_event.len() - 1);
    bad_event[13] -= 1; // len_data
    lone.feed(&bad_event);
    assert!(matches!(lone.events.as_slice(), [ClientEvent::BadFrame { .. }]));
    assert!(lone.client.is_connected());
    // A response whose body does not decode fails its request.
    let key = crate::wire::IdentityKey { username: "bob".into(), identity_key: Bytes::from_static(b"k") };
    let mut bad = response(Opcode::FetchKey, id, Status::Valid, 200, ResponseBody::IdentityKey(key));
    bad.push(0xff);
    bad[13] += 1;
    lone.feed(&bad);
    assert!(
        matches!(&lone.events[1], ClientEvent::Failed { request_id, code: 500, .. } if *request_id == id),
        "{:?}",
        lone.events
    );
    assert_eq!(lone.client.outbox_len(), 0);
    // A request frame from the server makes no sense to a client.
    let req = Message::Request(crate::wire::Request {
        request_id: 1,
        timestamp_ms: 0,
        body: RequestBody::Jwks(crate::wire::Jwks {}),
    });
    lone.feed(&req.to_bytes(b""));
    assert!(matches!(lone.events.last(), Some(ClientEvent::BadFrame { .. })));
    assert!(lone.client.is_connected());
}

#[test]
fn a_close_frame_from_the_server_ends_the_connection() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    let id = lone.client.fetch_key(now, "bob").unwrap();
    lone.drain();
    lone.sent.clear();
    let close = Close { code: 503, reason: "server shutting down".into() };
    lone.feed(&Message::Close(close).to_bytes(b""));
    assert_eq!(lone.events, vec![ClientEvent::Closed { code: 503, reason: "server shutting down".into() }]);
    assert_eq!(lone.closes, vec![(503, "server shutting down".into())]);
    assert!(lone.sent.is_empty(), "no answer to a close");
    assert_eq!(lone.client.outbox_len(), 1, "the request waits for the next connection");
    // Next connection: refresh first, and the request only after the tokens.
    lone.connect();
    assert!(matches!(lone.sent.as_slice(), [Message::Request(r)] if r.body.opcode() == Opcode::Refresh));
    let _ = id;
}

/// Frames the client could meet: valid messages of every kind (responses
/// aimed at the ids it uses), raw garbage, in any chunking.
fn input() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let piece = prop_oneof![
        3 => crate::wire::strategy::message().prop_map(|m| {
            let m = match m {
                Message::Response(mut r) => {
                    r.request_id %= 8;
                    Message::Response(r)
                }
                other => other,
            };
            m.to_bytes(b"").to_vec()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..48),
    ];
    (proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat()), proptest::collection::vec(1usize..64, 1..8))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn no_input_panics_or_reports_a_request_twice((bytes, chunks) in input()) {
        let mut lone = logged_in(ClientConfig::default());
        let now = lone.now;
        let ids = vec![
            lone.client.fetch_key(now, "bob").unwrap(),
            lone.client.send_mp(now, "bob", Bytes::from_static(b"s")).unwrap(),
            lone.client.logout(now).unwrap(),
        ];
        lone.drain();
        let mut rest = &bytes[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            lone.client.handle_input(lone.now, &rest[..n]);
            rest = &rest[n..];
            lone.now = lone.now.advance(Duration::from_secs(7));
            lone.client.handle_timeout(lone.now);
            lone.drain();
        }
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for e in &lone.events {
            if let ClientEvent::Done { request_id, .. } | ClientEvent::Failed { request_id, .. } | ClientEvent::LoggedOut { request_id } = e {
                *seen.entry(*request_id).or_default() += 1;
            }
        }
        for id in ids {
            prop_assert!(seen.get(&id).copied().unwrap_or(0) <= 1, "request {} reported twice: {:?}", id, lone.events);
        }
    }
}

#[test]
fn an_answer_above_the_frame_limit_settles_what_was_written_and_never_comes_back() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    let history = lone.client.room_history(now, "lobby").unwrap();
    let sent = lone.client.send_room(now, "lobby", Bytes::from_static(b"sealed")).unwrap();
    lone.drain();
    // A response header announcing more data than the client accepts (the
    // 1.2 MB room history of issue 12): the framing is lost.
    let mut header = vec![1u8, 2, 0, 0, 0, 0];
    header.extend_from_slice(&(crate::wire::Limits::DEFAULT.max_data + 1).to_be_bytes());
    lone.feed(&header);
    assert!(!lone.client.is_connected());
    assert_eq!(lone.closes.first().map(|c| c.0), Some(status::TOO_LARGE), "{:?}", lone.closes);
    assert!(
        matches!(outcome(&lone.events, history), Some(ClientEvent::Failed { code: 413, .. })),
        "the query fails: {:?}",
        lone.events
    );
    assert!(
        lone.events.iter().any(|e| matches!(e, ClientEvent::Indeterminate { request_id, .. } if *request_id == sent)),
        "the send may have been performed: {:?}",
        lone.events
    );
    assert_eq!(lone.client.outbox_len(), 0, "nothing is replayed into the same answer");
    // The next connection sends neither again.
    lone.sent.clear();
    lone.connect();
    assert!(
        !lone.sent.iter().any(|m| matches!(m, Message::Request(r) if r.request_id == history || r.request_id == sent)),
        "{:?}",
        lone.sent
    );
}

/// 504: the request is on its way inside the server and its outcome not
/// known yet. The client sends it again, same id and body, and reports
/// nothing until a real answer comes.
#[test]
fn a_request_answered_504_is_sent_again_with_the_same_id() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    let id = lone.client.send_mp(now, "bob", bytes::Bytes::from_static(b"sealed")).unwrap();
    lone.drain();
    let first = lone.sent.iter().filter(|m| matches!(m, Message::Request(r) if r.request_id == id)).count();
    assert_eq!(first, 1);
    let pending = super::lone::error_body("partition 1 did not answer within 30 s; the request is still on its way");
    lone.feed(&response(Opcode::SendMp, id, Status::Error, status::OUTCOME_PENDING, pending));
    let resent: Vec<_> = lone
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.request_id == id => Some(r.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), 2, "sent again");
    assert_eq!(resent[0], resent[1], "the same request");
    assert!(!lone.events.iter().any(|e| matches!(e, ClientEvent::Failed { .. })), "{:?}", lone.events);
    let sent = ResponseBody::Sent(crate::wire::Sent { seq: 4 });
    lone.feed(&response(Opcode::SendMp, id, Status::Valid, status::OK, sent));
    assert!(
        lone.events.iter().any(|e| matches!(e, ClientEvent::Done { request_id, code: 200, .. } if *request_id == id))
    );
}
