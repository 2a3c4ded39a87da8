//! Attacker review of issue 12: the password-check pace (pace.rs, desk.rs).

use std::time::Duration;

use super::{Harness, config, register_body};
use crate::server::ServerConfig;
use crate::wire::status;

/// The desk refuses a password check when, at the measured pace, it would
/// not be answered within `login_wait`. The pace is sampled only while
/// SATURATED (8) jobs are out, and is never aged. One long gap under load
/// (the host paused the process for 11 s, a swap storm, a stalled disk
/// under the event loop) puts the mean above `login_wait`: from then on
/// every register and login is refused 503 at once, no job is handed out,
/// so no completion ever corrects the mean, and the server stays closed to
/// every password check until it is restarted (any mean above
/// login_wait / 8 already caps the queue below SATURATED, freezing it too).
#[test]
fn one_slow_gap_under_load_does_not_refuse_password_checks_forever() {
    let mut h = Harness::new(ServerConfig { login_wait: Duration::from_secs(10), ..config() });
    h.hold = true;
    let sessions: Vec<_> = (0..9).map(|_| h.connect()).collect();
    for (n, &s) in sessions.iter().enumerate() {
        h.send(s, register_body(&format!("user{n}")));
    }
    assert_eq!(h.held.len(), 9);
    let run_one = |h: &mut Harness, after: Duration| {
        let job = h.held.remove(0);
        let result = job.run();
        h.advance(after);
        h.server.handle_work(h.now, result);
        h.pump();
    };
    run_one(&mut h, Duration::from_millis(30));
    // One stall of 11 s while 8 jobs are out, then the workers run at full speed.
    run_one(&mut h, Duration::from_secs(11));
    while !h.held.is_empty() {
        run_one(&mut h, Duration::from_millis(30));
    }
    // An hour later, the workers idle and nothing queued: a registration fits.
    h.advance(Duration::from_secs(3600));
    let late = h.connect();
    let id = h.send(late, register_body("late"));
    assert!(
        h.received_nothing(late, id),
        "an idle server refused a registration: {} {}",
        h.code(late, id),
        h.reason(late, id)
    );
    h.run_held();
    assert_eq!(h.code(late, id), status::CREATED);
}
