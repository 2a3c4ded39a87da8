//! Issue 12, item 14 (part): `dm read` shows only the last hour by design;
//! it now says so when older messages expired, with how many, once.

mod support;

use std::time::Duration;

use confab_client::commands::{account, dm, exit};
use support::{World, of_kind, ok};

#[test]
fn dm_read_says_how_many_older_messages_expired() {
    let w = World::new("expired-note");
    ok(w.run(Some("alice"), None, |e, o| account::register(e, o, "alice")));
    ok(w.run(Some("bob"), None, |e, o| account::register(e, o, "bob")));
    ok(w.run(Some("alice"), None, |e, o| dm::request(e, o, "bob")));
    ok(w.run(Some("bob"), None, |e, o| dm::accept(e, o, "alice")));
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "first")));
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "second")));
    // bob receives both (stored with their hour), then is away for longer.
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert_eq!(of_kind(&lines, "message").len(), 2, "{lines:#?}");
    assert!(!lines.iter().any(|l| l["event"] == "expired"), "{lines:#?}");
    w.advance(Duration::from_secs(3601));
    ok(w.run(Some("alice"), None, |e, o| dm::send(e, o, "bob", "third")));

    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, Some("alice"))));
    assert_eq!(of_kind(&lines, "message").len(), 1, "only the last hour: {lines:#?}");
    let note: Vec<_> = lines.iter().filter(|l| l["event"] == "expired").collect();
    assert_eq!(note.len(), 1, "{lines:#?}");
    assert_eq!((note[0]["peer"].as_str(), note[0]["count"].as_u64()), (Some("alice"), Some(2)));
    assert_eq!(note[0]["text"], "2 older messages expired (messages are kept one hour after receipt)");

    // Said once; the human output says it too, the next time some expire.
    let lines = ok(w.run(Some("bob"), None, |e, o| dm::read(e, o, None)));
    assert!(!lines.iter().any(|l| l["event"] == "expired"), "{lines:#?}");
    w.advance(Duration::from_secs(3601));
    let (code, stdout, _) = w.run_human(Some("bob"), |e, o| dm::read(e, o, None));
    assert_eq!(code, exit::OK);
    assert!(stdout.contains("alice: 1 older message expired (messages are kept one hour after receipt)"), "{stdout}");
}
