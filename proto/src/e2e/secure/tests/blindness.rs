//! Blindness: after a scenario of secure clients exchanging known
//! plaintexts (MPs, online and queued for an offline peer; a room with
//! history), neither the server's state, nor anything it persisted, nor its
//! log events contain a plaintext, a content key, a room password or a
//! private identity key: not in their `Debug` text, not in any stored blob.

use bytes::Bytes;

use super::{Net, mps};
use crate::e2e::fixtures;
use crate::server::Change;
use crate::server::state::ItemKind;

const MP_TEXTS: [&str; 4] =
    ["the eagle lands at dawn", "bring the blue folder", "queued while bob sleeps", "reply: folder is blue"];
const ROOM_TEXTS: [&str; 3] = ["room secret number one", "history item two", "live item three"];
const ROOM_PASSWORD: &[u8] = b"pass2934-correct";

/// Every form a secret's bytes take in `Debug` text.
fn debug_forms(secret: &[u8]) -> Vec<String> {
    let escaped = format!("{:?}", Bytes::copy_from_slice(secret));
    let list = format!("{secret:?}");
    vec![hex::encode(secret), escaped[2..escaped.len() - 1].to_owned(), list[1..list.len() - 1].to_owned()]
}

struct Secrets {
    /// (what, bytes)
    items: Vec<(String, Vec<u8>)>,
}

impl Secrets {
    fn check_text(&self, where_: &str, text: &str) {
        for (what, bytes) in &self.items {
            for form in debug_forms(bytes) {
                assert!(!text.contains(&form), "{what} leaked into {where_}");
            }
            if let Ok(s) = std::str::from_utf8(bytes) {
                assert!(!text.contains(s), "{what} leaked into {where_}");
            }
        }
    }

    fn check_blob(&self, where_: &str, blob: &[u8]) {
        for (what, bytes) in &self.items {
            assert!(!blob.windows(bytes.len()).any(|w| w == &bytes[..]), "{what} found in a blob of {where_}");
        }
    }

    fn contains_any(&self, text: &str) -> bool {
        self.items.iter().any(|(_, b)| debug_forms(b).iter().any(|f| text.contains(f)))
    }
}

#[test]
fn the_server_never_holds_plaintext_or_content_keys() {
    let mut net = Net::new();
    let a = net.user("alice", fixtures::ALICE_PKCS8);
    let b = net.user("bob", fixtures::BOB_PKCS8);
    let c = net.user("carol", fixtures::MALLORY_PKCS8);
    let now = net.now;

    // MP: requested while Bob is offline; messages online and queued.
    net.disconnect(b);
    net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    net.connect(b);
    net.sc(b).accept_mp(now, "alice").unwrap();
    net.pump();
    net.sc(a).send_mp(now, "bob", MP_TEXTS[0]).unwrap();
    net.sc(a).send_mp(now, "bob", MP_TEXTS[1]).unwrap();
    net.pump();
    net.disconnect(b);
    net.sc(a).send_mp(now, "bob", MP_TEXTS[2]).unwrap();
    net.pump();
    net.connect(b);
    net.sc(b).send_mp(now, "alice", MP_TEXTS[3]).unwrap();
    net.pump();
    assert_eq!(mps(&net.take(b)).len(), 3, "bob read alice's three");
    assert_eq!(mps(&net.take(a)).len(), 1, "alice read bob's reply");

    // Room: history before Carol joins, then live.
    net.sc(a).create_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(b).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(a).send_room(now, "room11", ROOM_TEXTS[0]).unwrap();
    net.sc(b).send_room(now, "room11", ROOM_TEXTS[1]).unwrap();
    net.pump();
    net.sc(c).join_room(now, "room11", ROOM_PASSWORD).unwrap();
    net.pump();
    net.sc(c).send_room(now, "room11", ROOM_TEXTS[2]).unwrap();
    net.pump();
    let read = net.take(c).iter().filter(|e| matches!(e, super::SecureEvent::Room { .. })).count();
    assert_eq!(read, 2, "carol read the history");

    // The secrets.
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    for text in MP_TEXTS.iter().chain(&ROOM_TEXTS) {
        items.push((format!("plaintext {text:?}"), text.as_bytes().to_vec()));
    }
    items.push(("the room password".into(), ROOM_PASSWORD.to_vec()));
    for (who, peer) in [(a, "bob"), (b, "alice")] {
        let session = net.sc(who).session(peer).expect("session").clone();
        for (dir, stream) in [("send", session.send_stream()), ("receive", session.opener().stream())] {
            items.push((format!("MP {dir} stream key of user {who}"), stream.as_bytes().to_vec()));
        }
        let bytes = session.sealer().keys().to_bytes();
        items.push((format!("MP send epoch encryption key of user {who}"), bytes[..16].to_vec()));
        items.push((format!("MP send epoch MAC key of user {who}"), bytes[16..].to_vec()));
    }
    let room_keys = net.sc(a).room_keys("room11").unwrap().clone();
    for member in ["alice", "bob", "carol"] {
        items.push((format!("room stream key of {member}"), room_keys.sender_key(member).as_bytes().to_vec()));
    }
    for (name, pkcs8) in [("alice", fixtures::ALICE_PKCS8), ("bob", fixtures::BOB_PKCS8)] {
        // The tail of the private key: the CRT coefficient, private only
        // (the head holds the modulus, which is public).
        items.push((format!("private identity key of {name}"), pkcs8[pkcs8.len() - 64..].to_vec()));
    }
    let secrets = Secrets { items };

    // The detector finds what it looks for.
    assert!(secrets.contains_any(&format!("{:?}", Bytes::copy_from_slice(room_keys.sender_key("bob").as_bytes()))));
    assert!(secrets.contains_any(&format!("{:?}", net.sc(a).session("bob").unwrap().sealer().keys().to_bytes())));

    // The server's state, as text and as stored blobs.
    let state = net.server.state();
    secrets.check_text("the server state", &format!("{state:?}"));
    for (name, room) in state.rooms().iter() {
        assert_eq!(room.history.len(), 3, "room {name} retains its history");
        for entry in &room.history {
            secrets.check_blob("room history", &entry.sealed);
        }
        secrets.check_blob("room verifier", &room.verifier);
    }
    for (_, _, lane) in state.lanes().lanes() {
        for item in &lane.items {
            if let ItemKind::Message { sealed } = &item.kind {
                secrets.check_blob("a lane", sealed);
            }
        }
    }

    // Every persisted change.
    assert!(net.changes.iter().any(|c| matches!(c, Change::Enqueued { item, .. } | Change::MessageSent { item, .. }
                if matches!(item.kind, ItemKind::Message { .. }))));
    assert!(net.changes.iter().any(|c| matches!(c, Change::RoomMessage { .. })));
    for change in &net.changes {
        secrets.check_text("a persisted change", &format!("{change:?}"));
        for blob in change.blobs() {
            secrets.check_blob("a persisted change", blob);
        }
    }

    // Every log event.
    assert!(!net.server_events.is_empty());
    for event in &net.server_events {
        secrets.check_text("a server event", &format!("{event:?}"));
    }
}
