//! Issue 12, item 12, over real processes: two `confab listen` of one
//! account (two devices) took turns replacing each other's session, six
//! times in 12 s, because the replaced listener reconnected at once. A
//! client closed with 409 ("replaced by a newer login") does not reconnect
//! (docs/PROTOCOL.md, "Login and session binding"): the first listener stops
//! with a message saying another session took over and how to take it back,
//! and the second keeps its session.

use std::time::Duration;

use confab_tests::procs::{CliUser, Running, ServerProc, TempDir, copy_dir};
use serde_json::Value;

#[test]
fn a_replaced_listener_stops_and_the_newer_one_keeps_its_session() {
    let dir = TempDir::new("dup-login");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let first = CliUser::new(dir.path(), "alice", &server, "tcp");
    let _ = first.ok(&["register", "alice"]);
    // A second device of the same account: the profile copied (it holds the
    // identity key), then its own login (its own token family).
    let mut second = first.clone();
    second.profile = dir.path().join("alice-laptop");
    copy_dir(&first.profile, &second.profile);
    let _ = second.ok(&["login", "alice"]);

    let mut one = Running::start(first.command(&["listen"]));
    assert!(one.wait_for("\"connected\"", Duration::from_secs(20)), "{:?} {}", one.lines(), one.stderr());
    let mut two = Running::start(second.command(&["listen"]));
    assert!(two.wait_for("\"connected\"", Duration::from_secs(20)), "{:?} {}", two.lines(), two.stderr());

    // The first is replaced and stops, with its own exit code and a message.
    let Some(code) = one.wait_exit(Duration::from_secs(10)) else {
        panic!("the replaced listener is still running: {:?}\n{}", one.lines(), server.log());
    };
    assert_eq!(code, Some(6), "{:?} {}", one.lines(), one.stderr());
    let stderr = one.stderr();
    let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let (message, hint) = (error["message"].as_str().unwrap(), error["hint"].as_str().unwrap());
    assert!(message.contains("another session of this account"), "{message}");
    assert!(hint.contains("confab listen"), "{hint}");

    // The second stays connected, and no session is replaced any more.
    std::thread::sleep(Duration::from_secs(12));
    assert!(two.wait_exit(Duration::ZERO).is_none(), "the newer listener stopped: {:?} {}", two.lines(), two.stderr());
    let log = server.log();
    let replaced = log.lines().filter(|l| l.contains("closing session") && l.contains("code=409")).count();
    assert_eq!(replaced, 1, "sessions swapped:\n{log}");
    let connected = two.lines().iter().filter(|l| l.contains("\"connected\"")).count();
    assert_eq!(connected, 1, "the newer listener reconnected: {:?}", two.lines());
    assert!(!two.lines().iter().any(|l| l.contains("disconnected")), "{:?}", two.lines());
    two.kill();
}
