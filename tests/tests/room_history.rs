//! Issue 12, item 1, over real sockets: ten 120 KB room messages made the
//! `room_history` answer 1.2 MB, above the frame limit the server itself
//! enforces, and bricked every profile that asked for it. The history keeps
//! within its byte budget (docs/PROTOCOL.md, `room_history_bytes`), so every
//! answer fits in a frame, and the profile goes on working.

use confab_tests::procs::{CliUser, ServerProc, TempDir};
use serde_json::Value;

/// One large message: 120,000 bytes of text (under the 128 KiB of one argv string).
fn large(n: usize) -> String {
    let mut text = format!("large message {n}: ");
    while text.len() < 120_000 {
        text.push_str("the quick brown fox jumps over the lazy dog; ");
    }
    text.truncate(120_000);
    text
}

fn room_texts(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "room_message")
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn ten_large_room_messages_leave_the_history_readable() {
    let dir = TempDir::new("room-history");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let bob = CliUser::new(dir.path(), "bob", &server, "tcp");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "big"]);
    let _ = bob.ok(&["room", "join", "big"]);
    for n in 0..10 {
        let _ = alice.ok(&["room", "send", "big", &large(n)]);
    }
    // The answers that carry the history fit in a frame: both work, and hold
    // the newest messages that fit in the budget (512 KiB: four of them).
    for user in [&alice, &bob] {
        let history = user.ok(&["room", "history", "big"]);
        let texts = room_texts(&history);
        let expected: Vec<String> = (6..10).map(large).collect();
        assert_eq!(texts.len(), expected.len(), "{} messages in the history", texts.len());
        assert!(texts == expected, "the newest four, in order");
    }
    // The profile is not poisoned: later commands work.
    let _ = bob.ok(&["room", "send", "big", "still here"]);
    let history = alice.ok(&["room", "history", "big"]);
    assert_eq!(room_texts(&history).last().map(String::as_str), Some("still here"));
    let _ = bob.ok(&["logout"]);
}
