//! Issue 12, item 14 (part): `confab` over QUIC to a stopped server took
//! 10 s to say so (QUIC gets no refusal from a closed port, only silence).
//! It now looks for the host's ICMP "port unreachable" after a short first
//! handshake attempt and says nothing answers at that address. A behaviour
//! bound (within 3 s, against 10 s before), not a speed measurement.

use std::time::{Duration, Instant};

use confab_tests::procs::{CliUser, ServerProc, TempDir};
use serde_json::Value;

#[test]
fn quic_to_a_stopped_server_fails_promptly_and_says_nothing_answers() {
    let dir = TempDir::new("quic-stopped");
    let mut server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "quic");
    server.kill();
    let started = Instant::now();
    let out = alice.run(&["register", "alice"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(error["message"].as_str().unwrap().contains("nothing answers at"), "{error}");
    assert!(took < Duration::from_secs(3), "took {took:?} to say nothing answers");
}
