//! Issue 12, item 14 (part), over real processes: a running `confab listen`
//! locked its profile, so no other command could run on it. Commands now go
//! through the listener (its `listen.sock`) and run on its session: they
//! succeed, the listener keeps its session (a second session of the account
//! would have replaced it), and each message arrives once.

use std::time::Duration;

use confab_tests::procs::{CliUser, Running, ServerProc, TempDir};
use serde_json::Value;

fn of_kind(stdout: &str, kind: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["kind"] == kind).collect()
}

#[test]
fn commands_share_the_profile_with_a_running_listen() {
    let dir = TempDir::new("shared-profile");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let bob = CliUser::new(dir.path(), "bob", &server, "quic");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["dm", "request", "bob"]);

    let mut listening = Running::start(bob.command(&["listen"]));
    assert!(listening.wait_for("\"connected\"", Duration::from_secs(20)), "{:?}", listening.lines());

    // From another shell, on the same profile, while listen runs.
    let accepted = bob.ok(&["dm", "accept", "alice"]);
    assert_eq!(of_kind(&accepted, "ok").len(), 1, "{accepted}");
    let sent = bob.ok(&["dm", "send", "alice", "sent beside a running listen"]);
    assert_eq!(of_kind(&sent, "ok")[0]["command"], "dm send", "{sent}");
    let sent = bob.ok(&["room", "send", "lobby", "room message beside a running listen"]);
    assert_eq!(of_kind(&sent, "ok")[0]["command"], "room send", "{sent}");
    // A message to bob arrives in the listener, and `dm read` (through it) shows it.
    let _ = alice.ok(&["dm", "send", "bob", "to bob while he listens"]);
    assert!(listening.wait_for("to bob while he listens", Duration::from_secs(10)), "{:?}", listening.lines());
    let read = bob.ok(&["dm", "read", "alice"]);
    let texts: Vec<_> = of_kind(&read, "message").iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["to bob while he listens"], "{read}");

    // The listener kept its one session: never replaced, never reconnected.
    assert!(listening.wait_exit(Duration::ZERO).is_none(), "{:?} {}", listening.lines(), listening.stderr());
    let connected = listening.lines().iter().filter(|l| l.contains("\"connected\"")).count();
    assert_eq!(connected, 1, "{:?}", listening.lines());
    let log = server.log();
    assert_eq!(log.lines().filter(|l| l.contains("closing session") && l.contains("code=409")).count(), 0, "{log}");
    listening.kill();

    // Each arrived once.
    let read = alice.ok(&["dm", "read", "bob"]);
    let texts: Vec<_> = of_kind(&read, "message").iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["sent beside a running listen"], "{read}");
    let history = alice.ok(&["room", "history", "lobby"]);
    let count = of_kind(&history, "room_message")
        .iter()
        .filter(|m| m["text"] == "room message beside a running listen")
        .count();
    assert_eq!(count, 1, "{history}");
    // With the listener gone, the profile is usable on its own again.
    let _ = bob.ok(&["room", "history", "lobby"]);
}
