//! A started frame must complete at a minimum rate (issue 12, item 3): a
//! frame dripped a byte at a time is closed at its deadline with 408, long
//! before the idle timeout, which the drip keeps resetting.

use std::time::Duration;

use super::{Harness, config};
use crate::server::{ServerConfig, SessionId};
use crate::wire::{Message, Ping, status};

/// A request frame header declaring `len_data` bytes of data and no auth.
fn header(len_data: u64) -> Vec<u8> {
    let mut h = vec![1, 2, 0, 0, 0, 0];
    h.extend_from_slice(&len_data.to_be_bytes());
    h
}

fn raw(h: &mut Harness, s: SessionId, bytes: &[u8]) {
    h.server.handle_input(h.now, s, bytes);
    h.pump();
}

/// The close frame sent to `s`, if any.
fn closed(h: &Harness, s: SessionId) -> Option<(u16, String)> {
    h.received.get(&s)?.iter().find_map(|m| match m {
        Message::Close(c) => Some((c.code, c.reason.clone())),
        _ => None,
    })
}

#[test]
fn a_dripped_frame_is_closed_at_its_deadline_long_before_the_idle_timeout() {
    let c = config();
    let (grace, idle) = (c.frame_grace, c.idle_timeout);
    let mut h = Harness::new(c);
    let s = h.connect();
    // One byte every 200 ms: the header, then a body that never ends.
    let mut bytes = header(1 << 20).into_iter().chain(std::iter::repeat(0u8));
    let step = Duration::from_millis(200);
    let mut elapsed = Duration::ZERO;
    while closed(&h, s).is_none() {
        assert!(elapsed < idle, "still open after {elapsed:?}");
        raw(&mut h, s, &[bytes.next().unwrap()]);
        h.advance(step);
        elapsed += step;
    }
    // Closed once the grace (plus the time its few bytes earn at the minimum rate) is over.
    assert!(elapsed >= grace && elapsed <= grace + Duration::from_secs(1), "closed after {elapsed:?}");
    let (code, reason) = closed(&h, s).unwrap();
    assert_eq!(code, status::IDLE_TIMEOUT);
    assert!(reason.starts_with("frame too slow: "), "{reason}");
    assert!(reason.contains("of 1048590 bytes"), "{reason}");
    assert_eq!(h.server.session_count(), 0);
}

#[test]
fn a_frame_at_the_minimum_rate_completes_and_a_finished_frame_has_no_deadline() {
    let c = ServerConfig { frame_grace: Duration::from_secs(2), min_frame_rate: 1000, ..config() };
    let mut h = Harness::new(c);
    let s = h.connect();
    // A ping (22 bytes) one byte every 95 ms: its last byte comes at 1.995 s, within the
    // 2 s grace plus 22 ms earned by its bytes at 1000 bytes/s.
    let ping = Message::Ping(Ping { nonce: 42 }).to_bytes(b"");
    for b in &ping {
        raw(&mut h, s, &[*b]);
        h.advance(Duration::from_millis(95));
    }
    assert_eq!(closed(&h, s), None);
    assert!(h.received.get(&s).is_some_and(|m| m.iter().any(|m| matches!(m, Message::Pong(_)))));
    // Silence after a complete frame: only the idle timeout applies.
    h.advance(Duration::from_secs(60));
    assert_eq!(closed(&h, s), None);
    // A large frame at well above the rate completes too: 64 KiB in 16 KiB pieces, one a second.
    let mut frame = header(64 << 10);
    frame.resize(frame.len() + (64 << 10), 0);
    for piece in frame.chunks(16 << 10) {
        raw(&mut h, s, piece);
        h.advance(Duration::from_secs(1));
    }
    // (Its data is not a valid request: answered with an error event, not closed for slowness.)
    assert!(closed(&h, s).is_none_or(|(_, reason)| !reason.starts_with("frame too slow")));
}

#[test]
fn while_a_login_is_checked_the_frames_waiting_have_no_deadline() {
    let c = ServerConfig { frame_grace: Duration::from_secs(1), ..config() };
    let mut h = Harness::new(c);
    h.register("alice");
    h.hold = true;
    let s = h.connect();
    h.send(s, crate::wire::Login { username: "alice".into(), password: super::PASSWORD.into() });
    // Half a frame waits behind the hash; the server, not the peer, is slow.
    raw(&mut h, s, &header(100)[..10]);
    h.advance(Duration::from_secs(5));
    assert_eq!(closed(&h, s), None);
    // Once the check is done, the partial frame's clock starts.
    h.run_held();
    h.advance(Duration::from_secs(2));
    let (code, reason) = closed(&h, s).expect("closed for its slow frame");
    assert_eq!(code, status::IDLE_TIMEOUT);
    assert!(reason.starts_with("frame too slow: 10 of at least 14 bytes"), "{reason}");
}

/// Bytes of a partial frame that the node holds outside the core (a split
/// state's switchboard, `Server::handle_partial`) have the deadline of
/// bytes in its decoder; told none any more, the session has no deadline.
#[test]
fn bytes_held_outside_the_core_have_the_deadline_of_bytes_in_its_decoder() {
    let c = ServerConfig { frame_grace: Duration::from_secs(2), ..config() };
    let (grace, idle) = (c.frame_grace, c.idle_timeout);
    let mut h = Harness::new(c);
    let (dripped, finished) = (h.connect(), h.connect());
    for s in [dripped, finished] {
        h.server.handle_partial(h.now, s, 5);
    }
    h.pump();
    h.advance(Duration::from_secs(1));
    h.server.handle_partial(h.now, finished, 0);
    h.pump();
    h.advance(grace);
    let (code, reason) = closed(&h, dripped).expect("closed at its frame deadline");
    assert_eq!(code, status::IDLE_TIMEOUT);
    assert!(reason.starts_with("frame too slow: 5 of at least 14 bytes"), "{reason}");
    assert_eq!(closed(&h, finished), None, "no partial frame any more");
    assert!(grace * 2 < idle);
}
