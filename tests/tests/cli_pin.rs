//! `confab` against a real server whose key is not the pinned one: the
//! error says the key changed and how to re-pin (not "check that the
//! server runs"), over TCP and QUIC.

use confab_tests::procs::{CliUser, ServerProc, TempDir};
use serde_json::Value;

#[test]
fn a_wrong_pin_says_the_key_changed_and_how_to_re_pin() {
    let dir = TempDir::new("cli-pin");
    let server = ServerProc::start(&dir.path().join("data"), None);
    for transport in ["tcp", "quic"] {
        let mut user = CliUser::new(dir.path(), &format!("alice-{transport}"), &server, transport);
        // Another server's key: a valid pin that is not this server's.
        user.trust = vec!["--pin".to_owned(), "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()];
        let out = user.run(&["register", "alice"]);
        assert_eq!(out.status.code(), Some(4), "{transport}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        let (message, hint) = (error["message"].as_str().unwrap(), error["hint"].as_str().unwrap());
        assert!(message.contains("changed"), "{transport}: {message}");
        assert!(hint.contains("new pin") && hint.contains("CONFAB_PIN"), "{transport}: {hint}");
        assert!(!hint.contains("server runs"), "{transport}: {hint}");
    }
}
