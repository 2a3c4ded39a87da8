//! Resource caps (issue 10, section 3 "Unbounded growth"): accounts, rooms per
//! user, and a room's history bytes, each with its status code.

use bytes::Bytes;

use super::{Harness, config};
use crate::server::ServerConfig;
use crate::wire::{CreateRoom, DeleteRoom, JoinRoom, Message, ResponseBody, SendRoom, status};

const VERIFIER: &[u8] = b"room-verifier-0123456789";

fn create(h: &mut Harness, s: crate::server::SessionId, access: &str, room: &str) -> u16 {
    let id = h.send_auth(
        s,
        CreateRoom {
            room: room.into(),
            verifier: Bytes::from_static(VERIFIER),
            descriptor: Bytes::from_static(b"descriptor"),
        },
        access.as_bytes(),
    );
    h.code(s, id)
}

#[test]
fn registrations_stop_at_max_accounts_with_507() {
    let mut h = Harness::new(ServerConfig { max_accounts: 2, ..config() });
    assert_eq!(h.register("alice"), status::CREATED);
    assert_eq!(h.register("bob"), status::CREATED);
    assert_eq!(h.register("carol"), status::QUEUE_FULL);
    assert_eq!(h.server.state().accounts().user_count(), 2);
    // A registration in flight holds its place: two at once cannot both take the last one.
    let mut h = Harness::new(ServerConfig { max_accounts: 1, ..config() });
    h.hold = true;
    let (a, b) = (h.connect(), h.connect());
    let register = |user: &str| crate::wire::Register {
        username: user.into(),
        password: super::PASSWORD.into(),
        passphrase: super::PASSPHRASE.into(),
        identity_key: Bytes::from_static(b"idkey"),
    };
    let ia = h.send(a, register("alice"));
    let ib = h.send(b, register("bob"));
    h.run_held();
    assert_eq!((h.code(a, ia), h.code(b, ib)), (status::CREATED, status::QUEUE_FULL));
}

#[test]
fn rooms_per_user_stop_at_max_rooms_per_user_with_507() {
    let mut h = Harness::new(ServerConfig { max_rooms_per_user: 3, ..config() });
    h.register("alice");
    h.register("bob");
    let (a, ta) = h.login("alice");
    let (b, tb) = h.login("bob");
    for room in ["room1", "room2", "room3"] {
        assert_eq!(create(&mut h, a, &ta.access_token, room), status::CREATED);
    }
    assert_eq!(create(&mut h, a, &ta.access_token, "room4"), status::QUEUE_FULL);
    // Another user has a quota of their own; deleting a room frees one.
    assert_eq!(create(&mut h, b, &tb.access_token, "room5"), status::CREATED);
    let id = h.send_auth(a, DeleteRoom { room: "room1".into() }, ta.access_token.as_bytes());
    assert_eq!(h.code(a, id), status::OK);
    assert_eq!(create(&mut h, a, &ta.access_token, "room4"), status::CREATED);
}

/// A room's retained history stays within `room_history_bytes`; a message
/// larger than the budget is refused with 413.
#[test]
fn room_history_bytes_are_bounded() {
    let mut h = Harness::new(ServerConfig { room_history_bytes: 1000, ..config() });
    h.register("alice");
    let (a, t) = h.login("alice");
    assert_eq!(create(&mut h, a, &t.access_token, "lobby"), status::CREATED);
    let send = |h: &mut Harness, len: usize| {
        let sealed = Bytes::from(vec![7u8; len]);
        let id = h.send_auth(a, SendRoom { room: "lobby".into(), sealed }, t.access_token.as_bytes());
        h.code(a, id)
    };
    // Each entry costs 22 + 5 ("alice") + 300 = 327 bytes: three fit in 1000, a fourth pushes out the first.
    for _ in 0..4 {
        assert_eq!(send(&mut h, 300), status::OK);
    }
    let history = &h.server.state().room("lobby").unwrap().history;
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(send(&mut h, 1000 - 27 + 1), status::TOO_LARGE);
    assert_eq!(send(&mut h, 1000 - 27), status::OK);
    assert_eq!(h.server.state().room("lobby").unwrap().history.len(), 1);
}

/// With the defaults, a room filled with the largest messages the server
/// accepts still answers `room_joined` in one frame within the frame limit
/// (a 1.2 MB history answer used to brick clients).
#[test]
fn a_full_room_history_answer_fits_in_a_frame() {
    let mut h = Harness::new(config());
    h.register("alice");
    h.register("bob");
    let (a, t) = h.login("alice");
    assert_eq!(create(&mut h, a, &t.access_token, "lobby"), status::CREATED);
    for _ in 0..6 {
        let sealed = Bytes::from(vec![7u8; 200 * 1024]);
        let id = h.send_auth(a, SendRoom { room: "lobby".into(), sealed }, t.access_token.as_bytes());
        assert_eq!(h.code(a, id), status::OK);
    }
    let (b, tb) = h.login("bob");
    let join = JoinRoom { room: "lobby".into(), verifier: Bytes::from_static(VERIFIER) };
    let id = h.send_auth(b, join, tb.access_token.as_bytes());
    let r = h.response(b, id);
    let ResponseBody::RoomJoined(joined) = &r.body else { panic!("{r:?}") };
    let retained: usize = joined.history.iter().map(|e| e.sealed.len()).sum();
    let max_data = h.server.config().limits.max_data as usize;
    assert!(retained < max_data);
    let frame = Message::Response(r.clone()).to_bytes(&[]);
    assert!(frame.len() - crate::wire::HEADER_LEN <= max_data, "{} bytes", frame.len());
}

#[test]
fn a_room_descriptor_is_1_to_64_bytes() {
    let mut h = Harness::new(config());
    h.register("alice");
    let (a, ta) = h.login("alice");
    for (room, len, want) in
        [("room1", 0, status::BAD_REQUEST), ("room2", 65, status::BAD_REQUEST), ("room3", 64, status::CREATED)]
    {
        let body = CreateRoom {
            room: room.into(),
            verifier: Bytes::from_static(VERIFIER),
            descriptor: Bytes::from(vec![1u8; len]),
        };
        let id = h.send_auth(a, body, ta.access_token.as_bytes());
        assert_eq!(h.code(a, id), want, "{len} bytes");
    }
    assert_eq!(h.server.state().room("room3").unwrap().descriptor.len(), 64);
    assert!(h.server.state().room("room2").is_none());
}
